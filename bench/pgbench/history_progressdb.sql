-- history: the page of 50 just older than a cursor in the older half of a
-- random busy thread (bench.cursors; the lookup of the cursor row is the same
-- tiny primary-key probe for every target), through the text face, with the
-- opaque page cursor a client paging back holds (no cursor lookup).
\set k random(1, :ncursors)
SELECT progressdb.list_messages_text(c.thread, 50, before => c.page_cursor) FROM bench.cursors c WHERE c.k = :k;
