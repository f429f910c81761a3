-- Golden test of the SQL API's document shapes. Ids and timestamps are
-- masked by the test (msg-<id>, thread-<id>, <ts>); everything else must
-- match api.out exactly.
\pset format unaligned
\pset tuples_only on
\set VERBOSITY terse

-- threads
SELECT progressdb.create_thread('alice', 'Support: Login', 'support');
SELECT progressdb.create_thread('bob');
SELECT progressdb.get_thread('support', 'alice');
SELECT progressdb.update_thread('support', 'Support: Login (solved)', 'alice');
SELECT progressdb.list_threads('alice');

-- messages, replies, reactions, versions
SELECT progressdb.post_message('support', 'alice', '{"text":"I cannot log in"}') ->> 'id' AS first \gset
SELECT progressdb.get_message(:'first');
SELECT progressdb.post_message('support', 'agent', '{"text":"Try resetting"}', 'assistant', :'first');
SELECT progressdb.edit_message(:'first', '{"text":"I cannot log in on mobile"}', 'alice');
SELECT progressdb.message_versions(:'first');
SELECT progressdb.add_reaction(:'first', 'bob', '+1');
SELECT progressdb.add_reaction(:'first', 'amy', 'eyes');
SELECT progressdb.reactions(:'first');
SELECT progressdb.replies(:'first');
SELECT progressdb.list_messages('support', 1);
SELECT progressdb.list_messages('support');

-- soft delete and restore
SELECT progressdb.delete_message(:'first', 'alice');
SELECT progressdb.list_messages('support', include_deleted => true);
SELECT progressdb.restore_message(:'first', 'alice');
SELECT progressdb.stats();

-- members, roles, read state, inbox (0.2)
SELECT progressdb.add_member('support', 'carol', 'member', 'alice');
SELECT progressdb.add_member('support', 'dan', 'reader');
SELECT progressdb.list_members('support', 'carol');
SELECT progressdb.post_message('support', 'alice', '{"text":"Any news?"}', actor => 'alice') ->> 'id' AS news \gset
SELECT progressdb.get_thread('support', 'carol');
SELECT progressdb.mark_read('support', :'news', 'carol');
SELECT progressdb.update_thread('support', NULL, 'alice', '{"tier":"gold"}', 'joined');
SELECT progressdb.list_threads('carol', metadata => '{"tier":"gold"}');
SELECT progressdb.remove_member('support', 'dan', 'alice');

-- the text faces (render-once, 0.2): the documents exactly as the gateway sends them
SELECT progressdb.list_messages_text('support', 2, include_deleted => true);
SELECT progressdb.post_message_text('support', 'alice', '{"text":"tab\there \"quoted\" é ☃"}', reply_to => :'news');

-- search (0.2): current versions of live messages the actor may read
SELECT progressdb.search('carol', 'news');
SELECT progressdb.search(NULL, 'quoted or news', thread => 'support');

-- errors carry SQLSTATEs
\set VERBOSITY sqlstate
SELECT progressdb.get_thread('support', 'mallory');
SELECT progressdb.get_message('msg-nope');
SELECT progressdb.post_message('support', 'alice', 'null');
SELECT progressdb.list_messages('support', 0);
SELECT progressdb.create_thread('carol', NULL, 'support');
SELECT progressdb.post_message('support', 'dan', '{"text":"hi"}', actor => 'dan');
SELECT progressdb.remove_member('support', 'alice', 'alice');
SELECT progressdb.add_member('support', 'eve', 'boss', 'alice');
SELECT progressdb.search('carol', '');
