-- The SQL the gateway runs for POST /v1/messages with a backend key and an
-- author (actor = author: ownership checked), result as text like the gateway.
\set tid random(1, :nthreads)
\set owner :tid % 1000
\set len random(100, 2000)
SELECT progressdb.post_message('t' || :tid, 'user' || :owner, jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet consectetur ', 52), :len)), actor => 'user' || :owner)::text;
