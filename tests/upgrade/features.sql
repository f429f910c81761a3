-- The 0.2.0 features on threads written by 0.1.0 (after ALTER EXTENSION
-- progressdb UPDATE): members and roles, posting as a member, read state; the
-- encrypted thread keeps working. Thread names are those of fill.sql.
-- Each check raises with a message saying what went wrong.

\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = warning;

-- Every live 0.1.0 thread lists its author as its owner (and no one else
-- as an owner).
DO $$
DECLARE
    t record;
    doc jsonb;
BEGIN
    FOR t IN SELECT id, author FROM progressdb.threads WHERE deleted_ts IS NULL ORDER BY id LOOP
        doc := progressdb.list_members(t.id);
        IF doc ->> 'thread' IS DISTINCT FROM t.id
           OR NOT doc -> 'members' @> jsonb_build_array(jsonb_build_object('user', t.author, 'role', 'owner'))
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(doc -> 'members') m
                       WHERE m ->> 'role' = 'owner' AND m ->> 'user' <> t.author) THEN
            RAISE EXCEPTION 'list_members(%): expected % as the owner, got %', t.id, t.author, doc;
        END IF;
        -- and the owner may list them too
        PERFORM progressdb.list_members(t.id, t.author);
    END LOOP;
END
$$;

-- The owner adds a member; the member posts, reads and marks read.
DO $$
DECLARE
    doc jsonb;
    msg jsonb;
    member jsonb;
BEGIN
    doc := progressdb.add_member('general', 'newbie', 'member', 'alice');
    doc := progressdb.list_members('general', 'alice');
    SELECT m INTO member FROM jsonb_array_elements(doc -> 'members') m WHERE m ->> 'user' = 'newbie';
    IF member IS NULL OR member ->> 'role' IS DISTINCT FROM 'member'
       OR member ->> 'added_by' IS DISTINCT FROM 'alice' OR member ->> 'thread' IS DISTINCT FROM 'general'
       OR member -> 'joined_ts' IS NULL THEN
        RAISE EXCEPTION 'add_member: newbie not listed as a member added by alice: %', doc;
    END IF;

    msg := progressdb.post_message('general', 'newbie', '{"text":"hi"}', actor => 'newbie');
    IF msg ->> 'author' IS DISTINCT FROM 'newbie' OR msg -> 'body' IS DISTINCT FROM '{"text":"hi"}'::jsonb THEN
        RAISE EXCEPTION 'post_message as a new member: unexpected %', msg;
    END IF;
    -- a member reads the thread and its old messages
    PERFORM progressdb.get_thread('general', 'newbie');
    doc := progressdb.list_messages('general', 1000, actor => 'newbie');
    IF doc -> 'messages' -> -1 ->> 'id' IS DISTINCT FROM msg ->> 'id' THEN
        RAISE EXCEPTION 'list_messages as the new member: the new message is not the newest: %', doc;
    END IF;

    doc := progressdb.mark_read('general', NULL, 'newbie');
    IF doc ->> 'thread' IS DISTINCT FROM 'general' OR doc ->> 'user' IS DISTINCT FROM 'newbie'
       OR (doc ->> 'unread')::bigint IS DISTINCT FROM 0 OR doc -> 'last_read' IS NULL THEN
        RAISE EXCEPTION 'mark_read(general, NULL, newbie): expected nothing unread, got %', doc;
    END IF;
    -- an old message as the read mark, by its old owner
    doc := progressdb.mark_read('general', (SELECT id FROM progressdb.messages
                                             WHERE thread = 'general' AND seq = 1), 'alice');
    IF doc ->> 'user' IS DISTINCT FROM 'alice' OR (doc ->> 'unread')::bigint < 1 THEN
        RAISE EXCEPTION 'mark_read(general, <first message>, alice): expected unread messages, got %', doc;
    END IF;

    PERFORM progressdb.remove_member('general', 'newbie', 'alice');
    doc := progressdb.list_members('general');
    IF doc -> 'members' @> '[{"user": "newbie"}]' THEN
        RAISE EXCEPTION 'remove_member: newbie still listed: %', doc;
    END IF;
END
$$;

-- The encrypted thread: old messages still decrypt, new ones are sealed.
DO $$
DECLARE
    msg jsonb;
BEGIN
    SELECT progressdb.get_message(id, 'dave') INTO msg
      FROM progressdb.messages WHERE thread = 'vault' AND seq = 1;
    IF msg -> 'body' IS DISTINCT FROM '{"text":"card ends 4444"}'::jsonb
       OR (msg ->> 'version')::int <> 3 THEN
        RAISE EXCEPTION 'vault: the first message does not decrypt to its last edit: %', msg;
    END IF;
    msg := progressdb.post_message('vault', 'dave', '{"text":"written by 0.2.0"}', actor => 'dave');
    msg := progressdb.edit_message(msg ->> 'id', '{"text":"edited by 0.2.0"}', 'dave');
    IF msg -> 'body' IS DISTINCT FROM '{"text":"edited by 0.2.0"}'::jsonb THEN
        RAISE EXCEPTION 'vault: a new message does not read back: %', msg;
    END IF;
    IF EXISTS (SELECT 1 FROM progressdb.messages WHERE thread = 'vault' AND body_enc IS NULL) THEN
        RAISE EXCEPTION 'vault: a message body is stored unencrypted';
    END IF;
END
$$;
