-- The renderers below call Rust functions that are created later in the
-- install script; they are resolved at call time. (SET is undone at the end
-- of the extension script.)
SET check_function_bodies = off;

-- Encrypted values are stored as an envelope, `pdb1:<data key id>:<base64>`:
-- its text form is never plaintext, so pg_dump, COPY and SELECT * cannot leak,
-- and as a text domain it reads fine over any client protocol, binary included.
CREATE DOMAIN progressdb.ciphertext AS text CHECK (VALUE LIKE 'pdb1:%');

-- ProgressDB tables. Every unique key starts with the thread id, so the
-- schema can later be distributed by thread without redesign, and timeline
-- reads are keyset range scans on (thread, seq).

CREATE TABLE progressdb.threads (
    id          text    NOT NULL,
    title       text    NOT NULL,
    slug        text    NOT NULL,
    author      text    NOT NULL,
    created_ts  bigint  NOT NULL,          -- Unix nanoseconds
    updated_ts  bigint  NOT NULL,
    deleted_ts  bigint,                    -- soft delete
    encrypted   boolean NOT NULL DEFAULT false,
    dek_id      bigint,                    -- current data key of an encrypted thread
    last_seq    bigint  NOT NULL DEFAULT 0, -- per-thread message counter; its row lock orders appends
    -- 0.2.0 (appended, so a fresh install and an upgraded 0.1.0 have the same columns in the same order):
    metadata    jsonb   NOT NULL DEFAULT '{}',      -- client data, a JSON object <= 16 KiB
    history     text    NOT NULL DEFAULT 'shared',  -- 'shared' | 'joined' (members.sql)
    member_count integer NOT NULL DEFAULT 0,        -- kept by add/remove_member
    last_activity_ts bigint NOT NULL,               -- creation, then each post: orders inboxes
    -- forks (forks.sql): the source thread, the message forked at and its seq,
    -- the seqs at or below fork_lo the forker could not read, when
    fork_of     text,
    fork_message text,
    fork_seq    bigint,
    fork_lo     bigint,
    fork_ts     bigint,
    -- lifecycle (lifecycle.sql): how long messages are kept (NULL: the
    -- server's progressdb.retention; a zero interval: forever), and a legal
    -- hold that stops every purge
    retention   interval,
    legal_hold  boolean NOT NULL DEFAULT false,
    CONSTRAINT threads_pkey PRIMARY KEY (id),
    CONSTRAINT threads_id_length CHECK (length(id) BETWEEN 1 AND 128),
    CONSTRAINT threads_history CHECK (history IN ('shared', 'joined')),
    CONSTRAINT threads_metadata_object CHECK (jsonb_typeof(metadata) = 'object')
);
-- No index on last_activity_ts, on purpose: every post sets it, and an
-- indexed column would make each append a non-HOT update (new entries in
-- every index of threads; a bulk load of 1M messages ran ~2.4x slower
-- against the naive table). A user's inbox starts from thread_members; the
-- service's listing of all threads sorts them (see list_threads).

-- A source's forks, for the copy-on-write check every change of a message
-- makes (forks.sql). fork_of never changes, so appends stay HOT updates.
CREATE INDEX threads_fork_of_idx ON progressdb.threads (fork_of, fork_seq) WHERE fork_of IS NOT NULL;
-- Threads with a retention of their own, for the retention worker
-- (lifecycle.sql). Appends never change retention: they stay HOT updates.
CREATE INDEX threads_retention_idx ON progressdb.threads (id) WHERE retention IS NOT NULL;

-- Numbers default titles ("New Thread #<n>").
CREATE SEQUENCE progressdb.thread_number_seq;

CREATE TABLE progressdb.messages (
    thread      text    NOT NULL,
    seq         bigint  NOT NULL,          -- position in the thread's timeline
    id          text    NOT NULL,          -- generated, time-ordered, unique
    author      text    NOT NULL,
    role        text    NOT NULL DEFAULT 'user',
    ts          bigint  NOT NULL,          -- creation time, Unix nanoseconds
    body        jsonb,                     -- plaintext (part of the) body; NULL when all of it is encrypted
    body_enc    progressdb.ciphertext,     -- encrypted part, in encrypted threads
    reply_to    text,
    reactions   jsonb   NOT NULL DEFAULT '{}', -- identity -> reaction, one per identity
    version     integer NOT NULL DEFAULT 1,
    updated_ts  bigint  NOT NULL,          -- when the current version was written
    deleted_ts  bigint,                    -- soft delete
    -- 0.2.0 (appended, as for threads):
    search_vec  tsvector,                  -- search index entry (search.sql): words, or blind terms when encrypted
    CONSTRAINT messages_pkey PRIMARY KEY (thread, seq),
    CONSTRAINT messages_body_present CHECK (body IS NOT NULL OR body_enc IS NOT NULL),
    CONSTRAINT messages_body_not_json_null CHECK (jsonb_typeof(body) <> 'null')
);
-- Lookup by message id alone (GET /v1/messages/{id}). Not unique on purpose:
-- a unique key must lead with the thread; ids are unique by construction.
CREATE INDEX messages_id_idx ON progressdb.messages (id);
-- Replies to a message, in timeline order.
CREATE INDEX messages_reply_idx ON progressdb.messages (thread, reply_to, seq)
    WHERE reply_to IS NOT NULL;
-- 0.2.0, for the LLM context window (context.sql): a thread's system
-- messages, and its deleted messages (counted, never read, by
-- _timeline_count). Both are rare, so the indexes are small, and an append
-- only evaluates their predicates.
CREATE INDEX messages_system_idx ON progressdb.messages (thread, seq) WHERE role = 'system';
CREATE INDEX messages_deleted_idx ON progressdb.messages (thread, seq) WHERE deleted_ts IS NOT NULL;

-- Message rows stay inline in heap pages: a body that makes its row exceed
-- the TOAST threshold (~2 kB) is compressed in place (lz4) and moved out of
-- line only when it cannot fit a page even then, so timeline pages need no
-- TOAST lookups.
ALTER TABLE progressdb.messages ALTER COLUMN body SET STORAGE MAIN;
ALTER TABLE progressdb.messages ALTER COLUMN body SET COMPRESSION lz4;
ALTER TABLE progressdb.messages ALTER COLUMN body_enc SET STORAGE MAIN;
-- The search vector too (search.sql): out of line, every match of a search
-- would cost a TOAST lookup (about 40% of the benchmark's rows exceed the
-- threshold with their vector).
ALTER TABLE progressdb.messages ALTER COLUMN search_vec SET STORAGE MAIN;
ALTER TABLE progressdb.messages ALTER COLUMN search_vec SET COMPRESSION lz4;

-- How far each thread's timeline has been compacted into chunks: the chunks
-- of a thread tile seqs 1..compacted_seq. Kept apart from threads so
-- compaction never locks a row that appends update. Derived, like the
-- chunks: not dumped.
CREATE TABLE progressdb.compaction_state (
    thread         text   NOT NULL,
    compacted_seq  bigint NOT NULL,
    CONSTRAINT compaction_state_pkey PRIMARY KEY (thread)
);

-- Timeline chunks (see compaction.sql): a packed copy (zstd, see
-- src/chunk_codec.rs) of a closed stretch of one thread's messages, rows as
-- stored (encrypted bodies stay sealed), in seq order. A chunk is sized to
-- fill one heap page, so a history page of 50 reads a few chunks instead of
-- ~50 scattered rows. The messages table stays the source of truth; a change
-- to a chunked message rewrites its chunk in the same transaction (trigger in
-- compaction.sql). Derived data: not dumped, rebuilt by compaction.
CREATE TABLE progressdb.message_chunks (
    thread      text    NOT NULL,
    first_seq   bigint  NOT NULL,
    last_seq    bigint  NOT NULL,
    n_messages  integer NOT NULL,
    n_deleted   integer NOT NULL,          -- soft-deleted messages among them
    packed      bytea   NOT NULL,          -- progressdb._pack_chunk(messages[])
    -- last_seq is a key column so that range probes test it in the index,
    -- without visiting chunks that do not overlap.
    CONSTRAINT message_chunks_pkey PRIMARY KEY (thread, first_seq, last_seq),
    CONSTRAINT message_chunks_range CHECK (first_seq BETWEEN 1 AND last_seq)
);
-- Kept in the heap page (already compressed: no TOAST, no second compression).
ALTER TABLE progressdb.message_chunks ALTER COLUMN packed SET STORAGE MAIN;

-- Members of a thread and their roles (members.sql). Keyed by thread first
-- (distribution-ready); a user's memberships are found by user_idx. Posting
-- writes nothing here: read state is a position, unread is counted on read.
CREATE TABLE progressdb.thread_members (
    thread        text    NOT NULL,
    user_id       text    NOT NULL,
    role          text    NOT NULL,
    joined_ts     bigint  NOT NULL,          -- when they (last) joined, Unix nanoseconds
    joined_seq    bigint  NOT NULL,          -- the thread's last seq then: history 'joined' shows later ones
    added_by      text,                      -- NULL: added by the service
    last_read_seq bigint  NOT NULL,          -- read state: never moves backwards
    last_read     text,                      -- id of the message at last_read_seq (NULL: none read)
    CONSTRAINT thread_members_pkey PRIMARY KEY (thread, user_id),
    CONSTRAINT thread_members_role CHECK (role IN ('reader', 'member', 'admin', 'owner'))
);
CREATE INDEX thread_members_user_idx ON progressdb.thread_members (user_id, thread);

-- Earlier contents of a message; the current content stays in messages.
CREATE TABLE progressdb.message_versions (
    thread      text    NOT NULL,
    seq         bigint  NOT NULL,
    version     integer NOT NULL,
    body        jsonb,
    body_enc    progressdb.ciphertext,     -- sealed with this version's identity
    updated_ts  bigint  NOT NULL,          -- when this version was written
    CONSTRAINT message_versions_pkey PRIMARY KEY (thread, seq, version)
);

-- Rows of a source thread as they were when a fork that shares them was
-- made, saved on their first change after it (copy-on-write, forks.sql).
-- msg is the row as JSON (to_jsonb of a messages row; an encrypted body
-- stays sealed, under the source's key).
CREATE TABLE progressdb.fork_snapshots (
    fork        text    NOT NULL,
    seq         bigint  NOT NULL,
    source      text    NOT NULL,          -- the thread the row belongs to
    taken_ts    bigint  NOT NULL,
    msg         jsonb   NOT NULL,
    CONSTRAINT fork_snapshots_pkey PRIMARY KEY (fork, seq)
);
-- Key rotation of a source re-seals its rows held here.
CREATE INDEX fork_snapshots_source_idx ON progressdb.fork_snapshots (source, seq);

-- Data keys of encrypted threads, wrapped by a master key (KEK) named by
-- kek_id. Ids come from one sequence, so a data key id is never reused.
CREATE SEQUENCE progressdb.dek_id_seq;
CREATE TABLE progressdb.thread_keys (
    thread      text    NOT NULL,
    dek_id      bigint  NOT NULL,
    kek_id      text    NOT NULL,
    wrapped     bytea   NOT NULL,          -- nonce || AES-256-GCM-SIV(KEK, DEK)
    created_ts  bigint  NOT NULL,
    CONSTRAINT thread_keys_pkey PRIMARY KEY (thread, dek_id)
);

-- User data in extension tables is dumped by pg_dump only when marked so.
SELECT pg_catalog.pg_extension_config_dump('progressdb.threads', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.messages', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.message_versions', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.thread_number_seq', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.thread_keys', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.thread_members', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.dek_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('progressdb.fork_snapshots', '');

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
-- The events of one message (and, seq NULL, a thread's own events), for a
-- purge (lifecycle.sql) to empty them without reading the thread's whole
-- feed. Written by the sequencer in batches, never by a client's change.
CREATE INDEX feed_message_idx ON progressdb.feed (thread, seq);
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

-- Token counts of message versions for the LLM context window (context.sql,
-- src/context.rs): the tokens of a message version's mapped content in each
-- tokenizer, NULL until context() first needs it. Filled lazily by
-- context(), never by posts, so each version is tokenized once. Holds no
-- text (encrypted threads included). Derived data: not dumped, recomputed
-- on demand after a restore.
CREATE TABLE progressdb.message_tokens (
    thread      text    NOT NULL,
    seq         bigint  NOT NULL,
    version     integer NOT NULL,
    o200k       integer,
    cl100k      integer,
    CONSTRAINT message_tokens_pkey PRIMARY KEY (thread, seq, version)
);

-- Input checks of identifiers, texts and limits are native: see src/checks.rs.
CREATE FUNCTION progressdb._body(body jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF body IS NULL OR jsonb_typeof(body) = 'null' THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'body is required and must not be JSON null';
    END IF;
    RETURN body;
END
$$;

-- The Message document is rendered by src/render.rs (sql/render.sql).
