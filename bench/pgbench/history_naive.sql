\set k random(1, :ncursors)
SELECT p.id, p.created_at, p.author, p.body
  FROM bench.cursors c
  CROSS JOIN LATERAL (SELECT n.id, n.created_at, n.author, n.body FROM bench.naive_messages n
                       WHERE n.thread = c.thread AND n.created_at < c.naive_ts
                       ORDER BY n.created_at DESC LIMIT 50) p
 WHERE c.k = :k;
