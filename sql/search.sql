-- Full-text search (API.md, release 0.2, "Search"; README "Search").
--
-- Every message row carries its search vector, messages.search_vec,
-- written in the same statement as the body (post_message, and the trigger
-- below for edits and plain UPDATEs), so a message is findable right after
-- its commit and an edit replaces its words at once. One GIN index covers
-- it. Deleted messages keep their vector (a restore needs nothing) and are
-- filtered out by deleted_ts when searching.
--
-- Plaintext threads: to_tsvector(<configuration>, the text a reader sees).
-- Encrypted threads: the keyed blind index (src/search.rs) -- the same
-- words, normalised the same way, each replaced by an HMAC under a key
-- derived from the thread's data key, without positions; only while
-- progressdb.encrypted_search is on, else NULL. No plaintext word of an
-- encrypted body is ever stored.

-- The text search configuration of the index and of queries. `simple`
-- lower-cases and splits words without stemming or stop words: chat is
-- multilingual, and a language's stemmer would mangle the others. (README:
-- how to change it.)
CREATE FUNCTION progressdb._search_config() RETURNS regconfig
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'pg_catalog.simple'::regconfig
$$;

-- The search vector of a message of a thread whose data key is `dek` (NULL:
-- a plaintext thread), from its whole plaintext body. Plain SQL so that it
-- is inlined into post_message's INSERT.
CREATE FUNCTION progressdb._search_vector(thread text, dek bigint, body jsonb) RETURNS tsvector
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN body IS NULL THEN NULL
        WHEN dek IS NULL THEN to_tsvector(progressdb._search_config(), progressdb._search_text(body))
        WHEN progressdb._encrypted_search() THEN
            array_to_tsvector(progressdb._blind_terms(thread, dek,
                tsvector_to_array(to_tsvector(progressdb._search_config(), progressdb._search_text(body)))))
    END
$$;

-- The plaintext body of a stored message (opened for an encrypted one).
CREATE FUNCTION progressdb._plain_body(m progressdb.messages) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN m.body_enc IS NULL THEN m.body
                ELSE progressdb._open(m.thread, m.id, m.version, m.body, m.body_enc) END
$$;

-- Keeps search_vec right when a body changes by any UPDATE: edit_message,
-- plain SQL, and rotate_thread_key (the re-sealed body then gets blind terms
-- under the new key). Named to fire after messages_keep_previous_version,
-- which sets the version an encrypted body is sealed for.
CREATE FUNCTION progressdb._search_on_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    dek bigint;
BEGIN
    IF NEW.body IS NOT DISTINCT FROM OLD.body AND NEW.body_enc IS NOT DISTINCT FROM OLD.body_enc THEN
        RETURN NEW;
    END IF;
    SELECT th.dek_id INTO dek FROM progressdb.threads th WHERE th.id = NEW.thread;
    NEW.search_vec := progressdb._search_vector(NEW.thread, dek,
        CASE WHEN NEW.body_enc IS NULL THEN NEW.body
             WHEN dek IS NOT NULL AND progressdb._encrypted_search() THEN progressdb._plain_body(NEW) END);
    RETURN NEW;
END
$$;

CREATE TRIGGER messages_search_vec BEFORE UPDATE OF body, body_enc ON progressdb.messages
    FOR EACH ROW EXECUTE FUNCTION progressdb._search_on_update();

-- An upgrade from 0.1.0 indexes the existing messages of plaintext threads
-- here, before the index exists (a fresh install has none).
UPDATE progressdb.messages m SET search_vec = progressdb._search_vector(m.thread, NULL, m.body)
  FROM progressdb.threads th
 WHERE th.id = m.thread AND th.dek_id IS NULL AND m.body_enc IS NULL AND m.search_vec IS NULL;

-- Both kinds of vector in one index: blind terms (hex HMACs) and words do
-- not meet. Deleted messages stay indexed, so a delete or restore remains
-- a HOT update.
CREATE INDEX IF NOT EXISTS messages_search_idx ON progressdb.messages USING gin (search_vec);

