-- Replies: the messages that answer a given message, in timeline order.

CREATE FUNCTION progressdb.replies(id text, lim integer DEFAULT 100, actor text DEFAULT NULL,
                                   in_thread text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m progressdb.messages := progressdb._message_access(replies.id, in_thread, false, actor, 'read');
    f progressdb.threads;
    result jsonb;
BEGIN
    lim := progressdb._limit(lim);
    SELECT * INTO f FROM progressdb.threads th WHERE th.id = in_thread AND th.fork_of IS NOT NULL;
    IF f.id IS NOT NULL THEN
        -- Through a fork: the replies its timeline shows (forks.sql), found
        -- per level by the reply index and among the snapshots.
        SELECT coalesce(jsonb_agg(progressdb._message_json(r) ORDER BY r.seq), '[]') INTO result
          FROM (SELECT e.* FROM (
                    SELECT mm.seq FROM progressdb._fork_levels(f) l
                      JOIN progressdb.messages mm ON mm.thread = l.thread AND mm.reply_to = m.id
                       AND mm.seq > l.own_lo AND mm.seq <= l.own_hi
                    UNION
                    SELECT s.seq FROM progressdb._fork_levels(f) l
                      JOIN progressdb.fork_snapshots s ON s.fork = l.thread AND s.seq > l.snap_lo
                       AND s.seq <= l.snap_hi AND s.msg->>'reply_to' = m.id) c
                 CROSS JOIN LATERAL progressdb._fork_rows(f, c.seq - 1, c.seq + 1, 1, true, false) e
                 WHERE e.reply_to = m.id
                 ORDER BY e.seq
                 LIMIT lim) r;
        RETURN jsonb_build_object('id', m.id, 'replies', result);
    END IF;
    SELECT coalesce(jsonb_agg(progressdb._message_json(r) ORDER BY r.seq), '[]') INTO result
      FROM (SELECT * FROM progressdb.messages mm
             WHERE mm.thread = m.thread AND mm.reply_to = m.id AND mm.deleted_ts IS NULL
             ORDER BY mm.seq
             LIMIT lim) r;
    RETURN jsonb_build_object('id', m.id, 'replies', result);
END
$$;
