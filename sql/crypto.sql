-- Key rotation of one encrypted thread.

-- New data key for the thread; re-seals its messages and versions under it in
-- batches (walking the timeline key, so each batch is an index range), then
-- drops the old data keys. Touches only this thread's rows: appends to other
-- threads go on. Re-sealing is not a content change and makes no version.
CREATE FUNCTION progressdb.rotate_thread_key(thread text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    batch_size constant integer := 500;
    t progressdb.threads := progressdb._thread_for(rotate_thread_key.thread, NULL);
    new_dek bigint;
    from_seq bigint := 0;
    from_version integer := 0;
    n_messages bigint := 0;
    n_versions bigint := 0;
    done bigint;
    last_seq bigint;
    last_version integer;
BEGIN
    IF t.dek_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('thread %s is not encrypted', t.id);
    END IF;
    -- Waits for a compaction or a single-message change of this thread in
    -- flight (compaction.sql); each batch below rewrites the thread's chunks.
    PERFORM progressdb._lock_thread_storage(t.id);
    new_dek := progressdb._create_dek(t.id);
    -- New messages use the new key from here on (this row lock also makes
    -- appends to this thread wait until the rotation commits).
    UPDATE progressdb.threads th SET dek_id = new_dek WHERE th.id = t.id;
    PERFORM set_config('progressdb.reencrypting', 'on', true);

    LOOP
        WITH batch AS (
            SELECT mm.seq FROM progressdb.messages mm
             WHERE mm.thread = t.id AND mm.seq > from_seq AND mm.body_enc IS NOT NULL
             ORDER BY mm.seq LIMIT batch_size),
        done_rows AS (
            UPDATE progressdb.messages mm
               SET body_enc = progressdb._reseal(mm.thread, mm.id, mm.version, mm.body_enc, new_dek)
              FROM batch b
             WHERE mm.thread = t.id AND mm.seq = b.seq
            RETURNING mm.seq)
        SELECT count(*), max(seq) INTO done, last_seq FROM done_rows;
        EXIT WHEN done = 0;
        n_messages := n_messages + done;
        from_seq := last_seq;
    END LOOP;

    from_seq := 0;
    LOOP
        WITH batch AS (
            SELECT v.seq, v.version FROM progressdb.message_versions v
             WHERE v.thread = t.id AND (v.seq, v.version) > (from_seq, from_version)
               AND v.body_enc IS NOT NULL
             ORDER BY v.seq, v.version LIMIT batch_size),
        done_rows AS (
            UPDATE progressdb.message_versions v
               SET body_enc = progressdb._reseal(v.thread, mm.id, v.version, v.body_enc, new_dek)
              FROM batch b, progressdb.messages mm
             WHERE v.thread = t.id AND v.seq = b.seq AND v.version = b.version
               AND mm.thread = v.thread AND mm.seq = v.seq
            RETURNING v.seq, v.version)
        SELECT count(*), (array_agg(seq ORDER BY seq DESC, version DESC))[1],
               (array_agg(version ORDER BY seq DESC, version DESC))[1]
          INTO done, last_seq, last_version FROM done_rows;
        EXIT WHEN done = 0;
        n_versions := n_versions + done;
        from_seq := last_seq;
        from_version := last_version;
    END LOOP;

    -- The event feed's copies of this thread's messages (events.sql) are
    -- re-sealed too. The feed lock keeps the sequencer from moving queue rows
    -- to the feed meanwhile (it skips its rounds until this commits).
    PERFORM 1 FROM progressdb.feed_state s FOR UPDATE;
    UPDATE progressdb.feed_queue q SET entry = progressdb._reseal_entry(q.thread, q.entry, new_dek)
     WHERE q.thread = t.id AND q.entry IS NOT NULL;
    UPDATE progressdb.feed f SET entry = progressdb._reseal_entry(f.thread, f.entry, new_dek)
     WHERE f.thread = t.id AND f.entry IS NOT NULL;

    -- Forks' snapshots of this thread's rows (forks.sql), sealed with its
    -- key: re-sealed, and their blind search terms (search.sql) made again
    -- under the new key.
    UPDATE progressdb.fork_snapshots s
       SET msg = jsonb_set(jsonb_set(s.msg, '{body_enc}',
                     to_jsonb(progressdb._reseal(s.source, s.msg->>'id', (s.msg->>'version')::integer,
                                                 s.msg->>'body_enc', new_dek))),
                 '{search_vec}',
                 coalesce(to_jsonb(progressdb._search_vector(s.source, new_dek,
                     progressdb._open(s.source, s.msg->>'id', (s.msg->>'version')::integer,
                                      nullif(s.msg->'body', 'null'::jsonb), s.msg->>'body_enc'))::text),
                          'null'::jsonb))
     WHERE s.source = t.id AND s.msg->>'body_enc' IS NOT NULL;
    UPDATE progressdb.fork_snapshots s
       SET msg = jsonb_set(s.msg, '{search_vec}',
                           coalesce(to_jsonb(progressdb._search_vector(s.source, new_dek, s.msg->'body')::text),
                                    'null'::jsonb))
     WHERE s.source = t.id AND s.msg->>'body_enc' IS NULL;

    -- Blind search terms follow the key: the re-sealed rows got new ones (a
    -- trigger, search.sql); rows with nothing sealed (encrypted_fields) get
    -- theirs here.
    UPDATE progressdb.messages mm SET search_vec = progressdb._search_vector(t.id, new_dek, mm.body)
     WHERE mm.thread = t.id AND mm.body_enc IS NULL;

    PERFORM set_config('progressdb.reencrypting', 'off', true);
    DELETE FROM progressdb.thread_keys k WHERE k.thread = t.id AND k.dek_id <> new_dek;
    RETURN jsonb_build_object('thread', t.id, 'reencrypted', n_messages + n_versions,
                              'messages', n_messages, 'versions', n_versions);
END
$$;
