-- Deterministic synthetic chat dataset, generated inside PostgreSQL.
--
-- psql variables: threads, messages, seed (setseed() value in [-1, 1]),
-- skew (thread-activity exponent), ncursors (history cursors to pick).
--
-- bench.src holds one row per message in global timestamp order (n = 1..M):
--   * every thread t1..tT gets at least one message; the other M-T messages
--     pick thread rank floor(T * u^skew) + 1 with u uniform in [0,1): a
--     power-law (Zipf-like) activity, so a few threads are very busy, most are
--     small, and with random timestamps the timelines interleave on disk;
--   * timestamps are uniform over 30 days; the load order is (ts, k);
--   * the first message of a thread is by its owner user<tix % 1000> (so the
--     gateway's ownership check passes for that author); later ones are by the
--     owner (45%), 'assistant' (45%, role assistant) or another user (10%);
--   * bodies are {"text": …} with 100-2000 characters of words (mean ≈ 730),
--     skewed towards short messages, cut from one of 128 random-word texts.
-- Nothing here depends on the clock or on plan parallelism, so the same
-- parameters give byte-identical data.
\set ON_ERROR_STOP 1
SET max_parallel_workers_per_gather = 0;
SET work_mem = '256MB';

DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;

SELECT setseed(:seed);

-- 128 texts of ~9 KB of random words to cut bodies from: each message picks
-- one at random, so messages (even of one thread) rarely share text and
-- compress like real chat text (~2x with lz4), not like copies of each other.
CREATE TABLE bench.lorem AS
SELECT t AS i, string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ' ORDER BY g) AS txt
  FROM generate_series(1, 128) t, generate_series(1, 1400) g,
       (SELECT '{lorem,ipsum,dolor,sit,amet,consectetur,adipiscing,elit,sed,do,eiusmod,tempor,incididunt,ut,labore,et,dolore,magna,aliqua,enim,ad,minim,veniam,quis,nostrud,exercitation,ullamco,laboris,nisi,aliquip,ex,ea,commodo,consequat,duis,aute,irure,in,reprehenderit,voluptate,velit,esse,cillum,fugiat,nulla,pariatur,excepteur,sint,occaecat,cupidatat,non,proident,sunt,culpa,qui,officia,deserunt,mollit,anim,id,est,laborum,the,deploy,failed,again,can,you,check,logs,thanks,sure,here,is,summary,of,meeting,notes}'::text[] AS w) words
 GROUP BY t;
-- As one array constant in the query below: cut per row without detoasting
-- a stored text a million times.
SELECT array_agg(txt ORDER BY i) AS lorem FROM bench.lorem \gset

CREATE TABLE bench.src AS
WITH raw AS (
    SELECT g AS k,
           CASE WHEN g <= :threads THEN g
                ELSE 1 + least(:threads - 1, floor(:threads * power(random(), :skew))::int) END AS tix,
           timestamptz '2025-01-01 00:00:00+00' + random() * interval '30 days' AS ts,
           100 + floor(1901 * power(random(), 2))::int AS len,
           1 + floor(random() * 6000)::int AS off,
           1 + floor(random() * 128)::int AS li,
           random() AS r
      FROM generate_series(1, :messages) g
), ordered AS (
    SELECT row_number() OVER (ORDER BY ts, k) AS n,
           row_number() OVER (PARTITION BY tix ORDER BY ts, k) AS pos,
           raw.*
      FROM raw
)
SELECT o.n,
       't' || o.tix AS thread,
       o.tix,
       o.pos,
       o.ts,
       CASE WHEN o.pos = 1 OR o.r < 0.45 THEN 'user' || (o.tix % 1000)
            WHEN o.r < 0.9 THEN 'assistant'
            ELSE 'user' || ((o.tix + 17) % 1000) END AS author,
       CASE WHEN o.pos > 1 AND o.r >= 0.45 AND o.r < 0.9 THEN 'assistant' ELSE 'user' END AS role,
       jsonb_build_object('text', substr((:'lorem'::text[])[o.li], o.off, o.len)) AS body
  FROM ordered o
 ORDER BY o.n;
ALTER TABLE bench.src ADD PRIMARY KEY (n);
CREATE INDEX ON bench.src (thread, pos);
ANALYZE bench.src;

CREATE TABLE bench.thread_stats AS
SELECT thread, tix, count(*) AS cnt FROM bench.src GROUP BY thread, tix;

-- History cursors: busy threads (>= 150 messages, or at least the 20 busiest),
-- in a seeded random order; the cursor is a message between position 51 and
-- the middle of the thread, so the page just older than it is a full page of
-- 50 from the older half of the timeline. naive_ts / lc_id locate the same
-- message in the baselines; msg_id (progressdb's message id) and page_cursor
-- (the opaque page cursor of that position, what a client paging back holds)
-- are filled in after loading.
SELECT setseed(:seed / 2);
CREATE TABLE bench.cursors AS
WITH cand AS (
    SELECT s.*, row_number() OVER (ORDER BY cnt DESC, thread) AS rk FROM bench.thread_stats s
), picked AS (
    SELECT thread, cnt FROM cand WHERE cnt >= 150 OR rk <= 20 ORDER BY md5(thread) LIMIT :ncursors
), positioned AS (
    SELECT row_number() OVER () AS k, thread, cnt,
           CASE WHEN cnt / 2 > 51 THEN 51 + floor(random() * (cnt / 2 - 51 + 1))::bigint
                ELSE greatest(2, cnt / 2) END AS seq
      FROM picked
)
SELECT p.k::int AS k, p.thread, p.cnt, p.seq, NULL::text AS msg_id, NULL::text AS page_cursor,
       s.ts AS naive_ts, s.n AS lc_id
  FROM positioned p JOIN bench.src s ON s.thread = p.thread AND s.pos = p.seq
 ORDER BY p.k;
ALTER TABLE bench.cursors ADD PRIMARY KEY (k);

-- Baseline (a): the langchain-postgres chat-history table shape.
CREATE TABLE bench.langchain_history (
    id         serial PRIMARY KEY,
    session_id text NOT NULL,
    message    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX langchain_history_session_idx ON bench.langchain_history (session_id);

-- Baseline (b): a fair naive messages table with the right index for timelines.
CREATE TABLE bench.naive_messages (
    id         bigserial PRIMARY KEY,
    thread     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    author     text NOT NULL,
    body       jsonb NOT NULL
);
CREATE INDEX naive_messages_thread_created_idx ON bench.naive_messages (thread, created_at);

SELECT json_build_object(
    'threads', (SELECT count(*) FROM bench.thread_stats),
    'messages', (SELECT count(*) FROM bench.src),
    'avg_body_bytes', (SELECT round(avg(octet_length(body::text))) FROM bench.src),
    'max_thread_messages', (SELECT max(cnt) FROM bench.thread_stats),
    'median_thread_messages', (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY cnt) FROM bench.thread_stats),
    'p90_thread_messages', (SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY cnt) FROM bench.thread_stats),
    'threads_ge_150', (SELECT count(*) FROM bench.thread_stats WHERE cnt >= 150),
    'cursors', (SELECT count(*) FROM bench.cursors),
    'cursor_thread_mean_messages', (SELECT round(avg(cnt)) FROM bench.cursors)
) AS dataset \gset
\o :statsfile
SELECT :'dataset';
\o
