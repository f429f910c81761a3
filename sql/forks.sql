-- Forks: a new thread whose timeline starts with a prefix of another
-- thread's timeline, as it was at fork time (README, "Forks").
--
-- A fork copies nothing. Its thread row names the source (fork_of), the last
-- shared seq (fork_seq) and the first seq it does not share (everything at
-- or below fork_lo stays hidden: what the forker could not read). The fork's
-- own messages continue the numbering after fork_seq. Reading seq s of fork F:
--
--   s > F.fork_seq          F's own row                (messages)
--   s <= F.fork_lo          nothing
--   otherwise               F's snapshot of s if any   (fork_snapshots)
--                           else the source's row s, read the same way
--                           when the source is itself a fork
--
-- Snapshots are copy-on-write: the first change of a source row that a fork
-- shares after the fork was made (edit, delete, restore, reaction, removal)
-- saves the row as it was into fork_snapshots, once per fork. So forking is
-- O(1), a source without forks pays one index probe per change, and every
-- fork keeps seeing its prefix as it was when it was made.

-- The levels a fork's timeline is read from, nearest first: for each thread
-- of the chain, the seq range of its own rows and of its snapshots that the
-- fork `t` shows (bounds exclusive below, inclusive above).
CREATE FUNCTION progressdb._fork_levels(t progressdb.threads)
RETURNS TABLE (lvl integer, thread text, own_lo bigint, own_hi bigint, snap_lo bigint, snap_hi bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    x progressdb.threads := t;
    upper_seq bigint := 9223372036854775807;
    floor_seq bigint := 0;
BEGIN
    lvl := 0;
    LOOP
        thread := x.id;
        own_lo := greatest(coalesce(x.fork_seq, 0), floor_seq);
        own_hi := upper_seq;
        IF x.fork_of IS NULL THEN
            snap_lo := 0;
            snap_hi := 0;
            RETURN NEXT;
            RETURN;
        END IF;
        floor_seq := greatest(floor_seq, x.fork_lo);
        snap_lo := floor_seq;
        snap_hi := least(x.fork_seq, upper_seq);
        RETURN NEXT;
        upper_seq := least(upper_seq, x.fork_seq);
        SELECT * INTO x FROM progressdb.threads th WHERE th.id = x.fork_of;
        IF NOT FOUND THEN
            RETURN;   -- the source is gone (purged): so is the rest of the prefix
        END IF;
        lvl := lvl + 1;
    END LOOP;
END
$$;

-- Up to `lim` rows of fork `t`'s timeline with lo < seq < hi, newest first
-- (or oldest first), deleted ones only with `inc`. Each level is read by an
-- index range scan of at most n rows; rows at or beyond the point where a
-- full scan stopped are exact, and n grows until `lim` exact rows are found
-- or nothing was cut (deleted rows can thin a page).
CREATE FUNCTION progressdb._fork_rows(t progressdb.threads, lo bigint, hi bigint, lim integer,
                                      newest_first boolean, inc boolean)
RETURNS SETOF progressdb.messages
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n integer := lim + 8;
    cut bigint;
    rows progressdb.messages[];
BEGIN
    LOOP
        IF newest_first THEN
            WITH lv AS (SELECT * FROM progressdb._fork_levels(t)),
            cand AS (
                SELECT l.lvl, 0 AS kind, m.msg, m.seq
                  FROM lv l CROSS JOIN LATERAL (
                       SELECT mm AS msg, mm.seq FROM progressdb.messages mm
                        WHERE mm.thread = l.thread AND mm.seq > greatest(l.own_lo, lo)
                          AND mm.seq <= l.own_hi AND mm.seq < hi
                        ORDER BY mm.seq DESC LIMIT n) m
                UNION ALL
                SELECT l.lvl, 1, jsonb_populate_record(NULL::progressdb.messages, s.msg), s.seq
                  FROM lv l CROSS JOIN LATERAL (
                       SELECT ss.msg, ss.seq FROM progressdb.fork_snapshots ss
                        WHERE ss.fork = l.thread AND ss.seq > greatest(l.snap_lo, lo)
                          AND ss.seq <= l.snap_hi AND ss.seq < hi
                        ORDER BY ss.seq DESC LIMIT n) s),
            cuts AS (SELECT max(c.low) AS at FROM (
                        SELECT CASE WHEN count(*) >= n THEN min(cand.seq) END AS low
                          FROM cand GROUP BY cand.lvl, cand.kind) c),
            eff AS (SELECT DISTINCT ON (cand.seq) cand.seq, cand.msg FROM cand ORDER BY cand.seq DESC, cand.lvl)
            SELECT (SELECT at FROM cuts),
                   ARRAY(SELECT e.msg FROM eff e, cuts
                          WHERE e.seq >= coalesce(cuts.at, 0) AND (inc OR (e.msg).deleted_ts IS NULL)
                          ORDER BY e.seq DESC LIMIT lim)
              INTO cut, rows;
        ELSE
            WITH lv AS (SELECT * FROM progressdb._fork_levels(t)),
            cand AS (
                SELECT l.lvl, 0 AS kind, m.msg, m.seq
                  FROM lv l CROSS JOIN LATERAL (
                       SELECT mm AS msg, mm.seq FROM progressdb.messages mm
                        WHERE mm.thread = l.thread AND mm.seq > greatest(l.own_lo, lo)
                          AND mm.seq <= l.own_hi AND mm.seq < hi
                        ORDER BY mm.seq LIMIT n) m
                UNION ALL
                SELECT l.lvl, 1, jsonb_populate_record(NULL::progressdb.messages, s.msg), s.seq
                  FROM lv l CROSS JOIN LATERAL (
                       SELECT ss.msg, ss.seq FROM progressdb.fork_snapshots ss
                        WHERE ss.fork = l.thread AND ss.seq > greatest(l.snap_lo, lo)
                          AND ss.seq <= l.snap_hi AND ss.seq < hi
                        ORDER BY ss.seq LIMIT n) s),
            cuts AS (SELECT min(c.high) AS at FROM (
                        SELECT CASE WHEN count(*) >= n THEN max(cand.seq) END AS high
                          FROM cand GROUP BY cand.lvl, cand.kind) c),
            eff AS (SELECT DISTINCT ON (cand.seq) cand.seq, cand.msg FROM cand ORDER BY cand.seq, cand.lvl)
            SELECT (SELECT at FROM cuts),
                   ARRAY(SELECT e.msg FROM eff e, cuts
                          WHERE e.seq <= coalesce(cuts.at, 9223372036854775807)
                            AND (inc OR (e.msg).deleted_ts IS NULL)
                          ORDER BY e.seq LIMIT lim)
              INTO cut, rows;
        END IF;
        EXIT WHEN cut IS NULL OR cardinality(rows) >= lim;
        n := n * 4;
    END LOOP;
    RETURN QUERY SELECT (r).* FROM unnest(rows) r;
END
$$;

-- The row of message `msg_id` in fork `t`'s timeline (its shared prefix
-- included, as it was at fork time); NULL when it is not there.
CREATE FUNCTION progressdb._fork_message(t progressdb.threads, msg_id text) RETURNS progressdb.messages
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m progressdb.messages;
BEGIN
    FOR m IN
        SELECT mm.* FROM progressdb.messages mm
         WHERE mm.id = msg_id
           AND mm.thread IN (SELECT l.thread FROM progressdb._fork_levels(t) l)
    LOOP
        -- The row at that seq in this timeline must be this message.
        SELECT * INTO m FROM progressdb._fork_rows(t, m.seq - 1, m.seq + 1, 1, true, true);
        IF m.id = msg_id THEN
            RETURN m;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- A timeline page of a fork (list_messages_text's rules, over the fork's
-- levels; see _list_messages_rows for the meaning of the arguments).
CREATE FUNCTION progressdb._fork_page(t progressdb.threads, lim integer, b_seq bigint,
                                      has_before_cursor boolean, after text, inc boolean, vis bigint)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a_seq bigint;
    docs text;
    lo bigint;
    hi bigint;
    n integer;
    has_before boolean;
    has_after boolean;
