-- The SQL the gateway runs for GET /v1/threads/{id}/messages?limit=50 with a
-- backend key and no author (gateway/src/routes/messages.rs `list`, Call::sql):
-- the text face, thread and limit as parameters, result as text.
\set tid random(1, :nthreads)
SELECT progressdb.list_messages_text('t' || :tid, lim => 50)::text;
