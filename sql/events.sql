-- The event feed: every committed change of a thread is an event, and
-- consumers page through all of them by position (`thread_events`, `events`,
-- the gateway's Server-Sent Events and webhooks).
--
-- The guarantee is that a consumer resuming after any position it has seen
-- gets every later event exactly once, with no gap, in commit order. A
-- position taken from a sequence while the change is written would break it:
-- transaction A takes 7, B takes 8, B commits, a consumer reads 8 and moves
-- its cursor past 7, then A commits 7 behind the cursor -- lost. So positions
-- are handed out after commit, by one sequencer at a time:
--
--  1. A change writes its event into feed_queue, in its own transaction
--     (triggers below), without a position. Nothing global is locked: the
--     queue is appended to like any table.
--  2. The sequencer (`_sequence_events`) takes the feed_state row lock, moves
--     every queue row it sees committed into feed with the next positions
--     (1, 2, 3, ... no holes), and commits. A queue row of a transaction
--     still open is invisible to it, so it is numbered by a later round,
--     after everything numbered now: positions follow commit order.
--  3. Rounds are one at a time and hold the lock until they commit, so the
--     positions a reader can see are always a prefix 1..n: no reader can see
--     n+1 before n.
--
-- The sequencer runs wherever events are read: at the start of
-- `thread_events`/`events` (skipped, never waited for, when another round is
-- running), in the gateway's feed loop, and in the background worker. Cost
-- per change: one queue row (written with the change), moved to the feed in
-- a batch later. Cost of the order: events are visible to readers only after
-- a sequencer round (the gateway runs one within milliseconds), and a round
-- inside a long transaction delays (never loses) everyone's new events until
-- that transaction ends.

-- Events are made for changes through the API: each changing function
-- first records its acting user here (':' then the user; ':' alone is the
-- service), and the triggers fire only when it is set. So raw table writes
-- -- a pg_restore, a COPY -- replay no events (a restored feed is the
-- dumped one). Transaction-local: the triggers cannot see function arguments.
-- (PL/pgSQL, not SQL: called from PL/pgSQL, a SQL function would be parsed
-- and planned again in every transaction.)
CREATE FUNCTION progressdb._acting(actor text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('progressdb.actor', ':' || coalesce(actor, ''), true);
END
$$;

CREATE FUNCTION progressdb._event_actor() RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN nullif(substr(current_setting('progressdb.actor', true), 2), '');
END
$$;

-- message.created/updated/deleted/restored, reaction.added/removed. The
-- message is stored as its chunk entry: the Message document as rendered,
-- with an encrypted body still sealed (opened when the event is read).
CREATE FUNCTION progressdb._message_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    who text;
    subj text;
BEGIN
    IF coalesce(current_setting('progressdb.actor', true), '') NOT LIKE ':%' THEN
        RETURN NULL; -- a raw table write, not an API change (see _acting)
    END IF;
    IF TG_OP = 'INSERT' THEN
        kind := 'message.created';
        who := NEW.author;
    ELSE
        who := progressdb._event_actor();
        IF NEW.deleted_ts IS DISTINCT FROM OLD.deleted_ts THEN
            kind := CASE WHEN NEW.deleted_ts IS NULL THEN 'message.restored' ELSE 'message.deleted' END;
        ELSIF NEW.version <> OLD.version THEN
            kind := 'message.updated';
        ELSIF NEW.reactions <> OLD.reactions THEN
            SELECT r.key INTO subj FROM jsonb_each_text(NEW.reactions) r
             WHERE (OLD.reactions ->> r.key) IS DISTINCT FROM r.value LIMIT 1;
            IF subj IS NOT NULL THEN
                kind := 'reaction.added';
            ELSE
                kind := 'reaction.removed';
                SELECT k INTO subj FROM jsonb_object_keys(OLD.reactions) k WHERE NOT NEW.reactions ? k LIMIT 1;
            END IF;
        ELSE
            RETURN NULL; -- not a change readers see (e.g. a key rotation re-sealing the body)
        END IF;
    END IF;
    INSERT INTO progressdb.feed_queue (thread, type, ts, actor, seq, subject, entry)
    -- The entry as _chunk_entry (compaction.sql) makes it, called directly.
    VALUES (NEW.thread, kind, progressdb.now_ns(), who, NEW.seq, subj,
            progressdb._message_entry(NEW.seq, NEW.id, NEW.thread, NEW.author, NEW.role, NEW.ts, NEW.body::text,
                                      NEW.body_enc, NEW.version, NEW.updated_ts, NEW.reply_to, NEW.deleted_ts,
                                      CASE WHEN NEW.reactions <> '{}'::jsonb THEN NEW.reactions::text END));
    RETURN NULL;
END
$$;

-- (The API check is in the function, not a WHEN clause: PostgreSQL reads a
-- WHEN clause back from the catalog for every statement.)
CREATE TRIGGER messages_event AFTER INSERT OR UPDATE ON progressdb.messages
    FOR EACH ROW EXECUTE FUNCTION progressdb._message_event();

-- member.added (also a role change: the member as they are now),
-- member.removed, member.read (read state moved forward).
CREATE FUNCTION progressdb._member_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('progressdb.actor', true), '') NOT LIKE ':%' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO progressdb.feed_queue (thread, type, ts, actor, subject, data)
        VALUES (NEW.thread, 'member.added', progressdb.now_ns(), NEW.added_by, NEW.user_id,
                progressdb._member_json(NEW)::text);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO progressdb.feed_queue (thread, type, ts, actor, subject, data)
        VALUES (OLD.thread, 'member.removed', progressdb.now_ns(), progressdb._event_actor(), OLD.user_id,
                progressdb._member_json(OLD)::text);
    ELSIF NEW.role <> OLD.role THEN
        INSERT INTO progressdb.feed_queue (thread, type, ts, actor, subject, data)
        VALUES (NEW.thread, 'member.added', progressdb.now_ns(), progressdb._event_actor(), NEW.user_id,
                progressdb._member_json(NEW)::text);
    ELSIF NEW.last_read_seq > OLD.last_read_seq THEN
        -- seq: a member who may not see that message does not see the read either.
        INSERT INTO progressdb.feed_queue (thread, type, ts, actor, seq, subject, data)
        VALUES (NEW.thread, 'member.read', progressdb.now_ns(), NEW.user_id, NEW.last_read_seq, NEW.user_id,
                jsonb_build_object('user', NEW.user_id, 'last_read', NEW.last_read)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER thread_members_event AFTER INSERT OR UPDATE OR DELETE ON progressdb.thread_members
    FOR EACH ROW EXECUTE FUNCTION progressdb._member_event();

-- thread.updated (title, metadata, history), thread.deleted: written by
-- update_thread and delete_thread (threads.sql). Not a trigger: every post
-- updates the thread row (last_seq, activity), and a trigger there would cost
-- every append.
CREATE FUNCTION progressdb._thread_event(t progressdb.threads, kind text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO progressdb.feed_queue (thread, type, ts, actor, data)
    VALUES (t.id, kind, progressdb.now_ns(), progressdb._event_actor(), progressdb._thread_json(t)::text);
END
$$;

-- One sequencer round (see the top of this file): numbers the committed
-- queue rows, at most 10,000 per round, and returns the feed's head (the
-- highest position). Returns the head as this transaction sees it, without
-- numbering, when another round holds the lock or the transaction is not
-- READ COMMITTED (a snapshot older than the lock would number rows twice).
CREATE FUNCTION progressdb._sequence_events() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    st progressdb.feed_state;
    n bigint;
BEGIN
    -- Nothing committed to number (the common case for a poll): no lock
    -- taken, nothing written.
    IF current_setting('transaction_isolation') <> 'read committed'
       OR NOT EXISTS (SELECT 1 FROM progressdb.feed_queue) THEN
        RETURN coalesce((SELECT s.last_pos FROM progressdb.feed_state s), 0);
    END IF;
    SELECT * INTO st FROM progressdb.feed_state s FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM progressdb.feed_state) THEN
            RETURN coalesce((SELECT s.last_pos FROM progressdb.feed_state s), 0);
        END IF;
        INSERT INTO progressdb.feed_state DEFAULT VALUES ON CONFLICT DO NOTHING;
        SELECT * INTO st FROM progressdb.feed_state s FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN 0;
        END IF;
    END IF;
    -- A new statement, so a new snapshot: it sees every round committed before
    -- the lock was ours, and the queue rows committed by now.
    WITH moved AS (
        DELETE FROM progressdb.feed_queue q
         WHERE q.qid IN (SELECT qq.qid FROM progressdb.feed_queue qq ORDER BY qq.qid LIMIT 10000)
        RETURNING q.*),
    numbered AS (
        INSERT INTO progressdb.feed (pos, thread, type, ts, actor, seq, subject, data, entry)
        SELECT st.last_pos + row_number() OVER (ORDER BY m.qid), m.thread, m.type, m.ts, m.actor, m.seq,
               m.subject, m.data, m.entry
          FROM moved m
        RETURNING 1)
    SELECT count(*) INTO n FROM numbered;
    IF n > 0 THEN
        UPDATE progressdb.feed_state s SET last_pos = st.last_pos + n WHERE s.id = 1;
        -- Wakes listeners (other gateways) once per round, not per change.
        PERFORM pg_notify('progressdb_feed', (st.last_pos + n)::text);
    END IF;
    RETURN st.last_pos + n;
END
$$;

-- A feed cursor as a position. NULL: the oldest event kept. A position
-- retention has removed events after is refused (PD410), never skipped
-- silently; so is a position the feed has not reached.
CREATE FUNCTION progressdb._feed_cursor(after text, head bigint) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pos bigint;
    trimmed bigint := coalesce((SELECT s.trimmed_through FROM progressdb.feed_state s), 0);
BEGIN
    IF after IS NULL THEN
        RETURN trimmed;
    END IF;
    IF after !~ '^[0-9]{1,18}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('invalid event cursor %s', left(after, 64));
    END IF;
    pos := after::bigint;
    IF pos < trimmed THEN
        RAISE EXCEPTION USING ERRCODE = 'PD410',
            MESSAGE = format('event cursor %s is older than the feed keeps (events up to %s were removed by '
                             'retention): re-read the timeline, then follow the feed from its head', after, trimmed);
    END IF;
    IF pos > head THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('event cursor %s is ahead of the feed (head %s)', after, head);
    END IF;
    RETURN pos;
END
$$;

-- The page document around rendered events, as text (the _text faces; the
-- jsonb functions parse it).
CREATE FUNCTION progressdb._events_page(docs text, next bigint, thread text DEFAULT NULL) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN thread IS NULL THEN '{' ELSE '{"thread":' || to_json(thread)::text || ',' END
           || '"events":[' || coalesce(docs, '') || '],"next":"' || next::text || '"}'
$$;

-- Events of one thread after `after`, as `actor` may see them (members;
-- history 'joined' hides events of messages from before they joined).
-- `next` resumes after the last event returned, or after the feed's head.
-- A deleted thread's events stay readable to its members.
CREATE FUNCTION progressdb.thread_events_text(thread text, after text DEFAULT NULL, lim integer DEFAULT 100,
                                              actor text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
    vis bigint;
    head bigint;
    a bigint;
    docs text;
    n integer;
    last bigint;
BEGIN
    SELECT * INTO t FROM progressdb.threads th WHERE th.id = progressdb._ident('thread id', thread_events_text.thread);
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('thread %s not found', thread_events_text.thread);
    END IF;
    vis := progressdb._authorize(t, actor, 'read');
    lim := progressdb._limit(lim);
    head := progressdb._sequence_events();
    a := progressdb._feed_cursor(after, head);
    SELECT string_agg(progressdb._render_event(f.pos, f.type, f.thread, f.ts, f.actor, f.data, f.entry), ','
                      ORDER BY f.pos), count(*), max(f.pos)
      INTO docs, n, last
      FROM (SELECT * FROM progressdb.feed ff
             WHERE ff.thread = t.id AND ff.pos > a AND ff.pos <= head
               AND (ff.seq IS NULL OR ff.seq > vis)
             ORDER BY ff.pos LIMIT lim) f;
    RETURN progressdb._events_page(docs, CASE WHEN n = lim THEN last ELSE head END, t.id);
END
$$;

-- Events of every thread `actor` may read now, after `after` (NULL actor:
-- all threads). One call looks at most 100,000 positions past the cursor, so
-- a user of few threads in a busy feed gets a bounded call whose `next` has
-- moved on even when none of those events were theirs.
CREATE FUNCTION progressdb.events_text(actor text, after text DEFAULT NULL, lim integer DEFAULT 100)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    window_size constant bigint := 100000;
    head bigint;
    a bigint;
    upto bigint;
    docs text;
    n integer;
    last bigint;
BEGIN
    lim := progressdb._limit(lim);
    head := progressdb._sequence_events();
    a := progressdb._feed_cursor(after, head);
    IF actor IS NULL THEN
        upto := head;
        SELECT string_agg(progressdb._render_event(f.pos, f.type, f.thread, f.ts, f.actor, f.data, f.entry), ','
                          ORDER BY f.pos), count(*), max(f.pos)
          INTO docs, n, last
          FROM (SELECT * FROM progressdb.feed ff WHERE ff.pos > a AND ff.pos <= head
                 ORDER BY ff.pos LIMIT lim) f;
    ELSE
        upto := least(head, a + window_size);
        SELECT string_agg(progressdb._render_event(f.pos, f.type, f.thread, f.ts, f.actor, f.data, f.entry), ','
                          ORDER BY f.pos), count(*), max(f.pos)
          INTO docs, n, last
          FROM (SELECT ff.* FROM progressdb.feed ff
                  JOIN progressdb.thread_members mm ON mm.thread = ff.thread AND mm.user_id = events_text.actor
                  JOIN progressdb.threads th ON th.id = ff.thread
                 WHERE ff.pos > a AND ff.pos <= upto
                   AND (ff.seq IS NULL OR ff.seq > progressdb._visible_after(th, mm))
                 ORDER BY ff.pos LIMIT lim) f;
    END IF;
    RETURN progressdb._events_page(docs, CASE WHEN n = lim THEN last ELSE upto END);
END
$$;

-- The SQL API's jsonb faces of the two above (the gateway passes the text on).
CREATE FUNCTION progressdb.thread_events(thread text, after text DEFAULT NULL, lim integer DEFAULT 100,
                                         actor text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql AS $$
    SELECT progressdb.thread_events_text(thread, after, lim, actor)::jsonb
$$;

CREATE FUNCTION progressdb.events(actor text, after text DEFAULT NULL, lim integer DEFAULT 100)
RETURNS jsonb
LANGUAGE sql AS $$
    SELECT progressdb.events_text(actor, after, lim)::jsonb
$$;

-- For the gateway's live fan-out: the next committed events after `after`,
-- as the service sees them, with what the gateway needs to route them. Runs
-- a sequencer round first.
CREATE FUNCTION progressdb._feed_batch(after bigint, lim integer)
RETURNS TABLE (pos bigint, thread text, type text, seq bigint, subject text, doc text)
LANGUAGE plpgsql AS $$
DECLARE
    head bigint := progressdb._sequence_events();
BEGIN
    -- A consumer behind retention is told so (PD410), never skipped ahead.
    PERFORM progressdb._feed_cursor(after::text, head);
    RETURN QUERY
    SELECT f.pos, f.thread, f.type, f.seq, f.subject,
           progressdb._render_event(f.pos, f.type, f.thread, f.ts, f.actor, f.data, f.entry)
      FROM progressdb.feed f
     WHERE f.pos > after AND f.pos <= head
     ORDER BY f.pos LIMIT lim;
END
$$;

-- What a live subscriber may receive, decided here (the rule of
-- thread_events and events): per thread, events of messages after
-- `visible_after` (NULL seq: always). One thread (checked: 404/403), or
-- every thread `actor` belongs to.
CREATE FUNCTION progressdb._feed_grants(actor text, only_thread text DEFAULT NULL)
RETURNS TABLE (thread text, visible_after bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t progressdb.threads;
BEGIN
    IF only_thread IS NOT NULL THEN
        SELECT * INTO t FROM progressdb.threads th WHERE th.id = progressdb._ident('thread id', only_thread);
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('thread %s not found', only_thread);
        END IF;
        RETURN QUERY SELECT t.id, progressdb._authorize(t, actor, 'read');
        RETURN;
    END IF;
    IF actor IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'actor is required';
    END IF;
    RETURN QUERY
    SELECT mm.thread, progressdb._visible_after(th, mm)
      FROM progressdb.thread_members mm JOIN progressdb.threads th ON th.id = mm.thread
     WHERE mm.user_id = actor;
END
$$;

-- Ephemeral "actor is typing" to the thread's live subscribers: a
-- notification, not stored, not resumable. Members who may post only.
CREATE FUNCTION progressdb.typing(thread text, actor text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
BEGIN
    IF actor IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'actor is required: typing belongs to a member';
    END IF;
    t := progressdb._thread_for(typing.thread, progressdb._ident('actor', actor), 'post');
    PERFORM pg_notify('progressdb_typing',
                      format('{"type":"typing","thread":%s,"actor":%s,"ts":%s}',
                             to_json(t.id), to_json(actor), progressdb.now_ns()));
END
$$;

-- Feed retention: removes the oldest events, older than
-- progressdb.event_retention (default 30 days; 'forever' keeps all), at
-- most max_rows per call, always a prefix of the feed, so a cursor is either
-- fully served or refused (PD410). The background worker calls it each round.
CREATE FUNCTION progressdb.trim_events(max_rows integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    keep text := lower(btrim(coalesce(current_setting('progressdb.event_retention', true), '30 days')));
    cutoff bigint;
    st progressdb.feed_state;
    upto bigint;
    n bigint;
BEGIN
    IF keep IN ('', 'forever', 'off', '0', 'infinity') THEN
        RETURN 0;
    END IF;
    cutoff := progressdb.now_ns() - (extract(epoch FROM keep::interval) * 1e9)::bigint;
    SELECT * INTO st FROM progressdb.feed_state s FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- The longest prefix (within max_rows) of events older than the cutoff.
    SELECT coalesce(min(x.pos) FILTER (WHERE x.ts >= cutoff) - 1, max(x.pos)) INTO upto
      FROM (SELECT f.pos, f.ts FROM progressdb.feed f WHERE f.pos > st.trimmed_through
             ORDER BY f.pos LIMIT max_rows) x;
    IF upto IS NULL OR upto <= st.trimmed_through THEN
        RETURN 0;
    END IF;
    DELETE FROM progressdb.feed f WHERE f.pos > st.trimmed_through AND f.pos <= upto;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE progressdb.feed_state s SET trimmed_through = upto WHERE s.id = 1;
    RETURN n;
END
$$;

-- Webhook delivery progress (the gateway delivers; the database remembers).
-- A new endpoint starts at the feed's head: it gets events from now on.
CREATE FUNCTION progressdb._webhook_start(endpoint text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    done bigint;
BEGIN
    INSERT INTO progressdb.webhook_progress (endpoint, delivered, updated_ts)
    VALUES (endpoint, progressdb._sequence_events(), progressdb.now_ns())
    ON CONFLICT DO NOTHING;
    SELECT w.delivered INTO done FROM progressdb.webhook_progress w WHERE w.endpoint = _webhook_start.endpoint;
    RETURN done;
END
$$;

CREATE FUNCTION progressdb._webhook_advance(endpoint text, pos bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE progressdb.webhook_progress w
       SET delivered = greatest(w.delivered, pos), updated_ts = progressdb.now_ns()
     WHERE w.endpoint = _webhook_advance.endpoint
$$;
