//! User data in the extension's tables survives pg_dump + pg_restore.

use progressdb_tests::{call, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_and_pg_restore_keep_every_message_version_and_reaction() {
    let tc = TestCluster::start("dump");
    let c = tc.connect("postgres").await;
    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'Support', 'support');
         SELECT progressdb.create_thread('bob');",
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let thread = if i % 3 == 0 { "support" } else { "general" };
        let m = call(
            &c,
            "SELECT progressdb.post_message($1, 'alice', jsonb_build_object('text', $2::text))::text",
            &[&thread, &format!("message {i}")],
        )
        .await;
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    c.execute(
        "SELECT progressdb.edit_message($1, '{\"text\":\"edited\"}')",
        &[&ids[0]],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT progressdb.add_reaction($1, 'bob', '👍')",
        &[&ids[1]],
    )
    .await
    .unwrap();
    c.execute("SELECT progressdb.delete_message($1)", &[&ids[2]])
        .await
        .unwrap();
    c.execute(
        "SELECT progressdb.post_message('general', 'bob', '{}', reply_to => $1)",
        &[&ids[1]],
    )
    .await
    .unwrap();

    // A fork, and a change to a message it shares (a copy-on-write snapshot).
    c.execute(
        "SELECT progressdb.fork_thread('general', $1, 'branch')",
        &[&ids[5]],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT progressdb.edit_message($1, '{\"text\":\"changed after the fork\"}')",
        &[&ids[4]],
    )
    .await
    .unwrap();

    // Part of the history is compacted into timeline chunks (derived data,
    // not dumped: the restored database reads the messages table until
    // compaction runs there).
    c.execute(
        "SELECT progressdb.compact(min_run => 5, min_age => '0')",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT progressdb.post_message('support', 'alice', '{\"text\":\"after compaction\"}')",
        &[],
    )
    .await
    .unwrap();

    let snapshot = "SELECT jsonb_build_object(
            'older', progressdb.list_messages('general', 5, before =>
                       (SELECT id FROM progressdb.messages WHERE thread = 'general' AND seq = 20)),
            'threads', progressdb.list_threads(NULL),
            'general', progressdb.list_messages('general', 1000, include_deleted => true),
            'support', progressdb.list_messages('support', 1000, include_deleted => true),
            'branch', progressdb.list_messages('branch', 1000, include_deleted => true),
            'versions', progressdb.message_versions($1),
            'stats', progressdb.stats())::text";
    let before = call(&c, snapshot, &[&ids[0]]).await;

    tc.dump_and_restore("postgres", "restored");

    let r = tc.connect("restored").await;
    let after = call(&r, snapshot, &[&ids[0]]).await;
    assert_eq!(before, after);
    assert_eq!(
        after["branch"]["messages"][2]["body"]["text"], "message 4",
        "the fork keeps the shared message as it was"
    );
    let chunks = "SELECT count(*) FROM progressdb.message_chunks";
    let n: i64 = c.query_one(chunks, &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "one chunk per thread in the source");
    let n: i64 = r.query_one(chunks, &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "chunks are not dumped");
    let again = call(
        &r,
        "SELECT progressdb.compact(min_run => 5, min_age => '0')::text",
        &[],
    )
    .await;
    assert_eq!(again["threads"], 2, "{again}");
    assert_eq!(call(&r, snapshot, &[&ids[0]]).await, before);
    assert_eq!(
        after["stats"]["messages"], 41,
        "40 live messages + 1 reply + 1 after compaction - 1 deleted"
    );

    // Counters came along: the next append continues the timeline.
    let next = call(
        &r,
        "SELECT progressdb.post_message('general', 'alice', '{}')::text",
        &[],
    )
    .await;
    let seq: i64 = r
        .query_one(
            "SELECT seq FROM progressdb.messages WHERE id = $1",
            &[&next["id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    let max_before: i64 = c
        .query_one(
            "SELECT max(seq) FROM progressdb.messages WHERE thread = 'general'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seq, max_before + 1);
}
