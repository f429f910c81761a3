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

const KEY: &str = "k1:2222222222222222222222222222222222222222222222222222222222222222";

/// Everything a reader can see of the database, as one JSON document: each
/// thread's export (messages, versions, reactions, members, read state), the
/// members' inboxes, the event feed, search (plain and encrypted), a context
/// window and a fork.
async fn everything(c: &tokio_postgres::Client) -> serde_json::Value {
    let mut doc = serde_json::Map::new();
    for t in ["plain", "vault", "branch"] {
        let rows = c
            .query("SELECT e::text FROM progressdb.export_thread($1) e", &[&t])
            .await
            .unwrap();
        let recs: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
            .collect();
        assert!(recs.len() > 3, "{t}: {recs:?}");
        doc.insert(format!("export {t}"), recs.into());
    }
    for user in ["alice", "rita", "mike"] {
        doc.insert(
            format!("inbox {user}"),
            call(c, "SELECT progressdb.list_threads($1)::text", &[&user]).await,
        );
        doc.insert(
            format!("events {user}"),
            call(
                c,
                "SELECT progressdb.events($1, lim => 1000)::text",
                &[&user],
            )
            .await,
        );
    }
    for (q, t) in [
        ("walrus", None),
        ("quokka", Some("vault")),
        ("quokka", None),
    ] {
        doc.insert(
            format!("search {q} {t:?}"),
            call(
                c,
                "SELECT progressdb.search('alice', $1, thread => $2)::text",
                &[&q, &t],
            )
            .await,
        );
    }
    doc.insert(
        "context".into(),
        call(
            c,
            "SELECT progressdb.context('plain', 1000, 'rita')::text",
            &[],
        )
        .await,
    );
    serde_json::Value::Object(doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_using_every_feature_survives_dump_and_restore() {
    let tc = TestCluster::start("dump-all");
    tc.with_master_key(KEY, &["progressdb.encrypted_search = on"]);
    let c = tc.connect("postgres").await;
    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'Plain', 'plain', history => 'joined');
         SELECT progressdb.add_member('plain', 'rita', 'reader');
         SELECT progressdb.add_member('plain', 'mike', 'member');
         SELECT progressdb.create_thread('alice', 'Vault', 'vault', encrypted => true);
         SELECT progressdb.add_member('vault', 'rita', 'member');",
    )
    .await
    .unwrap();
    let mut plain = Vec::new();
    for i in 0..60 {
        let (thread, author) = match i % 4 {
            0 => ("vault", "rita"),
            1 => ("plain", "mike"),
            _ => ("plain", "alice"),
        };
        let text = format!("message {i} about the walrus and the quokka");
        let m = call(
            &c,
            "SELECT progressdb.post_message($1, $2, jsonb_build_object('text', $3::text))::text",
            &[&thread, &author, &text],
        )
        .await;
        if thread == "plain" {
            plain.push(m["id"].as_str().unwrap().to_string());
        }
    }
    // Edits, a reply, reactions, a delete, read state, a late member.
    c.execute(
        "SELECT progressdb.edit_message($1, '{\"text\":\"the walrus, edited\"}', 'alice')",
        &[&plain[1]],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT progressdb.post_message('plain', 'mike', '{\"text\":\"a reply\"}', reply_to => $1)",
        &[&plain[1]],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT progressdb.add_reaction($1, 'rita', ':)')",
        &[&plain[2]],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT progressdb.delete_message($1, 'alice')",
        &[&plain[3]],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT progressdb.mark_read('plain', $1, 'rita')",
        &[&plain[10]],
    )
    .await
    .unwrap();
    c.batch_execute("SELECT progressdb.add_member('plain', 'late', 'reader')")
        .await
        .unwrap();
    // A fork, then a change to a message it shares; compaction into chunks.
    c.execute(
        "SELECT progressdb.fork_thread('plain', $1, 'branch', actor => 'alice')",
        &[&plain[20]],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT progressdb.edit_message($1, '{\"text\":\"changed after the fork\"}', 'alice')",
        &[&plain[5]],
    )
    .await
    .unwrap();
    c.batch_execute(
        "SELECT progressdb.post_message('branch', 'alice', '{\"text\":\"on the branch\"}')",
    )
    .await
    .unwrap();
    let compacted = call(
        &c,
        "SELECT progressdb.compact(min_run => 5, min_age => '0')::text",
        &[],
    )
    .await;
    assert!(compacted["messages"].as_i64().unwrap() > 0, "{compacted}");

    let before = everything(&c).await;
    // the oracle has substance: found words, unread counts, events
    assert!(
        before["search quokka Some(\"vault\")"]["results"]
            .as_array()
            .unwrap()
            .len()
            >= 10,
        "{}",
        before["search quokka Some(\"vault\")"]
    );
    assert!(!before["events alice"]["events"]
        .as_array()
        .unwrap()
        .is_empty());

    tc.dump_and_restore("postgres", "restored");
    let r = tc.connect("restored").await;
    let after = everything(&r).await;
    for (k, v) in before.as_object().unwrap() {
        assert_eq!(&after[k], v, "{k} differs after pg_restore");
    }

    // The restored database goes on: a post lands after the last message and
    // event, is found by search, also in the encrypted thread.
    for thread in ["plain", "vault", "branch"] {
        let m = call(
            &r,
            "SELECT progressdb.post_message($1, 'alice', '{\"text\":\"zebrafinch after restore\"}')::text",
            &[&thread],
        )
        .await;
        let page = call(
            &r,
            "SELECT progressdb.list_messages($1, lim => 1)::text",
            &[&thread],
        )
        .await;
        assert_eq!(page["messages"][0]["id"], m["id"], "{thread}: {page}");
    }
    let found = call(
        &r,
        "SELECT progressdb.search('alice', 'zebrafinch')::text",
        &[],
    )
    .await;
    assert_eq!(found["results"].as_array().unwrap().len(), 3, "{found}");
    let cursor = before["events alice"]["next"].as_str().map(str::to_string);
    let newer = call(
        &r,
        "SELECT progressdb.events('alice', $1, 1000)::text",
        &[&cursor],
    )
    .await;
    assert!(
        newer["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "message.created")
            .count()
            >= 3,
        "{newer}"
    );
}
