-- Timeline clustering by compaction into chunks.
--
-- Appends from many threads arrive interleaved, so in a plain heap a page of
-- 50 older messages of one thread sits on ~50 different heap pages, and even
-- rows rewritten in thread order need 6-7 pages for 50 messages of ~900 bytes
-- (PostgreSQL compresses only rows over ~2 kB). Compaction therefore copies
-- each thread's closed stretch of timeline -- messages older than `min_age`
-- that were not compacted yet -- into chunks: each message's document,
-- rendered once (src/render.rs), in seq order, zstd-packed
-- (src/chunk_codec.rs), each chunk sized to fill one heap page. A history
-- page then reads an index probe and a few chunks, and concatenates.
--
-- The messages table stays the source of truth (lookups by id, replies,
-- versions, edits all use it); chunks are a copy kept exact in the same
-- transaction as any change (trigger below), so readers never see stale
-- data. Compaction only inserts chunks: appends never wait for it, readers
-- never block (MVCC), and a crash rolls a batch back whole.

-- Chunk sizing. A chunk holds as many consecutive messages (at most 128, a
-- cap range probes rely on) as fit, packed, in 8,000 bytes -- just under what
-- one heap tuple holds (~8,100; more would go to TOAST): one chunk per heap
-- page, each page nearly full, whatever the thread's text compresses to
-- (chat text ~3.5x, sealed bodies ~1.4x). Found by packing: a binary search
-- per chunk, starting from the size of the previous one.
CREATE FUNCTION progressdb._chunk_max_messages() RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT 128';
CREATE FUNCTION progressdb._chunk_max_stored() RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT 8000';

-- Rewriting or chunking a thread's rows (compaction, key rotation) is one at
-- a time per thread, for the rest of the transaction. Changes to single
-- messages take the same lock shared, before their row lock, so a chunk is
-- never built from a snapshot that misses a change in flight.
CREATE FUNCTION progressdb._try_lock_thread_storage(thread_id text) RETURNS boolean
LANGUAGE sql AS $$
    SELECT pg_try_advisory_xact_lock(hashtext('progressdb.storage'), hashtext(thread_id))
$$;

CREATE FUNCTION progressdb._lock_thread_storage(thread_id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext('progressdb.storage'), hashtext(thread_id))
$$;

