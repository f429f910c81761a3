-- encrypted-vs-plain hook: newest page of 50 of thread <prefix><i>, text face.
\set tid random(1, :nenc)
SELECT progressdb.list_messages_text(:prefix || :tid, 50);
