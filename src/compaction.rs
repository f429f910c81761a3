//! Timeline clustering: `compact()` and the chunk reads (SQL in
//! `sql/compaction.sql`), and the background worker that runs `compact()`,
//! the event feed's upkeep and retention (`apply_retention`,
//! sql/lifecycle.sql) when the library is preloaded.

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::guc;

extension_sql_file!(
    "../sql/compaction.sql",
    name = "compaction",
    requires = ["messages"]
);

/// Registers the compactor, only when loaded through shared_preload_libraries
/// (a static background worker cannot be registered later).
pub fn register_worker() {
    // SAFETY: a plain global flag PostgreSQL sets while preloading libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    guc::init_preloaded();
    BackgroundWorkerBuilder::new("progressdb compactor")
        .set_type("progressdb compactor")
        .set_library("progressdb")
        .set_function("progressdb_compactor_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// Batches per round at most; each batch is its own short transaction so
/// that the threads it chunks are held (storage lock) only briefly: a change
/// to one of their messages waits for the batch to commit.
const MAX_BATCHES_PER_ROUND: usize = 1000;
const THREADS_PER_BATCH: i32 = 10;

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn progressdb_compactor_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = guc::setting_string(&guc::COMPACTION_DATABASE).unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    // Where the retention scan of threads goes on from (None: the start).
    let mut retention_from: Option<String> = None;
    loop {
        let interval = guc::COMPACTION_INTERVAL.get();
        let nap = Duration::from_secs(if interval > 0 { interval as u64 } else { 60 });
        if !BackgroundWorker::wait_latch(Some(nap)) {
            break; // SIGTERM or postmaster death
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a worker to re-read its configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if guc::COMPACTION_INTERVAL.get() <= 0 {
            continue;
        }
        let min_age = f64::from(guc::COMPACTION_MIN_AGE.get());
        for _ in 0..MAX_BATCHES_PER_ROUND {
            let threads = BackgroundWorker::transaction(|| compact_batch(min_age));
            if threads == 0 || BackgroundWorker::sigterm_received() {
                break;
            }
        }
        // The event feed (sql/events.sql): number what readers have not yet,
        // and apply its retention, a batch per round.
        BackgroundWorker::transaction(maintain_feed);
        apply_retention(&mut retention_from);
    }
}

/// Retention batches per round at most; each is its own short transaction
/// purging at most RETENTION_BATCH messages, so appends to the threads
/// concerned never wait for more than one small batch.
const MAX_RETENTION_BATCHES_PER_ROUND: usize = 200;
const RETENTION_BATCH: i32 = 500;

/// One retention round: batches until nothing is left to purge and the
/// scan of threads went round once; the counts go to the server log.
fn apply_retention(from: &mut Option<String>) {
    let (mut aged, mut deleted, mut threads) = (0i64, 0i64, 0i64);
    for _ in 0..MAX_RETENTION_BATCHES_PER_ROUND {
        let r = BackgroundWorker::transaction(|| retention_batch(from.as_deref()));
        let Some(r) = r else { break };
        let n = |k: &str| r.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
        let batch = n("messages") + n("deleted") + n("threads");
        aged += n("messages");
        deleted += n("deleted");
        threads += n("threads");
        *from = r.get("next").and_then(|v| v.as_str()).map(str::to_owned);
        if (batch == 0 && from.is_none()) || BackgroundWorker::sigterm_received() {
            break;
        }
    }
    if aged + deleted + threads > 0 {
        log!(
            "progressdb: retention purged {aged} messages past their thread's retention, \
             {deleted} deleted messages and {threads} deleted threads"
        );
    }
}

fn retention_batch(from: Option<&str>) -> Option<serde_json::Value> {
    if !extension_installed() {
        return None;
    }
    match Spi::get_one_with_args::<pgrx::JsonB>(
        "SELECT progressdb.apply_retention($1, from_thread => $2)",
        &[RETENTION_BATCH.into(), from.into()],
    ) {
        Ok(Some(j)) => Some(j.0),
        Ok(None) => None,
        Err(e) => {
            warning!("progressdb: retention failed: {e}");
            None
        }
    }
}

fn extension_installed() -> bool {
    Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'progressdb')")
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn maintain_feed() {
    if !extension_installed() {
        return;
    }
    let _ = Spi::run("SELECT progressdb._sequence_events()");
    match Spi::get_one::<i64>("SELECT progressdb.trim_events()") {
        Ok(Some(n)) if n > 0 => {
            log!("progressdb: removed {n} events older than the feed's retention")
        }
        Ok(_) => {}
        Err(e) => warning!("progressdb: feed retention failed: {e}"),
    }
}

fn compact_batch(min_age_secs: f64) -> i64 {
    if !extension_installed() {
        return 0;
    }
    Spi::get_one_with_args::<i64>(
        "SELECT (progressdb.compact($1, min_age => make_interval(secs => $2)) ->> 'threads')::bigint",
        &[THREADS_PER_BATCH.into(), min_age_secs.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;

    fn interleave(threads: i32, per_thread: i32) {
        // ~300 byte bodies from the threads in turn: each thread's rows scatter.
        run(&format!(
            "SELECT progressdb.post_message('t' || (i % {threads}), 'alice',
                      jsonb_build_object('text', repeat(md5(i::text), 9), 'i', i))
               FROM generate_series(1, {}) i",
            threads * per_thread
        ));
    }

    /// A page just older than seq `before` as `_page_text` reads it, from
    /// chunks where they hold it (`chunks`) or from the messages table: the
    /// documents as a JSON array, and what the page says about its edges.
    fn page_of(
        chunks: bool,
        thread: &str,
        before: i64,
        lim: i32,
        deleted: bool,
    ) -> serde_json::Value {
        json(&format!(
            "SELECT jsonb_build_object('messages', ('[' || coalesce(p.docs, '') || ']')::jsonb,
                                       'n', p.n, 'lo', p.lo, 'hi', p.hi, 'has_before', p.has_before)
               FROM progressdb._page_text('{thread}', {before}, {lim}, {deleted}, 0, {chunks}) p"
        ))
    }

    /// The documents of a page read from chunks where compacted.
    fn page(thread: &str, before: i64, lim: i32, deleted: bool) -> serde_json::Value {
        page_of(true, thread, before, lim, deleted)["messages"].clone()
    }

    fn id_at(thread: &str, seq: i64) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT id FROM progressdb.messages WHERE thread = '{thread}' AND seq = {seq}"
        ))
        .unwrap()
        .unwrap()
    }

    /// Pages from chunks equal pages from the messages table, at cursors
    /// `step` apart.
    fn assert_pages_match(thread: &str, last: i64, step: usize) {
        for before in (2..=last + 1).step_by(step) {
            for deleted in [false, true] {
                assert_eq!(
                    page_of(true, thread, before, 50, deleted),
                    page_of(false, thread, before, 50, deleted),
                    "{thread} before {before} include_deleted {deleted}"
                );
            }
        }
    }

    /// Shared buffers (hit + read) one history page touches, after a first
    /// call that plans the function's statements (catalog reads).
    fn page_buffers(thread: &str, before: i64) -> i64 {
        let q = format!("SELECT * FROM progressdb._page_text('{thread}', {before}, 50, false)");
        run(&q);
        let plan =
            Spi::get_one::<pgrx::Json>(&format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {q}"))
                .unwrap()
                .unwrap()
                .0;
        let p = &plan[0]["Plan"];
        p["Shared Hit Blocks"].as_i64().unwrap() + p["Shared Read Blocks"].as_i64().unwrap()
    }

    fn chunked_seqs(thread: &str) -> i64 {
        Spi::get_one::<i64>(&format!(
            "SELECT coalesce(sum(last_seq - first_seq + 1), 0)::bigint
               FROM progressdb.message_chunks WHERE thread = '{thread}'"
        ))
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn compaction_chunks_a_threads_history_into_few_buffers_and_changes_nothing_visible() {
        interleave(40, 100);
        let m = json("SELECT progressdb.list_messages('t5', 3)");
        let id = m["messages"][0]["id"].as_str().unwrap().to_string();
        run(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"edited\"}}')"
        ));
        run(&format!(
            "SELECT progressdb.add_reaction('{id}', 'bob', 'x')"
        ));
        let snapshot = format!(
            "SELECT jsonb_build_object(
                'all', progressdb.list_messages('t5', 1000, include_deleted => true),
                'older', progressdb.list_messages('t5', 50, before =>
                    (SELECT id FROM progressdb.messages WHERE thread = 't5' AND seq = 60)),
                'versions', progressdb.message_versions('{id}'))"
        );
        let before = json(&snapshot);
        let scattered = page_buffers("t5", 90);
        assert!(
            scattered >= 40,
            "interleaved appends scatter a thread: {scattered} buffers per page"
        );

        let r = json("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(r["threads"], 40, "{r}");
        assert_eq!(r["messages"], 4000, "{r}");
        assert_eq!(chunked_seqs("t5"), 100, "chunks tile the thread");
        let clustered = page_buffers("t5", 90);
        assert!(
            clustered <= 8,
            "after compaction: {clustered} buffers per page (before {scattered})"
        );
        assert_eq!(
            json(&snapshot),
            before,
            "compaction changes no visible data"
        );
        assert_pages_match("t5", 100, 7);

        // Nothing left to do until more messages arrive.
        let again = json("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(again["threads"], 0, "{again}");
        // The timeline goes on after compaction; pages straddling the
        // compacted end come from the messages table.
        let next = json("SELECT progressdb.post_message('t5', 'alice', '{}')");
        let seq = Spi::get_one::<i64>(&format!(
            "SELECT seq FROM progressdb.messages WHERE id = '{}'",
            next["id"].as_str().unwrap()
        ))
        .unwrap();
        assert_eq!(seq, Some(101));
        assert_pages_match("t5", 101, 7);
        run(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"after\"}}')"
        ));
        assert_eq!(
            json(&format!("SELECT progressdb.message_versions('{id}')"))["versions"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[pg_test]
    fn changes_to_chunked_messages_show_in_history_pages() {
        interleave(4, 300);
        run("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(chunked_seqs("t1"), 300);
        let most = Spi::get_one::<i32>("SELECT max(n_messages) FROM progressdb.message_chunks")
            .unwrap()
            .unwrap();
        assert!(most <= 128, "a chunk of {most} messages");
        let ids = |lo: i64, hi: i64| {
            format!("SELECT id FROM progressdb.messages WHERE thread = 't1' AND seq BETWEEN {lo} AND {hi}")
        };
        // An edit, a reaction, a restore, and a run of 80 deletions that
        // thins pages below what the first chunk probe covers.
        run(&format!(
            "SELECT progressdb.edit_message(id, '{{\"text\":\"new words\"}}') FROM ({}) x",
            ids(10, 10)
        ));
        run(&format!(
            "SELECT progressdb.add_reaction(id, 'bob', ':)') FROM ({}) x",
            ids(20, 20)
        ));
        run(&format!(
            "SELECT progressdb.delete_message(id) FROM ({}) x",
            ids(100, 179)
        ));
        run(&format!(
            "SELECT progressdb.restore_message(id) FROM ({}) x",
            ids(150, 150)
        ));
        assert_pages_match("t1", 300, 7);
        let p = page_of(true, "t1", 200, 50, false);
        assert_eq!(
            (p["n"].as_i64(), p["hi"].as_i64()),
            (Some(50), Some(199)),
            "{p}"
        );
        let ids: Vec<&str> = p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        let (restored, deleted) = (id_at("t1", 150), id_at("t1", 151));
        assert!(ids.contains(&restored.as_str()) && !ids.contains(&deleted.as_str()));
        let edited = page("t1", 11, 1, false);
        assert_eq!(edited[0]["body"]["text"], "new words");
        assert_eq!(edited[0]["version"], 2);
        let reacted = page("t1", 21, 1, false);
        assert_eq!(reacted[0]["reactions"]["bob"], ":)");
        // A plain SQL change is kept in the chunks too.
        run("UPDATE progressdb.messages SET role = 'system' WHERE thread = 't1' AND seq = 5");
        assert_eq!(page("t1", 6, 1, false)[0]["role"], "system");
        assert_pages_match("t1", 300, 7);
    }

    #[pg_test]
    fn compaction_leaves_young_messages_and_short_runs_alone() {
        interleave(10, 20);
        let r = json("SELECT progressdb.compact()");
        assert_eq!(
            r,
            serde_json::json!({"threads": 0, "messages": 0}),
            "all younger than a minute"
        );
        // Also when they are enough of them for a run: young stays young.
        let r = json("SELECT progressdb.compact(min_run => 10)");
        assert_eq!(r["threads"], 0, "young messages are not compacted: {r}");
        let chunked =
            Spi::get_one::<i64>("SELECT count(*) FROM progressdb.message_chunks").unwrap();
        assert_eq!(chunked, Some(0));
        let r = json("SELECT progressdb.compact(min_run => 64, min_age => '0')");
        assert_eq!(r["threads"], 0, "runs of 20 are below min_run: {r}");
        let r = json("SELECT progressdb.compact(min_run => 10, min_age => '0')");
        assert_eq!(r["threads"], 10, "{r}");
        assert_fails("SELECT progressdb.compact(0)", "22023");
    }

    #[pg_test]
    fn a_long_thread_is_compacted_2048_messages_per_call() {
        run(
            "SELECT progressdb.post_message('long', 'alice', jsonb_build_object('i', i))
               FROM generate_series(1, 3000) i",
        );
        let done = || {
            Spi::get_one::<i64>(
                "SELECT compacted_seq FROM progressdb.compaction_state WHERE thread = 'long'",
            )
            .unwrap()
        };
        let r = json("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(r["messages"], 2048, "{r}");
        assert_eq!(done(), Some(2048));
        let r = json("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(r["messages"], 952, "{r}");
        assert_eq!(done(), Some(3000));
        assert_eq!(chunked_seqs("long"), 3000);
        assert_pages_match("long", 3000, 331);
    }

    #[pg_test]
    fn closed_messages_trickling_in_still_fill_page_sized_chunks() {
        // Ten compaction rounds of 40 new messages each: the short last chunk
        // of a round is cut again with the next round, not left behind.
        for round in 0..10 {
            run(&format!(
                "SELECT progressdb.post_message('drip', 'alice',
                          jsonb_build_object('text', repeat(md5(i::text), 8)))
                   FROM generate_series({}, {}) i",
                round * 40,
                round * 40 + 39
            ));
            let r = json("SELECT progressdb.compact(min_age => '0')");
            assert_eq!(r["messages"], 40, "{r}");
        }
        assert_eq!(chunked_seqs("drip"), 400);
        let chunks = Spi::get_one::<i64>(
            "SELECT count(*) FROM progressdb.message_chunks WHERE thread = 'drip'",
        )
        .unwrap()
        .unwrap();
        // At most 128 messages a chunk: 4 at best; one per round (10) without
        // the re-cut.
        assert!(chunks <= 5, "400 messages of ~300 bytes in {chunks} chunks");
        assert_pages_match("drip", 400, 13);
    }

    #[pg_test]
    fn sealed_chunks_fit_a_page_and_follow_a_key_rotation() {
        run("SELECT progressdb.create_thread('alice', 'S', 'vault', encrypted => true)");
        // Sealed bodies barely compress: chunks are split until they fit a page.
        run("SELECT progressdb.post_message(CASE WHEN i % 2 = 0 THEN 'vault' ELSE 'plain' END, 'alice',
                                            jsonb_build_object('text', 'secret ' || i || repeat(md5(i::text), 40)))
               FROM generate_series(1, 200) i");
        let before = json("SELECT progressdb.list_messages('vault', 1000)");
        let r = json("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(r["threads"], 2, "{r}");
        assert_eq!(chunked_seqs("vault"), 100);
        let biggest = Spi::get_one::<i32>(
            "SELECT max(octet_length(packed)) FROM progressdb.message_chunks WHERE thread = 'vault'",
        )
        .unwrap()
        .unwrap();
        assert!(
            biggest <= 8000,
            "a chunk of {biggest} bytes would go to TOAST"
        );
        assert_eq!(
            json("SELECT progressdb.list_messages('vault', 1000)"),
            before
        );
        assert_pages_match("vault", 100, 7);

        let rot = json("SELECT progressdb.rotate_thread_key('vault')");
        assert_eq!(rot["messages"], 100);
        let stale = Spi::get_one::<i64>(
            "SELECT count(*) FROM progressdb.message_chunks c, progressdb.threads t,
                    progressdb._unpack_chunk(c.packed) u
              WHERE c.thread = 'vault' AND t.id = 'vault'
                AND u.envelope NOT LIKE 'pdb1:' || t.dek_id || ':%'",
        )
        .unwrap();
        assert_eq!(
            stale,
            Some(0),
            "chunks hold the bodies sealed with the new key"
        );
        assert_pages_match("vault", 100, 7);
        assert_eq!(
            json("SELECT progressdb.list_messages('vault', 1000)"),
            before
        );
    }

    #[pg_test]
    fn chunks_of_an_encrypted_thread_hold_no_plaintext() {
        run("SELECT progressdb.create_thread('alice', 'S', 'vault', encrypted => true)");
        run("SELECT progressdb.post_message('vault', 'alice',
                    jsonb_build_object('text', 'zebra-quartz-' || i, 'n', i))
               FROM generate_series(1, 120) i");
        let edited = id_at("vault", 7);
        run(&format!(
            "SELECT progressdb.edit_message('{edited}', '{{\"text\":\"okapi-fjord\"}}')"
        ));
        let before =
            json("SELECT progressdb.list_messages('vault', 1000, include_deleted => true)");
        run("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(chunked_seqs("vault"), 120);
        // Everything a chunk stores, as stored: documents, plaintext parts, envelopes.
        let leaks = Spi::get_one::<i64>(
            "SELECT count(*) FROM progressdb.message_chunks c, progressdb._unpack_chunk(c.packed) u
              WHERE c.thread = 'vault'
                AND (u.doc || coalesce(u.plain, '') || coalesce(u.envelope, ''))
                    ~ '(zebra|quartz|okapi|fjord)'",
        )
        .unwrap();
        assert_eq!(
            leaks,
            Some(0),
            "a chunk holds plaintext of an encrypted body"
        );
        let sealed = Spi::get_one::<i64>(
            "SELECT count(*) FROM progressdb.message_chunks c, progressdb._unpack_chunk(c.packed) u
              WHERE c.thread = 'vault' AND u.envelope LIKE 'pdb1:%'",
        )
        .unwrap();
        assert_eq!(sealed, Some(120), "every entry carries its sealed body");
        // Readers get plaintext, from the chunks, the same as before compaction.
        assert_eq!(
            json("SELECT progressdb.list_messages('vault', 1000, include_deleted => true)"),
            before
        );
        assert_eq!(page("vault", 8, 1, false)[0]["body"]["text"], "okapi-fjord");
        assert_pages_match("vault", 120, 9);
    }

    /// Every page of a thread, walking `before` cursors from the newest page.
    fn walk(thread: &str, lim: i32, deleted: bool) -> Vec<serde_json::Value> {
        let mut pages = vec![];
        let mut q = format!(
            "SELECT progressdb.list_messages('{thread}', {lim}, include_deleted => {deleted})"
        );
        loop {
            let p = json(&q);
            let more = p["pagination"]["has_before"] == true;
            let cursor = p["pagination"]["before"].as_str().map(str::to_string);
            pages.push(p);
            match cursor {
                Some(c) if more => {
                    q = format!(
                        "SELECT progressdb.list_messages('{thread}', {lim}, before => '{c}', include_deleted => {deleted})"
                    )
                }
                _ => return pages,
            }
        }
    }

    #[pg_test]
    fn pages_walked_by_cursor_are_the_same_from_chunks_and_from_rows() {
        interleave(3, 200);
        let ids = |lo: i64, hi: i64| {
            format!("SELECT id FROM progressdb.messages WHERE thread = 't1' AND seq BETWEEN {lo} AND {hi}")
        };
        run(&format!(
            "SELECT progressdb.delete_message(id) FROM ({}) x",
            ids(40, 95)
        ));
        run(&format!(
            "SELECT progressdb.delete_message(id) FROM ({}) x",
            ids(150, 150)
        ));
        run(&format!(
            "SELECT progressdb.delete_message(id) FROM ({}) x",
            ids(200, 200)
        ));
        let from_rows: Vec<_> = [(7, false), (7, true), (50, false), (1000, false)]
            .iter()
            .map(|&(lim, d)| walk("t1", lim, d))
            .collect();
        assert!(from_rows[0].len() > 10, "a long walk");
        run("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(chunked_seqs("t1"), 200);
        let from_chunks: Vec<_> = [(7, false), (7, true), (50, false), (1000, false)]
            .iter()
            .map(|&(lim, d)| walk("t1", lim, d))
            .collect();
        assert_eq!(from_chunks, from_rows);

        // Newer messages not compacted yet (the tail): the newest page is
        // the tail's rows and the chunks below them, for every page size.
        run(
            "SELECT progressdb.post_message('t1', 'alice', jsonb_build_object('tail', i))
               FROM generate_series(1, 6) i",
        );
        run(&format!(
            "SELECT progressdb.delete_message(id) FROM ({}) x",
            ids(204, 204)
        ));
        let sizes = [
            (1, false),
            (4, false),
            (5, false),
            (6, true),
            (9, false),
            (50, true),
        ];
        let hybrid: Vec<_> = sizes.iter().map(|&(lim, d)| walk("t1", lim, d)).collect();
        run("DELETE FROM progressdb.message_chunks WHERE thread = 't1'");
        let rows: Vec<_> = sizes.iter().map(|&(lim, d)| walk("t1", lim, d)).collect();
        assert_eq!(hybrid, rows);
    }
}
