-- newest page of 50 of a uniformly random thread.
\set tid random(1, :nthreads)
SELECT progressdb.list_messages('t' || :tid, 50);
