-- append: one message into a uniformly random existing thread, through the SQL
-- API's text face (the new message's document as JSON text, what the gateway serves).
\set tid random(1, :nthreads)
\set owner :tid % 1000
\set len random(100, 2000)
SELECT progressdb.post_message_text('t' || :tid, 'user' || :owner, jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet consectetur ', 52), :len)));
