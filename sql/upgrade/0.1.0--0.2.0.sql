-- progressdb 0.1.0 -> 0.2.0: thread members and roles, read state, inbox
-- order, thread metadata and history visibility.
--
-- This is the hand-written part of the upgrade (tables, data). The file
-- users run, sql/progressdb--0.1.0--0.2.0.sql, is this part followed by the
-- current definitions of every function file that changed since 0.1.0; it is
-- made by scripts/gen-upgrade.sh (the test command checks it is up to date,
-- and the upgrade test compares an upgraded catalog with a fresh install).
SET check_function_bodies = off;

-- Threads: metadata, history visibility, member count, activity (for inbox
-- order). New columns go last, as in a fresh install.
ALTER TABLE progressdb.threads
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN history text NOT NULL DEFAULT 'shared',
    ADD COLUMN member_count integer NOT NULL DEFAULT 0,
    ADD COLUMN last_activity_ts bigint;
-- A thread's activity is its newest message's time, else its creation.
UPDATE progressdb.threads th
   SET last_activity_ts = coalesce((SELECT m.ts FROM progressdb.messages m
                                     WHERE m.thread = th.id ORDER BY m.seq DESC LIMIT 1),
                                   th.created_ts);
ALTER TABLE progressdb.threads
    ALTER COLUMN last_activity_ts SET NOT NULL,
    ADD CONSTRAINT threads_history CHECK (history IN ('shared', 'joined')),
    ADD CONSTRAINT threads_metadata_object CHECK (jsonb_typeof(metadata) = 'object');
-- Listings are by activity now; "my threads" come from thread_members.
-- (last_activity_ts is not indexed: appends stay HOT updates, see schema.sql.)
DROP INDEX progressdb.threads_author_created_idx;
DROP INDEX progressdb.threads_created_idx;

CREATE TABLE progressdb.thread_members (
    thread        text    NOT NULL,
    user_id       text    NOT NULL,
    role          text    NOT NULL,
    joined_ts     bigint  NOT NULL,
    joined_seq    bigint  NOT NULL,
    added_by      text,
    last_read_seq bigint  NOT NULL,
    last_read     text,
    CONSTRAINT thread_members_pkey PRIMARY KEY (thread, user_id),
    CONSTRAINT thread_members_role CHECK (role IN ('reader', 'member', 'admin', 'owner'))
);
CREATE INDEX thread_members_user_idx ON progressdb.thread_members (user_id, thread);
SELECT pg_catalog.pg_extension_config_dump('progressdb.thread_members', '');

-- Every thread's author becomes its owner, having read it all so far.
INSERT INTO progressdb.thread_members (thread, user_id, role, joined_ts, joined_seq, added_by,
                                       last_read_seq, last_read)
SELECT th.id, th.author, 'owner', th.created_ts, 0, th.author, th.last_seq,
       (SELECT m.id FROM progressdb.messages m WHERE m.thread = th.id AND m.seq = th.last_seq)
  FROM progressdb.threads th;
-- In 0.1.0 the author of a message could read it in someone else's thread
-- (posted there by the service). To keep that, such authors become members
-- (role member, added by the service) from the first message they wrote.
INSERT INTO progressdb.thread_members (thread, user_id, role, joined_ts, joined_seq, added_by,
                                       last_read_seq, last_read)
SELECT a.thread, a.author, 'member', a.first_ts, 0, NULL, th.last_seq,
       (SELECT m.id FROM progressdb.messages m WHERE m.thread = th.id AND m.seq = th.last_seq)
  FROM (SELECT m.thread, m.author, min(m.ts) AS first_ts FROM progressdb.messages m
         GROUP BY m.thread, m.author) a
  JOIN progressdb.threads th ON th.id = a.thread AND th.author <> a.author;
UPDATE progressdb.threads th
   SET member_count = (SELECT count(*) FROM progressdb.thread_members mm WHERE mm.thread = th.id);

-- Functions whose signature changed or that are gone (authorization is in
-- progressdb._authorize now). Their new definitions follow.
DROP FUNCTION progressdb._check_read(progressdb.messages, text);
DROP FUNCTION progressdb._check_write(progressdb.messages, text);
DROP FUNCTION progressdb._thread_for(text, text);
DROP FUNCTION progressdb._thread_json(progressdb.threads);
DROP FUNCTION progressdb._insert_thread(text, text, text, boolean, bigint);
DROP FUNCTION progressdb._cursor_seq(text, text, text);
DROP FUNCTION progressdb.create_thread(text, text, text, boolean);
DROP FUNCTION progressdb.update_thread(text, text, text);
DROP FUNCTION progressdb.list_threads(text, text, text, integer, text);

