-- Export and import (API.md "Lifecycle"; README "Export and import").
--
-- An export is a stream of JSON records, one per line (NDJSON), version 1:
--
--   {"v":1,"type":"thread","id","title","author","created_ts","updated_ts","metadata",
--    "history","encrypted"(, "deleted_ts")(, "forked_from":{"thread","message"})
--    (, "retention")(, "legal_hold":true)}
--   {"v":1,"type":"member","thread","user","role","joined_ts","added_by"(, "last_read")}
--   {"v":1,"type":"message","thread","id","author","role","ts","updated_ts","version",
--    "body","reactions"(, "reply_to")(, "deleted_ts")(, "versions":[{"version","body","updated_ts"}])}
--   {"v":1,"type":"reaction","thread","message","identity","reaction"}   (export_user only)
--
-- A thread's records come together: its thread record, its member records
-- (by user), its message records in timeline order (then, in a user export,
-- that user's reactions to others' messages). Bodies are plaintext: an
-- encrypted thread is opened on export (by the service, or by a reader of
-- it) and sealed again under the importing thread's own key on import.
--
-- The export functions are plain SQL functions whose timeline part walks
-- the primary key in seq order, so a caller fetching from a cursor (the
-- gateway) receives the records as they are read: memory stays flat
-- whatever the thread's size. A fork's timeline spans threads and is read
-- in batches of 1,000 (_export_fork_rows; collected by PostgreSQL, spilling
-- to disk beyond work_mem).

-- The thread record.
CREATE FUNCTION progressdb._export_thread_record(t progressdb.threads) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('v', 1, 'type', 'thread', 'id', t.id, 'title', t.title, 'author', t.author,
                              'created_ts', t.created_ts, 'updated_ts', t.updated_ts, 'metadata', t.metadata,
                              'history', t.history, 'encrypted', t.encrypted)
        || CASE WHEN t.deleted_ts IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('deleted_ts', t.deleted_ts) END
        || CASE WHEN t.fork_of IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('forked_from',
                                        jsonb_build_object('thread', t.fork_of, 'message', t.fork_message)) END
        -- the thread's own lifecycle settings, as the thread document shows them
        || CASE WHEN t.retention IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('retention', CASE WHEN t.retention = interval '0' THEN 'off'
                                                          ELSE t.retention::text END) END
        || CASE WHEN t.legal_hold THEN '{"legal_hold": true}'::jsonb ELSE '{}'::jsonb END
$$;

