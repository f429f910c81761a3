-- The LLM context window of a thread (API.md, "AI conversations"):
-- progressdb.context(). The budget walk, the mapping of a stored message to
-- an LLM message and the token counting are native (src/context.rs); this
-- file holds the SQL face and the timeline reads it is made of.
--
-- context() reads messages only through the _timeline_* functions below, so
-- that what "the thread's timeline" is (today: the messages table in seq
-- order) is decided in one place.

-- The thread's timeline, newest first: the messages with seq < before_seq,
-- at most lim of them. Deleted messages are included (with their
-- deleted_ts): callers skip them, and the oldest seq returned is where the
-- next batch starts. A keyset range scan on messages_pkey (thread, seq); a
-- plain SQL function, so the planner inlines it into the caller's query and
-- pushes the caller's conditions (seq > visible) into the scan.
CREATE FUNCTION progressdb._timeline_desc(t progressdb.threads, before_seq bigint, lim integer)
RETURNS SETOF progressdb.messages
LANGUAGE sql STABLE AS $$
    (SELECT m.* FROM progressdb.messages m
      WHERE t.fork_of IS NULL AND m.thread = t.id AND m.seq < before_seq
      ORDER BY m.seq DESC
      LIMIT lim)
    UNION ALL
    -- A fork: its rows as it shows them, shared prefix included (forks.sql).
    SELECT f.* FROM progressdb._fork_rows(t, 0, before_seq, lim, true, true) f
     WHERE t.fork_of IS NOT NULL
$$;

-- The thread's system messages (role 'system'), oldest first, deleted ones
-- included (callers skip them). Read through the partial index
-- messages_system_idx, so a long thread costs no more than its system
-- messages.
CREATE FUNCTION progressdb._timeline_system(t progressdb.threads)
RETURNS SETOF progressdb.messages
LANGUAGE sql STABLE AS $$
    (SELECT m.* FROM progressdb.messages m
      WHERE t.fork_of IS NULL AND m.thread = t.id AND m.role = 'system'
      ORDER BY m.seq)
    UNION ALL
    SELECT f.* FROM progressdb._fork_timeline_system(t) f
     WHERE t.fork_of IS NOT NULL
$$;

-- How many messages of the thread's timeline lie strictly between after_seq
-- and before_seq and are not deleted (every role). Seqs of a thread are
-- gap-free (post_message), so this is the width of the range less its
-- deleted messages, found through the partial index messages_deleted_idx:
-- no row of a live message is read, whatever the range's length.
-- (A fork's timeline is counted by forks.sql.)
-- PL/pgSQL, so its query is planned once per session.
CREATE FUNCTION progressdb._timeline_count(t progressdb.threads, after_seq bigint, before_seq bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    gone bigint;
BEGIN
    IF t.fork_of IS NOT NULL THEN
        RETURN progressdb._fork_timeline_count(t, after_seq, before_seq);
    END IF;
    SELECT count(*) INTO gone FROM progressdb.messages m
     WHERE m.thread = t.id AND m.seq > after_seq AND m.seq < before_seq
       AND m.deleted_ts IS NOT NULL;
    RETURN greatest(least(before_seq, t.last_seq + 1) - greatest(after_seq, 0) - 1, 0) - gone;
END
$$;

-- The context window document (see README, "AI conversations"):
-- {"thread","format","tokenizer","tokens","dropped",("system",)"messages"}.
-- VOLATILE: it stores the token counts it computes (message_tokens). The
-- text face, context_text() (src/context.rs), is what the gateway calls.
CREATE FUNCTION progressdb.context(thread text, max_tokens integer, actor text DEFAULT NULL,
                                   format text DEFAULT 'openai', tokenizer text DEFAULT 'o200k_base')
RETURNS jsonb
LANGUAGE sql VOLATILE AS $$
    SELECT progressdb.context_text(thread, max_tokens, actor, format, tokenizer)::jsonb
$$;
