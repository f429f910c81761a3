-- Baseline (b): same rows, same order, same batches; created_at = the message's time.
\set ON_ERROR_STOP 1
SET max_parallel_workers_per_gather = 0;
SELECT format($f$INSERT INTO bench.naive_messages (id, thread, created_at, author, body)
                 SELECT n, thread, ts, author, body FROM bench.src WHERE n > %s AND n <= %s ORDER BY n$f$, b, b + :batch)
  FROM generate_series(0, (SELECT max(n) FROM bench.src) - 1, :batch) b \gexec
SELECT setval(pg_get_serial_sequence('bench.naive_messages', 'id'), (SELECT max(id) FROM bench.naive_messages));
