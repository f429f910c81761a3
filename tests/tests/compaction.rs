//! The background compactor (library preloaded) clusters timelines on its own,
//! while the data stays readable and appends go on.

use progressdb_tests::{call, TestCluster};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compactor_clusters_interleaved_timelines() {
    let tc = TestCluster::start_with(
        "compactor",
        &[
            ("shared_preload_libraries", "progressdb"),
            ("progressdb.compaction_interval", "1"),
            ("progressdb.compaction_min_age", "0"),
        ],
    );
    let c = tc.connect("postgres").await;
    let workers: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'progressdb compactor'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        workers, 1,
        "the compactor runs when the library is preloaded"
    );

    // 20 threads x 100 messages of ~300 bytes, interleaved.
    c.batch_execute(
        "SELECT progressdb.post_message('t' || (i % 20), 'alice',
                  jsonb_build_object('text', repeat(md5(i::text), 9), 'i', i))
           FROM generate_series(1, 2000) i",
    )
    .await
    .unwrap();
    let before = call(&c, "SELECT progressdb.list_messages('t7', 1000)::text", &[]).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = c
            .query_one(
                "SELECT count(*) FROM progressdb.compaction_state WHERE compacted_seq = 100",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if done == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "compactor did not finish: {done}/20 threads"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The thread's history now sits in a few page-sized chunks that tile it.
    let (chunked, chunks): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT coalesce(sum(last_seq - first_seq + 1), 0)::bigint, count(*)
                   FROM progressdb.message_chunks WHERE thread = 't7'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(chunked, 100, "chunks tile the compacted thread");
    assert!(chunks <= 4, "100 messages of ~300 bytes in {chunks} chunks");
    let after = call(&c, "SELECT progressdb.list_messages('t7', 1000)::text", &[]).await;
    assert_eq!(before, after);
    let m = call(
        &c,
        "SELECT progressdb.post_message('t7', 'alice', '{}')::text",
        &[],
    )
    .await;
    assert_eq!(m["thread"], "t7");
}
