-- Baseline (a): same rows, same order, same batches, in langchain-postgres'
-- message format ({"type": "human"|"ai", "data": {"content": …, …}}).
\set ON_ERROR_STOP 1
SET max_parallel_workers_per_gather = 0;
SELECT format($f$INSERT INTO bench.langchain_history (id, session_id, message, created_at)
                 SELECT n, thread, bench.lc_message(role, body->>'text'), ts
                   FROM bench.src WHERE n > %s AND n <= %s ORDER BY n$f$, b, b + :batch)
  FROM generate_series(0, (SELECT max(n) FROM bench.src) - 1, :batch) b \gexec
SELECT setval(pg_get_serial_sequence('bench.langchain_history', 'id'), (SELECT max(id) FROM bench.langchain_history));
