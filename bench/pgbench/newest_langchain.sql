-- langchain-postgres reads a session ORDER BY id; newest 50 = ORDER BY id DESC LIMIT 50.
\set tid random(1, :nthreads)
SELECT message FROM bench.langchain_history
 WHERE session_id = 't' || :tid ORDER BY id DESC LIMIT 50;