-- Rendered documents (src/render.rs). Timeline chunks now hold each
-- message's rendered document (src/chunk_codec.rs) instead of rows. Chunks
-- are derived data: those of 0.1.0 go, and compaction (the background worker
-- or progressdb.compact()) rebuilds them in the new format; until then pages
-- are read from the messages table.
DROP FUNCTION progressdb._page_before(text, bigint, integer, boolean);
DROP FUNCTION progressdb._message_core_json(progressdb.messages);
DROP FUNCTION progressdb._pack_chunk(anyarray);
DROP FUNCTION progressdb._unpack_chunk(bytea, anyarray);
TRUNCATE progressdb.message_chunks, progressdb.compaction_state;

CREATE FUNCTION progressdb._render_message(
	"id" TEXT, /* & str */
	"thread" TEXT, /* & str */
	"author" TEXT, /* & str */
	"role" TEXT, /* & str */
	"ts" bigint, /* i64 */
	"body" TEXT, /* Option < & str > */
	"body_enc" TEXT, /* Option < & str > */
	"version" INT, /* i32 */
	"updated_ts" bigint, /* i64 */
	"reply_to" TEXT, /* Option < & str > */
	"deleted_ts" bigint, /* Option < i64 > */
	"reactions" TEXT /* Option < & str > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'render_message_wrapper';

CREATE FUNCTION progressdb._render_page(
	"thread" TEXT, /* & str */
	"messages" TEXT, /* Option < & str > */
	"has_before" bool, /* bool */
	"has_after" bool, /* bool */
	"lo" bigint, /* Option < i64 > */
	"hi" bigint /* Option < i64 > */
) RETURNS TEXT /* String */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'render_page_wrapper';

CREATE FUNCTION progressdb._cursor_position(
	"thread" TEXT, /* & str */
	"cursor" TEXT, /* & str */
	"what" TEXT /* & str */
) RETURNS bigint /* Option < i64 > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cursor_position_wrapper';

CREATE FUNCTION progressdb._message_entry(
	"seq" bigint, /* i64 */
	"id" TEXT, /* & str */
	"thread" TEXT, /* & str */
	"author" TEXT, /* & str */
	"role" TEXT, /* & str */
	"ts" bigint, /* i64 */
	"body" TEXT, /* Option < & str > */
	"body_enc" TEXT, /* Option < & str > */
	"version" INT, /* i32 */
	"updated_ts" bigint, /* i64 */
	"reply_to" TEXT, /* Option < & str > */
	"deleted_ts" bigint, /* Option < i64 > */
	"reactions" TEXT /* Option < & str > */
) RETURNS bytea /* Vec < u8 > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'message_entry_wrapper';

CREATE FUNCTION progressdb._pack_chunk(
	"entries" bytea[] /* Array < & [u8] > */
) RETURNS bytea /* Vec < u8 > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'pack_chunk_wrapper';

CREATE FUNCTION progressdb._unpack_chunk(
	"packed" bytea /* & [u8] */
) RETURNS TABLE (
	"seq" bigint,  /* i64 */
	"deleted" bool,  /* bool */
	"doc" TEXT,  /* String */
	"plain" TEXT,  /* Option < String > */
	"envelope" TEXT  /* Option < String > */
)
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'unpack_chunk_wrapper';

CREATE FUNCTION progressdb._chunk_page(
	"thread" TEXT, /* & str */
	"before" bigint, /* i64 */
	"lim" INT, /* i32 */
	"include_deleted" bool, /* bool */
	"vis" bigint, /* i64 */
	"chunks" bytea[] /* Array < & [u8] > */
) RETURNS TABLE (
	"docs" TEXT,  /* Option < String > */
	"n" INT,  /* i32 */
	"lo" bigint,  /* Option < i64 > */
	"hi" bigint,  /* Option < i64 > */
	"has_before" bool,  /* bool */
	"newer_seen" bool,  /* Option < bool > */
	"complete" bool,  /* bool */
	"contiguous" bool  /* bool */
)
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'chunk_page_sql_wrapper';

