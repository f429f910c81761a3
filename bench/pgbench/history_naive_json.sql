-- history page of 50 from the naive table as one JSON document built in SQL:
-- the query of history_naive.sql (same cursor, same keyset), aggregated oldest
-- first, sent as text.
\set k random(1, :ncursors)
SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.created_at), '[]')::text
  FROM (SELECT p.id, p.created_at, p.author, p.body
          FROM bench.cursors c
          CROSS JOIN LATERAL (SELECT n.id, n.created_at, n.author, n.body FROM bench.naive_messages n
                               WHERE n.thread = c.thread AND n.created_at < c.naive_ts
                               ORDER BY n.created_at DESC LIMIT 50) p
         WHERE c.k = :k) m;
