\set k random(1, :ncursors)
SELECT p.message
  FROM bench.cursors c
  CROSS JOIN LATERAL (SELECT l.message FROM bench.langchain_history l
                       WHERE l.session_id = c.thread AND l.id < c.lc_id
                       ORDER BY l.id DESC LIMIT 50) p
 WHERE c.k = :k;
