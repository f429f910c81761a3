-- Helper functions for the benchmark (schema bench, never in progressdb).
\set ON_ERROR_STOP 1

-- langchain-postgres stores messages_to_dict() output: {"type", "data": {…}}.
CREATE FUNCTION bench.lc_message(role text, content text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'type', CASE WHEN role = 'assistant' THEN 'ai' ELSE 'human' END,
        'data', jsonb_build_object(
            'content', content, 'additional_kwargs', '{}'::jsonb, 'response_metadata', '{}'::jsonb,
            'type', CASE WHEN role = 'assistant' THEN 'ai' ELSE 'human' END,
            'name', NULL, 'id', NULL, 'example', false))
$$;

-- After the progressdb load: the cursor message's id (seq = position in the
-- thread because the load posts in timestamp order into fresh threads) and
-- the opaque page cursor of that position. A client only ever gets page
-- cursors from pages, so this takes it from one: the `before` cursor of the
-- one-message page just older than the message at seq + 1 (or, when seq is
-- the thread's last message, of the newest page) points at seq itself.
CREATE FUNCTION bench.fill_cursors() RETURNS void
LANGUAGE sql AS $$
    UPDATE bench.cursors c SET msg_id = m.id
      FROM progressdb.messages m
     WHERE m.thread = c.thread AND m.seq = c.seq;
    UPDATE bench.cursors c
       SET page_cursor = progressdb.list_messages_text(c.thread, 1,
               before => (SELECT m.id FROM progressdb.messages m WHERE m.thread = c.thread AND m.seq = c.seq + 1)
           )::jsonb -> 'pagination' ->> 'before';
$$;

-- Every history cursor's page cursor gives the page its message id gives
-- (the same document, byte for byte), and that page is the right one: the
-- min(50, seq - 1) messages just older than seq, by id. Run after the load
-- (pages from the messages table) and after compaction (pages from chunks).
-- Returns an empty string when all is well, else what is wrong.
CREATE FUNCTION bench.check_cursors() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    c bench.cursors;
    by_cursor text;
    by_id text;
    msgs jsonb;
    want integer;
    missing integer := 0;
    differ integer := 0;
    wrong integer := 0;
    example text;
    problems text := '';
BEGIN
    FOR c IN SELECT * FROM bench.cursors ORDER BY k LOOP
        IF c.msg_id IS NULL OR c.page_cursor IS NULL THEN
            missing := missing + 1;
            CONTINUE;
        END IF;
        by_cursor := progressdb.list_messages_text(c.thread, 50, before => c.page_cursor);
        by_id := progressdb.list_messages_text(c.thread, 50, before => c.msg_id);
        IF by_cursor IS DISTINCT FROM by_id THEN
            differ := differ + 1;
            example := coalesce(example, format('%s before %s', c.thread, c.page_cursor));
        END IF;
        msgs := by_cursor::jsonb -> 'messages';
        want := least(50, c.seq - 1);
        IF jsonb_array_length(msgs) IS DISTINCT FROM want
           OR msgs -> 0 ->> 'id' IS DISTINCT FROM
              (SELECT m.id FROM progressdb.messages m WHERE m.thread = c.thread AND m.seq = c.seq - want)
           OR msgs -> -1 ->> 'id' IS DISTINCT FROM
              (SELECT m.id FROM progressdb.messages m WHERE m.thread = c.thread AND m.seq = c.seq - 1) THEN
            wrong := wrong + 1;
            example := coalesce(example, format('%s before %s', c.thread, c.page_cursor));
        END IF;
    END LOOP;
    IF missing > 0 THEN
        problems := problems || format('%s history cursors have no progressdb message id or page cursor; ', missing);
    END IF;
    IF differ > 0 THEN
        problems := problems || format('%s history pages differ between the page cursor and the message id; ', differ);
    END IF;
    IF wrong > 0 THEN
        problems := problems || format('%s history pages are not the messages just older than the cursor; ', wrong);
    END IF;
    IF example IS NOT NULL THEN
        problems := problems || format('e.g. %s; ', example);
    END IF;
    RETURN problems;
END
$$;

-- Every target holds exactly the generated messages, in the generated order.
-- Returns an empty string when everything matches, else what is wrong.
CREATE FUNCTION bench.check_load() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    total bigint := (SELECT count(*) FROM bench.src);
    n bigint;
    problems text := '';
BEGIN
    SET LOCAL max_parallel_workers_per_gather = 0;
    SELECT count(*) INTO n FROM bench.src s
      JOIN progressdb.messages m ON m.thread = s.thread AND m.seq = s.pos
     WHERE m.body = s.body AND m.author = s.author AND m.role = s.role;
    IF n <> total THEN
        problems := problems || format('progressdb: %s of %s messages match (thread, seq) order; ', n, total);
    END IF;
    SELECT count(*) INTO n FROM bench.src s JOIN bench.naive_messages b ON b.id = s.n
     WHERE b.thread = s.thread AND b.body = s.body AND b.created_at = s.ts;
    IF n <> total THEN
        problems := problems || format('naive: %s of %s rows match; ', n, total);
    END IF;
    SELECT count(*) INTO n FROM bench.src s JOIN bench.langchain_history b ON b.id = s.n
     WHERE b.session_id = s.thread AND b.message -> 'data' ->> 'content' = s.body ->> 'text';
    IF n <> total THEN
        problems := problems || format('langchain: %s of %s rows match; ', n, total);
    END IF;
    RETURN problems || bench.check_cursors();
END
$$;

-- The page queries, as SQL text, for one cursor row. page = 'newest' | 'history'.
-- progressdb: the page read list_messages_text runs -- _page_text (timeline
-- chunks where the thread is compacted that far, else the messages table),
-- below the thread's last seq + 1 for the newest page, below the cursor's seq
-- for a history page -- or, with whole_call, the whole list_messages_text()
-- call with the opaque page cursor, as the gateway makes it.
-- progressdb_jsonb: the whole list_messages() call (the jsonb face).
-- naive_json: the naive query wrapped in the JSON aggregate its pgbench scripts run.
CREATE FUNCTION bench.page_sql(target text, page text, c bench.cursors, whole_call boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF (target = 'progressdb' AND whole_call) OR target = 'progressdb_jsonb' THEN
        RETURN format('SELECT progressdb.%s(%L, 50%s)',
                      CASE target WHEN 'progressdb' THEN 'list_messages_text' ELSE 'list_messages' END, c.thread,
                      CASE page WHEN 'newest' THEN '' ELSE format(', before => %L', c.page_cursor) END);
    ELSIF target = 'progressdb' THEN
        RETURN format('SELECT * FROM progressdb._page_text(%L, %s, 50, false)', c.thread,
                      CASE page WHEN 'newest' THEN (SELECT th.last_seq + 1 FROM progressdb.threads th
                                                     WHERE th.id = c.thread)
                                ELSE c.seq END);
    ELSIF target = 'naive' THEN
        RETURN format('SELECT id, created_at, author, body FROM bench.naive_messages WHERE thread = %L %s '
                      'ORDER BY created_at DESC LIMIT 50', c.thread,
                      CASE page WHEN 'newest' THEN '' ELSE format('AND created_at < %L', c.naive_ts) END);
    ELSIF target = 'naive_json' THEN
        -- the naive page as one JSON document built in SQL (pgbench/*_naive_json.sql)
        RETURN format('SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.created_at), ''[]'')::text FROM (%s) m',
                      bench.page_sql('naive', page, c));
    ELSIF target = 'langchain' THEN
        RETURN format('SELECT message FROM bench.langchain_history WHERE session_id = %L %s '
                      'ORDER BY id DESC LIMIT 50', c.thread,
                      CASE page WHEN 'newest' THEN '' ELSE format('AND id < %s', c.lc_id) END);
    END IF;
    RAISE EXCEPTION 'unknown target %', target;
END
$$;

-- Runs every cursor's page once (warms caches before a "warm" measurement).
CREATE FUNCTION bench.warm(target text, page text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    c bench.cursors;
    total bigint := 0;
    n bigint;
BEGIN
    FOR c IN SELECT * FROM bench.cursors ORDER BY k LOOP
        EXECUTE format('SELECT count(*) FROM (%s) q', bench.page_sql(target, page, c)) INTO n;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;

-- Shared buffers (hit + read) touched by one page, from EXPLAIN (ANALYZE,
-- BUFFERS) of the page query, over the first `samples` cursors (random busy
-- threads). Execution only: planning buffers are not counted.
CREATE FUNCTION bench.page_buffers(target text, page text, samples integer, whole_call boolean DEFAULT false)
RETURNS json
LANGUAGE plpgsql AS $$
DECLARE
    c bench.cursors;
    plan json;
    hit bigint;
    rd bigint;
    rows_out bigint;
    per bigint[] := '{}';
    reads bigint[] := '{}';
    nrows bigint[] := '{}';
    example json;
BEGIN
    -- One untimed run of every sampled page first, so that the session's
    -- first-call costs (catalog lookups, PL/pgSQL plan caching of each code
    -- path inside the page functions) are not counted.
    FOR c IN SELECT * FROM bench.cursors ORDER BY k LIMIT samples LOOP
        EXECUTE bench.page_sql(target, page, c, whole_call);
    END LOOP;
    FOR c IN SELECT * FROM bench.cursors ORDER BY k LIMIT samples LOOP
        EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ' || bench.page_sql(target, page, c, whole_call) INTO plan;
        hit := (plan -> 0 -> 'Plan' ->> 'Shared Hit Blocks')::bigint;
        rd := (plan -> 0 -> 'Plan' ->> 'Shared Read Blocks')::bigint;
        rows_out := (plan -> 0 -> 'Plan' ->> 'Actual Rows')::bigint;
        per := per || (hit + rd);
        reads := reads || rd;
        nrows := nrows || rows_out;
        IF example IS NULL THEN
            example := json_build_object('query', bench.page_sql(target, page, c, whole_call),
                                         'plan', plan -> 0 -> 'Plan' ->> 'Node Type');
        END IF;
    END LOOP;
    RETURN json_build_object(
        'samples', cardinality(per),
        'mean', (SELECT round(avg(x), 1) FROM unnest(per) x),
        'max', (SELECT max(x) FROM unnest(per) x),
        'min', (SELECT min(x) FROM unnest(per) x),
        'mean_read', (SELECT round(avg(x), 1) FROM unnest(reads) x),
        'mean_rows', (SELECT round(avg(x), 1) FROM unnest(nrows) x),
        'per_page', to_json(per),
        'example', example);
END
$$;
