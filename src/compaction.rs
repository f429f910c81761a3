//! Timeline clustering: `compact()` (SQL in `sql/compaction.sql`) and the
//! background worker that runs it when the library is preloaded.

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
/// that the rows it moves are locked only briefly.
const MAX_BATCHES_PER_ROUND: usize = 1000;
const THREADS_PER_BATCH: i32 = 10;

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn progressdb_compactor_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = guc::setting_string(&guc::COMPACTION_DATABASE).unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
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
    }
}

fn compact_batch(min_age_secs: f64) -> i64 {
    let installed = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'progressdb')",
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !installed {
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

    /// Distinct heap pages holding messages lo..=hi of a thread.
    fn pages(thread: &str, lo: i64, hi: i64) -> i64 {
        Spi::get_one::<i64>(&format!(
            "SELECT count(DISTINCT (ctid::text::point)[0]) FROM progressdb.messages
              WHERE thread = '{thread}' AND seq BETWEEN {lo} AND {hi}"
        ))
        .unwrap()
        .unwrap()
    }

    fn interleave(threads: i32, per_thread: i32) {
        // ~300 byte bodies from 40 threads in turn: each thread's rows scatter.
        run(&format!(
            "SELECT progressdb.post_message('t' || (i % {threads}), 'alice',
                      jsonb_build_object('text', repeat(md5(i::text), 9), 'i', i))
               FROM generate_series(1, {}) i",
            threads * per_thread
        ));
    }

    #[pg_test]
    fn compaction_puts_a_threads_history_on_few_pages_and_changes_nothing_visible() {
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
            "SELECT jsonb_build_object('page', progressdb.list_messages('t5', 1000, include_deleted => true),
                                       'versions', progressdb.message_versions('{id}'))"
        );
        let before = json(&snapshot);
        let scattered = pages("t5", 1, 50);
        assert!(
            scattered >= 40,
            "interleaved appends scatter a thread: {scattered} pages"
        );

        let r = json("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(r["threads"], 40, "{r}");
        assert_eq!(r["messages"], 4000, "{r}");
        let clustered = pages("t5", 1, 50);
        // 50 rows of ~400 bytes fit on 3 pages; allow the run's first page to be shared.
        assert!(
            clustered <= 4,
            "after compaction: {clustered} pages (before {scattered})"
        );
        assert_eq!(
            json(&snapshot),
            before,
            "compaction changes no visible data"
        );

        // Nothing left to do until more messages arrive.
        let again = json("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(again["threads"], 0, "{again}");
        // The timeline goes on after compaction.
        let next = json("SELECT progressdb.post_message('t5', 'alice', '{}')");
        let seq = Spi::get_one::<i64>(&format!(
            "SELECT seq FROM progressdb.messages WHERE id = '{}'",
            next["id"].as_str().unwrap()
        ))
        .unwrap();
        assert_eq!(seq, Some(101));
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
    fn compaction_leaves_young_messages_and_short_runs_alone() {
        interleave(10, 20);
        let r = json("SELECT progressdb.compact()");
        assert_eq!(
            r,
            serde_json::json!({"threads": 0, "messages": 0}),
            "all younger than a minute"
        );
        let r = json("SELECT progressdb.compact(min_run => 64, min_age => '0')");
        assert_eq!(r["threads"], 0, "runs of 20 are below min_run: {r}");
        let r = json("SELECT progressdb.compact(min_run => 10, min_age => '0')");
        assert_eq!(r["threads"], 10, "{r}");
        assert_fails("SELECT progressdb.compact(0)", "22023");
    }

    #[pg_test]
    fn compaction_keeps_encrypted_bodies_readable() {
        run("SELECT progressdb.create_thread('alice', 'S', 'vault', encrypted => true)");
        run("SELECT progressdb.post_message(CASE WHEN i % 2 = 0 THEN 'vault' ELSE 'plain' END, 'alice',
                                            jsonb_build_object('text', 'secret ' || i))
               FROM generate_series(1, 200) i");
        let before = json("SELECT progressdb.list_messages('vault', 1000)");
        let r = json("SELECT progressdb.compact(min_age => '0')");
        assert_eq!(r["threads"], 2, "{r}");
        assert_eq!(
            json("SELECT progressdb.list_messages('vault', 1000)"),
            before
        );
        let rot = json("SELECT progressdb.rotate_thread_key('vault')");
        assert_eq!(rot["messages"], 100);
    }
}
