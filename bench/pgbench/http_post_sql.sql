-- The SQL the gateway runs for POST /v1/messages with a backend key and an
-- author (gateway/src/routes/messages.rs `create`, Call::sql): the text face,
-- actor = author (ownership checked), result as text like the gateway. The
-- body arrives as JSON text and is cast to jsonb, as the gateway's
-- `$3::text::jsonb` parameter is.
\set tid random(1, :nthreads)
\set owner :tid % 1000
\set len random(100, 2000)
SELECT progressdb.post_message_text('t' || :tid, 'user' || :owner,
         ('{"text":"' || left(repeat('lorem ipsum dolor sit amet consectetur ', 52), :len) || '"}')::text::jsonb,
         actor => 'user' || :owner)::text;
