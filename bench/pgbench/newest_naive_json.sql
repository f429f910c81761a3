-- newest page of 50 from the naive table, returned as one JSON document built
-- in SQL (as a PostgREST-style server does): the query of newest_naive.sql,
-- aggregated oldest first, sent as text like the gateway's response body.
\set tid random(1, :nthreads)
SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.created_at), '[]')::text
  FROM (SELECT id, created_at, author, body FROM bench.naive_messages
         WHERE thread = 't' || :tid ORDER BY created_at DESC LIMIT 50) m;
