-- newest page of 50 of a uniformly random thread, through the text face (the
-- page document as JSON text, rendered once; what the gateway serves).
\set tid random(1, :nthreads)
SELECT progressdb.list_messages_text('t' || :tid, 50);
