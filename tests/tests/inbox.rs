//! A user's inbox paged while other sessions keep posting: pages are newest
//! activity first, no thread is listed twice, and every thread nobody
//! touched while paging is listed exactly once.

use progressdb_tests::{call, TestCluster};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const THREADS: usize = 40;
const HOT: usize = 10; // threads 0..HOT get posts while the inbox is paged
const PAGE: i32 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_pages_stay_consistent_under_concurrent_posts() {
    let tc = TestCluster::start("inbox");
    let setup = tc.connect("postgres").await;
    setup
        .batch_execute(&format!(
            "SELECT progressdb.create_thread('u', 'Thread ' || i, 'th' || i) FROM generate_series(0, {}) i;
             SELECT progressdb.add_member('th' || i, 'w' || (i % 3)) FROM generate_series(0, {}) i;
             SELECT progressdb.post_message('th' || i, 'u', '{{\"text\":\"hello\"}}') FROM generate_series(0, {}) i;",
            THREADS - 1,
            THREADS - 1,
            THREADS - 1
        ))
        .await
        .unwrap();

    // Three posters write to the hot threads they are members of, round robin.
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for w in 0..3usize {
        let client = tc.connect("postgres").await;
        let (stop, posted) = (stop.clone(), posted.clone());
        let mine: Vec<usize> = (0..HOT).filter(|t| t % 3 == w).collect();
        posters.push(tokio::spawn(async move {
            for t in mine.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                client
                    .query_one(
                        "SELECT progressdb.post_message($1, $2, '{\"text\":\"ping\"}', actor => $2)::text",
                        &[&format!("th{t}"), &format!("w{w}")],
                    )
                    .await
                    .unwrap();
                posted.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Page only once the posts are flowing.
    while posted.load(Ordering::Relaxed) < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let reader = tc.connect("postgres").await;
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<(String, i64)> = None;
    loop {
        let page = match &cursor {
            None => {
                call(
                    &reader,
                    "SELECT progressdb.list_threads('u', lim => $1)::text",
                    &[&PAGE],
                )
                .await
            }
            Some((id, ts)) => {
                call(
                    &reader,
                    "SELECT progressdb.list_threads('u', lim => $1, before => $2, before_ts => $3)::text",
                    &[&PAGE, id, ts],
                )
                .await
            }
        };
        let threads = page["threads"].as_array().unwrap();
        // newest activity first within the page (ties broken by id)
        for pair in threads.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let ka = (
                a["last_activity_ts"].as_i64().unwrap(),
                a["id"].as_str().unwrap(),
            );
            let kb = (
                b["last_activity_ts"].as_i64().unwrap(),
                b["id"].as_str().unwrap(),
            );
            assert!(ka > kb, "page out of order: {ka:?} then {kb:?}");
        }
        for t in threads {
            seen.push(t["id"].as_str().unwrap().to_string());
            assert_eq!(t["role"], "owner");
        }
        if threads.len() < PAGE as usize {
            break;
        }
        let last = threads.last().unwrap();
        cursor = Some((
            last["id"].as_str().unwrap().to_string(),
            last["last_activity_ts"].as_i64().unwrap(),
        ));
        // let the posters move some threads while we are between pages
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for p in posters {
        p.await.unwrap();
    }

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a thread was listed twice: {seen:?}"
    );
    for i in HOT..THREADS {
        assert!(
            unique.contains(&format!("th{i}")),
            "untouched thread th{i} missing from the inbox: {seen:?}"
        );
    }
    // after the posts settle, a fresh listing has every thread once, hot ones first
    let all = call(
        &reader,
        "SELECT progressdb.list_threads('u', lim => 1000)::text",
        &[],
    )
    .await;
    let ids: Vec<&str> = all["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), THREADS);
    let hot_posted: HashSet<String> = (0..HOT).map(|i| format!("th{i}")).collect();
    let first_hot = ids
        .iter()
        .take_while(|id| hot_posted.contains(**id))
        .count();
    assert!(first_hot >= 1, "a hot thread is newest: {ids:?}");
}
