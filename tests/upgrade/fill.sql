-- Fills a database with data written through the 0.1.0 SQL API (only
-- functions 0.1.0 has), covering every kind of stored state an upgrade must
-- carry over: threads by several authors (titled, untitled, renamed,
-- auto-created, deleted), messages with versions, reactions, replies, soft
-- deletes and a restore, an encrypted thread (whole-body and partial
-- encryption) with edits, and a thread long enough to be compacted into
-- several timeline chunks. Then it registers the documents to capture in
-- upgrade_docs (see capture.sql).
--
-- Run by tests/upgrade/run.sh with psql -X -v ON_ERROR_STOP=1, as superuser.

\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = warning;

-- 'general': alice's thread; bob and carol talk in it.
SELECT progressdb.create_thread('alice', 'General chat', 'general');
SELECT progressdb.post_message('general', 'alice', '{"text":"Welcome!"}') ->> 'id' AS g1 \gset
SELECT progressdb.post_message('general', 'bob', '{"text":"Hi all","lang":"en"}', 'user', :'g1') ->> 'id' AS g2 \gset
SELECT progressdb.post_message('general', 'carol', '{"text":"hello","n":[1,2,3]}', 'user', :'g1') ->> 'id' AS g3 \gset
SELECT progressdb.post_message('general', 'helper-bot', '{"text":"I am a bot"}', 'assistant') ->> 'id' AS g4 \gset
SELECT progressdb.post_message('general', 'bob', '{"text":"typo mesage"}') ->> 'id' AS g5 \gset
SELECT progressdb.post_message('general', 'carol', '{"text":"to be deleted"}', 'user', :'g2') ->> 'id' AS g6 \gset
SELECT progressdb.post_message('general', 'alice', '{"text":"deleted, then restored"}') ->> 'id' AS g7 \gset
SELECT progressdb.post_message('general', 'alice', '{"text":"ünïcödé ✓ \"quoted\" \\ back"}') ->> 'id' AS g8 \gset
-- versions: two edits of one message, one of another
SELECT progressdb.edit_message(:'g5', '{"text":"typo message"}', 'bob') IS NOT NULL AS ok;
SELECT progressdb.edit_message(:'g5', '{"text":"typo message (edited twice)"}', 'bob') IS NOT NULL AS ok;
SELECT progressdb.edit_message(:'g1', '{"text":"Welcome, everyone!","pinned":true}') IS NOT NULL AS ok;
-- reactions (one per identity; a later one replaces, one removed)
SELECT progressdb.add_reaction(:'g1', 'bob', '+1') IS NOT NULL AS ok;
SELECT progressdb.add_reaction(:'g1', 'carol', 'heart') IS NOT NULL AS ok;
SELECT progressdb.add_reaction(:'g1', 'carol', 'tada') IS NOT NULL AS ok;
SELECT progressdb.add_reaction(:'g2', 'alice', 'wave') IS NOT NULL AS ok;
SELECT progressdb.add_reaction(:'g2', 'carol', 'eyes') IS NOT NULL AS ok;
SELECT progressdb.remove_reaction(:'g2', 'carol');
-- soft deletes, one restored; the deleted reply leaves bob's replies
SELECT progressdb.delete_message(:'g6', 'carol');
SELECT progressdb.delete_message(:'g7', 'alice');
SELECT progressdb.restore_message(:'g7', 'alice') IS NOT NULL AS ok;
SELECT progressdb.post_message('general', 'bob', '{"text":"deleted with a reaction"}') ->> 'id' AS g9 \gset
SELECT progressdb.add_reaction(:'g9', 'alice', 'x') IS NOT NULL AS ok;
SELECT progressdb.delete_message(:'g9');

-- 'support': bob's thread, renamed.
SELECT progressdb.create_thread('bob', 'Support: Login', 'support');
SELECT progressdb.update_thread('support', 'Support: Login (solved)', 'bob');
SELECT progressdb.post_message('support', 'bob', '{"text":"I cannot log in"}') ->> 'id' AS s1 \gset
SELECT progressdb.post_message('support', 'agent', '{"text":"Try resetting"}', 'assistant', :'s1') ->> 'id' AS s2 \gset
SELECT progressdb.post_message('support', 'bob', '{"text":"Worked, thanks"}', 'user', :'s2') IS NOT NULL AS ok;

-- Untitled threads ("New Thread #n" from the sequence) and one created by
-- post_message with a generated id.
SELECT progressdb.create_thread('carol');
SELECT progressdb.create_thread('carol', NULL, 'carol-notes');
SELECT progressdb.post_message(NULL, 'frank', '{"text":"first words"}') ->> 'thread' AS auto \gset
SELECT progressdb.post_message(:'auto', 'frank', '{"text":"second words"}') IS NOT NULL AS ok;

