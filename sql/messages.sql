-- Messages: append, timeline reads, get, edit, soft delete and restore.
--
-- Who may do what is decided by progressdb._authorize (members.sql), the
-- one place for it: members read and post, authors edit their own messages,
-- admins also delete and restore anyone's. With history 'joined' a member
-- does not see messages posted before they joined: those answer "not found"
-- in every read path. A NULL actor is a trusted service caller.

-- Loads a message (optionally only within one thread) or fails with P0002.
CREATE FUNCTION progressdb._message_for(msg_id text, in_thread text, allow_deleted boolean)
RETURNS progressdb.messages
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m progressdb.messages;
BEGIN
    SELECT * INTO m FROM progressdb.messages mm
     WHERE mm.id = progressdb._ident('message id', msg_id) AND (in_thread IS NULL OR mm.thread = in_thread)
     LIMIT 1;
    IF NOT FOUND OR (m.deleted_ts IS NOT NULL AND NOT allow_deleted)
       OR NOT EXISTS (SELECT 1 FROM progressdb.threads th
                       WHERE th.id = m.thread AND th.deleted_ts IS NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = CASE
            WHEN in_thread IS NULL THEN format('message %s not found', msg_id)
            ELSE format('message %s not found in thread %s', msg_id, in_thread) END;
    END IF;
    RETURN m;
END
$$;

-- Locks a message row for a change and returns its current contents. The
-- thread's storage lock is taken shared first (see compaction.sql), always
-- before the row lock, so a change and a compaction or key rotation of the
-- thread never wait for each other in a cycle.
CREATE FUNCTION progressdb._lock_message(m progressdb.messages) RETURNS progressdb.messages
LANGUAGE plpgsql AS $$
DECLARE
    locked progressdb.messages;
BEGIN
    PERFORM progressdb._share_thread_storage(m.thread);
    SELECT * INTO locked FROM progressdb.messages mm
     WHERE mm.thread = m.thread AND mm.seq = m.seq
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('message %s not found', m.id);
    END IF;
    RETURN locked;
END
$$;

-- Loads a message for `actor` to do `action` with (see _authorize): it must
-- be one they can see (else P0002, as if it did not exist), and the action
-- must be theirs to do (else 42501).
CREATE FUNCTION progressdb._message_access(msg_id text, in_thread text, allow_deleted boolean,
                                           actor text, action text)
RETURNS progressdb.messages
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m progressdb.messages;
    t progressdb.threads;
BEGIN
    -- A read through a fork (in_thread) of a message of its shared prefix:
    -- the message as the fork shows it, authorized by the fork.
    IF action = 'read' AND in_thread IS NOT NULL THEN
        SELECT * INTO t FROM progressdb.threads th WHERE th.id = in_thread AND th.deleted_ts IS NULL;
        IF t.fork_of IS NOT NULL AND NOT EXISTS (SELECT 1 FROM progressdb.messages mm
                                                  WHERE mm.id = msg_id AND mm.thread = in_thread) THEN
            m := progressdb._fork_message(t, progressdb._ident('message id', msg_id));
            IF m.id IS NULL OR (m.deleted_ts IS NOT NULL AND NOT allow_deleted)
               OR m.seq <= progressdb._authorize(t, actor, 'read') THEN
                RAISE EXCEPTION USING ERRCODE = 'P0002',
                    MESSAGE = format('message %s not found in thread %s', msg_id, in_thread);
            END IF;
            RETURN m;
        END IF;
    END IF;
    m := progressdb._message_for(msg_id, in_thread, allow_deleted);
    IF actor IS NOT NULL THEN
        SELECT * INTO t FROM progressdb.threads th WHERE th.id = m.thread;
        IF m.seq <= progressdb._authorize(t, actor, 'read') THEN
            RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = CASE
                WHEN in_thread IS NULL THEN format('message %s not found', msg_id)
                ELSE format('message %s not found in thread %s', msg_id, in_thread) END;
        END IF;
        IF action <> 'read' THEN
            PERFORM progressdb._authorize(t, actor, action, m.author);
        END IF;
    END IF;
    RETURN m;
END
$$;

-- Appends a message; returns its document as JSON text (post_message is the
-- jsonb face). The hot path: every step is a native check, one UPDATE of the
-- thread row and one INSERT; the document is rendered from the values in
-- hand (plaintext even in an encrypted thread), not read back.
-- A message body is nested at most 100 levels deep: bodies are parsed in Rust
-- (search text, sealing), whose JSON parser stops at 128 levels with an
-- internal error; refusing earlier makes it the client's error (22023).
CREATE FUNCTION progressdb._check_body(what text, body jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF progressdb._json_depth(body::text) > 100 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('%s is nested too deeply (more than 100 levels of arrays and objects)', what);
    END IF;
END
$$;

CREATE FUNCTION progressdb.post_message_text(thread text, author text, body jsonb, role text DEFAULT 'user',
                                             reply_to text DEFAULT NULL, actor text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    thread_id text := coalesce(post_message_text.thread, progressdb.new_id('thread'));
    msg_role text := coalesce(post_message_text.role, 'user');
    next_seq bigint;
    dek bigint;
    msg_id text := progressdb.new_id('msg');
    plain jsonb := body;
    sealed text;
    parent_thread text;
    now_ns bigint := progressdb.now_ns();
    t progressdb.threads;
BEGIN
    author := progressdb._ident('author', author);
    IF actor IS NOT NULL AND actor <> author THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('user %s may not post as %s', actor, author);
    END IF;
    PERFORM progressdb._acting(author);
    -- An erasure of the author waits for this post, or this post for it (lifecycle.sql).
    PERFORM progressdb._share_user(author);
    thread_id := progressdb._ident('thread id', thread_id);
    IF body IS NULL OR jsonb_typeof(body) = 'null' THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'body is required and must not be JSON null';
    END IF;
    PERFORM progressdb._check_body('body', body);
    msg_role := progressdb._text('role', msg_role, 64);

    -- Take the next seq of the live thread. The thread row's lock, held until
    -- commit, gives concurrent appends to one thread distinct, gap-free seqs,
    -- while appends to other threads go on in parallel.
    -- The same update records the thread's activity (inbox order).
    FOR attempt IN 1..2 LOOP
        UPDATE progressdb.threads th SET last_seq = th.last_seq + 1, last_activity_ts = now_ns
         WHERE th.id = thread_id AND th.deleted_ts IS NULL
        RETURNING th.* INTO t;
        EXIT WHEN FOUND OR attempt = 2;
        -- No live thread: create it, owned by the author. When that loses a
        -- race with a concurrent creator, take a seq in the winner's thread.
        t := progressdb._insert_thread(thread_id, author, NULL, NULL, 1);
        EXIT WHEN t.id IS NOT NULL;
    END LOOP;
    IF t.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('thread %s not found', thread_id);
    END IF;
    next_seq := t.last_seq;
    dek := t.dek_id;
    IF actor IS NOT NULL THEN
        PERFORM progressdb._authorize(t, actor, 'post');
    END IF;

    IF reply_to IS NOT NULL THEN
        SELECT mm.thread INTO parent_thread FROM progressdb.messages mm
         WHERE mm.id = post_message_text.reply_to AND mm.thread = thread_id LIMIT 1;
        IF parent_thread IS NULL AND t.fork_of IS NOT NULL THEN
            parent_thread := (progressdb._fork_message(t, post_message_text.reply_to)).thread;
        END IF;
        IF parent_thread IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('reply_to %s is not a message of thread %s', post_message_text.reply_to, thread_id);
        END IF;
    END IF;

    IF dek IS NOT NULL THEN
        SELECT s.body, s.body_enc INTO plain, sealed FROM progressdb._seal(thread_id, msg_id, 1, dek, body) s;
    END IF;
    -- The search entry is made from the plaintext in hand (search.sql).
    INSERT INTO progressdb.messages AS mm (thread, seq, id, author, role, ts, body, body_enc, reply_to, updated_ts,
                                           search_vec)
    VALUES (thread_id, next_seq, msg_id, author, msg_role, now_ns, plain, sealed, reply_to, now_ns,
            progressdb._search_vector(thread_id, dek, body));
    RETURN progressdb._render_message(msg_id, thread_id, author, msg_role, now_ns, body::text, NULL, 1, now_ns,
                                      reply_to, NULL, NULL);
END
$$;

CREATE FUNCTION progressdb.post_message(thread text, author text, body jsonb, role text DEFAULT 'user',
                                        reply_to text DEFAULT NULL, actor text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql AS $$
    SELECT progressdb.post_message_text(thread, author, body, role, reply_to, actor)::jsonb
$$;

CREATE FUNCTION progressdb.get_message(id text, actor text DEFAULT NULL, in_thread text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m progressdb.messages := progressdb._message_access(get_message.id, in_thread, false, actor, 'read');
BEGIN
    RETURN progressdb._message_json(m);
END
$$;

-- Timeline pages: keyset range scans on (thread, seq), never OFFSET. Plain SQL
-- functions so the planner inlines them into the caller's query.
CREATE FUNCTION progressdb._page_older(p_thread text, p_before bigint, p_lim integer,
                                       p_include_deleted boolean)
RETURNS SETOF progressdb.messages
LANGUAGE sql STABLE AS $$
    SELECT * FROM progressdb.messages m
     WHERE m.thread = p_thread AND m.seq < p_before
       AND (p_include_deleted OR m.deleted_ts IS NULL)
     ORDER BY m.seq DESC
     LIMIT p_lim
$$;

CREATE FUNCTION progressdb._page_newer(p_thread text, p_after bigint, p_before bigint, p_lim integer,
                                       p_include_deleted boolean)
RETURNS SETOF progressdb.messages
LANGUAGE sql STABLE AS $$
    SELECT * FROM progressdb.messages m
     WHERE m.thread = p_thread AND m.seq > p_after AND m.seq < p_before
       AND (p_include_deleted OR m.deleted_ts IS NULL)
     ORDER BY m.seq
     LIMIT p_lim
$$;

-- The seq a page cursor points at. Cursors of pages are opaque strings that
-- carry the position (src/render.rs): no lookup. A message id (the cursors
-- of 0.1) is looked up. Either must be a position the caller can see (above
-- `vis`) in this thread's timeline, else 22023.
CREATE FUNCTION progressdb._cursor_seq(t progressdb.threads, cursor text, what text, vis bigint DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s bigint := progressdb._cursor_position(t.id, cursor, what);
BEGIN
    IF s IS NULL THEN
        SELECT mm.seq INTO s FROM progressdb.messages mm WHERE mm.id = cursor AND mm.thread = t.id LIMIT 1;
    END IF;
    IF s IS NULL AND t.fork_of IS NOT NULL THEN
        s := (progressdb._fork_message(t, cursor)).seq;   -- a message of the shared prefix
    END IF;
    IF s IS NULL OR s <= vis OR s > t.last_seq THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('%s cursor %s is not a message of thread %s', what, cursor, t.id);
    END IF;
    RETURN s;
END
$$;

-- A timeline page as JSON text: the documents are rendered once (chunks) or
-- by the renderer (rows) and concatenated, never built as jsonb. The
-- gateway serves this text as it is; list_messages is the jsonb face.
--
-- The hot path -- a newest or history page of compacted timeline -- is one
-- thread lookup and one chunk probe, and the page document comes whole from
-- the chunk reader (src/chunk_codec.rs). Everything else goes to
-- _list_messages_rows below.
CREATE FUNCTION progressdb.list_messages_text(thread text, lim integer DEFAULT 100, before text DEFAULT NULL,
                                              after text DEFAULT NULL, include_deleted boolean DEFAULT false,
                                              actor text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t progressdb.threads;
    -- The caller sees seqs above vis only (history 'joined').
    vis bigint := 0;
    inc constant boolean := coalesce(include_deleted, false);
    b_seq bigint;
    page text;
BEGIN
    SELECT * INTO t FROM progressdb.threads th
     WHERE th.id = progressdb._ident('thread id', list_messages_text.thread);
    IF NOT FOUND OR t.deleted_ts IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('thread %s not found', list_messages_text.thread);
    END IF;
    IF actor IS NOT NULL THEN
        vis := progressdb._authorize(t, actor, 'read');
    END IF;
    lim := progressdb._limit(lim);
    IF before IS NULL THEN
        b_seq := t.last_seq + 1;
    ELSE
        b_seq := progressdb._cursor_position(t.id, before, 'before');
        IF b_seq IS NULL OR b_seq <= vis OR b_seq > t.last_seq THEN
            b_seq := progressdb._cursor_seq(t, before, 'before', vis);   -- a message id, or an error
        END IF;
    END IF;
    IF t.fork_of IS NOT NULL THEN
        -- A fork's timeline spans threads (forks.sql): read row by row.
        RETURN progressdb._fork_page(t, lim, b_seq, before IS NOT NULL, after, inc, vis);
    END IF;
    IF after IS NULL THEN
        -- The chunks holding the lim + 1 seqs below b_seq, and the one
        -- starting at b_seq (whether anything newer shows).
        page := progressdb._chunk_page_doc(t.id, b_seq, lim, inc, vis, before IS NULL,
            ARRAY(SELECT ch.packed FROM progressdb.message_chunks ch
                   WHERE ch.thread = t.id AND ch.first_seq <= b_seq
                     AND ch.first_seq > b_seq - (lim + 1) - progressdb._chunk_max_messages()
                     AND ch.last_seq >= b_seq - (lim + 1)
                   ORDER BY ch.first_seq DESC));
        IF page IS NOT NULL THEN
            RETURN page;
        END IF;
    END IF;
    RETURN progressdb._list_messages_rows(t, lim, b_seq, before IS NOT NULL, after, inc, vis);
END
$$;

-- The rest of list_messages_text: pages the chunks do not hold (the
-- uncompacted tail, `after` pages, pages thinned by deletions), read from
-- the messages table and rendered row by row. b_seq: the upper bound
-- (exclusive), from the `before` cursor when has_before_cursor.
CREATE FUNCTION progressdb._list_messages_rows(t progressdb.threads, lim integer, b_seq bigint,
                                               has_before_cursor boolean, after text, inc boolean,
                                               vis bigint)
RETURNS text
LANGUAGE plpgsql STABLE
-- Always the keyset plan (index range scan that stops after `lim` rows): with
-- generic plans the planner may otherwise fetch a whole thread and sort it.
-- JIT compiling a page's few rows would cost ~50 ms, so no JIT.
SET enable_sort = off
SET enable_bitmapscan = off
SET jit = off
AS $$
DECLARE
    a_seq bigint;
    p record;
    has_before boolean;
    has_after boolean;
    top bigint;          -- the newest compacted seq
    tail_docs text;
    tail_n integer;
    tail_lo bigint;
    tail_hi bigint;
BEGIN
    IF after IS NULL AND NOT has_before_cursor THEN
        -- The newest page of a thread whose newest messages are not
        -- compacted yet: those rows (the tail, usually the last minute or
        -- so), then the rest of the page from the chunks below them.
        -- (chunks tile the timeline: the last one ends highest; one probe)
        SELECT ch.last_seq INTO top FROM progressdb.message_chunks ch
         WHERE ch.thread = t.id ORDER BY ch.first_seq DESC LIMIT 1;
        IF top IS NOT NULL AND top < b_seq - 1 THEN
            SELECT string_agg(x.doc, ',' ORDER BY x.seq), count(*), min(x.seq), max(x.seq)
              INTO tail_docs, tail_n, tail_lo, tail_hi
              FROM (SELECT m.seq, progressdb._message_text(m) AS doc
                      FROM progressdb._page_newer(t.id, greatest(top, vis), b_seq, lim + 1, inc) m) x;
            IF tail_n <= lim THEN
                p := progressdb._page_text(t.id, top + 1, lim - tail_n, inc, vis);
                RETURN progressdb._render_page(t.id,
                    concat_ws(',', nullif(p.docs, ''), tail_docs), p.has_before, false,
                    coalesce(p.lo, tail_lo), coalesce(tail_hi, p.hi));
            END IF;
        END IF;
    END IF;
    IF after IS NULL THEN
        -- No cursor: the newest page; `before`: the page just older than it.
        p := progressdb._page_text(t.id, b_seq, lim, inc, vis);
        has_before := p.has_before;
        -- Nothing is newer than the newest page; after a history page there
        -- is at least its cursor's message, unless that was deleted since.
        has_after := has_before_cursor
                     AND coalesce(p.newer_seen,
                                  EXISTS (SELECT 1 FROM progressdb.messages mm
                                           WHERE mm.thread = t.id AND mm.seq >= b_seq
                                             AND (inc OR mm.deleted_ts IS NULL)));
    ELSE
        a_seq := greatest(progressdb._cursor_seq(t, after, 'after', vis), vis);
        SELECT string_agg(x.doc, ',' ORDER BY x.seq) FILTER (WHERE x.rn <= lim) AS docs,
               min(x.seq) AS lo, max(x.seq) FILTER (WHERE x.rn <= lim) AS hi, count(*) > lim AS more
          INTO p
          FROM (SELECT m.seq, progressdb._message_text(m) AS doc, row_number() OVER (ORDER BY m.seq) AS rn
                  FROM progressdb._page_newer(t.id, a_seq, b_seq, lim + 1, inc) m) x;
        has_after := p.more
                     OR (has_before_cursor
                         AND EXISTS (SELECT 1 FROM progressdb.messages mm
                                      WHERE mm.thread = t.id AND mm.seq >= b_seq
                                        AND (inc OR mm.deleted_ts IS NULL)));
        has_before := a_seq > vis
                      AND EXISTS (SELECT 1 FROM progressdb.messages mm
                                   WHERE mm.thread = t.id AND mm.seq <= a_seq AND mm.seq > vis
                                     AND (inc OR mm.deleted_ts IS NULL));
    END IF;
    RETURN progressdb._render_page(t.id, p.docs, has_before, has_after, p.lo, p.hi);
END
$$;

CREATE FUNCTION progressdb.list_messages(thread text, lim integer DEFAULT 100, before text DEFAULT NULL,
                                         after text DEFAULT NULL, include_deleted boolean DEFAULT false,
                                         actor text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT progressdb.list_messages_text(thread, lim, before, after, include_deleted, actor)::jsonb
$$;

CREATE FUNCTION progressdb.edit_message(id text, body jsonb, actor text DEFAULT NULL,
                                        in_thread text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    m progressdb.messages;
    dek bigint;
    plain jsonb := edit_message.body;
    sealed text;
BEGIN
    body := progressdb._body(body);
    PERFORM progressdb._check_body('body', body);
    m := progressdb._message_access(edit_message.id, in_thread, false, actor, 'edit');
    -- Lock the row first: an encrypted body is sealed for the version it will
    -- become, and the thread's data key is read after any rotation holding
    -- this row has committed.
    m := progressdb._lock_message(m);
    PERFORM progressdb._acting(actor);
    IF m.deleted_ts IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('message %s not found', edit_message.id);
    END IF;
    SELECT th.dek_id INTO dek FROM progressdb.threads th WHERE th.id = m.thread;
    IF dek IS NOT NULL THEN
        SELECT s.body, s.body_enc INTO plain, sealed
          FROM progressdb._seal(m.thread, m.id, m.version + 1, dek, edit_message.body) s;
    END IF;
    -- The versioning trigger keeps the previous content.
    UPDATE progressdb.messages mm SET body = plain, body_enc = sealed
     WHERE mm.thread = m.thread AND mm.seq = m.seq
    RETURNING mm.* INTO m;
    RETURN progressdb._message_json(m);
END
$$;

CREATE FUNCTION progressdb.delete_message(id text, actor text DEFAULT NULL, in_thread text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m progressdb.messages := progressdb._message_access(delete_message.id, in_thread, true, actor, 'delete');
BEGIN
    m := progressdb._lock_message(m);
    PERFORM progressdb._acting(actor);
    -- Deleting a deleted message changes nothing (idempotent, keeps the first deleted_ts).
    UPDATE progressdb.messages mm SET deleted_ts = progressdb.now_ns()
     WHERE mm.thread = m.thread AND mm.seq = m.seq AND mm.deleted_ts IS NULL;
END
$$;

CREATE FUNCTION progressdb.restore_message(id text, actor text DEFAULT NULL, in_thread text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    m progressdb.messages := progressdb._message_access(restore_message.id, in_thread, true, actor, 'restore');
BEGIN
    m := progressdb._lock_message(m);
    PERFORM progressdb._acting(actor);
    UPDATE progressdb.messages mm SET deleted_ts = NULL
     WHERE mm.thread = m.thread AND mm.seq = m.seq
    RETURNING mm.* INTO m;
    RETURN progressdb._message_json(m);
END
$$;
