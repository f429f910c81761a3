//! Full-text search (sql/search.sql) on a real server: scoping by membership
//! and `joined` history, edits, deletes, restores and replies, pagination
//! without duplicates, client errors, and the blind index of encrypted
//! threads — whole words found, nothing of them in `pg_dump`.

use progressdb_tests::{call, TestCluster};
use serde_json::Value;
use std::collections::HashSet;
use tokio_postgres::Client;

async fn sqlstate(c: &Client, sql: &str) -> String {
    let err = c.query_one(sql, &[]).await.expect_err(sql);
    err.as_db_error()
        .expect("a server error")
        .code()
        .code()
        .to_string()
}

/// search(actor, q, thread) as JSON.
async fn search(c: &Client, actor: Option<&str>, q: &str, thread: Option<&str>) -> Value {
    call(
        c,
        "SELECT progressdb.search($1, $2, thread => $3)::text",
        &[&actor, &q, &thread],
    )
    .await
}

/// The texts of the results, sorted (the order is checked elsewhere).
fn texts(page: &Value) -> Vec<String> {
    let mut t: Vec<String> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"]["body"]["text"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_follows_membership_history_and_every_change() {
    let tc = TestCluster::start("search");
    let c = tc.connect("postgres").await;
    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'Ops', 'ops');
         SELECT progressdb.create_thread('alice', 'Late', 'late', history => 'joined');
         SELECT progressdb.add_member('ops', 'rita', 'reader');",
    )
    .await
    .unwrap();
    let failed = post(&c, "ops", "alice", "The deploy FAILED again").await;
    post(&c, "ops", "alice", "lunch at noon").await;
    post(&c, "late", "alice", "early zebra").await;
    c.batch_execute("SELECT progressdb.add_member('late', 'carol')")
        .await
        .unwrap();
    post(&c, "late", "alice", "late zebra").await;

    // Found right after the commit, by members only, case-insensitively.
    let hit = search(&c, Some("rita"), "deploy", None).await;
    assert_eq!(texts(&hit), ["The deploy FAILED again"]);
    assert_eq!(hit["results"][0]["message"]["id"], failed.as_str());
    assert_eq!(
        hit["results"][0]["snippet"],
        "The <mark>deploy</mark> FAILED again"
    );
    assert_eq!(hit["next"], Value::Null);
    assert_eq!(
        texts(&search(&c, Some("rita"), "failed", None).await).len(),
        1
    );
    assert!(texts(&search(&c, Some("bob"), "deploy", None).await).is_empty());
    assert_eq!(texts(&search(&c, None, "deploy", None).await).len(), 1);

    // History 'joined': carol sees what was posted since she joined; the
    // owner and the service see everything.
    assert_eq!(
        texts(&search(&c, Some("carol"), "zebra", None).await),
        ["late zebra"]
    );
    assert_eq!(
        texts(&search(&c, Some("alice"), "zebra", None).await),
        ["early zebra", "late zebra"]
    );
    assert_eq!(
        texts(&search(&c, None, "zebra", Some("late")).await),
        ["early zebra", "late zebra"]
    );
    assert_eq!(
        texts(&search(&c, Some("carol"), "zebra", Some("late")).await),
        ["late zebra"]
    );

    // websearch_to_tsquery syntax: phrases, or, negation.
    assert_eq!(
        texts(&search(&c, None, "\"deploy failed\"", None).await).len(),
        1
    );
    assert!(texts(&search(&c, None, "\"failed deploy\"", None).await).is_empty());
    assert_eq!(
        texts(&search(&c, Some("alice"), "lunch or zebra", None).await).len(),
        3
    );
    assert_eq!(
        texts(&search(&c, Some("alice"), "zebra -early", None).await),
        ["late zebra"]
    );

    // Replies are searched like any message.
    let reply = call(
        &c,
        "SELECT progressdb.post_message('ops', 'rita2', '{\"text\":\"rollback the deploy\"}', reply_to => $1)::text",
        &[&failed],
    )
    .await;
    let reply_id = reply["id"].as_str().unwrap().to_string();
    assert_eq!(
        texts(&search(&c, Some("alice"), "deploy", Some("ops")).await),
        ["The deploy FAILED again", "rollback the deploy"]
    );

    // An edit replaces the words at once: the current version only.
    let edited = call(
        &c,
        "SELECT progressdb.edit_message($1, '{\"text\":\"all good now\"}')::text",
        &[&failed],
    )
    .await;
    assert_eq!(edited["version"], 2);
    assert_eq!(
        texts(&search(&c, None, "deploy", None).await),
        ["rollback the deploy"]
    );
    let good = search(&c, None, "good", None).await;
    assert_eq!(good["results"][0]["message"]["version"], 2);
    // A plain SQL UPDATE of the body is indexed too.
    c.execute(
        "UPDATE progressdb.messages SET body = '{\"text\":\"quietly changed\"}' WHERE id = $1",
        &[&failed],
    )
    .await
    .unwrap();
    assert!(texts(&search(&c, None, "good", None).await).is_empty());
    assert_eq!(texts(&search(&c, None, "quietly", None).await).len(), 1);

    // Deleted: gone at once; restored: back.
    c.execute("SELECT progressdb.delete_message($1)", &[&reply_id])
        .await
        .unwrap();
    assert!(texts(&search(&c, None, "rollback", None).await).is_empty());
    c.execute("SELECT progressdb.restore_message($1)", &[&reply_id])
        .await
        .unwrap();
    assert_eq!(texts(&search(&c, None, "rollback", None).await).len(), 1);

    // Leaving a thread, or its deletion, takes its messages out of reach.
    c.batch_execute("SELECT progressdb.remove_member('ops', 'rita')")
        .await
        .unwrap();
    assert!(texts(&search(&c, Some("rita"), "rollback", None).await).is_empty());
    c.batch_execute("SELECT progressdb.delete_thread('late')")
        .await
        .unwrap();
    assert!(texts(&search(&c, None, "zebra", None).await).is_empty());

    // Snippets are HTML-escaped around the marks; JSON bodies without text
    // are searched by their string values.
    // (ts_headline drops what its parser takes for tags.)
    post(&c, "ops", "alice", "bold <3 & <script>x</script> deploy").await;
    let s = search(&c, None, "bold", None).await;
    assert_eq!(
        s["results"][0]["snippet"],
        "<mark>bold</mark> &lt;3 &amp;  x  deploy"
    );
    c.batch_execute(
        "SELECT progressdb.post_message('ops', 'alice', '{\"card\":{\"title\":\"Quarterly numbers\"},\"n\":7}')",
    )
    .await
    .unwrap();
    let s = search(&c, None, "quarterly", None).await;
    assert_eq!(s["results"][0]["snippet"], "<mark>Quarterly</mark> numbers");

    // Client mistakes are 22023 / 42501 / P0002, never an internal error.
    for (sql, code) in [
        ("SELECT progressdb.search(NULL, '')", "22023"),
        ("SELECT progressdb.search(NULL, NULL)", "22023"),
        ("SELECT progressdb.search(NULL, '   ')", "22023"),
        ("SELECT progressdb.search(NULL, repeat('a ', 600))", "22023"),
        ("SELECT progressdb.search(NULL, 'x', lim => 0)", "22023"),
        ("SELECT progressdb.search(NULL, 'x', lim => 1001)", "22023"),
        (
            "SELECT progressdb.search(NULL, 'x', before => 'nope')",
            "22023",
        ),
        (
            "SELECT progressdb.search(NULL, 'x', before => 's1.AAAA')",
            "22023",
        ),
        (
            "SELECT progressdb.search(NULL, 'x', before => 'c1.1.00000000')",
            "22023",
        ),
        (
            "SELECT progressdb.search('bob', 'x', thread => 'ops')",
            "42501",
        ),
        (
            "SELECT progressdb.search(NULL, 'x', thread => 'nope')",
            "P0002",
        ),
        (
            "SELECT progressdb.search(NULL, 'x', thread => 'late')",
            "P0002",
        ),
    ] {
        assert_eq!(sqlstate(&c, sql).await, code, "{sql}");
    }
    // A query of no words (punctuation only) finds nothing.
    let none = search(&c, None, "!!! ???", None).await;
    assert_eq!(none, serde_json::json!({"results": [], "next": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_relevance_then_recency_without_duplicates() {
    let tc = TestCluster::start("search-pages");
    let c = tc.connect("postgres").await;
    // 60 matches in 3 threads, with 1-4 occurrences of the word (ranks tie
    // in groups) and other messages that do not match.
    c.batch_execute(
        "SELECT progressdb.post_message('p' || (i % 3), 'u',
                    jsonb_build_object('text', repeat('needle ', 1 + i % 4) || 'hay ' || i))
           FROM generate_series(1, 60) i;
         SELECT progressdb.post_message('p' || (i % 3), 'u', '{\"text\":\"hay only\"}')
           FROM generate_series(1, 20) i;",
    )
    .await
    .unwrap();
    let all = call(
        &c,
        "SELECT progressdb.search('u', 'needle', lim => 1000)::text",
        &[],
    )
    .await;
    let all_ids: Vec<String> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all_ids.len(), 60);
    assert_eq!(all["next"], Value::Null);
    // More occurrences rank higher: the first result has 4, the last 1.
    let count = |r: &Value| {
        r["message"]["body"]["text"]
            .as_str()
            .unwrap()
            .matches("needle")
            .count()
    };
    let results = all["results"].as_array().unwrap();
    assert_eq!(count(&results[0]), 4);
    assert_eq!(count(&results[59]), 1);
    // Within equal relevance, newest first.
    for w in results.windows(2) {
        if count(&w[0]) == count(&w[1]) {
            assert!(w[0]["message"]["ts"].as_i64() >= w[1]["message"]["ts"].as_i64());
        }
    }

    for lim in [1, 7, 20] {
        let mut paged = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page = call(
                &c,
                "SELECT progressdb.search('u', 'needle', lim => $1, before => $2)::text",
                &[&lim, &before],
            )
            .await;
            let n = page["results"].as_array().unwrap().len();
            assert!(n <= lim as usize);
            paged.extend(
                page["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["message"]["id"].as_str().unwrap().to_string()),
            );
            match page["next"].as_str() {
                Some(next) => {
                    assert_eq!(n, lim as usize, "only full pages have a next cursor");
                    before = Some(next.to_string());
                }
                None => break,
            }
        }
        assert_eq!(
            paged, all_ids,
            "pages of {lim} give the single page's order"
        );
        assert_eq!(paged.iter().collect::<HashSet<_>>().len(), 60);
    }
}

const KEY: &str = "k1:1111111111111111111111111111111111111111111111111111111111111111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_threads_are_searched_by_whole_words_and_never_dumped() {
    let tc = TestCluster::start("search-enc");
    // As an operator does: lines in postgresql.conf, then a restart.
    tc.with_master_key(KEY, &["progressdb.encrypted_search = on"]);
    let c = tc.connect("postgres").await;
    let on: String = c
        .query_one("SHOW progressdb.encrypted_search", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(on, "on");

    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'Vault', 'vault', encrypted => true);
         SELECT progressdb.create_thread('alice', 'Safe', 'safe', encrypted => true);
         SELECT progressdb.create_thread('alice', 'Open', 'open');
         SELECT progressdb.add_member('vault', 'rita', 'reader');",
    )
    .await
    .unwrap();
    // Marker words that occur nowhere else; `plainmarker` in a plaintext
    // thread shows that the dump does hold message text.
    let v1 = post(
        &c,
        "vault",
        "alice",
        "Quokkamarker meets Zanzibarword at dawn",
    )
    .await;
    post(&c, "vault", "alice", "zanzibarword alone").await;
    post(&c, "safe", "alice", "Quokkamarker in another vault").await;
    post(&c, "open", "alice", "plainmarker quokkamarker").await;

    // Whole words, normalised as plaintext ones; snippets from the
    // decrypted text, for authorized readers only.
    let s = search(&c, Some("rita"), "QUOKKAMARKER", None).await;
    assert_eq!(texts(&s), ["Quokkamarker meets Zanzibarword at dawn"]);
    assert_eq!(
        s["results"][0]["snippet"],
        "<mark>Quokkamarker</mark> meets Zanzibarword at dawn"
    );
    assert_eq!(
        texts(&search(&c, Some("alice"), "quokkamarker", None).await).len(),
        3
    );
    assert_eq!(
        texts(&search(&c, None, "quokkamarker", None).await).len(),
        3
    );
    assert!(texts(&search(&c, Some("bob"), "quokkamarker", None).await).is_empty());
    assert_eq!(
        sqlstate(
            &c,
            "SELECT progressdb.search('bob', 'quokkamarker', thread => 'vault')"
        )
        .await,
        "42501"
    );
    // AND, OR, negation and phrases.
    assert_eq!(
        texts(&search(&c, None, "zanzibarword", Some("vault")).await).len(),
        2
    );
    assert_eq!(
        texts(&search(&c, None, "zanzibarword -quokkamarker", Some("vault")).await),
        ["zanzibarword alone"]
    );
    assert_eq!(
        texts(&search(&c, None, "dawn or alone", Some("vault")).await).len(),
        2
    );
    assert_eq!(
        texts(&search(&c, None, "\"meets zanzibarword\"", Some("vault")).await).len(),
        1
    );
    assert!(texts(&search(&c, None, "\"zanzibarword meets\"", Some("vault")).await).is_empty());
    // No prefixes, no substrings: only whole words.
    assert!(texts(&search(&c, None, "quokka", Some("vault")).await).is_empty());
    assert!(texts(&search(&c, None, "zanzibar", Some("vault")).await).is_empty());

    // The same word has unrelated blind terms in two threads, and no stored
    // term is a word.
    let shared: i64 = c
        .query_one(
            "SELECT count(*) FROM
               (SELECT unnest(tsvector_to_array(search_vec)) FROM progressdb.messages WHERE thread = 'vault'
                INTERSECT
                SELECT unnest(tsvector_to_array(search_vec)) FROM progressdb.messages WHERE thread = 'safe') x",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shared, 0);
    let leaked: bool = c
        .query_one(
            "SELECT bool_or(search_vec::text ILIKE '%quokka%' OR search_vec::text ILIKE '%zanzibar%'
                            OR search_vec::text ILIKE '%dawn%')
               FROM progressdb.messages WHERE thread IN ('vault', 'safe')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!leaked);

    // Edits and key rotation keep the blind index current.
    c.execute(
        "SELECT progressdb.edit_message($1, '{\"text\":\"Wombatword at dusk\"}')",
        &[&v1],
    )
    .await
    .unwrap();
    assert!(texts(&search(&c, None, "dawn", Some("vault")).await).is_empty());
    assert_eq!(
        texts(&search(&c, None, "wombatword", Some("vault")).await).len(),
        1
    );
    let before_rotation: String = c
        .query_one(
            "SELECT search_vec::text FROM progressdb.messages WHERE id = $1",
            &[&v1],
        )
        .await
        .unwrap()
        .get(0);
    c.batch_execute("SELECT progressdb.rotate_thread_key('vault')")
        .await
        .unwrap();
    let after_rotation: String = c
        .query_one(
            "SELECT search_vec::text FROM progressdb.messages WHERE id = $1",
            &[&v1],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(before_rotation, after_rotation, "terms follow the new key");
    assert_eq!(
        texts(&search(&c, None, "wombatword", Some("vault")).await).len(),
        1
    );
    assert_eq!(
        texts(&search(&c, None, "zanzibarword", Some("vault")).await),
        ["zanzibarword alone"]
    );

    // Nothing of the encrypted words in a dump, while they stay searchable.
    let dump = tc.tool("pg_dump", &["-d", "postgres"]);
    let text = String::from_utf8_lossy(&dump).to_lowercase();
    assert!(text.contains("plainmarker"), "the dump holds message text");
    for word in [
        "zanzibarword",
        "wombatword",
        "dusk",
        "dawn",
        "another vault",
        "alone",
    ] {
        assert!(!text.contains(word), "{word} is in the dump");
    }

    // Off: encrypted threads are not searched, and new messages get no terms.
    c.batch_execute("SET progressdb.encrypted_search = off")
        .await
        .unwrap();
    assert!(texts(&search(&c, None, "wombatword", None).await).is_empty());
    let fresh = post(&c, "vault", "alice", "Wombatword again").await;
    let vec_null: bool = c
        .query_one(
            "SELECT search_vec IS NULL FROM progressdb.messages WHERE id = $1",
            &[&fresh],
        )
        .await
        .unwrap()
        .get(0);
    assert!(vec_null);
    c.batch_execute("SET progressdb.encrypted_search = on")
        .await
        .unwrap();
    assert_eq!(texts(&search(&c, None, "wombatword", None).await).len(), 1);
}
