-- Loads bench.src through the SQL API, in global timestamp order so thread
-- timelines interleave on disk exactly as live traffic would. One statement
-- per batch of :batch messages (its own transaction): inside a batch,
-- post_message is called once per row in n order (volatile target-list
-- functions are evaluated after the ORDER BY).
\set ON_ERROR_STOP 1
SET max_parallel_workers_per_gather = 0;
SELECT format($f$SELECT count(*) FROM (SELECT progressdb.post_message(thread, author, body, role)
                  FROM bench.src WHERE n > %s AND n <= %s ORDER BY n) s$f$, b, b + :batch)
  FROM generate_series(0, (SELECT max(n) FROM bench.src) - 1, :batch) b \gexec
