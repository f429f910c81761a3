-- Threads: create, read, list, rename, soft delete.
-- Ownership (API.md): with a non-NULL actor, only the thread's author may read,
-- rename or delete it; a NULL actor is a trusted service caller.

-- Loads a live thread or fails with P0002; checks the actor owns it (42501).
CREATE FUNCTION progressdb._thread_for(thread_id text, actor text) RETURNS progressdb.threads
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t progressdb.threads;
BEGIN
    SELECT * INTO t FROM progressdb.threads th WHERE th.id = progressdb._ident('thread id', thread_id);
    IF NOT FOUND OR t.deleted_ts IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('thread %s not found', thread_id);
    END IF;
    IF actor IS NOT NULL AND t.author <> actor THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('user %s may not access thread %s', actor, thread_id);
    END IF;
    RETURN t;
END
$$;

-- Inserts a thread row. Returns NULL when the id is taken (the caller decides
-- whether that is a conflict or a race it lost).
CREATE FUNCTION progressdb._insert_thread(thread_id text, author text, title text, encrypted boolean,
                                          first_seq bigint)
RETURNS progressdb.threads
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
    now_ns bigint := progressdb.now_ns();
    real_title text := coalesce(title, 'New Thread #' || nextval('progressdb.thread_number_seq'));
    is_encrypted boolean := coalesce(encrypted, progressdb._encrypt_new_threads());
BEGIN
    INSERT INTO progressdb.threads AS th (id, title, slug, author, created_ts, updated_ts, encrypted, last_seq)
    VALUES (thread_id, real_title, progressdb.slugify(real_title, thread_id), author, now_ns, now_ns,
            is_encrypted, first_seq)
    ON CONFLICT ON CONSTRAINT threads_pkey DO NOTHING
    RETURNING th.* INTO t;
    IF t.id IS NOT NULL AND is_encrypted THEN
        -- The data key is made only once the id is ours (no orphan keys).
        UPDATE progressdb.threads th SET dek_id = progressdb._create_dek(thread_id)
         WHERE th.id = thread_id
        RETURNING th.* INTO t;
    END IF;
    RETURN t;
END
$$;

CREATE FUNCTION progressdb.create_thread(author text, title text DEFAULT NULL, id text DEFAULT NULL,
                                         encrypted boolean DEFAULT NULL)
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
    t := progressdb._insert_thread(thread_id, author, title, encrypted, 0);
    IF t.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '23505', MESSAGE = format('thread %s already exists', thread_id);
    END IF;
    RETURN progressdb._thread_json(t);
END
$$;

CREATE FUNCTION progressdb.get_thread(id text, actor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN progressdb._thread_json(progressdb._thread_for(get_thread.id, actor));
END
$$;

CREATE FUNCTION progressdb.list_threads(actor text, title text DEFAULT NULL, slug text DEFAULT NULL,
                                        lim integer DEFAULT 100, before text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cursor_ts bigint := 9223372036854775807;
    cursor_id text := '';
    result jsonb;
BEGIN
    lim := progressdb._limit(lim);
    IF before IS NOT NULL THEN
        -- Keyset cursor: threads are listed newest first by (created_ts, id).
        SELECT th.created_ts, th.id INTO cursor_ts, cursor_id
          FROM progressdb.threads th WHERE th.id = before;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('before cursor %s is not a thread', before);
        END IF;
    END IF;
    SELECT coalesce(jsonb_agg(progressdb._thread_json(t) ORDER BY t.created_ts DESC, t.id DESC), '[]')
      INTO result
      FROM (SELECT * FROM progressdb.threads th
             WHERE th.deleted_ts IS NULL
               AND (actor IS NULL OR th.author = actor)
               -- title: case-insensitive substring, as the original's listing
               AND (list_threads.title IS NULL
                    OR strpos(lower(th.title), lower(list_threads.title)) > 0)
               AND (list_threads.slug IS NULL OR th.slug = list_threads.slug)
               AND (before IS NULL OR (th.created_ts, th.id) < (cursor_ts, cursor_id))
             ORDER BY th.created_ts DESC, th.id DESC
             LIMIT lim) t;
    RETURN jsonb_build_object('threads', result);
END
$$;

CREATE FUNCTION progressdb.update_thread(id text, title text, actor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
BEGIN
    title := progressdb._text('title', title, 512);
    t := progressdb._thread_for(update_thread.id, actor);
    UPDATE progressdb.threads th
       SET title = update_thread.title,
           slug = progressdb.slugify(update_thread.title, th.id),
           updated_ts = progressdb.now_ns()
     WHERE th.id = t.id
    RETURNING th.* INTO t;
    RETURN progressdb._thread_json(t);
END
$$;

CREATE FUNCTION progressdb.delete_thread(id text, actor text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
BEGIN
    t := progressdb._thread_for(delete_thread.id, actor);
    UPDATE progressdb.threads th SET deleted_ts = progressdb.now_ns() WHERE th.id = t.id;
END
$$;

CREATE FUNCTION progressdb.stats() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'threads', (SELECT count(*) FROM progressdb.threads WHERE deleted_ts IS NULL),
        'messages', (SELECT count(*) FROM progressdb.messages WHERE deleted_ts IS NULL))
$$;
