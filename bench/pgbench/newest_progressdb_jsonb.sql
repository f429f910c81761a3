-- newest page of 50 of a uniformly random thread, through the jsonb face
-- (list_messages: the text face's document parsed into jsonb, sent as jsonb).
\set tid random(1, :nthreads)
SELECT progressdb.list_messages('t' || :tid, 50);