-- 'vault': dave's encrypted thread, whole bodies sealed, with edits (the
-- earlier versions stay sealed under their own identity), a reply, a
-- reaction and a delete.
SELECT progressdb.create_thread('dave', 'Billing', 'vault', encrypted => true);
SELECT progressdb.post_message('vault', 'dave', '{"text":"card ends 4242"}') ->> 'id' AS v1 \gset
SELECT progressdb.edit_message(:'v1', '{"text":"card ends 4343"}', 'dave') IS NOT NULL AS ok;
SELECT progressdb.edit_message(:'v1', '{"text":"card ends 4444"}', 'dave') IS NOT NULL AS ok;
SELECT progressdb.post_message('vault', 'billing-bot', '{"text":"noted"}', 'assistant', :'v1') ->> 'id' AS v2 \gset
SELECT progressdb.add_reaction(:'v2', 'dave', 'ok') IS NOT NULL AS ok;
SELECT progressdb.post_message('vault', 'dave', '{"text":"secret to delete"}') ->> 'id' AS v3 \gset
SELECT progressdb.delete_message(:'v3', 'dave');
-- partial encryption: only body.card is sealed, the rest stays plaintext
SET progressdb.encrypted_fields = 'body.card';
SELECT progressdb.post_message('vault', 'dave', '{"card":"4111 1111 1111 1111","note":"visible"}') ->> 'id' AS v4 \gset
SELECT progressdb.edit_message(:'v4', '{"card":"5500 0000 0000 0004","note":"still visible"}') IS NOT NULL AS ok;
RESET progressdb.encrypted_fields;
SELECT progressdb.post_message('vault', 'dave', '{"text":"after the partial one"}') IS NOT NULL AS ok;

-- 'old': erin's thread, deleted with its messages.
SELECT progressdb.create_thread('erin', 'Old news', 'old');
SELECT progressdb.post_message('old', 'erin', '{"text":"gone soon"}') ->> 'id' AS o1 \gset
SELECT progressdb.delete_thread('old', 'erin');

-- 'busy': a long thread (300 messages of varied size, some replies), then
-- compacted into timeline chunks; some chunked messages are changed after
-- compaction, so their chunks were rewritten by the trigger.
SELECT progressdb.create_thread('gina', 'Busy room', 'busy');
SELECT count(progressdb.post_message('busy', CASE i % 3 WHEN 0 THEN 'gina' WHEN 1 THEN 'hank' ELSE 'ivy' END,
                                     jsonb_build_object('text', format('message %s ', i) || repeat('lorem ipsum ', i % 40),
                                                        'i', i)))
FROM generate_series(1, 300) AS i;
SELECT id AS b10 FROM progressdb.messages WHERE thread = 'busy' AND seq = 10 \gset
SELECT progressdb.post_message('busy', 'hank', '{"text":"replying to 10"}', 'user', :'b10') IS NOT NULL AS ok;
SELECT progressdb.edit_message(:'b10', '{"text":"message 10, edited before compaction"}') IS NOT NULL AS ok;
SELECT progressdb.delete_message(id) FROM progressdb.messages WHERE thread = 'busy' AND seq IN (20, 21, 150);
-- encrypted and all other threads are compacted too (min_run => 1)
SELECT progressdb.compact(min_run => 1, min_age => '0') IS NOT NULL AS ok;
SELECT id AS b30 FROM progressdb.messages WHERE thread = 'busy' AND seq = 30 \gset
SELECT id AS b200 FROM progressdb.messages WHERE thread = 'busy' AND seq = 200 \gset
SELECT progressdb.edit_message(:'b30', '{"text":"message 30, edited after compaction"}') IS NOT NULL AS ok;
SELECT progressdb.add_reaction(:'b200', 'gina', 'fire') IS NOT NULL AS ok;
SELECT progressdb.delete_message(id) FROM progressdb.messages WHERE thread = 'busy' AND seq = 100;
SELECT progressdb.restore_message(id) IS NOT NULL AS ok FROM progressdb.messages WHERE thread = 'busy' AND seq = 150;
-- a few newer messages stay outside the chunks
SELECT count(progressdb.post_message('busy', 'gina', jsonb_build_object('text', format('tail %s', i))))
FROM generate_series(1, 5) AS i;

-- The data must really hold what the upgrade has to carry.
DO $$
BEGIN
    IF (SELECT count(DISTINCT thread) FROM progressdb.message_chunks) < 2
       OR (SELECT count(*) FROM progressdb.message_chunks WHERE thread = 'busy') < 3 THEN
        RAISE EXCEPTION 'fill: compaction made too few timeline chunks';
    END IF;
    IF (SELECT count(*) FROM progressdb.message_versions WHERE body_enc IS NOT NULL) < 3
       OR (SELECT count(*) FROM progressdb.messages WHERE thread = 'vault' AND body_enc IS NULL) > 0
       OR (SELECT count(*) FROM progressdb.messages WHERE body IS NOT NULL AND body_enc IS NOT NULL) < 1 THEN
        RAISE EXCEPTION 'fill: the encrypted thread is not stored as expected';
    END IF;
    IF (SELECT count(*) FROM progressdb.messages WHERE deleted_ts IS NOT NULL) < 5
       OR (SELECT count(*) FROM progressdb.threads WHERE deleted_ts IS NOT NULL) <> 1 THEN
        RAISE EXCEPTION 'fill: soft deletes missing';
    END IF;
