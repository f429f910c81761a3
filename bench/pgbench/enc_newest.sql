-- encrypted-vs-plain hook: newest page of 50 of thread <prefix><i>.
\set tid random(1, :nenc)
SELECT progressdb.list_messages(:prefix || :tid, 50);
