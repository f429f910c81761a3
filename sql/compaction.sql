-- Timeline clustering by compaction.
--
-- Appends from many threads arrive interleaved, so in a plain heap a page of
-- 50 older messages of one thread sits on ~50 different heap pages. Compaction
-- rewrites each thread's closed stretch of timeline -- messages older than
-- `min_age` that were not compacted yet -- as one run: the rows are deleted
-- and re-inserted in seq order in the same statement, so they land next to
-- each other in whatever free space the heap hands out. After it, a history
-- page is a handful of heap pages. Row identity (thread, seq, id) and every
-- column stay the same; readers never see a gap (MVCC), appends never wait
-- (no row they touch is locked), and a crash rolls a batch back whole.

-- Rewriting a thread's rows (compaction, key rotation) is one at a time per
-- thread, for the rest of the transaction.
CREATE FUNCTION progressdb._try_lock_thread_storage(thread_id text) RETURNS boolean
LANGUAGE sql AS $$
    SELECT pg_try_advisory_xact_lock(hashtext('progressdb.storage'), hashtext(thread_id))
$$;

CREATE FUNCTION progressdb._lock_thread_storage(thread_id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext('progressdb.storage'), hashtext(thread_id))
$$;

CREATE FUNCTION progressdb.compact(max_threads integer DEFAULT 100, min_run integer DEFAULT 32,
                                   min_age interval DEFAULT '1 minute')
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    cutoff bigint := progressdb.now_ns() - (extract(epoch FROM min_age) * 1e9)::bigint;
    t record;
    hi bigint;
    moved bigint;
    n_threads integer := 0;
    n_messages bigint := 0;
BEGIN
    IF max_threads IS NULL OR max_threads < 1 OR min_run IS NULL OR min_run < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'max_threads and min_run must be positive';
    END IF;
    FOR t IN
        SELECT th.id, coalesce(cs.compacted_seq, 0) AS done, th.last_seq
          FROM progressdb.threads th
          LEFT JOIN progressdb.compaction_state cs ON cs.thread = th.id
         WHERE th.last_seq - coalesce(cs.compacted_seq, 0) >= min_run
         ORDER BY th.last_seq - coalesce(cs.compacted_seq, 0) DESC
         LIMIT max_threads
    LOOP
        -- The closed end of the stretch: the newest message old enough.
        SELECT m.seq INTO hi FROM progressdb.messages m
         WHERE m.thread = t.id AND m.seq > t.done AND m.ts < cutoff
         ORDER BY m.seq DESC LIMIT 1;
        CONTINUE WHEN hi IS NULL OR hi - t.done < min_run;
        -- A key rotation or another compactor busy with this thread: skip it
        -- this round rather than wait.
        CONTINUE WHEN NOT progressdb._try_lock_thread_storage(t.id);
        INSERT INTO progressdb.compaction_state AS cs (thread, compacted_seq) VALUES (t.id, 0)
        ON CONFLICT ON CONSTRAINT compaction_state_pkey DO NOTHING;
        SELECT cs.compacted_seq INTO t.done FROM progressdb.compaction_state cs WHERE cs.thread = t.id;
        CONTINUE WHEN hi - t.done < min_run;

        WITH gone AS (
            DELETE FROM progressdb.messages m
             WHERE m.thread = t.id AND m.seq > t.done AND m.seq <= hi
            RETURNING m.*)
        INSERT INTO progressdb.messages SELECT * FROM gone ORDER BY gone.seq;
        GET DIAGNOSTICS moved = ROW_COUNT;

        UPDATE progressdb.compaction_state cs SET compacted_seq = hi
         WHERE cs.thread = t.id AND cs.compacted_seq < hi;
        n_threads := n_threads + 1;
        n_messages := n_messages + moved;
    END LOOP;
    RETURN jsonb_build_object('threads', n_threads, 'messages', n_messages);
END
$$;
