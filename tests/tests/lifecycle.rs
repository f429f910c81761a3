//! Data lifecycle over real connections: purged and erased words are nowhere
//! in a `pg_dump`, the background worker applies retention and
//! purge-after-delete (never to a held thread), and an erasure running while
//! the user posts leaves no post of theirs that committed before it.

use progressdb_tests::{call, TestCluster};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const KEY: &str = "lc-kek-1:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A cluster with the library preloaded (background worker), a master key
/// and encrypted search on, as an operator configures it.
fn start_configured(name: &str, extra: &[&str]) -> TestCluster {
    let tc = TestCluster::start_with(
        name,
        &[
            ("shared_preload_libraries", "progressdb"),
            ("track_commit_timestamp", "on"),
        ],
    );
    let mut settings = vec!["progressdb.encrypted_search = on"];
    settings.extend(extra);
    tc.with_master_key(KEY, &settings);
    tc
}

async fn post(c: &Client, thread: &str, author: &str, text: &str) -> String {
    let m = call(
        c,
        "SELECT progressdb.post_message($1, $2, jsonb_build_object('text', $3::text))::text",
        &[&thread, &author, &text],
    )
    .await;
    m["id"].as_str().unwrap().to_string()
}

async fn texts(c: &Client, thread: &str) -> Vec<String> {
    let page = call(
        c,
        "SELECT progressdb.list_messages($1, include_deleted => true)::text",
        &[&thread],
    )
    .await;
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"]["text"].as_str().unwrap_or("?").to_string())
        .collect()
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

/// The dump as text, with every bytea value's hex decoded too (pg_dump
/// prints bytea as hex: a word inside a packed entry would hide there).
fn dump_text(tc: &TestCluster) -> String {
    let dump = String::from_utf8_lossy(&tc.tool("pg_dump", &["-d", "postgres"])).to_string();
    let mut decoded = String::new();
    for part in dump.split("\\\\x").skip(1) {
        let hex: String = part.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        decoded.push_str(&String::from_utf8_lossy(&bytes));
        decoded.push('\n');
    }
    (dump + &decoded).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_and_erased_words_are_nowhere_in_a_dump() {
    let tc = start_configured("lc-dump", &[]);
    let c = tc.connect("postgres").await;

    // "plain": a message with every kind of copy, purged alone.
    for i in 0..40 {
        post(&c, "plain", "alice", &format!("keepword filler {i}")).await;
    }
    let doomed = post(&c, "plain", "alice", "aardvarkpurge first").await;
    c.batch_execute(&format!(
        "SELECT progressdb.edit_message('{doomed}', '{{\"text\":\"aardvarkpurge second\"}}');
         SELECT progressdb.add_reaction('{doomed}', 'bob', 'aardvarkpurge');
         SELECT progressdb.post_message('plain', 'bob', '{{\"text\":\"keepword reply\"}}', reply_to => '{doomed}');
         SELECT progressdb.fork_thread('plain', '{doomed}', 'plain-fork');
         SELECT progressdb.post_message('plain-fork', 'alice', '{{\"text\":\"keepword in the fork\"}}');
         SELECT progressdb.edit_message('{doomed}', '{{\"text\":\"aardvarkpurge third\"}}');"
    ))
    .await
    .unwrap();
    // "gone" and the encrypted "vault": purged whole.
    for i in 0..5 {
        post(&c, "gone", "alice", &format!("bilbypurge {i}")).await;
    }
    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'Vault', 'vault', encrypted => true);
         SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"cassowarypurge sealed\"}');
         SELECT progressdb.update_thread('vault', 'vault renamed');",
    )
    .await
    .unwrap();
    // eve: her messages, her reaction, a thread of her own.
    c.batch_execute(
        "SELECT progressdb.add_member('plain', 'eve', 'member');
         SELECT progressdb.post_message('plain', 'eve', '{\"text\":\"dingoerase one\"}');
         SELECT progressdb.post_message('eves', 'eve', '{\"text\":\"dingoerase alone\"}');",
    )
    .await
    .unwrap();
    let first = c
        .query_one(
            "SELECT id FROM progressdb.messages WHERE thread = 'plain' AND seq = 1",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    c.execute(
        "SELECT progressdb.add_reaction($1, 'eve', 'dingoerase')",
        &[&first],
    )
    .await
    .unwrap();
    // Compaction, search, context and events have all seen the words.
    c.batch_execute(
        "SELECT progressdb.compact(min_run => 1, min_age => '0');
         SELECT progressdb.context('plain', 100000);
         SELECT progressdb.context('vault', 100000);
         SELECT progressdb.events(NULL);",
    )
    .await
    .unwrap();
    let hits = call(
        &c,
        "SELECT progressdb.search(NULL, 'cassowarypurge')::text",
        &[],
    )
    .await;
    assert_eq!(hits["results"].as_array().unwrap().len(), 1);
    let before = dump_text(&tc);
    for word in ["aardvarkpurge", "bilbypurge", "dingoerase", "keepword"] {
        assert!(before.contains(word), "{word} is in the dump before");
    }

    c.execute("SELECT progressdb.purge_message($1)", &[&doomed])
        .await
        .unwrap();
    c.batch_execute(
        "SELECT progressdb.purge_thread('gone');
         SELECT progressdb.purge_thread('vault');",
    )
    .await
    .unwrap();
    let erased = call(&c, "SELECT progressdb.erase_user('eve')::text", &[]).await;
    assert_eq!(erased["messages"], 2, "{erased}");
    assert_eq!(erased["reactions"], 1, "{erased}");
    assert_eq!(erased["threads"], 1, "{erased}");

    let after = dump_text(&tc);
    for word in [
        "aardvarkpurge",
        "bilbypurge",
        "cassowarypurge",
        "dingoerase",
    ] {
        assert!(!after.contains(word), "{word} is still in the dump");
    }
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM progressdb.thread_keys WHERE thread = 'vault'"
        )
        .await,
        0
    );
    // What should remain reads back (from chunks and rows).
    let plain = texts(&c, "plain").await;
    assert_eq!(plain.len(), 41, "{plain:?}");
    assert!(plain.iter().all(|t| t.starts_with("keepword")), "{plain:?}");
    let fork = texts(&c, "plain-fork").await;
    assert_eq!(fork.len(), 41, "40 shared, 1 own: {fork:?}");
    assert_eq!(fork[40], "keepword in the fork");
    assert!(after.contains("keepword"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_worker_applies_retention_but_not_to_held_threads() {
    let tc = start_configured(
        "lc-retention",
        &[
            "progressdb.compaction_interval = 1",
            "progressdb.purge_deleted_after = '1s'",
        ],
    );
    let c = tc.connect("postgres").await;
    for t in ["aging", "held", "kept"] {
        for i in 0..5 {
            post(&c, t, "alice", &format!("{t} {i}")).await;
        }
    }
    let deleted = post(&c, "kept", "alice", "deleted soon").await;
    post(&c, "dropped", "alice", "a thread deleted soon").await;
    c.batch_execute(&format!(
        "SELECT progressdb.update_thread('aging', NULL, retention => '1 second');
         SELECT progressdb.update_thread('held', NULL, retention => '1 second', legal_hold => true);
         SELECT progressdb.delete_message('{deleted}');
         SELECT progressdb.delete_thread('dropped');"
    ))
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let aging = count(
            &c,
            "SELECT count(*) FROM progressdb.messages WHERE thread = 'aging'",
        )
        .await;
        let soft = count(
            &c,
            "SELECT count(*) FROM progressdb.messages WHERE deleted_ts IS NOT NULL",
        )
        .await;
        let dropped = count(
            &c,
            "SELECT count(*) FROM progressdb.threads WHERE id = 'dropped'",
        )
        .await;
        if aging == 0 && soft == 0 && dropped == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not purge: aging {aging}, deleted {soft}, dropped thread {dropped}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(texts(&c, "held").await.len(), 5, "held: never purged");
    assert_eq!(
        texts(&c, "kept").await,
        vec!["kept 0", "kept 1", "kept 2", "kept 3", "kept 4"],
        "no retention: only the deleted message went"
    );
    let log = std::fs::read_to_string(tc.cluster.data_dir().join("server.log")).unwrap();
    assert!(
        log.contains("progressdb: retention purged"),
        "the counts are in the server log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_post_that_committed_before_an_erase_survives_it() {
    let tc = start_configured("lc-erase", &[]);
    let setup = tc.connect("postgres").await;
    for t in ["e1", "e2", "e3"] {
        setup
            .batch_execute(&format!(
                "SELECT progressdb.create_thread('bob', 'T', '{t}');
                 SELECT progressdb.add_member('{t}', 'eve', 'member');
                 SELECT progressdb.post_message('{t}', 'bob', '{{\"text\":\"bob here\"}}');"
            ))
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let erase_started = Arc::new(AtomicBool::new(false));
    let mut posters = Vec::new();
    for w in 0..4 {
        let c = tc.connect("postgres").await;
        let stop = stop.clone();
        let erase_started = erase_started.clone();
        posters.push(tokio::spawn(async move {
            // ids acknowledged before the erase was sent
            let mut early = Vec::new();
            let mut acked = 0usize;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let thread = ["e1", "e2", "e3"][i % 3];
                // half as the service naming eve, half as eve herself
                let actor: Option<&str> = if w % 2 == 0 { None } else { Some("eve") };
                let r = c
                    .query_one(
                        "SELECT progressdb.post_message($1, 'eve', jsonb_build_object('text', 'post ' || $2::text),
                                                        actor => $3)::text",
                        &[&thread, &format!("{w}-{i}"), &actor],
                    )
                    .await;
                if let Ok(row) = r {
                    acked += 1;
                    if !erase_started.load(Ordering::SeqCst) {
                        let doc: serde_json::Value =
                            serde_json::from_str(&row.get::<_, String>(0)).unwrap();
                        early.push(doc["id"].as_str().unwrap().to_string());
                    }
                }
            }
            (early, acked)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let c = tc.connect("postgres").await;
    erase_started.store(true, Ordering::SeqCst);
    c.batch_execute("BEGIN").await.unwrap();
    let xid: String = c
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    let erased = call(&c, "SELECT progressdb.erase_user('eve')::text", &[]).await;
    c.batch_execute("COMMIT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut early = HashSet::new();
    let mut acked = 0;
    for p in posters {
        let (e, a) = p.await.unwrap();
        early.extend(e);
        acked += a;
    }
    assert!(
        erased["messages"].as_i64().unwrap() > 0,
        "the erase had posts to remove: {erased}"
    );
    assert!(
        !early.is_empty() && acked > early.len(),
        "posts before and during: {acked}"
    );
    // Every surviving post of eve's committed after the erase did.
    let xid64: i64 = xid.parse().unwrap();
    let xid32 = (xid64 % 4_294_967_296).to_string();
    let before_erase = count(
        &c,
        &format!(
            "SELECT count(*) FROM progressdb.messages m
              WHERE m.author = 'eve'
                AND pg_xact_commit_timestamp(m.xmin) <= pg_xact_commit_timestamp('{xid32}'::xid)"
        ),
    )
    .await;
    assert_eq!(
        before_erase, 0,
        "posts that committed before the erase survived it"
    );
    let survivors: Vec<String> = c
        .query(
            "SELECT id FROM progressdb.messages WHERE author = 'eve'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        survivors.iter().all(|id| !early.contains(id)),
        "a post acknowledged before the erase began survived"
    );
    // Posts by the service naming eve go on after the erase; hers, as a
    // member, end with her membership.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM progressdb.thread_members WHERE user_id = 'eve'"
        )
        .await,
        0
    );
}