-- A member record. Read state (last_read) only when `with_read_state`: for
-- the service, and for the member themselves (other members' read state is
-- not a reader's to take away).
CREATE FUNCTION progressdb._export_member_record(mem progressdb.thread_members, with_read_state boolean)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('v', 1, 'type', 'member', 'thread', mem.thread, 'user', mem.user_id,
                              'role', mem.role, 'joined_ts', mem.joined_ts, 'added_by', mem.added_by)
        || CASE WHEN with_read_state AND mem.last_read IS NOT NULL
                THEN jsonb_build_object('last_read', mem.last_read) ELSE '{}'::jsonb END
$$;

-- The message record of stored row `m` in the timeline of `thread_id` (m.thread
-- is the thread that stores the row: a fork's source for its shared prefix).
-- Bodies are opened as every reader opens them (_plain_body, crypto); the
-- earlier versions are those message_versions() lists.
CREATE FUNCTION progressdb._export_message_record(thread_id text, m progressdb.messages) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('v', 1, 'type', 'message', 'thread', thread_id, 'id', m.id, 'author', m.author,
                              'role', m.role, 'ts', m.ts, 'updated_ts', m.updated_ts, 'version', m.version,
                              'body', progressdb._plain_body(m), 'reactions', m.reactions)
        || CASE WHEN m.reply_to IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('reply_to', m.reply_to) END
        || CASE WHEN m.deleted_ts IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('deleted_ts', m.deleted_ts) END
        || coalesce((SELECT jsonb_build_object('versions', jsonb_agg(jsonb_build_object(
                                'version', v.version,
                                'body', CASE WHEN v.body_enc IS NULL THEN v.body
                                             ELSE progressdb._open(m.thread, m.id, v.version, v.body, v.body_enc) END,
                                'updated_ts', v.updated_ts) ORDER BY v.version))
                       FROM progressdb.message_versions v
                      WHERE v.thread = m.thread AND v.seq = m.seq AND v.version < m.version
                     HAVING count(*) > 0), '{}'::jsonb)
$$;

-- A fork's timeline above `vis`, oldest first, deleted messages included,
-- as the fork shows it (forks.sql), read in batches of 1,000.
CREATE FUNCTION progressdb._export_fork_rows(t progressdb.threads, vis bigint)
RETURNS SETOF progressdb.messages
LANGUAGE plpgsql STABLE AS $$
DECLARE
    lo bigint := vis;
    last bigint;
    m progressdb.messages;
BEGIN
    LOOP
        last := NULL;
        FOR m IN SELECT * FROM progressdb._fork_rows(t, lo, 9223372036854775807, 1000, false, true) LOOP
            RETURN NEXT m;
            last := m.seq;
        END LOOP;
        EXIT WHEN last IS NULL;
        lo := last;
    END LOOP;
END
$$;

-- One thread's records (see the top of this file). `actor` NULL is the
-- service; a user must be able to read the thread (_authorize, through
-- _thread_for: 404/403 before the first record) and gets what they may
-- read: with history 'joined' only the messages since they joined, and no
-- one's read state but their own. Deleted messages are included (with
-- deleted_ts), as include_deleted pages show them to readers. A fork's
-- timeline is exported as the fork shows it, shared prefix included, with
-- forked_from in the thread record.
--
-- The timeline is walked one row at a time (each step the next seq: one
-- primary-key probe, ORDER BY seq LIMIT 1), not read as one range: no
-- statistics, however stale (a thread just imported), can then turn it
-- into a bitmap scan and a sort of the whole thread before the first row.
-- (The walked rows pass through the CTE's tuplestore: memory is bounded by
-- work_mem, beyond it a temporary file.)
CREATE FUNCTION progressdb.export_thread(thread text, actor text DEFAULT NULL) RETURNS SETOF jsonb
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE t AS MATERIALIZED (
        SELECT x AS th, progressdb._authorize(x, export_thread.actor, 'read') AS vis
          FROM progressdb._thread_for(export_thread.thread, export_thread.actor, 'read') x),
    walk(m) AS (
        (SELECT first.row1 FROM t CROSS JOIN LATERAL (
             SELECT row1 FROM progressdb.messages row1
              WHERE row1.thread = (t.th).id AND row1.seq > t.vis
              ORDER BY row1.seq LIMIT 1) first
          WHERE (t.th).fork_of IS NULL)
        UNION ALL
        -- (row_n, not m: a bare m would name walk's column, not the table)
        (SELECT nxt.row_n FROM walk w CROSS JOIN LATERAL (
             SELECT row_n FROM progressdb.messages row_n
              WHERE row_n.thread = (w.m).thread AND row_n.seq > (w.m).seq
              ORDER BY row_n.seq LIMIT 1) nxt))
    SELECT progressdb._export_thread_record(t.th) FROM t
    UNION ALL
    SELECT mem.rec FROM t CROSS JOIN LATERAL (
        SELECT progressdb._export_member_record(mm, export_thread.actor IS NULL
                                                    OR mm.user_id = export_thread.actor) AS rec
          FROM progressdb.thread_members mm
         WHERE mm.thread = (t.th).id
         ORDER BY mm.user_id) mem
    UNION ALL
    SELECT progressdb._export_message_record((w.m).thread, w.m) FROM walk w
    UNION ALL
    SELECT progressdb._export_message_record((t.th).id, f)
      FROM t CROSS JOIN LATERAL progressdb._export_fork_rows(t.th, t.vis) f
     WHERE (t.th).fork_of IS NOT NULL
$$;

-- Everything of one user (service/admin; no actor): for every thread they
-- are a member of, or wrote or reacted in, that thread's record, their own
-- member record (when a member), their own messages (with versions,
-- reactions and deleted ones), and then one `reaction` record
-- {"v":1,"type":"reaction","thread","message","identity","reaction"} for
-- each of their reactions to someone else's message (others' messages are
-- not exported). Threads deleted since are included (with deleted_ts).
-- There is no index of messages by author: the messages table is read once.
CREATE FUNCTION progressdb.export_user("user" text) RETURNS SETOF jsonb
LANGUAGE sql STABLE AS $$
    WITH u AS MATERIALIZED (SELECT progressdb._ident('user', export_user."user") AS id),
    hits AS MATERIALIZED (
        SELECT m.thread, m.seq, m AS msg
          FROM progressdb.messages m, u
         WHERE m.author = u.id OR m.reactions ? u.id),
    mems AS MATERIALIZED (
        SELECT mm FROM progressdb.thread_members mm, u WHERE mm.user_id = u.id)
    SELECT r.rec FROM (
        SELECT th.id AS thread, 0 AS part, 0::bigint AS seq, progressdb._export_thread_record(th) AS rec
          FROM progressdb.threads th
         WHERE th.id IN (SELECT (mems.mm).thread FROM mems UNION SELECT hits.thread FROM hits)
        UNION ALL
        SELECT (mems.mm).thread, 1, 0, progressdb._export_member_record(mems.mm, true) FROM mems
        UNION ALL
        SELECT h.thread, 2, h.seq, progressdb._export_message_record(h.thread, h.msg)
          FROM hits h, u WHERE (h.msg).author = u.id
        UNION ALL
        SELECT h.thread, 3, h.seq,
               jsonb_build_object('v', 1, 'type', 'reaction', 'thread', h.thread, 'message', (h.msg).id,
                                  'identity', u.id, 'reaction', (h.msg).reactions ->> u.id)
          FROM hits h, u WHERE (h.msg).author <> u.id AND (h.msg).reactions ? u.id) r
    ORDER BY r.thread, r.part, r.seq
$$;

-- ---------------------------------------------------------------------------
-- Import: progressdb.import_record(rec) writes one record and returns
-- 'created' or 'exists' (or 'skipped', see the reaction record), so running
-- an import again skips what it already wrote. Service only (no actor). It
-- writes rows as they were -- ids, timestamps, versions, reactions, deleted
-- state -- like a restore: no events, no read-state moves.

-- A field of record `what` (for messages: 'message record', 'message record
-- versions[2]'): its JSON value checked for `kind` (string, integer,
-- boolean, object, array), NULL when absent or JSON null and not required;
-- else 22023 naming the field.
CREATE FUNCTION progressdb._import_field(what text, rec jsonb, field text, kind text, required boolean)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := rec -> field;
    bad boolean;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        IF required THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('%s: field "%s" is required', what, field);
        END IF;
        RETURN NULL;
    END IF;
    IF kind = 'integer' THEN
        bad := jsonb_typeof(v) <> 'number' OR v::text !~ '^-?[0-9]{1,19}$';
        bad := bad OR v::text::numeric NOT BETWEEN -9223372036854775808 AND 9223372036854775807;
    ELSE
        bad := jsonb_typeof(v) <> kind;
    END IF;
    IF bad THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('%s: field "%s" must be %s (got %s)', what, field,
                             CASE kind WHEN 'integer' THEN 'an integer' WHEN 'object' THEN 'a JSON object'
                                       WHEN 'array' THEN 'an array' ELSE 'a ' || kind END,
                             left(v::text, 64));
    END IF;
    RETURN v;
END
$$;

CREATE FUNCTION progressdb._import_str(what text, rec jsonb, field text, required boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT progressdb._import_field(what, rec, field, 'string', required) #>> '{}'
$$;

-- An integer field at least `min` (timestamps: 0, versions: 1).
CREATE FUNCTION progressdb._import_int(what text, rec jsonb, field text, required boolean, min bigint)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n bigint := (progressdb._import_field(what, rec, field, 'integer', required) #>> '{}')::bigint;
BEGIN
    IF n < min THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('%s: field "%s" must be at least %s (got %s)', what, field, min, n);
    END IF;
    RETURN n;
END
$$;

-- An identifier field (thread, message and user ids: 1-128 characters).
CREATE FUNCTION progressdb._import_ident(what text, rec jsonb, field text, required boolean) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s text := progressdb._import_str(what, rec, field, required);
BEGIN
    IF s IS NOT NULL AND (length(s) < 1 OR length(s) > 128) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('%s: field "%s" must be 1 to 128 characters', what, field);
    END IF;
    RETURN s;
END
$$;

-- The rows of message id `msg_id` (one, or none), found by messages_id_idx
-- alone. (With the thread in the same WHERE clause, a planner without
-- statistics of a growing table -- an import -- may AND in the thread's
-- whole primary-key range, one scan of the thread per record.) The
-- subquery is not flattened (OFFSET 0), so the caller's thread test stays
-- outside it.
CREATE FUNCTION progressdb._import_rows_of(msg_id text) RETURNS SETOF progressdb.messages
LANGUAGE sql STABLE AS $$
    SELECT * FROM (SELECT * FROM progressdb.messages m WHERE m.id = msg_id OFFSET 0) x
$$;

-- The thread of a member, message or reaction record, locked (member
-- counts, seq allocation); P0002 when its thread record was not imported.
CREATE FUNCTION progressdb._import_thread_row(thread_id text) RETURNS progressdb.threads
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
BEGIN
    SELECT * INTO t FROM progressdb.threads th WHERE th.id = thread_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = format('thread %s not found: import its thread record first', thread_id);
    END IF;
    RETURN t;
END
$$;

-- A thread record: the thread with its id, title, author, times, metadata,
-- history, encryption and deleted state, unless a thread with that id
-- exists. Its author becomes its owner as on creation (joined at
-- created_ts); the author's member record, when it follows, replaces that
-- row. An encrypted thread gets a data key of its own. forked_from is
-- informational: the imported thread stands alone (the export holds its
-- whole timeline).
CREATE FUNCTION progressdb._import_thread(rec jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    what constant text := 'thread record';
    tid text := progressdb._import_ident(what, rec, 'id', true);
    t_author text := progressdb._import_ident(what, rec, 'author', true);
    t_title text := progressdb._import_str(what, rec, 'title', false);
    created bigint := progressdb._import_int(what, rec, 'created_ts', true, 0);
    updated bigint := coalesce(progressdb._import_int(what, rec, 'updated_ts', false, 0), created);
    deleted bigint := progressdb._import_int(what, rec, 'deleted_ts', false, 0);
    meta jsonb := progressdb._import_field(what, rec, 'metadata', 'object', false);
    hist text := coalesce(progressdb._import_str(what, rec, 'history', false), 'shared');
    enc boolean := coalesce((progressdb._import_field(what, rec, 'encrypted', 'boolean', false))::boolean, false);
    ret_text text := progressdb._import_str(what, rec, 'retention', false);
    ret interval;
    hold boolean := coalesce((progressdb._import_field(what, rec, 'legal_hold', 'boolean', false))::boolean, false);
    t progressdb.threads;
BEGIN
    IF ret_text IS NOT NULL THEN
        ret := progressdb._retention(ret_text);
    END IF;
    PERFORM progressdb._import_field(what, rec, 'forked_from', 'object', false);
    IF t_title IS NOT NULL THEN
        t_title := progressdb._text('title', t_title, 512);
    END IF;
    meta := coalesce(progressdb._metadata(meta), '{}');
    hist := progressdb._history(hist);
    IF EXISTS (SELECT 1 FROM progressdb.threads th WHERE th.id = tid) THEN
        RETURN 'exists';
    END IF;
    t_title := coalesce(t_title, 'New Thread #' || nextval('progressdb.thread_number_seq'));
    INSERT INTO progressdb.threads AS th (id, title, slug, author, created_ts, updated_ts, deleted_ts, encrypted,
                                          last_seq, metadata, history, member_count, last_activity_ts,
                                          retention, legal_hold)
    VALUES (tid, t_title, progressdb.slugify(t_title, tid), t_author, created, updated, deleted, enc,
            0, meta, hist, 1, created, ret, hold)
    ON CONFLICT ON CONSTRAINT threads_pkey DO NOTHING
    RETURNING th.* INTO t;
    IF t.id IS NULL THEN
        RETURN 'exists';   -- a concurrent import made it
    END IF;
    INSERT INTO progressdb.thread_members (thread, user_id, role, joined_ts, joined_seq, added_by, last_read_seq)
    VALUES (tid, t_author, 'owner', created, 0, t_author, 0);
    IF enc THEN
        UPDATE progressdb.threads th SET dek_id = progressdb._create_dek(tid) WHERE th.id = tid;
    END IF;
    RETURN 'created';
END
$$;

-- A member record: the member with their role, joined_ts, added_by and read
-- state, unless they are a member already (the row the thread record made
-- for its author is replaced). Where they joined in the timeline (history
-- 'joined', unread counts) follows from joined_ts: the messages posted
-- before it; messages imported later move it (_import_message).
CREATE FUNCTION progressdb._import_member(rec jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    what constant text := 'member record';
    tid text := progressdb._import_ident(what, rec, 'thread', true);
    usr text := progressdb._import_ident(what, rec, 'user', true);
    new_role text := progressdb._import_str(what, rec, 'role', true);
    joined bigint := progressdb._import_int(what, rec, 'joined_ts', true, 0);
    by_user text := progressdb._import_ident(what, rec, 'added_by', false);
    read_id text := progressdb._import_ident(what, rec, 'last_read', false);
    t progressdb.threads;
    old progressdb.thread_members;
    js bigint;
    rs bigint;
BEGIN
    new_role := progressdb._member_role(new_role);
    PERFORM progressdb._share_user(usr);
    t := progressdb._import_thread_row(tid);
    SELECT * INTO old FROM progressdb.thread_members mm WHERE mm.thread = tid AND mm.user_id = usr;
    IF FOUND AND (old.role = new_role AND old.joined_ts = joined AND old.added_by IS NOT DISTINCT FROM by_user
                  AND old.last_read IS NOT DISTINCT FROM read_id
                  OR NOT (usr = t.author AND old.role = 'owner' AND old.joined_ts = t.created_ts
                          AND old.added_by = t.author AND old.joined_seq = 0 AND old.last_read IS NULL)) THEN
        RETURN 'exists';
    END IF;
    -- The seq they joined after, and the read position (never before it).
    SELECT coalesce(max(m.seq), 0) INTO js FROM (
        SELECT mm.seq FROM progressdb.messages mm WHERE mm.thread = tid AND mm.ts <= joined
         ORDER BY mm.seq DESC LIMIT 1) m;
    SELECT greatest(js, coalesce(max(mm.seq), 0)) INTO rs
      FROM progressdb._import_rows_of(read_id) mm WHERE mm.thread = tid;
    IF old.user_id IS NOT NULL THEN
        UPDATE progressdb.thread_members mm
           SET role = new_role, joined_ts = joined, joined_seq = js, added_by = by_user,
               last_read_seq = rs, last_read = read_id
         WHERE mm.thread = tid AND mm.user_id = usr;
    ELSE
        INSERT INTO progressdb.thread_members (thread, user_id, role, joined_ts, joined_seq, added_by,
                                               last_read_seq, last_read)
        VALUES (tid, usr, new_role, joined, js, by_user, rs, read_id);
        UPDATE progressdb.threads th SET member_count = th.member_count + 1 WHERE th.id = tid;
    END IF;
    RETURN 'created';
END
$$;

-- A message record: appended to its thread's timeline (the next seq) with
-- its id, author, role, times, version, body, earlier versions, reply_to,
-- reactions and deleted state, unless the thread has a message with that
-- id. In an encrypted thread the body and every earlier version are sealed
-- under the thread's key (each for its version, as edits seal them).
-- reply_to is kept as given (a partial export may not hold the parent).
CREATE FUNCTION progressdb._import_message(rec jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    what constant text := 'message record';
    tid text := progressdb._import_ident(what, rec, 'thread', true);
    mid text := progressdb._import_ident(what, rec, 'id', true);
    msg_author text := progressdb._import_ident(what, rec, 'author', true);
    msg_role text := coalesce(progressdb._import_str(what, rec, 'role', false), 'user');
    msg_ts bigint := progressdb._import_int(what, rec, 'ts', true, 0);
    upd bigint := coalesce(progressdb._import_int(what, rec, 'updated_ts', false, 0), msg_ts);
    ver bigint;
    msg_body jsonb;
    msg_reactions jsonb := coalesce(progressdb._import_field(what, rec, 'reactions', 'object', false), '{}');
    reply text := progressdb._import_ident(what, rec, 'reply_to', false);
    msg_deleted bigint := progressdb._import_int(what, rec, 'deleted_ts', false, 0);
    vers jsonb := coalesce(progressdb._import_field(what, rec, 'versions', 'array', false), '[]');
    e record;
    vw text;
    prev integer := 0;
    t progressdb.threads;
    s bigint;
    plain jsonb;
    sealed text;
BEGIN
    ver := progressdb._import_int(what, rec, 'version', false, 1);
    IF ver > 2147483647 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('%s: field "version" is too large', what);
    END IF;
    ver := coalesce(ver, 1);
    -- Any JSON value but null is a body (as post_message takes it).
    msg_body := rec -> 'body';
    IF msg_body IS NULL OR jsonb_typeof(msg_body) = 'null' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('%s: field "body" is required and must not be JSON null', what);
    END IF;
    PERFORM progressdb._check_body(format('%s: field "body"', what), msg_body);
    msg_role := progressdb._text('role', msg_role, 64);
    IF EXISTS (SELECT 1 FROM jsonb_each(msg_reactions) r
                WHERE jsonb_typeof(r.value) <> 'string' OR length(r.key) NOT BETWEEN 1 AND 128
                   OR length(r.value #>> '{}') NOT BETWEEN 1 AND 64) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('%s: field "reactions" must map identities (1-128 characters) to reactions (strings of 1-64 characters)', what);
    END IF;
    FOR e IN SELECT x.value AS v, x.ordinality - 1 AS i FROM jsonb_array_elements(vers) WITH ORDINALITY x LOOP
        vw := format('%s versions[%s]', what, e.i);
        IF jsonb_typeof(e.v) <> 'object' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('%s: must be a JSON object', vw);
        END IF;
        IF progressdb._import_int(vw, e.v, 'version', true, prev + 1) >= ver THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('%s: field "version" must be below the message''s version %s (earlier versions, oldest first)', vw, ver);
        END IF;
        prev := (e.v ->> 'version')::integer;
        PERFORM progressdb._import_int(vw, e.v, 'updated_ts', true, 0);
        IF e.v -> 'body' IS NULL OR jsonb_typeof(e.v -> 'body') = 'null' THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('%s: field "body" is required and must not be JSON null', vw);
        END IF;
        PERFORM progressdb._check_body(format('%s: field "body"', vw), e.v -> 'body');
    END LOOP;

    PERFORM progressdb._share_user(msg_author);   -- not while the author is being erased (lifecycle.sql)
    t := progressdb._import_thread_row(tid);
    IF EXISTS (SELECT 1 FROM progressdb._import_rows_of(mid) m WHERE m.thread = tid) THEN
        RETURN 'exists';
    END IF;
    s := t.last_seq + 1;
    UPDATE progressdb.threads th SET last_seq = s, last_activity_ts = greatest(th.last_activity_ts, msg_ts)
     WHERE th.id = tid;
    plain := msg_body;
    IF t.dek_id IS NOT NULL THEN
        SELECT x.body, x.body_enc INTO plain, sealed FROM progressdb._seal(tid, mid, ver::integer, t.dek_id, msg_body) x;
    END IF;
    INSERT INTO progressdb.messages (thread, seq, id, author, role, ts, body, body_enc, reply_to, reactions,
                                     version, updated_ts, deleted_ts, search_vec)
    VALUES (tid, s, mid, msg_author, msg_role, msg_ts, plain, sealed, reply, msg_reactions, ver, upd, msg_deleted,
            progressdb._search_vector(tid, t.dek_id, msg_body));
    FOR e IN SELECT x.value AS v FROM jsonb_array_elements(vers) x LOOP
        plain := e.v -> 'body';
        sealed := NULL;
        IF t.dek_id IS NOT NULL THEN
            SELECT x.body, x.body_enc INTO plain, sealed
              FROM progressdb._seal(tid, mid, (e.v ->> 'version')::integer, t.dek_id, e.v -> 'body') x;
        END IF;
        INSERT INTO progressdb.message_versions (thread, seq, version, body, body_enc, updated_ts)
        VALUES (tid, s, (e.v ->> 'version')::integer, plain, sealed, (e.v ->> 'updated_ts')::bigint);
    END LOOP;
    -- Members who joined after this message was posted joined after its
    -- seq; a member whose read position is this message has read up to it.
    UPDATE progressdb.thread_members mm
       SET joined_seq = CASE WHEN mm.joined_ts >= msg_ts THEN s ELSE mm.joined_seq END,
           last_read_seq = greatest(mm.last_read_seq, s)
     WHERE mm.thread = tid
       AND ((mm.joined_ts >= msg_ts AND mm.joined_seq < s) OR (mm.last_read = mid AND mm.last_read_seq < s));
    RETURN 'created';
END
$$;

-- A reaction record (export_user): the identity's reaction on a message of
-- the thread, unless that identity has one there already ('exists'); when
-- the message is not in this database the record is 'skipped' (a user's
-- export holds only their own messages).
CREATE FUNCTION progressdb._import_reaction(rec jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    what constant text := 'reaction record';
    tid text := progressdb._import_ident(what, rec, 'thread', true);
    mid text := progressdb._import_ident(what, rec, 'message', true);
    who text := progressdb._import_ident(what, rec, 'identity', true);
    reaction text := progressdb._import_str(what, rec, 'reaction', true);
    m progressdb.messages;
BEGIN
    reaction := progressdb._text('reaction', reaction, 64);
    PERFORM progressdb._share_user(who);
    SELECT * INTO m FROM progressdb._import_rows_of(mid) mm WHERE mm.thread = tid;
    IF NOT FOUND THEN
        RETURN 'skipped';
    END IF;
    m := progressdb._lock_message(m);
    IF m.reactions ? who THEN
        RETURN 'exists';
    END IF;
    UPDATE progressdb.messages mm SET reactions = mm.reactions || jsonb_build_object(who, reaction)
     WHERE mm.thread = m.thread AND mm.seq = m.seq;
    RETURN 'created';
END
$$;

-- One export record (see the top of this file) → 'created', 'exists' (it
-- was there: nothing written) or 'skipped' (a reaction to a message that is
-- not here). A bad record is refused with 22023 naming the field, before
-- anything is written; an unknown version with 22023 "unsupported export
-- version". Service only: it takes no actor.
CREATE FUNCTION progressdb.import_record(rec jsonb) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF rec IS NULL OR jsonb_typeof(rec) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'an export record must be a JSON object';
    END IF;
    IF rec -> 'v' IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'record: field "v" (the export version) is required';
    END IF;
    IF rec -> 'v' <> '1'::jsonb THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('unsupported export version %s (this server reads version 1)', rec -> 'v');
    END IF;
    -- Like a restore, an import replays no events (events.sql, _acting).
    PERFORM set_config('progressdb.actor', '', true);
    CASE rec ->> 'type'
        WHEN 'thread' THEN RETURN progressdb._import_thread(rec);
        WHEN 'member' THEN RETURN progressdb._import_member(rec);
        WHEN 'message' THEN RETURN progressdb._import_message(rec);
        WHEN 'reaction' THEN RETURN progressdb._import_reaction(rec);
        ELSE
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('record: field "type" must be thread, member, message or reaction (got %s)',
                                 coalesce(left((rec -> 'type')::text, 64), 'nothing'));
    END CASE;
END
$$;