CREATE FUNCTION progressdb._chunk_page_doc(
	"thread" TEXT, /* & str */
	"before" bigint, /* i64 */
	"lim" INT, /* i32 */
	"include_deleted" bool, /* bool */
	"vis" bigint, /* i64 */
	"newest" bool, /* bool */
	"chunks" bytea[] /* Array < & [u8] > */
) RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'chunk_page_doc_wrapper';

-- The event feed (events.sql): every committed change of a thread, in one
-- gap-free order. A change writes its event to feed_queue in its own
-- transaction (no position yet); the sequencer moves committed queue rows
-- into feed, numbering them 1, 2, 3, ... in the order it finds them
-- committed. So positions follow commit order by construction.
CREATE SEQUENCE progressdb.feed_queue_qid_seq;
CREATE TABLE progressdb.feed_queue (
    qid      bigint  NOT NULL DEFAULT nextval('progressdb.feed_queue_qid_seq'), -- write order
    thread   text    NOT NULL,
    type     text    NOT NULL,
    ts       bigint  NOT NULL,          -- Unix nanoseconds
    actor    text,                      -- NULL: the service
    seq      bigint,                    -- the message's seq (message and reaction events)
    subject  text,                      -- the member (member events) or reacting identity
    data     text,                      -- JSON text of the data, or
    entry    bytea                      -- the message as a chunk entry (sealed bodies stay sealed)
);
-- No index: writers from every thread append here at once, and a shared
-- right-most index page would be their one point of contention. The
-- sequencer reads the (small) queue whole.
ALTER SEQUENCE progressdb.feed_queue_qid_seq OWNED BY progressdb.feed_queue.qid;
-- Positions are global (one order across threads), so this is the one table
-- whose key does not start with the thread.
CREATE TABLE progressdb.feed (
    pos      bigint  NOT NULL,          -- 1, 2, 3, ... in commit order; the event id
    thread   text    NOT NULL,
    type     text    NOT NULL,
    ts       bigint  NOT NULL,
    actor    text,
    seq      bigint,
    subject  text,
    data     text,
    entry    bytea,
    CONSTRAINT feed_pkey PRIMARY KEY (pos)
);
CREATE INDEX feed_thread_idx ON progressdb.feed (thread, pos);
-- The sequencer's state, one row (made by the first sequencing, so a dump
-- restores it without a conflict); its row lock makes sequencing one at a time.
CREATE TABLE progressdb.feed_state (
    id               integer NOT NULL DEFAULT 1,
    last_pos         bigint  NOT NULL DEFAULT 0,  -- highest position handed out
    trimmed_through  bigint  NOT NULL DEFAULT 0,  -- retention removed positions up to this
    CONSTRAINT feed_state_pkey PRIMARY KEY (id),
    CONSTRAINT feed_state_one_row CHECK (id = 1)
);
-- Webhook endpoints and how far each has been delivered (the gateway).
CREATE TABLE progressdb.webhook_progress (
    endpoint    text   NOT NULL,
    delivered   bigint NOT NULL,            -- feed position delivered through
    updated_ts  bigint NOT NULL,
    CONSTRAINT webhook_progress_pkey PRIMARY KEY (endpoint)
);
SELECT pg_catalog.pg_extension_config_dump('progressdb.feed_queue', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.feed_queue_qid_seq', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.feed', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.feed_state', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.webhook_progress', '');

-- The event feed's native functions (src/events.rs).
CREATE FUNCTION progressdb._render_event(
	"pos" bigint, /* i64 */
	"kind" TEXT, /* & str */
	"thread" TEXT, /* & str */
	"ts" bigint, /* i64 */
	"actor" TEXT, /* Option < & str > */
	"data" TEXT, /* Option < & str > */
	"entry" bytea /* Option < & [u8] > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'render_event_wrapper';

CREATE FUNCTION progressdb._reseal_entry(
	"thread" TEXT, /* & str */
	"entry" bytea, /* & [u8] */
	"new_dek" bigint /* i64 */
) RETURNS bytea /* Vec < u8 > */
STRICT VOLATILE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reseal_entry_wrapper';

-- Forks (forks.sql): columns last, as in a fresh install.
ALTER TABLE progressdb.threads
    ADD COLUMN fork_of text,
    ADD COLUMN fork_message text,
    ADD COLUMN fork_seq bigint,
    ADD COLUMN fork_lo bigint,
    ADD COLUMN fork_ts bigint;
