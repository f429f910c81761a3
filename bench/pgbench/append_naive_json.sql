-- append: the INSERT of append_naive.sql, returning the inserted row as JSON
-- text (as a PostgREST-style server does) instead of its id.
\set tid random(1, :nthreads)
\set owner :tid % 1000
\set len random(100, 2000)
INSERT INTO bench.naive_messages (thread, created_at, author, body)
VALUES ('t' || :tid, now(), 'user' || :owner, jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet consectetur ', 52), :len))) RETURNING to_jsonb(bench.naive_messages.*)::text;
