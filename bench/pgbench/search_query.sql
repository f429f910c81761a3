-- search.sh: one search page (-M prepared: :actor and :q are bind
-- parameters; actor NULL is the service).
SELECT progressdb.search(nullif(:actor, 'NULL'), :q)::text;