BEGIN
    IF after IS NULL THEN
        SELECT string_agg(progressdb._message_text(x.m), ',' ORDER BY (x.m).seq) FILTER (WHERE x.rn <= lim),
               min((x.m).seq) FILTER (WHERE x.rn <= lim), max((x.m).seq), count(*)
          INTO docs, lo, hi, n
          FROM (SELECT m, row_number() OVER () AS rn
                  FROM progressdb._fork_rows(t, vis, b_seq, lim + 1, true, inc) m) x;
        has_before := n > lim;
        has_after := has_before_cursor
                     AND EXISTS (SELECT 1 FROM progressdb._fork_rows(t, b_seq - 1, 9223372036854775807, 1, false, inc));
    ELSE
        a_seq := greatest(progressdb._cursor_seq(t, after, 'after', vis), vis);
        SELECT string_agg(progressdb._message_text(x.m), ',' ORDER BY (x.m).seq) FILTER (WHERE x.rn <= lim),
               min((x.m).seq), max((x.m).seq) FILTER (WHERE x.rn <= lim), count(*)
          INTO docs, lo, hi, n
          FROM (SELECT m, row_number() OVER () AS rn
                  FROM progressdb._fork_rows(t, a_seq, b_seq, lim + 1, false, inc) m) x;
        has_after := n > lim
                     OR (has_before_cursor
                         AND EXISTS (SELECT 1 FROM progressdb._fork_rows(t, b_seq - 1, 9223372036854775807, 1, false, inc)));
        has_before := a_seq > vis
                      AND EXISTS (SELECT 1 FROM progressdb._fork_rows(t, vis, a_seq + 1, 1, true, inc));
    END IF;
    RETURN progressdb._render_page(t.id, docs, has_before, has_after, lo, hi);
