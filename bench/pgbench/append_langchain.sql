-- append: the same message as langchain-postgres' add_messages INSERT.
\set tid random(1, :nthreads)
\set len random(100, 2000)
INSERT INTO bench.langchain_history (session_id, message)
VALUES ('t' || :tid, bench.lc_message('user', left(repeat('lorem ipsum dolor sit amet consectetur ', 52), :len))) RETURNING id;
