-- Threads: create, read, list, rename, metadata, soft delete.
-- Who may do what is decided by progressdb._authorize (members.sql): a
-- thread's members read it, admins rename it and set its metadata, owners
-- change its history setting and delete it. A NULL actor is the service.

-- Loads a live thread or fails with P0002, then checks that `actor` may do
-- `action` in it (42501).
CREATE FUNCTION progressdb._thread_for(thread_id text, actor text, action text DEFAULT 'read')
RETURNS progressdb.threads
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t progressdb.threads;
BEGIN
    SELECT * INTO t FROM progressdb.threads th WHERE th.id = progressdb._ident('thread id', thread_id);
    IF NOT FOUND OR t.deleted_ts IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('thread %s not found', thread_id);
    END IF;
    PERFORM progressdb._authorize(t, actor, action);
    RETURN t;
END
$$;

-- The Thread document (API.md), as `mem` sees it (NULL: the service, or a
-- caller that is not a member). Optional fields are omitted when empty.
-- last_message is the newest message the caller may see: one backward index
-- probe; unread counts only the unread range (members.sql). PL/pgSQL, so
-- its queries are planned once per session, not once per thread listed.
CREATE FUNCTION progressdb._thread_json(t progressdb.threads, mem progressdb.thread_members DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    doc jsonb := jsonb_build_object('id', t.id, 'title', t.title, 'author', t.author, 'slug', t.slug,
                                    'created_ts', t.created_ts, 'updated_ts', t.updated_ts,
                                    'metadata', t.metadata, 'history', t.history,
                                    'member_count', t.member_count, 'last_activity_ts', t.last_activity_ts);
    last progressdb.messages;
BEGIN
    IF t.deleted_ts IS NOT NULL THEN
        doc := doc || jsonb_build_object('deleted', true, 'deleted_ts', t.deleted_ts);
    END IF;
    IF t.encrypted THEN
        doc := doc || '{"encrypted": true}'::jsonb;
    END IF;
    IF t.retention IS NOT NULL THEN
        doc := doc || jsonb_build_object('retention',
                                         CASE WHEN t.retention = interval '0' THEN 'off' ELSE t.retention::text END);
    END IF;
    IF t.legal_hold THEN
        doc := doc || '{"legal_hold": true}'::jsonb;
    END IF;
    IF t.fork_of IS NULL THEN
        SELECT * INTO last FROM progressdb.messages m
         WHERE m.thread = t.id AND m.seq > progressdb._visible_after(t, mem) AND m.deleted_ts IS NULL
         ORDER BY m.seq DESC
         LIMIT 1;
    ELSE
        SELECT * INTO last FROM progressdb._fork_rows(t, progressdb._visible_after(t, mem),
                                                      9223372036854775807, 1, true, false);
        doc := doc || jsonb_build_object('forked_from',
                                         jsonb_build_object('thread', t.fork_of, 'message', t.fork_message));
    END IF;
    IF last.id IS NOT NULL THEN
        doc := doc || jsonb_build_object('last_message', progressdb._message_json(last));
    END IF;
    IF mem.user_id IS NOT NULL THEN
        doc := doc || jsonb_build_object('role', mem.role, 'unread', progressdb._unread(t, mem));
        IF mem.last_read IS NOT NULL THEN
            doc := doc || jsonb_build_object('last_read', mem.last_read);
        END IF;
    END IF;
    RETURN doc;
END
$$;

-- Thread metadata: a JSON object of at most 16 KiB (NULL stays NULL).
CREATE FUNCTION progressdb._metadata(metadata jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF metadata IS NOT NULL AND jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'metadata must be a JSON object';
    END IF;
    IF octet_length(metadata::text) > 16384 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'metadata must be at most 16 KiB';
    END IF;
    RETURN metadata;
END
$$;

-- History visibility setting: 'shared' or 'joined'.
CREATE FUNCTION progressdb._history(history text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF history IS NOT NULL AND history NOT IN ('shared', 'joined') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('history must be shared or joined (got %s)', history);
    END IF;
    RETURN history;
END
$$;

-- Inserts a thread row and makes its author the first owner. Returns NULL
-- when the id is taken (the caller decides whether that is a conflict or a
-- race it lost).
CREATE FUNCTION progressdb._insert_thread(thread_id text, author text, title text, encrypted boolean,
                                          first_seq bigint, metadata jsonb DEFAULT NULL,
                                          history text DEFAULT NULL)
RETURNS progressdb.threads
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
    now_ns bigint := progressdb.now_ns();
    real_title text := coalesce(title, 'New Thread #' || nextval('progressdb.thread_number_seq'));
    is_encrypted boolean := coalesce(encrypted, progressdb._encrypt_new_threads());
BEGIN
    INSERT INTO progressdb.threads AS th (id, title, slug, author, created_ts, updated_ts, encrypted, last_seq,
                                          metadata, history, last_activity_ts)
    VALUES (thread_id, real_title, progressdb.slugify(real_title, thread_id), author, now_ns, now_ns,
            is_encrypted, first_seq, coalesce(metadata, '{}'), coalesce(history, 'shared'), now_ns)
    ON CONFLICT ON CONSTRAINT threads_pkey DO NOTHING
    RETURNING th.* INTO t;
    IF t.id IS NULL THEN
        RETURN t;
    END IF;
    -- The creator joins before the first message (joined_seq 0).
    t.last_seq := 0;
    PERFORM progressdb._insert_member(t, author, 'owner', author);
    -- The data key is made only once the id is ours (no orphan keys).
    UPDATE progressdb.threads th
       SET dek_id = CASE WHEN is_encrypted THEN progressdb._create_dek(thread_id) END
     WHERE th.id = thread_id
    RETURNING th.* INTO t;
    RETURN t;
END
$$;

CREATE FUNCTION progressdb.create_thread(author text, title text DEFAULT NULL, id text DEFAULT NULL,
                                         encrypted boolean DEFAULT NULL, metadata jsonb DEFAULT NULL,
                                         history text DEFAULT 'shared')
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
    thread_id text := coalesce(create_thread.id, progressdb.new_id('thread'));
BEGIN
    author := progressdb._ident('author', author);
    thread_id := progressdb._ident('thread id', thread_id);
    IF title IS NOT NULL THEN
        title := progressdb._text('title', title, 512);
    END IF;
    metadata := progressdb._metadata(metadata);
    history := progressdb._history(history);
    PERFORM progressdb._acting(author);
    t := progressdb._insert_thread(thread_id, author, title, encrypted, 0, metadata, history);
    IF t.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '23505', MESSAGE = format('thread %s already exists', thread_id);
    END IF;
    RETURN progressdb._thread_json(t, progressdb._membership(t.id, author));
END
$$;

CREATE FUNCTION progressdb.get_thread(id text, actor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN progressdb._thread_json(progressdb._thread_for(get_thread.id, actor),
                                   progressdb._membership(get_thread.id, actor));
END
$$;

-- Threads newest activity first. For a user, the threads they are a member
-- of: their memberships (an index range scan on user_idx) each joined to its
-- thread, the page cut with a top-N sort of those; for the service, all
-- live threads, top-N sorted (last_activity_ts has no index: it would make
-- every append a non-HOT update; listing all threads is an admin's rare
-- call, appends are the hot path). The keyset cursor is (last_activity_ts,
-- id) of the `before` thread: `before_ts` is the value the client saw (so a
-- cursor thread that got a new message meanwhile does not restart the list);
-- without it the thread's current value is used.
CREATE FUNCTION progressdb.list_threads(actor text, title text DEFAULT NULL, slug text DEFAULT NULL,
                                        lim integer DEFAULT 100, before text DEFAULT NULL,
                                        metadata jsonb DEFAULT NULL, before_ts bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cursor_ts bigint := 9223372036854775807;
    cursor_id text := '';
    needle text := lower(list_threads.title);
    result jsonb;
BEGIN
    lim := progressdb._limit(lim);
    metadata := progressdb._metadata(metadata);
    IF before_ts IS NOT NULL AND before IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'before_ts needs before (the thread id it belongs to)';
    END IF;
    IF before IS NOT NULL THEN
        cursor_id := before;
        cursor_ts := before_ts;
        IF cursor_ts IS NULL THEN
            SELECT th.last_activity_ts INTO cursor_ts FROM progressdb.threads th WHERE th.id = before;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = format('before cursor %s is not a thread', before);
            END IF;
        END IF;
    END IF;
    IF actor IS NULL THEN
        SELECT coalesce(jsonb_agg(progressdb._thread_json(t) ORDER BY t.last_activity_ts DESC, t.id DESC), '[]')
          INTO result
          FROM (SELECT * FROM progressdb.threads th
                 WHERE th.deleted_ts IS NULL
                   -- title: case-insensitive substring, as the original's listing
                   AND (needle IS NULL OR strpos(lower(th.title), needle) > 0)
                   AND (list_threads.slug IS NULL OR th.slug = list_threads.slug)
                   AND (list_threads.metadata IS NULL OR th.metadata @> list_threads.metadata)
                   AND (th.last_activity_ts, th.id) < (cursor_ts, cursor_id)
                 ORDER BY th.last_activity_ts DESC, th.id DESC
                 LIMIT lim) t;
    ELSE
        SELECT coalesce(jsonb_agg(progressdb._thread_json(x.t, x.mem)
                                  ORDER BY (x.t).last_activity_ts DESC, (x.t).id DESC), '[]')
          INTO result
          FROM (SELECT th::progressdb.threads AS t, mm AS mem
                  FROM progressdb.thread_members mm
                  -- A lateral subquery that cannot be flattened (OFFSET 0)
                  -- fixes the plan: the user's memberships drive, each
                  -- thread is one primary-key probe. Left free, the planner
                  -- may scan every thread instead (measured before
                  -- last_activity_ts lost its index: ~45,000 buffers for a
                  -- user whose threads are quiet).
                 CROSS JOIN LATERAL (SELECT * FROM progressdb.threads t1 WHERE t1.id = mm.thread OFFSET 0) th
                 WHERE mm.user_id = actor
                   AND th.deleted_ts IS NULL
                   AND (needle IS NULL OR strpos(lower(th.title), needle) > 0)
                   AND (list_threads.slug IS NULL OR th.slug = list_threads.slug)
                   AND (list_threads.metadata IS NULL OR th.metadata @> list_threads.metadata)
                   AND (th.last_activity_ts, th.id) < (cursor_ts, cursor_id)
                 ORDER BY th.last_activity_ts DESC, th.id DESC
                 LIMIT lim) x;
    END IF;
    RETURN jsonb_build_object('threads', result);
END
$$;

-- Renames, sets metadata (replacing it), the history setting, retention
-- ('30 days', 'off' or 'default': see lifecycle.sql) and/or the legal hold;
-- NULL leaves a field unchanged. Retention and hold are the owners'.
CREATE FUNCTION progressdb.update_thread(id text, title text, actor text DEFAULT NULL,
                                         metadata jsonb DEFAULT NULL, history text DEFAULT NULL,
                                         retention text DEFAULT NULL, legal_hold boolean DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
    keep interval;
BEGIN
    IF title IS NULL AND metadata IS NULL AND history IS NULL AND retention IS NULL AND legal_hold IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'title, metadata, history, retention or legal_hold is required';
    END IF;
    IF retention IS NOT NULL AND lower(btrim(retention)) <> 'default' THEN
        keep := progressdb._retention(retention);
    END IF;
    IF title IS NOT NULL THEN
        title := progressdb._text('title', title, 512);
    END IF;
    metadata := progressdb._metadata(metadata);
    history := progressdb._history(history);
    t := progressdb._thread_for(update_thread.id, NULL);
    IF title IS NOT NULL OR metadata IS NOT NULL THEN
        PERFORM progressdb._authorize(t, actor, 'update');
    END IF;
    IF history IS NOT NULL THEN
        PERFORM progressdb._authorize(t, actor, 'history');
    END IF;
    IF retention IS NOT NULL OR legal_hold IS NOT NULL THEN
        PERFORM progressdb._authorize(t, actor, 'lifecycle');
    END IF;
    PERFORM progressdb._acting(actor);
    UPDATE progressdb.threads th
       SET title = coalesce(update_thread.title, th.title),
           slug = progressdb.slugify(coalesce(update_thread.title, th.title), th.id),
           metadata = coalesce(update_thread.metadata, th.metadata),
           history = coalesce(update_thread.history, th.history),
           retention = CASE WHEN update_thread.retention IS NULL THEN th.retention ELSE keep END,
           legal_hold = coalesce(update_thread.legal_hold, th.legal_hold),
           updated_ts = progressdb.now_ns()
     WHERE th.id = t.id
    RETURNING th.* INTO t;
    PERFORM progressdb._thread_event(t, 'thread.updated');
    RETURN progressdb._thread_json(t, progressdb._membership(t.id, actor));
END
$$;

CREATE FUNCTION progressdb.delete_thread(id text, actor text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
BEGIN
    t := progressdb._thread_for(delete_thread.id, actor, 'delete_thread');
    PERFORM progressdb._acting(actor);
    UPDATE progressdb.threads th SET deleted_ts = progressdb.now_ns() WHERE th.id = t.id
    RETURNING th.* INTO t;
    PERFORM progressdb._thread_event(t, 'thread.deleted');
END
$$;

CREATE FUNCTION progressdb.stats() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'threads', (SELECT count(*) FROM progressdb.threads WHERE deleted_ts IS NULL),
        'messages', (SELECT count(*) FROM progressdb.messages WHERE deleted_ts IS NULL))
$$;
