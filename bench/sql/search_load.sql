-- Dataset of bench/search.sh: bench.src (bench/sql/dataset.sql, the same
-- generator and seed as bench/run.sh) written straight into the progressdb
-- tables, with the search vectors the API would write, in one statement per
-- table (a bulk load; the API's append cost is measured separately).
--
-- One message in 1,000 also carries the rare word `zephyrword`: the
-- generator's texts use 80 words, so every one of them is common.
-- psql variables: searcher_threads (memberships of user `searcher`).
\set ON_ERROR_STOP 1
SET max_parallel_workers_per_gather = 0;
SET maintenance_work_mem = '512MB';

-- Built once after the load, as CREATE EXTENSION makes it.
DROP INDEX progressdb.messages_search_idx;

INSERT INTO progressdb.threads (id, title, slug, author, created_ts, updated_ts, last_seq, member_count,
                                last_activity_ts)
SELECT s.thread, s.thread, s.thread || '-' || s.thread, 'user' || (s.tix % 1000),
       (extract(epoch FROM min(s.ts)) * 1e9)::bigint, (extract(epoch FROM min(s.ts)) * 1e9)::bigint,
       count(*), 1, (extract(epoch FROM max(s.ts)) * 1e9)::bigint
  FROM bench.src s GROUP BY s.thread, s.tix;
INSERT INTO progressdb.thread_members (thread, user_id, role, joined_ts, joined_seq, last_read_seq)
SELECT th.id, th.author, 'owner', th.created_ts, 0, 0 FROM progressdb.threads th;

INSERT INTO progressdb.messages (thread, seq, id, author, role, ts, body, updated_ts, search_vec)
SELECT x.thread, x.pos, 'msg-' || lpad(to_hex(x.n), 32, '0'), x.author, x.role, x.ns, x.body, x.ns,
       progressdb._search_vector(x.thread, NULL, x.body)
  FROM (SELECT s.thread, s.pos, s.n, s.author, s.role, (extract(epoch FROM s.ts) * 1e9)::bigint AS ns,
               CASE WHEN s.n % 1000 = 0 THEN jsonb_build_object('text', (s.body ->> 'text') || ' zephyrword')
                    ELSE s.body END AS body
          FROM bench.src s) x
 ORDER BY x.n;

CREATE INDEX messages_search_idx ON progressdb.messages USING gin (search_vec);

-- The searching user: a member of :searcher_threads threads picked at random
-- (seeded by the thread names), so mostly small ones, as the power law has it.
INSERT INTO progressdb.thread_members (thread, user_id, role, joined_ts, joined_seq, last_read_seq)
SELECT th.id, 'searcher', 'member', th.created_ts, 0, 0
  FROM progressdb.threads th ORDER BY md5(th.id || 'search') LIMIT :searcher_threads;
UPDATE progressdb.threads th SET member_count = 2
 WHERE th.id IN (SELECT mm.thread FROM progressdb.thread_members mm WHERE mm.user_id = 'searcher');
