-- context.sh: one message appended to `post` (the same body length spread as members_post.sql).
\set len random(40, 440)
SELECT progressdb.post_message_text('post', 'u',
         jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet, the deploy failed again ', 12), :len)));
