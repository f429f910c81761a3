-- append: the message of append_progressdb.sql through the jsonb face (post_message).
\set tid random(1, :nthreads)
\set owner :tid % 1000
\set len random(100, 2000)
SELECT progressdb.post_message('t' || :tid, 'user' || :owner, jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet consectetur ', 52), :len)));
