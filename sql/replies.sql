-- Replies: the messages that answer a given message, in timeline order.

CREATE FUNCTION progressdb.replies(id text, lim integer DEFAULT 100, actor text DEFAULT NULL,
                                   in_thread text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m progressdb.messages := progressdb._message_access(replies.id, in_thread, false, actor, 'read');
    result jsonb;
BEGIN
    lim := progressdb._limit(lim);
    SELECT coalesce(jsonb_agg(progressdb._message_json(r) ORDER BY r.seq), '[]') INTO result
      FROM (SELECT * FROM progressdb.messages mm
             WHERE mm.thread = m.thread AND mm.reply_to = m.id AND mm.deleted_ts IS NULL
             ORDER BY mm.seq
             LIMIT lim) r;
    RETURN jsonb_build_object('id', m.id, 'replies', result);
END
$$;
