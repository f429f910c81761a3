-- Data lifecycle: hard delete (purge) of messages and threads with every
-- copy, retention, legal hold, and erasure of a user (README, "Deleting and
-- exporting data").
--
-- Where a message's text lives, and how a purge reaches each copy:
--   messages            the row (body, body_enc, search_vec: the search entry is in-row)
--   message_versions    earlier versions                      deleted by (thread, seq)
--   message_chunks      timeline chunks                       re-cut by the delete trigger
--                                                             (compaction.sql); dropped with a thread
--   fork_snapshots      rows as forks saw them                deleted by (source, seq); the
--                                                             snapshot trigger is skipped while purging
--   feed, feed_queue    event payloads (entry, data)          emptied: events keep position, type,
--                                                             thread, seq, actor; data says {"purged":true}
--   thread events       `last_message` inside thread.* data   removed from the data
--   message_tokens      token counts (no text)                deleted by (thread, seq)
--   thread_keys         an encrypted thread's data keys       deleted with the thread (crypto-shredding)
-- Webhook deliveries are read from the feed, so their backlog is the feed's.
-- Dead row versions stay in the table files until VACUUM (README).

-- Posts and reactions of a user take this lock shared, erase_user takes it
-- exclusively (see there). PL/pgSQL, planned once per session.
CREATE FUNCTION progressdb._share_user(user_id text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('progressdb.user'), hashtext(user_id));
END
$$;

-- Purge runs with this set, transaction-locally: the copy-on-write trigger
-- of forks (forks.sql) must not save the rows being purged.
CREATE FUNCTION progressdb._purging(on_ boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('progressdb.purging', CASE WHEN on_ THEN 'on' ELSE 'off' END, true);
END
$$;

-- What a purged event's data becomes.
CREATE FUNCTION progressdb._purged_event_data() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT '{"purged":true}' $$;

-- A thread, with its fork descendants: their thread events may show a
-- message of its timeline as last_message.
CREATE FUNCTION progressdb._thread_and_forks(thread_id text) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE tree(id) AS (
        SELECT thread_id
        UNION
        SELECT f.id FROM progressdb.threads f JOIN tree ON f.fork_of = tree.id WHERE f.fork_of IS NOT NULL)
    SELECT id FROM tree
$$;

-- Removes messages `seqs` of a thread with every copy (see the top). The
-- caller has authorized and checked the hold. Returns the number of rows
-- removed.
CREATE FUNCTION progressdb._purge_messages(thread_id text, seqs bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    gone_seqs bigint[];
    gone_ids text[];
BEGIN
    IF coalesce(cardinality(seqs), 0) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM progressdb._purging(true);
    -- The storage lock first, as every change takes it (compaction.sql).
    PERFORM progressdb._share_thread_storage(thread_id);
    WITH gone AS (
        DELETE FROM progressdb.messages m WHERE m.thread = thread_id AND m.seq = ANY (seqs)
        RETURNING m.seq, m.id)
    SELECT array_agg(g.seq), array_agg(g.id) INTO gone_seqs, gone_ids FROM gone g;
    PERFORM progressdb._purging(false);
    IF gone_seqs IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM progressdb.message_versions v WHERE v.thread = thread_id AND v.seq = ANY (gone_seqs);
    DELETE FROM progressdb.message_tokens k WHERE k.thread = thread_id AND k.seq = ANY (gone_seqs);
    DELETE FROM progressdb.fork_snapshots s WHERE s.source = thread_id AND s.seq = ANY (gone_seqs);
    UPDATE progressdb.feed f SET data = progressdb._purged_event_data(), entry = NULL
     WHERE f.thread = thread_id AND f.seq = ANY (gone_seqs)
       AND (f.type LIKE 'message.%' OR f.type LIKE 'reaction.%')
       AND f.data IS DISTINCT FROM progressdb._purged_event_data();
    -- Thread events (thread.updated/deleted) carry the thread document, whose
    -- last_message may be one of them: in this thread or in a fork of it.
    UPDATE progressdb.feed f SET data = (f.data::jsonb - 'last_message')::text
     WHERE f.thread IN (SELECT progressdb._thread_and_forks(thread_id)) AND f.seq IS NULL
       AND f.type LIKE 'thread.%' AND f.data::jsonb -> 'last_message' ->> 'id' = ANY (gone_ids);
    -- The queue has no index (see schema.sql): one pass for both kinds.
    UPDATE progressdb.feed_queue f
       SET data = CASE WHEN f.type LIKE 'thread.%' THEN (f.data::jsonb - 'last_message')::text
                       ELSE progressdb._purged_event_data() END,
           entry = CASE WHEN f.type LIKE 'thread.%' THEN f.entry END
     WHERE (f.thread = thread_id AND f.seq = ANY (gone_seqs)
            AND (f.type LIKE 'message.%' OR f.type LIKE 'reaction.%'))
        OR (f.type LIKE 'thread.%' AND f.thread IN (SELECT progressdb._thread_and_forks(thread_id))
            AND f.data::jsonb -> 'last_message' ->> 'id' = ANY (gone_ids));
    RETURN cardinality(gone_seqs);
END
$$;

-- A thread row for a lifecycle change, locked: live or soft-deleted (a
-- deleted thread can still be purged), else P0002.
CREATE FUNCTION progressdb._thread_for_purge(thread_id text) RETURNS progressdb.threads
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
BEGIN
    SELECT * INTO t FROM progressdb.threads th WHERE th.id = progressdb._ident('thread id', thread_id) FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('thread %s not found', thread_id);
    END IF;
    RETURN t;
END
$$;

CREATE FUNCTION progressdb._refuse_if_held(t progressdb.threads) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF t.legal_hold THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('thread %s is under legal hold: nothing in it can be purged', t.id);
    END IF;
END
$$;

-- Hard delete of one message with every copy (thread admins and owners, or
-- the service). Soft-deleted messages too; a message of a fork's shared
-- prefix belongs to the source thread and is purged there. `in_thread`:
-- only a message of that thread (the thread-scoped HTTP route).
CREATE FUNCTION progressdb.purge_message(id text, actor text DEFAULT NULL, in_thread text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m progressdb.messages;
    t progressdb.threads;
BEGIN
    SELECT * INTO m FROM progressdb.messages mm WHERE mm.id = progressdb._ident('message id', purge_message.id)
       AND (in_thread IS NULL OR mm.thread = in_thread)
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('message %s not found', purge_message.id);
    END IF;
    SELECT * INTO t FROM progressdb.threads th WHERE th.id = m.thread;
    IF actor IS NOT NULL THEN
        -- A member who may not see the message gets "not found", as for reads.
        IF t.deleted_ts IS NOT NULL OR m.seq <= progressdb._authorize(t, actor, 'read') THEN
            RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('message %s not found', purge_message.id);
        END IF;
        PERFORM progressdb._authorize(t, actor, 'purge');
    END IF;
    PERFORM progressdb._refuse_if_held(t);
    PERFORM progressdb._purge_messages(m.thread, ARRAY[m.seq]);
END
$$;

-- Hard delete of a thread with everything in it (owners, or the service),
-- live or soft-deleted. Its data keys go in the same transaction. Forks of
-- it keep their own messages; their shared prefix is gone (fork_lo moves up
-- to fork_seq, so a later thread with the same id is never read as their
-- source). One transaction: its size is the thread's.
CREATE FUNCTION progressdb.purge_thread(id text, actor text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads := progressdb._thread_for_purge(purge_thread.id);
    gone_ids text[];
BEGIN
    IF actor IS NOT NULL THEN
        PERFORM progressdb._authorize(t, actor, 'purge_thread');
    END IF;
    PERFORM progressdb._refuse_if_held(t);
    -- Compaction and key rotation of this thread wait; chunks go first so the
    -- delete trigger has nothing to re-cut.
    PERFORM progressdb._lock_thread_storage(t.id);
    DELETE FROM progressdb.message_chunks c WHERE c.thread = t.id;
    DELETE FROM progressdb.compaction_state c WHERE c.thread = t.id;
    PERFORM progressdb._purging(true);
    WITH gone AS (DELETE FROM progressdb.messages m WHERE m.thread = t.id RETURNING m.id)
    SELECT array_agg(g.id) INTO gone_ids FROM gone g;
    PERFORM progressdb._purging(false);
    DELETE FROM progressdb.message_versions v WHERE v.thread = t.id;
    DELETE FROM progressdb.message_tokens k WHERE k.thread = t.id;
    DELETE FROM progressdb.fork_snapshots s WHERE s.source = t.id OR s.fork = t.id;
    -- No member.removed events: the thread's whole feed is emptied below.
    PERFORM set_config('progressdb.actor', '', true);
    DELETE FROM progressdb.thread_members mm WHERE mm.thread = t.id;
    DELETE FROM progressdb.thread_keys k WHERE k.thread = t.id;
    UPDATE progressdb.feed f SET data = progressdb._purged_event_data(), entry = NULL
     WHERE f.thread = t.id AND (f.data IS DISTINCT FROM progressdb._purged_event_data() OR f.entry IS NOT NULL);
    UPDATE progressdb.feed_queue f SET data = progressdb._purged_event_data(), entry = NULL
     WHERE f.thread = t.id;
    IF gone_ids IS NOT NULL THEN
        UPDATE progressdb.feed f SET data = (f.data::jsonb - 'last_message')::text
         WHERE f.thread IN (SELECT progressdb._thread_and_forks(t.id)) AND f.seq IS NULL
           AND f.type LIKE 'thread.%' AND f.data::jsonb -> 'last_message' ->> 'id' = ANY (gone_ids);
        UPDATE progressdb.feed_queue f SET data = (f.data::jsonb - 'last_message')::text
         WHERE f.thread IN (SELECT progressdb._thread_and_forks(t.id)) AND f.type LIKE 'thread.%'
           AND f.data::jsonb -> 'last_message' ->> 'id' = ANY (gone_ids);
    END IF;
    UPDATE progressdb.threads f SET fork_lo = f.fork_seq WHERE f.fork_of = t.id;
    DELETE FROM progressdb.threads th WHERE th.id = t.id;
    -- Subscribers learn that it went; the event names nothing but the id.
    PERFORM progressdb._acting(actor);
    INSERT INTO progressdb.feed_queue (thread, type, ts, actor, data)
    VALUES (t.id, 'thread.deleted', progressdb.now_ns(), actor,
            jsonb_build_object('id', t.id, 'deleted', true, 'purged', true)::text);
END
$$;

-- A retention setting: an interval ('30 days'), 'off' (kept forever, even
-- when the server default is on; stored as a zero interval) or 'default'
-- (the server's progressdb.retention; stored as NULL). Returns the value to
-- store; '' = "unchanged" is NULL handled by the caller.
CREATE FUNCTION progressdb._retention(setting text) RETURNS interval
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v interval;
BEGIN
    IF lower(btrim(setting)) IN ('off', 'forever', 'none') THEN
        RETURN interval '0';
    END IF;
    BEGIN
        v := setting::interval;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('retention must be an interval such as ''30 days'', ''off'' or ''default'' (got %s)',
                             left(setting, 64));
    END;
    IF extract(epoch FROM v) <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('retention must be a positive interval, ''off'' or ''default'' (got %s)', left(setting, 64));
    END IF;
    RETURN v;
END
$$;

-- A server setting holding an interval, as nanoseconds (NULL: off).
CREATE FUNCTION progressdb._interval_setting_ns(name text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    raw text := lower(btrim(coalesce(current_setting(name, true), '')));
    v interval;
BEGIN
    IF raw IN ('', 'off', 'forever', 'none', '0') THEN
        RETURN NULL;
    END IF;
    BEGIN
        v := raw::interval;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'progressdb: % = % is not an interval; treated as off', name, raw;
        RETURN NULL;
    END;
    IF extract(epoch FROM v) <= 0 THEN
        RETURN NULL;
    END IF;
    RETURN (extract(epoch FROM v) * 1e9)::bigint;
END
$$;

-- One retention round (the background worker calls it repeatedly, one
-- short transaction each): purges at most max_messages messages, of
--  1. soft-deleted threads and messages older than progressdb.purge_deleted_after;
--  2. threads whose retention (their own, else progressdb.retention) has
--     passed for their oldest messages, scanning at most max_threads threads
--     in id order from `from_thread` on (the worker passes back `next`).
-- Threads under legal hold are skipped. Appends are never blocked: purging
-- messages locks only their rows; a deleted thread takes no appends.
-- Returns {"messages","deleted","threads","next"} (next NULL: the scan of
-- step 2 went round).
CREATE FUNCTION progressdb.apply_retention(max_messages integer DEFAULT 500, max_threads integer DEFAULT 200,
                                           from_thread text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    now_ns constant bigint := progressdb.now_ns();
    deleted_ns constant bigint := progressdb._interval_setting_ns('progressdb.purge_deleted_after');
    default_ns constant bigint := progressdb._interval_setting_ns('progressdb.retention');
    budget integer := max_messages;
    n_deleted bigint := 0;
    n_aged bigint := 0;
    n_threads bigint := 0;
    next_thread text;
    r record;
    seqs bigint[];
    keep_ns bigint;
    scanned integer := 0;
BEGIN
    IF max_messages IS NULL OR max_messages < 1 OR max_threads IS NULL OR max_threads < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'max_messages and max_threads must be positive';
    END IF;
    IF deleted_ns IS NOT NULL THEN
        -- A deleted thread at a time (its purge is one transaction).
        FOR r IN SELECT th.id FROM progressdb.threads th
                  WHERE th.deleted_ts < now_ns - deleted_ns AND NOT th.legal_hold
                  ORDER BY th.deleted_ts LIMIT 1 FOR UPDATE SKIP LOCKED
        LOOP
            PERFORM progressdb.purge_thread(r.id);
            n_threads := n_threads + 1;
            budget := budget - 1;
        END LOOP;
        -- Deleted messages: found through their partial index (schema.sql).
        FOR r IN SELECT m.thread, array_agg(m.seq) AS seqs
                   FROM (SELECT mm.thread, mm.seq FROM progressdb.messages mm
                          WHERE mm.deleted_ts IS NOT NULL AND mm.deleted_ts < now_ns - deleted_ns
                          LIMIT budget) m
                   JOIN progressdb.threads th ON th.id = m.thread AND NOT th.legal_hold
                  GROUP BY m.thread
        LOOP
            n_deleted := n_deleted + progressdb._purge_messages(r.thread, r.seqs);
        END LOOP;
        budget := budget - n_deleted::integer;
    END IF;
    IF budget > 0 AND (default_ns IS NOT NULL OR EXISTS (SELECT 1 FROM progressdb.threads th
                                                          WHERE th.retention IS NOT NULL)) THEN
        FOR r IN SELECT th.id, th.retention FROM progressdb.threads th
                  WHERE th.id >= coalesce(from_thread, '') AND NOT th.legal_hold
                    AND (default_ns IS NOT NULL OR th.retention IS NOT NULL)
                  ORDER BY th.id LIMIT max_threads
        LOOP
            scanned := scanned + 1;
            next_thread := r.id;
            keep_ns := CASE WHEN r.retention IS NULL THEN default_ns
                            ELSE (extract(epoch FROM r.retention) * 1e9)::bigint END;
            CONTINUE WHEN keep_ns IS NULL OR keep_ns <= 0;
            -- The oldest messages first (seq order is time order).
            SELECT array_agg(x.seq) INTO seqs
              FROM (SELECT m.seq, m.ts FROM progressdb.messages m WHERE m.thread = r.id
                     ORDER BY m.seq LIMIT budget) x
             WHERE x.ts < now_ns - keep_ns;
            IF seqs IS NOT NULL THEN
                n_aged := n_aged + progressdb._purge_messages(r.id, seqs);
                budget := max_messages - (n_threads + n_deleted + n_aged)::integer;
                EXIT WHEN budget <= 0;   -- next call goes on from this thread
            END IF;
        END LOOP;
        IF scanned < max_threads AND budget > 0 THEN
            next_thread := NULL;   -- went round
        END IF;
    END IF;
    RETURN jsonb_build_object('messages', n_aged, 'deleted', n_deleted, 'threads', n_threads, 'next', next_thread);
END
$$;

-- Erases a user (service/admin): purges their messages with every copy,
-- removes their reactions and memberships; threads they alone belonged to
-- are purged (counted in `threads`; their messages of them in `messages`,
-- `memberships` counts those removed from threads that remain); a thread they owned passes to its longest-standing admin, else
-- member, else reader. Threads under legal hold are counted in `held` and
-- not touched. Idempotent: a second run finds nothing.
--
-- Safe while the user is posting: posts and reactions of a user take a
-- shared lock on the user (messages.sql, reactions.sql), this takes it
-- exclusively first. So every post of theirs either committed before (and is
-- found and purged here) or starts after this commits.
CREATE FUNCTION progressdb.erase_user("user" text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    who constant text := progressdb._ident('user', "user");
    n_messages bigint := 0;
    n_reactions bigint := 0;
    n_members bigint := 0;
    n_threads bigint := 0;
    held text[];
    r_threads text[];
    r_seqs bigint[];
    r record;
    heir progressdb.thread_members;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('progressdb.user'), hashtext(who));
    PERFORM progressdb._acting(NULL);
    -- Held threads the user appears in: reported, not touched.
    SELECT array_agg(DISTINCT x.thread) INTO held FROM (
        SELECT mm.thread FROM progressdb.thread_members mm
          JOIN progressdb.threads th ON th.id = mm.thread AND th.legal_hold WHERE mm.user_id = who
        UNION
        SELECT m.thread FROM progressdb.messages m
          JOIN progressdb.threads th ON th.id = m.thread AND th.legal_hold
         WHERE m.author = who OR m.reactions ? who) x;
    -- Threads they alone belong to go whole.
    FOR r IN SELECT mm.thread FROM progressdb.thread_members mm
              JOIN progressdb.threads th ON th.id = mm.thread AND NOT th.legal_hold
             WHERE mm.user_id = who
               AND NOT EXISTS (SELECT 1 FROM progressdb.thread_members o
                                WHERE o.thread = mm.thread AND o.user_id <> who)
             ORDER BY mm.thread
    LOOP
        n_messages := n_messages + (SELECT count(*) FROM progressdb.messages m
                                     WHERE m.thread = r.thread AND m.author = who);
        PERFORM progressdb.purge_thread(r.thread);
        n_threads := n_threads + 1;
    END LOOP;
    PERFORM progressdb._acting(NULL);
    -- Their messages (a scan: there is no index by author, on purpose, as
    -- every append would pay for one).
    FOR r IN SELECT m.thread, array_agg(m.seq) AS seqs FROM progressdb.messages m
               JOIN progressdb.threads th ON th.id = m.thread AND NOT th.legal_hold
              WHERE m.author = who GROUP BY m.thread ORDER BY m.thread
    LOOP
        n_messages := n_messages + progressdb._purge_messages(r.thread, r.seqs);
    END LOOP;
    -- Their reactions to others' messages, also where forks saw them. (The
    -- storage locks first, as for every change: compaction.sql.)
    PERFORM progressdb._share_thread_storage(x.thread)
       FROM (SELECT DISTINCT m.thread FROM progressdb.messages m WHERE m.reactions ? who ORDER BY 1) x;
    PERFORM progressdb._purging(true);
    WITH changed AS (
        UPDATE progressdb.messages m SET reactions = m.reactions - who
          FROM progressdb.threads th
         WHERE th.id = m.thread AND NOT th.legal_hold AND m.reactions ? who
        RETURNING m.thread, m.seq)
    SELECT count(*), array_agg(c.thread), array_agg(c.seq) INTO n_reactions, r_threads, r_seqs FROM changed c;
    PERFORM progressdb._purging(false);
    -- Events of those messages whose stored message shows their reaction
    -- (its value is their words) lose their content too.
    IF n_reactions > 0 THEN
        UPDATE progressdb.feed f SET data = progressdb._purged_event_data(), entry = NULL
          FROM unnest(r_threads, r_seqs) x(thread, seq)
         WHERE f.thread = x.thread AND f.seq = x.seq AND (f.type LIKE 'message.%' OR f.type LIKE 'reaction.%')
           AND position(convert_to(to_json(who)::text, 'UTF8') IN f.entry) > 0;
        UPDATE progressdb.feed_queue f SET data = progressdb._purged_event_data(), entry = NULL
          FROM unnest(r_threads, r_seqs) x(thread, seq)
         WHERE f.thread = x.thread AND f.seq = x.seq AND (f.type LIKE 'message.%' OR f.type LIKE 'reaction.%')
           AND position(convert_to(to_json(who)::text, 'UTF8') IN f.entry) > 0;
    END IF;
    DELETE FROM progressdb.fork_snapshots s WHERE s.msg ->> 'author' = who
       AND NOT EXISTS (SELECT 1 FROM progressdb.threads th WHERE th.id = s.source AND th.legal_hold);
    UPDATE progressdb.fork_snapshots s SET msg = jsonb_set(s.msg, '{reactions}', (s.msg -> 'reactions') - who)
     WHERE s.msg -> 'reactions' ? who
       AND NOT EXISTS (SELECT 1 FROM progressdb.threads th WHERE th.id = s.source AND th.legal_hold);
    -- Ownership passes on before they leave; then their memberships go.
    FOR r IN SELECT th.* FROM progressdb.thread_members mm
              JOIN progressdb.threads th ON th.id = mm.thread AND NOT th.legal_hold
             WHERE mm.user_id = who AND mm.role = 'owner'
               AND NOT EXISTS (SELECT 1 FROM progressdb.thread_members o
                                WHERE o.thread = mm.thread AND o.user_id <> who AND o.role = 'owner')
             ORDER BY th.id
             FOR UPDATE OF th
    LOOP
        SELECT * INTO heir FROM progressdb.thread_members o
         WHERE o.thread = r.id AND o.user_id <> who
         ORDER BY progressdb._role_rank(o.role) DESC, o.joined_ts, o.user_id
         LIMIT 1;
        UPDATE progressdb.thread_members o SET role = 'owner' WHERE o.thread = r.id AND o.user_id = heir.user_id;
    END LOOP;
    WITH gone AS (
        DELETE FROM progressdb.thread_members mm USING progressdb.threads th
         WHERE mm.user_id = who AND th.id = mm.thread AND NOT th.legal_hold
        RETURNING mm.thread),
    counted AS (
        UPDATE progressdb.threads th SET member_count = th.member_count - 1 FROM gone g WHERE th.id = g.thread)
    SELECT count(*) INTO n_members FROM gone;
    -- Threads they created name the owner now.
    UPDATE progressdb.threads th
       SET author = coalesce((SELECT o.user_id FROM progressdb.thread_members o
                               WHERE o.thread = th.id AND o.role = 'owner'
                               ORDER BY o.joined_ts, o.user_id LIMIT 1), th.author)
     WHERE th.author = who AND NOT th.legal_hold;
    RETURN jsonb_build_object('user', who, 'messages', n_messages, 'reactions', n_reactions,
                              'memberships', n_members, 'threads', n_threads,
                              'held', coalesce(cardinality(held), 0));
END
$$;
