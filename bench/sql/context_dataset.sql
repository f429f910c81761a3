-- context.sh: the dataset. Thread `ctx`: a system prompt, then :n messages
-- of a support conversation -- user and assistant turns of varying length
-- (about 15 to 150 tokens), and every 25th turn an assistant tool call with
-- two tool results. Thread `post` (one owner) takes the append runs.
\set ON_ERROR_STOP on
SELECT progressdb.create_thread('u', 'Context bench', 'ctx');
SELECT progressdb.create_thread('u', 'Append bench', 'post');
SELECT progressdb.post_message('ctx', 'u',
         jsonb_build_object('text', 'You are a support assistant for a cloud hosting company. '
                                    || 'Answer briefly, cite the runbook section, never guess.'),
         role => 'system') \g /dev/null

SELECT count(progressdb.post_message('ctx', 'u', b.body, role => b.role))
  FROM generate_series(1, :n) i
 CROSS JOIN LATERAL (
   SELECT CASE
            WHEN i % 25 = 23 THEN 'assistant'
            WHEN i % 25 IN (24, 0) THEN 'tool'
            WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END AS role
 ) r
 CROSS JOIN LATERAL (
   SELECT r.role, CASE
     WHEN i % 25 = 23 THEN jsonb_build_object('content', NULL, 'tool_calls', jsonb_build_array(
            jsonb_build_object('id', 'call_' || i || '_a', 'type', 'function', 'function',
              jsonb_build_object('name', 'lookup_runbook', 'arguments', format('{"section":"%s"}', i))),
            jsonb_build_object('id', 'call_' || i || '_b', 'type', 'function', 'function',
              jsonb_build_object('name', 'server_status', 'arguments', format('{"host":"web-%s"}', i % 7)))))
     WHEN i % 25 = 24 THEN jsonb_build_object('content', 'Runbook section ' || i || ': restart the worker, then check the queue depth.',
                                              'tool_call_id', 'call_' || (i - 1) || '_a')
     WHEN i % 25 = 0 THEN jsonb_build_object('content', '{"host":"web-' || (i % 7) || '","status":"degraded","load":' || (i % 13) || '}',
                                             'tool_call_id', 'call_' || (i - 2) || '_b')
     ELSE jsonb_build_object('text', 'Message ' || i || ': ' ||
            left(repeat('the deploy failed again after the migration, logs show a timeout on the queue worker; ',
                        12), 60 + (i * 37) % 600))
   END AS body
 ) b \g /dev/null
