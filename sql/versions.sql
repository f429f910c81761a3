-- Message versions. Versioning is a trigger, so any content change of a
-- message -- through edit_message or a plain UPDATE -- keeps the previous
-- content. Reactions and soft-delete flips are not content and make no version.

CREATE FUNCTION progressdb._keep_previous_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- rotate_thread_key re-seals bodies under a new key: not a content change.
    IF (NEW.body IS DISTINCT FROM OLD.body OR NEW.body_enc IS DISTINCT FROM OLD.body_enc)
       AND current_setting('progressdb.reencrypting', true) IS DISTINCT FROM 'on' THEN
        INSERT INTO progressdb.message_versions (thread, seq, version, body, body_enc, updated_ts)
        VALUES (OLD.thread, OLD.seq, OLD.version, OLD.body, OLD.body_enc, OLD.updated_ts);
        NEW.version := OLD.version + 1;
        NEW.updated_ts := progressdb.now_ns();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER messages_keep_previous_version
    BEFORE UPDATE OF body, body_enc ON progressdb.messages
    FOR EACH ROW EXECUTE FUNCTION progressdb._keep_previous_version();

-- All versions of a message, oldest first, the current one last. Earlier
-- versions are the message as it was: same id/author/ts, that version's body.
CREATE FUNCTION progressdb.message_versions(id text, actor text DEFAULT NULL, in_thread text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m progressdb.messages := progressdb._message_access(message_versions.id, in_thread, false, actor, 'read');
    earlier jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(
               progressdb._message_json((m.thread, m.seq, m.id, m.author, m.role, m.ts, v.body, v.body_enc,
                                         m.reply_to, '{}'::jsonb, v.version, v.updated_ts, NULL, NULL)::progressdb.messages)
               ORDER BY v.version), '[]')
      INTO earlier
      FROM progressdb.message_versions v
     WHERE v.thread = m.thread AND v.seq = m.seq
       AND v.version < m.version;   -- m may be a fork's older view of the message (forks.sql)
    RETURN jsonb_build_object('id', m.id,
                              'versions', earlier || jsonb_build_array(progressdb._message_json(m)));
END
$$;