CREATE FUNCTION progressdb._share_thread_storage(thread_id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock_shared(hashtext('progressdb.storage'), hashtext(thread_id))
$$;

-- A message's chunk entry: its document rendered by the renderer, or, for an
-- encrypted body, the document without the body plus the sealed body, which
-- is opened when a page is read (src/chunk_codec.rs).
CREATE FUNCTION progressdb._chunk_entry(m progressdb.messages) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT progressdb._message_entry(m.seq, m.id, m.thread, m.author, m.role, m.ts, m.body::text, m.body_enc,
                                     m.version, m.updated_ts, m.reply_to, m.deleted_ts,
                                     CASE WHEN m.reactions <> '{}'::jsonb THEN m.reactions::text END)
$$;

-- Writes chunks for messages lo..hi of a thread, each as many messages as
-- fit (above). Each message is rendered once; the search below only packs.
-- Returns the number of messages chunked.
CREATE FUNCTION progressdb._chunk_range(thread_id text, lo bigint, hi bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    max_bytes constant integer := progressdb._chunk_max_stored();
    entries bytea[];
    seqs bigint[];
    dels integer[];
    total integer;
    i integer := 1;         -- first message of the next chunk
    guess integer := 24;    -- messages in the previous chunk
    fits integer;           -- a count known to fit
    too_many integer;       -- a count known not to fit
    grew boolean;           -- some count was seen to fit / not to fit
    shrank boolean;
    step integer;
    k integer;
    packed bytea;
    best bytea;
BEGIN
    SELECT array_agg(progressdb._chunk_entry(m) ORDER BY m.seq), array_agg(m.seq ORDER BY m.seq),
           array_agg((m.deleted_ts IS NOT NULL)::integer ORDER BY m.seq)
      INTO entries, seqs, dels
      FROM progressdb.messages m
     WHERE m.thread = thread_id AND m.seq BETWEEN lo AND hi;
    total := coalesce(cardinality(entries), 0);
    WHILE i <= total LOOP
        -- Gallop from the previous chunk's count, then bisect.
        fits := 1;
        best := progressdb._pack_chunk(entries[i:i]);   -- a lone message is stored however big
        too_many := least(progressdb._chunk_max_messages(), total - i + 1) + 1;
        grew := false;
        shrank := false;
        step := 1;
        k := greatest(2, least(guess, too_many - 1));
        WHILE too_many - fits > 1 LOOP
            packed := progressdb._pack_chunk(entries[i:i + k - 1]);
            IF octet_length(packed) <= max_bytes THEN
                fits := k;
                best := packed;
                grew := true;
            ELSE
                too_many := k;
                shrank := true;
            END IF;
            k := CASE WHEN NOT shrank THEN least(fits + step, too_many - 1)
                      WHEN NOT grew THEN greatest(fits + 1, too_many - step)
                      ELSE (fits + too_many) / 2 END;
            step := step * 2;
        END LOOP;
        INSERT INTO progressdb.message_chunks (thread, first_seq, last_seq, n_messages, n_deleted, packed)
        VALUES (thread_id, seqs[i], seqs[i + fits - 1], fits,
                (SELECT sum(d) FROM unnest(dels[i:i + fits - 1]) d), best);
        i := i + fits;
        guess := fits;
    END LOOP;
    RETURN total;
END
$$;

CREATE FUNCTION progressdb.compact(max_threads integer DEFAULT 100, min_run integer DEFAULT 32,
                                   min_age interval DEFAULT '1 minute')
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    cutoff bigint := progressdb.now_ns() - (extract(epoch FROM min_age) * 1e9)::bigint;
    t record;
    hi bigint;
    lo bigint;
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
        -- The closed end of the stretch: the newest message old enough, and
        -- at most 2048 messages per call, so that a change to a message of
        -- a long thread never waits long for the compaction of its thread.
        SELECT m.seq INTO hi FROM progressdb.messages m
         WHERE m.thread = t.id AND m.seq > t.done AND m.ts < cutoff
         ORDER BY m.seq DESC LIMIT 1;
        CONTINUE WHEN hi IS NULL;   -- (least() below would ignore a NULL)
        hi := least(hi, t.done + 2048);
        CONTINUE WHEN hi - t.done < min_run;
        -- A key rotation, another compactor or a change to one of its
        -- messages busy with this thread: skip it this round rather than wait.
        CONTINUE WHEN NOT progressdb._try_lock_thread_storage(t.id);
        INSERT INTO progressdb.compaction_state AS cs (thread, compacted_seq) VALUES (t.id, 0)
        ON CONFLICT ON CONSTRAINT compaction_state_pkey DO NOTHING;
        SELECT cs.compacted_seq INTO t.done FROM progressdb.compaction_state cs WHERE cs.thread = t.id;
        CONTINUE WHEN hi - t.done < min_run;

        -- A short last chunk (the tail of the previous run) is cut again with
        -- this run, so that closed messages trickling in still fill pages.
        DELETE FROM progressdb.message_chunks c
         WHERE c.thread = t.id AND c.last_seq = t.done
           AND c.first_seq > t.done - progressdb._chunk_max_messages()
           AND octet_length(c.packed) < progressdb._chunk_max_stored() / 2
        RETURNING c.first_seq INTO lo;
        PERFORM progressdb._chunk_range(t.id, coalesce(lo, t.done + 1), hi);
        n_messages := n_messages + (hi - t.done);
        UPDATE progressdb.compaction_state cs SET compacted_seq = hi
         WHERE cs.thread = t.id AND cs.compacted_seq < hi;
        n_threads := n_threads + 1;
    END LOOP;
    RETURN jsonb_build_object('threads', n_threads, 'messages', n_messages);
END
$$;

-- Keeps chunks exact: any UPDATE or DELETE of chunked messages rewrites the
-- chunks holding them from the messages table, in the same transaction.
-- (Appends never land in a chunk: a chunk only holds seqs that existed.)
CREATE FUNCTION progressdb._refresh_chunks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    -- Waits for a compaction of the thread that began before this change.
    PERFORM progressdb._share_thread_storage(x.thread) FROM (SELECT DISTINCT thread FROM changed) x;
    FOR c IN
        SELECT DISTINCT ch.thread, ch.first_seq, ch.last_seq
          FROM changed x
          JOIN progressdb.message_chunks ch
            ON ch.thread = x.thread AND ch.first_seq <= x.seq
           AND ch.first_seq > x.seq - progressdb._chunk_max_messages() AND ch.last_seq >= x.seq
         ORDER BY 1, 2
    LOOP
        -- Lock first: the rewrite below then reads the messages with a
        -- snapshot that includes a concurrent rewriter's committed change.
        PERFORM 1 FROM progressdb.message_chunks ch
         WHERE ch.thread = c.thread AND ch.first_seq = c.first_seq AND ch.last_seq = c.last_seq
           FOR UPDATE;
        UPDATE progressdb.message_chunks ch
           SET (packed, n_messages, n_deleted) =
               (SELECT progressdb._pack_chunk(coalesce(array_agg(progressdb._chunk_entry(m) ORDER BY m.seq), '{}')),
                       count(*),
                       count(*) FILTER (WHERE m.deleted_ts IS NOT NULL)
                  FROM progressdb.messages m
                 WHERE m.thread = c.thread AND m.seq BETWEEN c.first_seq AND c.last_seq)
         WHERE ch.thread = c.thread AND ch.first_seq = c.first_seq AND ch.last_seq = c.last_seq;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_refresh_chunks_on_update AFTER UPDATE ON progressdb.messages
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION progressdb._refresh_chunks();
CREATE TRIGGER messages_refresh_chunks_on_delete AFTER DELETE ON progressdb.messages
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION progressdb._refresh_chunks();

-- A timeline page as text (the newest page: p_before = last seq + 1; a
-- history page: p_before = the cursor's seq): up to `p_lim` messages just
-- older than seq `p_before` that the reader sees (seq above p_vis; deleted
-- ones only with p_include_deleted), their documents oldest first, joined by
-- commas; `lo`/`hi` their seqs; `has_before`: visible messages older than
-- the page exist (read, not probed: one message past the page is read);
-- `newer_seen`: a visible message at or after p_before was seen (NULL: not
-- known). Served from chunks when they tile the timeline just below
-- p_before (they tile 1..compacted_seq), looking further down while deleted
-- messages thin the page; otherwise from the messages table, rendered.
-- p_chunks = false reads the table only (tests compare the two).
CREATE FUNCTION progressdb._page_text(p_thread text, p_before bigint, p_lim integer,
                                      p_include_deleted boolean, p_vis bigint DEFAULT 0,
                                      p_chunks boolean DEFAULT true,
                                      OUT docs text, OUT n integer, OUT lo bigint, OUT hi bigint,
                                      OUT has_before boolean, OUT newer_seen boolean)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    span bigint := p_lim + 1;   -- how many seqs below p_before to look at
    r record;
BEGIN
    IF p_chunks THEN
        LOOP
            SELECT * INTO r FROM progressdb._chunk_page(p_thread, p_before, p_lim, p_include_deleted, p_vis,
                ARRAY(SELECT ch.packed FROM progressdb.message_chunks ch
                       WHERE ch.thread = p_thread AND ch.first_seq < p_before
                         AND ch.first_seq > p_before - span - progressdb._chunk_max_messages()
                         AND ch.last_seq >= p_before - span
                       ORDER BY ch.first_seq DESC));
            IF r.complete THEN
                docs := r.docs;
                n := r.n;
                lo := r.lo;
                hi := r.hi;
                has_before := r.has_before;
                newer_seen := r.newer_seen;
                RETURN;
            END IF;
            EXIT WHEN NOT r.contiguous OR span >= p_before;
            span := span * 4;
        END LOOP;
    END IF;
    -- Messages the reader may not see are all older than those they may:
    -- dropping them after the LIMIT leaves the right (shorter) page.
    SELECT string_agg(x.doc, ',' ORDER BY x.seq) FILTER (WHERE x.rn <= p_lim),
           count(*) FILTER (WHERE x.rn <= p_lim), min(x.seq) FILTER (WHERE x.rn <= p_lim), max(x.seq),
           count(*) > p_lim
      INTO docs, n, lo, hi, has_before
      FROM (SELECT m.seq, progressdb._message_text(m) AS doc,
                   row_number() OVER (ORDER BY m.seq DESC) AS rn
              FROM progressdb._page_older(p_thread, p_before, p_lim + 1, p_include_deleted) m
             WHERE m.seq > p_vis) x;
END
$$;
