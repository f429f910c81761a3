-- search.sh: one message through the API into a random thread, its body one
-- of the dataset's (the same bodies with and without the search index).
\set t random(1, :threads)
\set n random(1, :messages)
SELECT progressdb.post_message_text('t' || :t, 'user' || (:t % 1000), s.body) FROM bench.src s WHERE s.n = :n;
