//! Many sessions appending at once: no lost or duplicated seq, and appends to
//! different threads do not wait for each other.

use progressdb_tests::{call, TestCluster};
use std::collections::HashSet;

const WRITERS: usize = 8;
const PER_WRITER: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_to_one_thread_lose_and_duplicate_nothing() {
    let tc = TestCluster::start("conc");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = tc.connect("postgres").await;
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..PER_WRITER {
                let body = format!("{{\"w\":{w},\"i\":{i}}}");
                let m = call(
                    &client,
                    "SELECT progressdb.post_message('busy', $1, $2::text::jsonb)::text",
                    &[&format!("writer{w}"), &body],
                )
                .await;
                seqs.push(m["id"].as_str().unwrap().to_string());
            }
            seqs
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(ids.insert(id), "duplicate message id");
        }
    }
    assert_eq!(ids.len(), WRITERS * PER_WRITER);

    let client = tc.connect("postgres").await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM progressdb.messages WHERE thread = 'busy'",
            &[],
        )
        .await
        .unwrap();
    let (n, distinct, lo, hi): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let total = (WRITERS * PER_WRITER) as i64;
    assert_eq!(
        (n, distinct, lo, hi),
        (total, total, 1, total),
        "seqs must be exactly 1..{total}"
    );

    // Each writer's messages appear in the order it wrote them.
    let page = call(
        &client,
        "SELECT progressdb.list_messages('busy', 1000)::text",
        &[],
    )
    .await;
    let mut last = [-1i64; WRITERS];
    for m in page["messages"].as_array().unwrap() {
        let w = m["body"]["w"].as_u64().unwrap() as usize;
        let i = m["body"]["i"].as_i64().unwrap();
        assert!(i > last[w], "writer {w} out of order");
        last[w] = i;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_other_threads_do_not_wait_for_an_open_append() {
    let tc = TestCluster::start("nowait");
    let holder = tc.connect("postgres").await;
    let other = tc.connect("postgres").await;
    let same = tc.connect("postgres").await;
    holder
        .batch_execute("SELECT progressdb.post_message('x', 'a', '{}')")
        .await
        .unwrap();

    // Session 1 appends to x and keeps its transaction open.
    holder
        .batch_execute("BEGIN; SELECT progressdb.post_message('x', 'a', '{}')")
        .await
        .unwrap();

    // Session 2 appends to y: must not wait at all.
    other
        .batch_execute("SET lock_timeout = '2s'")
        .await
        .unwrap();
    let m = call(
        &other,
        "SELECT progressdb.post_message('y', 'b', '{}')::text",
        &[],
    )
    .await;
    assert_eq!(m["thread"], "y");

    // Session 3 appends to x: waits for session 1 (the seq lock), so it times out.
    same.batch_execute("SET lock_timeout = '300ms'")
        .await
        .unwrap();
    let err = same
        .batch_execute("SELECT progressdb.post_message('x', 'c', '{}')")
        .await
        .expect_err("append to a thread with an open append must wait");
    assert_eq!(err.code().map(|c| c.code()), Some("55P03"), "{err}");

    holder.batch_execute("COMMIT").await.unwrap();
    same.batch_execute("SELECT progressdb.post_message('x', 'c', '{}')")
        .await
        .unwrap();
    let row = same
        .query_one("SELECT string_agg(seq::text, ',' ORDER BY seq) FROM progressdb.messages WHERE thread = 'x'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "1,2,3");
}

/// Bodies of the 40 messages of thread `chat` just older than seq `before`,
/// as served (from timeline chunks once compacted).
async fn history_texts(c: &tokio_postgres::Client, before: i64) -> Vec<String> {
    let page = call(
        c,
        "SELECT progressdb.list_messages('chat', 40, before =>
            (SELECT id FROM progressdb.messages WHERE thread = 'chat' AND seq = $1))::text",
        &[&before],
    )
    .await;
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"]["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edits_racing_compaction_are_never_lost_from_chunks() {
    let tc = TestCluster::start("race");
    let setup = tc.connect("postgres").await;
    setup
        .batch_execute(
            "SELECT progressdb.post_message('chat', 'alice', jsonb_build_object('text', 'm' || i))
               FROM generate_series(1, 60) i",
        )
        .await
        .unwrap();
    let msg = |seq: i32| {
        format!("(SELECT id FROM progressdb.messages WHERE thread = 'chat' AND seq = {seq})")
    };

    // 1. An edit in flight: compaction skips the thread instead of chunking
    //    the old body, and chunks it with the edit once it has committed.
    let editor = tc.connect("postgres").await;
    editor.batch_execute("BEGIN").await.unwrap();
    editor
        .batch_execute(&format!(
            "SELECT progressdb.edit_message({}, '{{\"text\":\"first edit\"}}')",
            msg(3)
        ))
        .await
        .unwrap();
    let r = call(
        &setup,
        "SELECT progressdb.compact(min_age => '0')::text",
        &[],
    )
    .await;
    assert_eq!(r["threads"], 0, "thread busy with an edit is skipped: {r}");
    editor.batch_execute("COMMIT").await.unwrap();
    let r = call(
        &setup,
        "SELECT progressdb.compact(min_age => '0')::text",
        &[],
    )
    .await;
    assert_eq!(r["threads"], 1, "{r}");
    assert_eq!(history_texts(&setup, 41).await[2], "first edit");

    // 2. An edit of a message that an open compaction is chunking: the edit
    //    waits for the compaction, then rewrites the new chunk.
    setup
        .batch_execute(
            "SELECT progressdb.post_message('chat', 'alice', jsonb_build_object('text', 'n' || i))
               FROM generate_series(1, 40) i",
        )
        .await
        .unwrap();
    let compactor = tc.connect("postgres").await;
    compactor.batch_execute("BEGIN").await.unwrap();
    let r = call(
        &compactor,
        "SELECT progressdb.compact(min_age => '0')::text",
        &[],
    )
    .await;
    assert_eq!(r["messages"], 40, "{r}");
    let editor_pid: i32 = editor
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let edit = tokio::spawn(async move {
        editor
            .batch_execute(&format!(
                "SELECT progressdb.edit_message({}, '{{\"text\":\"second edit\"}}')",
                msg(70)
            ))
            .await
            .unwrap();
    });
    // Commit only once the edit is really waiting for the compaction's lock
    // (a fixed sleep would let a slow machine commit first and test nothing).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let waiting: bool = setup
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)",
                &[&editor_pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edit never waited for the open compaction"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    compactor.batch_execute("COMMIT").await.unwrap();
    edit.await.unwrap();
    assert_eq!(history_texts(&setup, 41).await[2], "first edit");
    let texts = history_texts(&setup, 101).await;
    assert_eq!(texts[9], "second edit", "seq 70 in the page of 61..100");
    assert_eq!(texts[10], "n11");
    let chunked: i64 = setup
        .query_one(
            "SELECT sum(last_seq - first_seq + 1)::bigint FROM progressdb.message_chunks WHERE thread = 'chat'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(chunked, 100, "the chunks tile the thread");
}
