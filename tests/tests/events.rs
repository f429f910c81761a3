//! The event feed's order guarantee over real concurrent sessions: a
//! transaction that wrote first and commits last is still delivered to a
//! consumer that has already read past later events, and a consumer that
//! follows the feed while many sessions write gets every event exactly once.

use progressdb_tests::{call, TestCluster};
use serde_json::Value;
use std::collections::HashSet;

/// (ids, next) of `events(NULL, after)`.
async fn page(client: &tokio_postgres::Client, after: &str) -> (Vec<Value>, String) {
    let p = call(
        client,
        "SELECT progressdb.events(NULL, $1, 1000)::text",
        &[&after],
    )
    .await;
    (
        p["events"].as_array().unwrap().clone(),
        p["next"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_commit_is_not_left_behind_the_cursor() {
    let tc = TestCluster::start("evorder");
    let early = tc.connect("postgres").await;
    let other = tc.connect("postgres").await;
    let reader = tc.connect("postgres").await;
    for t in ["t1", "t2"] {
        call(
            &other,
            "SELECT progressdb.create_thread('w', 'T', $1)::text",
            &[&t],
        )
        .await;
    }
    let (_, start) = page(&reader, "0").await;

    // The early writer writes first and holds its transaction open.
    early.batch_execute("BEGIN").await.unwrap();
    early
        .execute(
            "SELECT progressdb.post_message('t1', 'w', '{\"text\":\"early\"}')",
            &[],
        )
        .await
        .unwrap();
    // Another writer writes later and commits first.
    call(
        &other,
        "SELECT progressdb.post_message('t2', 'w', '{\"text\":\"late\"}')::text",
        &[],
    )
    .await;
    let (first, cursor) = page(&reader, &start).await;
    let texts = |evs: &[Value]| -> Vec<String> {
        evs.iter()
            .map(|e| e["data"]["body"]["text"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        texts(&first),
        ["late"],
        "only the committed change is visible"
    );

    early.batch_execute("COMMIT").await.unwrap();
    let (second, _) = page(&reader, &cursor).await;
    assert_eq!(
        texts(&second),
        ["early"],
        "the early writer's event comes after the cursor, not behind it"
    );
    let p1: i64 = first[0]["id"].as_str().unwrap().parse().unwrap();
    let p2: i64 = second[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(p2, p1 + 1, "positions have no holes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_gets_every_event_exactly_once_under_concurrent_writers() {
    const WRITERS: usize = 6;
    const PER_WRITER: usize = 120;
    let tc = TestCluster::start("evfollow");
    let setup = tc.connect("postgres").await;
    for w in 0..WRITERS {
        call(
            &setup,
            "SELECT progressdb.create_thread($1, 'T', $1)::text",
            &[&format!("w{w}")],
        )
        .await;
    }
    let (_, start) = page(&setup, "0").await;

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let c = tc.connect("postgres").await;
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                // some transactions hold their change a moment before committing
                c.batch_execute("BEGIN").await.unwrap();
                c.execute(
                    "SELECT progressdb.post_message($1, $1, jsonb_build_object('i', $2::int))",
                    &[&format!("w{w}"), &(i as i32)],
                )
                .await
                .unwrap();
                if i % 7 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                }
                c.batch_execute("COMMIT").await.unwrap();
            }
        }));
    }
    // Follow the feed while they write, then until it is drained.
    let follower = tc.connect("postgres").await;
    let mut cursor = start;
    let mut seen = HashSet::new();
    let mut per_writer: Vec<Vec<i64>> = vec![Vec::new(); WRITERS];
    let mut last_pos = 0i64;
    let mut done = false;
    loop {
        let finished = writers.iter().all(|h| h.is_finished());
        let (evs, next) = page(&follower, &cursor).await;
        for e in &evs {
            let pos: i64 = e["id"].as_str().unwrap().parse().unwrap();
            assert!(pos > last_pos, "positions only grow");
            last_pos = pos;
            assert!(seen.insert(pos), "event {pos} delivered twice");
            let w: usize = e["thread"].as_str().unwrap()[1..].parse().unwrap();
            per_writer[w].push(e["data"]["body"]["i"].as_i64().unwrap());
        }
        cursor = next;
        if done {
            break;
        }
        if finished && evs.is_empty() {
            done = true; // one more read after everything committed
        }
        if evs.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    for h in writers {
        h.await.unwrap();
    }
    assert_eq!(seen.len(), WRITERS * PER_WRITER);
    for (w, got) in per_writer.iter().enumerate() {
        assert_eq!(
            got,
            &(0..PER_WRITER as i64).collect::<Vec<_>>(),
            "writer {w}'s events in its commit order"
        );
    }
}