END
$$;

-- Copy-on-write: before a source row shared by forks changes or goes, each
-- fork that shares it and has no snapshot of it yet saves it as it is (the
-- first snapshot is the row as it was at fork time; later ones are no-ops).
-- Re-sealing under a new key (rotate_thread_key) is not a change, and a
-- purge (lifecycle.sql) removes every copy instead.
CREATE FUNCTION progressdb._snapshot_for_forks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM progressdb.threads f WHERE f.fork_of = OLD.thread AND f.fork_seq >= OLD.seq)
       AND current_setting('progressdb.reencrypting', true) IS DISTINCT FROM 'on'
       AND current_setting('progressdb.purging', true) IS DISTINCT FROM 'on' THEN
        INSERT INTO progressdb.fork_snapshots AS s (fork, seq, source, taken_ts, msg)
        SELECT f.id, OLD.seq, OLD.thread, progressdb.now_ns(), to_jsonb(OLD)
          FROM progressdb.threads f
         WHERE f.fork_of = OLD.thread AND f.fork_seq >= OLD.seq AND f.fork_lo < OLD.seq
        ON CONFLICT ON CONSTRAINT fork_snapshots_pkey DO NOTHING;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

CREATE TRIGGER messages_snapshot_for_forks BEFORE UPDATE OR DELETE ON progressdb.messages
    FOR EACH ROW EXECUTE FUNCTION progressdb._snapshot_for_forks();

