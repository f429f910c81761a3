-- context.sh: a chat turn -- append a message to `ctx`, then read the window
-- (which counts the new message's tokens, once).
\set len random(40, 440)
SELECT progressdb.post_message_text('ctx', 'u',
         jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet, the deploy failed again ', 12), :len)));
SELECT progressdb.context('ctx', :budget)::text;