-- A snippet of `body` around the words of `tq`: the text HTML-escaped, the
-- matches in <mark>…</mark>. Marked with private-use characters first (any
-- in the text are dropped) so the escaping cannot touch the marks.
CREATE FUNCTION progressdb._search_snippet(body jsonb, tq tsquery) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT replace(replace(replace(replace(replace(
               ts_headline(progressdb._search_config(),
                           translate(progressdb._search_text(body), chr(57344) || chr(57345), ''), tq,
                           'StartSel="' || chr(57344) || '", StopSel="' || chr(57345)
                           || '", MaxWords=30, MinWords=12, ShortWord=0, MaxFragments=2, FragmentDelimiter=" … "'),
               '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
           chr(57344), '<mark>'), chr(57345), '</mark>')
$$;

-- search(actor, q, thread, lim, before) -> {"results":[{"message","snippet"}],"next"}
--
-- The threads searched: `thread` alone (the actor must be able to read it),
-- else the actor's threads (every membership; history 'joined' through
-- _visible_after), else, for the service (NULL actor), every live thread.
-- Encrypted threads only while progressdb.encrypted_search is on, each with
-- the query blinded under its own key. Order: rank (ts_rank) descending,
-- then newest first, then (thread, seq) descending; the cursor is the last
-- result's position in that order, so the next page is a keyset range.
CREATE FUNCTION progressdb.search(actor text, q text, thread text DEFAULT NULL, lim integer DEFAULT 20,
                                  before text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cfg constant regconfig := progressdb._search_config();
    enc_on constant boolean := progressdb._encrypted_search();
    tq tsquery;
    t progressdb.threads;
    vis bigint;
    -- The position after which this page starts (the `before` cursor), then
    -- the last result taken.
    c_rank real;
    c_ts bigint;
    c_thread text;
    c_seq bigint;
    all_plain boolean := false;
    plain_ids text[] := '{}';
    plain_vis bigint[] := '{}';
    enc_ids text[] := '{}';
    enc_vis bigint[] := '{}';
    enc_deks bigint[] := '{}';
    phrase boolean;
    parts text[] := '{}';
    h record;
    n integer := 0;
    docs text[] := '{}';
    doc text;
    next_cursor text;
BEGIN
    IF q IS NULL OR btrim(q) = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'q (the search query) must not be empty';
    END IF;
    IF length(q) > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'q (the search query) must be at most 1000 characters';
    END IF;
    lim := progressdb._limit(lim);
    IF before IS NOT NULL THEN
        SELECT p.rank, p.ts, p.thread, p.seq INTO c_rank, c_ts, c_thread, c_seq
          FROM progressdb._search_cursor_position(before) p;
    END IF;

    IF thread IS NOT NULL THEN
        SELECT * INTO t FROM progressdb.threads th
         WHERE th.id = progressdb._ident('thread id', search.thread) AND th.deleted_ts IS NULL;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('thread %s not found', search.thread);
        END IF;
        vis := progressdb._authorize(t, actor, 'read');
        IF t.dek_id IS NULL THEN
            plain_ids := ARRAY[t.id];
            plain_vis := ARRAY[vis];
        ELSIF enc_on THEN
            enc_ids := ARRAY[t.id];
            enc_vis := ARRAY[vis];
            enc_deks := ARRAY[t.dek_id];
        END IF;
    ELSIF actor IS NULL THEN
        all_plain := true;
        IF enc_on THEN
            SELECT coalesce(array_agg(th.id), '{}'), coalesce(array_agg(0::bigint), '{}'),
                   coalesce(array_agg(th.dek_id), '{}')
              INTO enc_ids, enc_vis, enc_deks
              FROM progressdb.threads th WHERE th.deleted_ts IS NULL AND th.dek_id IS NOT NULL;
        END IF;
    ELSE
        SELECT coalesce(array_agg(x.id) FILTER (WHERE x.dek_id IS NULL), '{}'),
               coalesce(array_agg(x.vis) FILTER (WHERE x.dek_id IS NULL), '{}'),
               coalesce(array_agg(x.id) FILTER (WHERE x.dek_id IS NOT NULL AND enc_on), '{}'),
               coalesce(array_agg(x.vis) FILTER (WHERE x.dek_id IS NOT NULL AND enc_on), '{}'),
               coalesce(array_agg(x.dek_id) FILTER (WHERE x.dek_id IS NOT NULL AND enc_on), '{}')
          INTO plain_ids, plain_vis, enc_ids, enc_vis, enc_deks
          FROM (SELECT th.id, th.dek_id, progressdb._visible_after(th, mm) AS vis
                  FROM progressdb.thread_members mm
                  JOIN progressdb.threads th ON th.id = mm.thread
                 WHERE mm.user_id = actor AND th.deleted_ts IS NULL) x;
    END IF;

    tq := websearch_to_tsquery(cfg, q);
    IF numnode(tq) > 0 THEN
        -- Blind terms have no positions: a phrase matches them as an AND of
        -- its words, so encrypted candidates of a phrase query are checked
        -- against their decrypted text.
        phrase := regexp_replace(tq::text, '''([^'']|'''')*''', '', 'g') LIKE '%<%>%';
        IF all_plain THEN
            parts := array_append(parts, $q$
                SELECT m.thread, m.seq, m.ts, ts_rank(m.search_vec, $1) AS rank
                  FROM progressdb.messages m JOIN progressdb.threads th ON th.id = m.thread
                 WHERE th.deleted_ts IS NULL AND th.dek_id IS NULL
                   AND m.deleted_ts IS NULL AND m.search_vec @@ $1$q$);
        ELSIF cardinality(plain_ids) > 0 THEN
            parts := array_append(parts, $q$
                SELECT m.thread, m.seq, m.ts, ts_rank(m.search_vec, $1) AS rank
                  FROM unnest($2, $3) s(id, vis)
                  JOIN progressdb.messages m ON m.thread = s.id AND m.seq > s.vis
                 WHERE m.deleted_ts IS NULL AND m.search_vec @@ $1$q$);
        END IF;
        IF cardinality(enc_ids) > 0 THEN
            parts := array_append(parts, $q$
                SELECT m.thread, m.seq, m.ts, ts_rank(m.search_vec, s.bq) AS rank
                  FROM (SELECT x.id, x.vis, progressdb._blind_query(x.id, x.dek, $1::text)::tsquery AS bq
                          FROM unnest($4, $5, $6) x(id, vis, dek) OFFSET 0) s
                  JOIN progressdb.messages m ON m.thread = s.id AND m.seq > s.vis
                 WHERE m.deleted_ts IS NULL AND m.search_vec @@ s.bq$q$
                || CASE WHEN phrase THEN $q$
                   AND to_tsvector($11, progressdb._search_text(progressdb._plain_body(m))) @@ $1$q$
                   ELSE '' END);
        END IF;
        IF t.fork_of IS NOT NULL THEN
            -- A fork: also the prefix it shares, as it was at fork time (forks.sql).
            parts := array_append(parts, $q$
                SELECT * FROM progressdb._fork_search_hits($13, $14, $1, $15, $16)$q$);
        END IF;
    END IF;
    IF cardinality(parts) > 0 THEN
        FOR h IN EXECUTE format($q$
            SELECT * FROM (%s) h
             WHERE $7 IS NULL OR (h.rank, h.ts, h.thread, h.seq) < ($7, $8, $9, $10)
             ORDER BY h.rank DESC, h.ts DESC, h.thread DESC, h.seq DESC
             LIMIT $12$q$, array_to_string(parts, ' UNION ALL '))
            USING tq, plain_ids, plain_vis, enc_ids, enc_vis, enc_deks, c_rank, c_ts, c_thread, c_seq, cfg,
                  lim + 1, t, coalesce(vis, 0), enc_on, phrase
        LOOP
            n := n + 1;
            IF n > lim THEN
                next_cursor := progressdb._search_cursor(c_rank, c_ts, c_thread, c_seq);
                EXIT;
            END IF;
            SELECT '{"message":' || progressdb._message_text(m)
                   || ',"snippet":' || to_json(progressdb._search_snippet(progressdb._plain_body(m), tq))::text
                   || '}'
              INTO doc
              FROM progressdb.messages m WHERE m.thread = h.thread AND m.seq = h.seq;
            IF NOT FOUND THEN
                -- A hit in a fork's snapshot (forks.sql).
                SELECT '{"message":' || progressdb._message_text(x.m)
                       || ',"snippet":' || to_json(progressdb._search_snippet(progressdb._plain_body(x.m), tq))::text
                       || '}'
                  INTO doc
                  FROM (SELECT jsonb_populate_record(NULL::progressdb.messages, s.msg) AS m
                          FROM progressdb.fork_snapshots s WHERE s.fork = h.thread AND s.seq = h.seq) x;
            END IF;
            docs := docs || doc;
            c_rank := h.rank;
            c_ts := h.ts;
            c_thread := h.thread;
            c_seq := h.seq;
        END LOOP;
    END IF;
    RETURN ('{"results":[' || array_to_string(docs, ',') || '],"next":'
            || coalesce(to_json(next_cursor)::text, 'null') || '}')::jsonb;
END
$$;