-- Forks `thread` after message `at_message` (API.md): a new thread, owned
-- by the forker (the source's author when the service forks), whose
-- timeline is the source's up to and including that message as it is now,
-- then its own. The forker must be able to read the message; what they
-- could not read (history 'joined') is not shared. Members, metadata and
-- read state are not copied.
CREATE FUNCTION progressdb.fork_thread(thread text, at_message text, id text DEFAULT NULL,
                                       actor text DEFAULT NULL, title text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    src progressdb.threads := progressdb._thread_for(fork_thread.thread, actor, 'read');
    vis bigint := progressdb._authorize(src, actor, 'read');
    fork_id text := progressdb._ident('thread id', coalesce(fork_thread.id, progressdb.new_id('thread')));
    owner text := coalesce(actor, src.author);
    m progressdb.messages;
    t progressdb.threads;
BEGIN
    IF at_message IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'the message to fork at is required';
    END IF;
    IF title IS NOT NULL THEN
        title := progressdb._text('title', title, 512);
    END IF;
    -- Changes to the source's rows take this lock shared before their row
    -- lock (messages.sql): once the fork is made, every later change of a
    -- shared row sees it and snapshots the row first.
    PERFORM progressdb._lock_thread_storage(src.id);
    IF src.fork_of IS NULL THEN
        SELECT * INTO m FROM progressdb.messages mm
         WHERE mm.id = progressdb._ident('message id', at_message) AND mm.thread = src.id;
    ELSE
        m := progressdb._fork_message(src, progressdb._ident('message id', at_message));
    END IF;
    IF m.id IS NULL OR m.deleted_ts IS NOT NULL OR m.seq <= vis THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = format('message %s not found in thread %s', at_message, src.id);
    END IF;
    PERFORM progressdb._acting(owner);
    t := progressdb._insert_thread(fork_id, owner, coalesce(title, src.title), src.encrypted, m.seq);
    IF t.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '23505', MESSAGE = format('thread %s already exists', fork_id);
    END IF;
    UPDATE progressdb.threads th
       SET fork_of = src.id, fork_message = m.id, fork_seq = m.seq, fork_lo = vis,
           fork_ts = th.created_ts
     WHERE th.id = t.id
    RETURNING th.* INTO t;
    -- The forker has read what the fork shares; compaction starts after it.
    UPDATE progressdb.thread_members mm SET last_read_seq = m.seq, last_read = m.id
     WHERE mm.thread = t.id AND mm.user_id = owner;
    INSERT INTO progressdb.compaction_state (thread, compacted_seq) VALUES (t.id, m.seq);
    RETURN progressdb._thread_json(t, progressdb._membership(t.id, owner));
END
$$;

-- Search hits in the shared prefix of fork `t` (search() adds the fork's
-- own messages): each source level's rows in the range the fork shows, and
-- the snapshots, matching `tq` (blinded per source thread when encrypted),
-- except where a nearer level holds a snapshot of the same seq. A snapshot
-- hit names the fork that holds it as its thread (search() then reads it
-- from fork_snapshots: that fork has no row of its own at that seq).
CREATE FUNCTION progressdb._fork_search_hits(t progressdb.threads, vis bigint, tq tsquery, enc_on boolean,
                                             phrase boolean)
RETURNS TABLE (thread text, seq bigint, ts bigint, rank real)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    l record;
    nearer text[] := '{}';      -- levels nearer than l: their snapshots hide l's rows
    q tsquery;
    dek bigint;
    src_dek bigint;
    src text;
    cfg constant regconfig := progressdb._search_config();
BEGIN
    FOR l IN SELECT * FROM progressdb._fork_levels(t) ORDER BY 1 LOOP
        SELECT th.dek_id, th.fork_of INTO dek, src FROM progressdb.threads th WHERE th.id = l.thread;
        IF l.lvl > 0 AND (dek IS NULL OR enc_on) THEN
            q := CASE WHEN dek IS NULL THEN tq ELSE progressdb._blind_query(l.thread, dek, tq::text)::tsquery END;
            RETURN QUERY
            SELECT m.thread, m.seq, m.ts, ts_rank(m.search_vec, q)
              FROM progressdb.messages m
             WHERE m.thread = l.thread AND m.seq > greatest(l.own_lo, vis) AND m.seq <= l.own_hi
               AND m.deleted_ts IS NULL AND m.search_vec @@ q
               AND NOT EXISTS (SELECT 1 FROM progressdb.fork_snapshots s
                                WHERE s.fork = ANY (nearer) AND s.seq = m.seq)
               AND (dek IS NULL OR NOT phrase
                    OR to_tsvector(cfg, progressdb._search_text(progressdb._plain_body(m))) @@ tq);
        END IF;
        IF src IS NOT NULL THEN
            SELECT th.dek_id INTO src_dek FROM progressdb.threads th WHERE th.id = src;
            IF src_dek IS NULL OR enc_on THEN
                q := CASE WHEN src_dek IS NULL THEN tq
                          ELSE progressdb._blind_query(src, src_dek, tq::text)::tsquery END;
                RETURN QUERY
                SELECT l.thread, x.seq, (x.m).ts, ts_rank((x.m).search_vec, q)
                  FROM (SELECT s.seq, jsonb_populate_record(NULL::progressdb.messages, s.msg) AS m
                          FROM progressdb.fork_snapshots s
                         WHERE s.fork = l.thread AND s.seq > greatest(l.snap_lo, vis) AND s.seq <= l.snap_hi
                           AND NOT EXISTS (SELECT 1 FROM progressdb.fork_snapshots o
                                            WHERE o.fork = ANY (nearer) AND o.seq = s.seq)) x
                 WHERE (x.m).deleted_ts IS NULL AND (x.m).search_vec @@ q
                   AND (src_dek IS NULL OR NOT phrase
                        OR to_tsvector(cfg, progressdb._search_text(progressdb._plain_body(x.m))) @@ tq);
            END IF;
        END IF;
        nearer := nearer || l.thread;
    END LOOP;
END
$$;

-- The timeline functions context() reads through (context.sql), for forks:
-- the fork's rows as _fork_rows shows them.
CREATE FUNCTION progressdb._fork_timeline_system(t progressdb.threads)
RETURNS SETOF progressdb.messages
LANGUAGE sql STABLE AS $$
    SELECT e.* FROM (
        SELECT mm.seq FROM progressdb._fork_levels(t) l
          JOIN progressdb.messages mm ON mm.thread = l.thread AND mm.role = 'system'
           AND mm.seq > l.own_lo AND mm.seq <= l.own_hi
        UNION
        SELECT s.seq FROM progressdb._fork_levels(t) l
          JOIN progressdb.fork_snapshots s ON s.fork = l.thread AND s.seq > l.snap_lo AND s.seq <= l.snap_hi
           AND s.msg->>'role' = 'system') c
    CROSS JOIN LATERAL progressdb._fork_rows(t, c.seq - 1, c.seq + 1, 1, true, true) e
    WHERE e.role = 'system'
    ORDER BY e.seq
$$;

-- Messages of fork t's timeline strictly between after_seq and before_seq
-- that are not deleted (as the fork shows them). Its seqs are gap-free
-- above the deepest level's lower bound, so this is the range's width less
-- the deleted ones, found per level through messages_deleted_idx and among
-- the snapshots, a nearer level's snapshot hiding a farther row.
CREATE FUNCTION progressdb._fork_timeline_count(t progressdb.threads, after_seq bigint, before_seq bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    l record;
    nearer text[] := '{}';
    lowest bigint := 0;
    gone bigint := 0;
    n bigint;
BEGIN
    FOR l IN SELECT * FROM progressdb._fork_levels(t) ORDER BY 1 LOOP
        lowest := l.own_lo;
        SELECT count(*) INTO n FROM progressdb.messages m
         WHERE m.thread = l.thread AND m.seq > greatest(l.own_lo, after_seq) AND m.seq <= l.own_hi
           AND m.seq < before_seq AND m.deleted_ts IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM progressdb.fork_snapshots s WHERE s.fork = ANY (nearer) AND s.seq = m.seq);
        gone := gone + n;
        SELECT count(*) INTO n FROM progressdb.fork_snapshots s
         WHERE s.fork = l.thread AND s.seq > greatest(l.snap_lo, after_seq) AND s.seq <= l.snap_hi
           AND s.seq < before_seq AND s.msg->>'deleted_ts' IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM progressdb.fork_snapshots o WHERE o.fork = ANY (nearer) AND o.seq = s.seq);
        gone := gone + n;
        nearer := nearer || l.thread;
    END LOOP;
    RETURN greatest(least(before_seq, t.last_seq + 1) - greatest(after_seq, lowest) - 1, 0) - gone;
END
$$;
