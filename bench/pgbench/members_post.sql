-- members.sh: one message into thread :thread by :actor, a member acting as themselves.
\set len random(40, 440)
SELECT progressdb.post_message(:thread, :actor,
         jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet, the deploy failed again ', 12), :len)),
         actor => :actor)::text;