END
$$;

-- Documents to capture before and after the upgrade: kind (how run.sh
-- compares them, see compare_docs.py), a label, and the query. The list is
-- made now, from the 0.1.0 tables, and kept as plain user data: the same
-- queries run after the upgrade.
CREATE TABLE public.upgrade_docs (n serial PRIMARY KEY, kind text NOT NULL, label text NOT NULL, query text NOT NULL);

-- Per live thread: the Thread document (as service and as its author) and
-- whole timelines, with and without deleted messages.
INSERT INTO public.upgrade_docs (kind, label, query)
SELECT d.kind, format('%s %s %s', d.kind, d.variant, t.id), d.query
FROM progressdb.threads t,
LATERAL (VALUES
    ('thread', 'service', format('SELECT progressdb.get_thread(%L)', t.id)),
    ('thread', 'author', format('SELECT progressdb.get_thread(%L, %L)', t.id, t.author)),
    ('page', 'all', format('SELECT progressdb.list_messages(%L, 1000, include_deleted => true)', t.id)),
    ('page', 'newest', format('SELECT progressdb.list_messages(%L)', t.id)),
    ('page', 'newest-5', format('SELECT progressdb.list_messages(%L, 5)', t.id)),
    ('page', 'author', format('SELECT progressdb.list_messages(%L, 1000, actor => %L)', t.id, t.author))
) AS d(kind, variant, query)
WHERE t.deleted_ts IS NULL;

-- Pages with cursors: before and after every 7th message (deleted ones too,
-- they are valid cursors), small and large pages, with and without deleted.
INSERT INTO public.upgrade_docs (kind, label, query)
SELECT 'page', format('page %s/lim=%s/deleted=%s %s@seq%s', c.dir, c.lim, c.del, m.thread, m.seq),
       format('SELECT progressdb.list_messages(%L, %s, %s => %L, include_deleted => %L)',
              m.thread, c.lim, c.dir, m.id, c.del)
FROM progressdb.messages m
JOIN progressdb.threads t ON t.id = m.thread AND t.deleted_ts IS NULL,
LATERAL (VALUES ('before', 5, false), ('before', 50, false), ('before', 50, true),
                ('after', 5, false), ('after', 50, true)) AS c(dir, lim, del)
WHERE m.seq % 7 = 3 OR m.seq = t.last_seq;

-- Per message: the Message document (as service and as its author), its
-- versions, reactions and replies. A deleted message answers "not found":
-- that is captured too (capture.sql records errors as their SQLSTATE).
INSERT INTO public.upgrade_docs (kind, label, query)
SELECT d.kind, format('%s %s %s/%s', d.kind, d.variant, m.thread, m.seq), d.query
FROM progressdb.messages m
JOIN progressdb.threads t ON t.id = m.thread,
LATERAL (VALUES
    ('message', 'service', format('SELECT progressdb.get_message(%L)', m.id)),
    ('message', 'author', format('SELECT progressdb.get_message(%L, %L)', m.id, m.author)),
    ('message', 'thread-owner', format('SELECT progressdb.get_message(%L, %L, %L)', m.id, t.author, m.thread)),
    ('versions', 'service', format('SELECT progressdb.message_versions(%L)', m.id)),
    ('reactions', 'service', format('SELECT progressdb.reactions(%L)', m.id)),
    ('replies', 'service', format('SELECT progressdb.replies(%L)', m.id))
) AS d(kind, variant, query);

-- Thread lists per author, the deleted thread, strangers, and the totals.
INSERT INTO public.upgrade_docs (kind, label, query)
SELECT 'threads', format('threads author %s', a.author), format('SELECT progressdb.list_threads(%L)', a.author)
FROM (SELECT DISTINCT author FROM progressdb.threads) a;
INSERT INTO public.upgrade_docs (kind, label, query) VALUES
    ('threads', 'threads lim=1 carol', 'SELECT progressdb.list_threads(''carol'', lim => 1)'),
    ('threads', 'threads slug carol', 'SELECT progressdb.list_threads(''carol'', slug => ''carol-notes'')'),
    ('thread', 'thread deleted old', 'SELECT progressdb.get_thread(''old'')'),
    ('page', 'page deleted old', 'SELECT progressdb.list_messages(''old'')'),
    ('thread', 'thread stranger general', 'SELECT progressdb.get_thread(''general'', ''mallory'')'),
    ('message', 'message stranger general/2', format('SELECT progressdb.get_message(%L, ''mallory'')', :'g2')),
    ('stats', 'stats service', 'SELECT progressdb.stats()');

-- Runs one registered query; an error becomes "ERROR <sqlstate>" so that
-- failures are compared like documents.
CREATE FUNCTION public.upgrade_try(q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    result text;
BEGIN
    EXECUTE q INTO result;
    RETURN coalesce(result, '<null>');
EXCEPTION WHEN OTHERS THEN
    RETURN 'ERROR ' || SQLSTATE;
END
$$;