CREATE INDEX threads_fork_of_idx ON progressdb.threads (fork_of, fork_seq) WHERE fork_of IS NOT NULL;
CREATE TABLE progressdb.fork_snapshots (
    fork        text    NOT NULL,
    seq         bigint  NOT NULL,
    source      text    NOT NULL,
    taken_ts    bigint  NOT NULL,
    msg         jsonb   NOT NULL,
    CONSTRAINT fork_snapshots_pkey PRIMARY KEY (fork, seq)
);
CREATE INDEX fork_snapshots_source_idx ON progressdb.fork_snapshots (source, seq);
SELECT pg_catalog.pg_extension_config_dump('progressdb.fork_snapshots', '');
-- Search (sql/search.sql): each message's search entry, appended last as in a
-- fresh install; search.sql (in the generated part below) fills it for the
-- existing messages of plaintext threads, then creates its index.
ALTER TABLE progressdb.messages ADD COLUMN search_vec tsvector;
ALTER TABLE progressdb.messages ALTER COLUMN search_vec SET STORAGE MAIN;
ALTER TABLE progressdb.messages ALTER COLUMN search_vec SET COMPRESSION lz4;

-- How deeply a JSON text nests (src/checks.rs); message bodies are refused
-- past 100 levels (sql/messages.sql, _check_body).
CREATE FUNCTION progressdb._json_depth(
	"doc" TEXT /* &str */
) RETURNS INT /* i32 */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_json_depth_wrapper';

-- Search's native functions (src/search.rs).
CREATE FUNCTION progressdb._search_text(
	"body" jsonb /* JsonB */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'search_text_wrapper';

CREATE FUNCTION progressdb._blind_terms(
	"thread" TEXT, /* & str */
	"dek_id" bigint, /* i64 */
	"words" TEXT[] /* Vec < Option < String > > */
) RETURNS TEXT[] /* Vec < String > */
STRICT STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'blind_terms_wrapper';

CREATE FUNCTION progressdb._blind_query(
	"thread" TEXT, /* & str */
	"dek_id" bigint, /* i64 */
	"query" TEXT /* & str */
) RETURNS TEXT /* String */
STRICT STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'blind_query_wrapper';

CREATE FUNCTION progressdb._encrypted_search() RETURNS bool /* bool */
STRICT STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'encrypted_search_wrapper';

CREATE FUNCTION progressdb._search_cursor(
	"rank" real, /* f32 */
	"ts" bigint, /* i64 */
	"thread" TEXT, /* & str */
	"seq" bigint /* i64 */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'search_cursor_wrapper';

CREATE FUNCTION progressdb._search_cursor_position(
	"c" TEXT /* & str */
) RETURNS TABLE (
	"rank" real,  /* f32 */
	"ts" bigint,  /* i64 */
	"thread" TEXT,  /* String */
	"seq" bigint  /* i64 */
)
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'search_cursor_position_wrapper';

-- The LLM context window (context.sql, src/context.rs): token counts of
-- message versions (derived, not dumped), and the partial indexes its reads
-- use: a thread's system messages, its deleted messages.
CREATE TABLE progressdb.message_tokens (
    thread      text    NOT NULL,
    seq         bigint  NOT NULL,
    version     integer NOT NULL,
    o200k       integer,
    cl100k      integer,
    CONSTRAINT message_tokens_pkey PRIMARY KEY (thread, seq, version)
);
CREATE INDEX messages_system_idx ON progressdb.messages (thread, seq) WHERE role = 'system';
CREATE INDEX messages_deleted_idx ON progressdb.messages (thread, seq) WHERE deleted_ts IS NOT NULL;

CREATE FUNCTION progressdb.context_text(
	"thread" TEXT, /* Option < & str > */
	"max_tokens" INT, /* Option < i32 > */
	"actor" TEXT DEFAULT NULL, /* Option < & str > */
	"format" TEXT DEFAULT 'openai', /* Option < & str > */
	"tokenizer" TEXT DEFAULT 'o200k_base' /* Option < & str > */
) RETURNS TEXT /* String */
VOLATILE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'context_text_wrapper';

-- Lifecycle (lifecycle.sql): retention and legal hold, columns last as in a
-- fresh install.
ALTER TABLE progressdb.threads
    ADD COLUMN retention interval,
    ADD COLUMN legal_hold boolean NOT NULL DEFAULT false;
CREATE INDEX threads_retention_idx ON progressdb.threads (id) WHERE retention IS NOT NULL;
-- The events of one message, for purges (schema.sql).
CREATE INDEX feed_message_idx ON progressdb.feed (thread, seq);
