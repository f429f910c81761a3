-- history: the page of history_progressdb.sql (same cursor) through the jsonb face.
\set k random(1, :ncursors)
SELECT progressdb.list_messages(c.thread, 50, before => c.page_cursor) FROM bench.cursors c WHERE c.k = :k;
