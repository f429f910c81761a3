\set tid random(1, :nthreads)
SELECT id, created_at, author, body FROM bench.naive_messages
 WHERE thread = 't' || :tid ORDER BY created_at DESC LIMIT 50;
