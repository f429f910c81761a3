-- The SQL the gateway runs for GET /v1/threads/{id}/messages?limit=50 (backend key, no author).
\set tid random(1, :nthreads)
SELECT progressdb.list_messages('t' || :tid, lim => 50)::text;
