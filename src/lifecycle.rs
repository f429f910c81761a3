//! Data lifecycle: purge of messages and threads with every copy,
//! retention, legal hold and erasure of a user (SQL and the list of copies
//! in `sql/lifecycle.sql`); the background worker applies retention
//! (src/compaction.rs).

use pgrx::prelude::*;

extension_sql_file!(
    "../sql/lifecycle.sql",
    name = "lifecycle",
    requires = [
        "messages",
        "threads",
        "versions",
        "compaction",
        "events",
        "forks",
        "context"
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;

    fn post(thread: &str, author: &str, text: &str) -> String {
        json(&format!(
            "SELECT progressdb.post_message('{thread}', '{author}', jsonb_build_object('text', '{text}'))"
        ))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn texts(thread: &str) -> Vec<String> {
        json(&format!(
            "SELECT progressdb.list_messages('{thread}', include_deleted => true)"
        ))["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"]["text"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Where `marker` occurs in the database: every table of the extension
    /// (row text, and bytea columns as hex), and inside the packed chunks.
    /// Returns the tables it was found in.
    pub fn places_of(marker: &str) -> Vec<String> {
        let tables: Vec<String> = Spi::connect(|c| {
            c.select(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'progressdb' AND c.relkind = 'r' ORDER BY 1",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
        });
        let mut found = Vec::new();
        for t in tables {
            let n = count(&format!(
                "SELECT count(*) FROM progressdb.{t} x
                  WHERE x::text LIKE '%{marker}%'
                     OR x::text LIKE '%' || encode(convert_to('{marker}', 'UTF8'), 'hex') || '%'"
            ));
            if n > 0 {
                found.push(t.clone());
            }
        }
        let in_chunks = count(&format!(
            "SELECT count(*) FROM progressdb.message_chunks c, progressdb._unpack_chunk(c.packed) u
              WHERE u::text LIKE '%{marker}%'"
        ));
        if in_chunks > 0 {
            found.push("message_chunks (packed)".into());
        }
        found
    }

    /// A thread that has been through everything that copies a message:
    /// edits (versions), a reaction, a reply, compaction (chunks), a fork
    /// with a later edit (snapshot), search (in-row vector), events (feed
    /// and queue), a thread event whose last_message is the message, and
    /// token counts. Returns the id of the message holding `marker`.
    fn every_copy_of(thread: &str, marker: &str) -> String {
        for i in 0..40 {
            post(thread, "alice", &format!("filler {i}"));
        }
        let id = post(thread, "alice", &format!("{marker} first"));
        run(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"{marker} second\"}}')"
        ));
        run(&format!(
            "SELECT progressdb.add_reaction('{id}', 'bob', 'A')"
        ));
        let reply = json(&format!(
            "SELECT progressdb.post_message('{thread}', 'bob', '{{\"text\":\"a reply\"}}', reply_to => '{id}')"
        ));
        assert_eq!(reply["reply_to"], id.as_str());
        run("SELECT progressdb._sequence_events()");
        run(&format!(
            "SELECT progressdb.update_thread('{thread}', 'renamed {thread}')"
        ));
        json(&format!(
            "SELECT progressdb.fork_thread('{thread}', '{id}', '{thread}-fork')"
        ));
        run(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"{marker} third\"}}')"
        ));
        run("SELECT progressdb.compact(min_run => 1, min_age => '0')");
        json(&format!("SELECT progressdb.context('{thread}', 100000)"));
        let hits = json(&format!(
            "SELECT progressdb.search(NULL, '{marker}', thread => '{thread}')"
        ));
        assert_eq!(hits["results"].as_array().unwrap().len(), 1);
        id
    }

    #[pg_test]
    fn purge_message_removes_every_copy_and_leaves_the_rest() {
        let id = every_copy_of("p", "zebrinemarker");
        let before = places_of("zebrinemarker");
        // The check can fail: the copies are there before the purge.
        for t in [
            "messages",
            "message_versions",
            "fork_snapshots",
            "feed_queue",
        ] {
            assert!(before.contains(&t.to_string()), "{t} in {before:?}");
        }
        assert!(before.contains(&"message_chunks (packed)".to_string()));
        assert!(
            count("SELECT count(*) FROM progressdb.message_tokens WHERE thread = 'p'") > 0,
            "context() counted tokens"
        );
        run(&format!("SELECT progressdb.purge_message('{id}')"));
        assert_eq!(places_of("zebrinemarker"), Vec::<String>::new());
        // Everything else reads back, from chunks and rows alike.
        let left = texts("p");
        assert_eq!(left.len(), 41);
        assert_eq!(left[0], "filler 0");
        assert_eq!(left[40], "a reply");
        assert_fails(&format!("SELECT progressdb.get_message('{id}')"), "P0002");
        // The fork lost the purged message of its prefix, kept the rest.
        let fork = texts("p-fork");
        assert_eq!(fork.len(), 40);
        assert!(fork.iter().all(|t| t.starts_with("filler")));
        // Its events keep their place and type, without content.
        let purged = count(
            "SELECT count(*) FROM progressdb.feed_queue WHERE thread = 'p' AND data = '{\"purged\":true}'",
        ) + count(
            "SELECT count(*) FROM progressdb.feed WHERE thread = 'p' AND data = '{\"purged\":true}'",
        );
        assert!(purged >= 3, "created, updated x2, reaction: {purged}");
        assert_eq!(
            count("SELECT count(*) FROM progressdb.message_versions WHERE thread = 'p'"),
            0
        );
        // A second purge: not found.
        assert_fails(&format!("SELECT progressdb.purge_message('{id}')"), "P0002");
    }

    #[pg_test]
    fn purge_thread_removes_the_thread_its_keys_and_its_forks_prefix() {
        run("SELECT progressdb.create_thread('alice', 'secret', 'enc', encrypted => true)");
        let id = post("enc", "alice", "quokkamarker sealed");
        run("SELECT progressdb.add_member('enc', 'bob', 'member')");
        post("enc", "bob", "quokkamarker from bob");
        json(&format!(
            "SELECT progressdb.fork_thread('enc', '{id}', 'enc-fork', 'alice')"
        ));
        post("enc-fork", "alice", "own words of the fork");
        run("SELECT progressdb._sequence_events()");
        assert_eq!(
            count("SELECT count(*) FROM progressdb.thread_keys WHERE thread = 'enc'"),
            1
        );
        // Only owners (and the service) purge a thread.
        assert_fails("SELECT progressdb.purge_thread('enc', 'bob')", "42501");
        run("SELECT progressdb.purge_thread('enc', 'alice')");
        assert_eq!(
            count("SELECT count(*) FROM progressdb.thread_keys WHERE thread = 'enc'"),
            0
        );
        for table in [
            "messages",
            "thread_members",
            "message_versions",
            "message_chunks",
        ] {
            assert_eq!(
                count(&format!(
                    "SELECT count(*) FROM progressdb.{table} WHERE thread = 'enc'"
                )),
                0,
                "{table}"
            );
        }
        assert_fails("SELECT progressdb.get_thread('enc')", "P0002");
        // Events keep their positions and types; no data but the purge.
        assert_eq!(
            count(
                "SELECT count(*) FROM progressdb.feed WHERE thread = 'enc'
                  AND (entry IS NOT NULL OR data <> '{\"purged\":true}')"
            ),
            0
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM progressdb.feed_queue WHERE thread = 'enc' AND type = 'thread.deleted'
                  AND data::jsonb ->> 'purged' = 'true'"
            ),
            1
        );
        // The fork keeps its own messages; its shared prefix went with the
        // source, and a new thread of the same id does not become it.
        assert_eq!(texts("enc-fork"), vec!["own words of the fork"]);
        post("enc", "mallory", "a new thread named enc");
        assert_eq!(texts("enc-fork"), vec!["own words of the fork"]);
        let f = json("SELECT progressdb.get_thread('enc-fork')");
        assert_eq!(f["forked_from"]["thread"], "enc");
        assert_eq!(f["last_message"]["body"]["text"], "own words of the fork");
        assert_eq!(places_of("quokkamarker"), Vec::<String>::new());
    }

    #[pg_test]
    fn purge_rights_and_legal_hold() {
        let a = post("h", "alice", "one");
        let b = post("h", "alice", "two");
        run("SELECT progressdb.add_member('h', 'mia', 'member')");
        run("SELECT progressdb.add_member('h', 'ada', 'admin')");
        let own = post("h", "mia", "mine");
        assert_fails(
            &format!("SELECT progressdb.purge_message('{own}', 'mia')"),
            "42501",
        );
        assert_fails(
            &format!("SELECT progressdb.purge_message('{a}', 'eve')"),
            "42501",
        );
        run(&format!("SELECT progressdb.purge_message('{a}', 'ada')"));
        assert_fails("SELECT progressdb.purge_thread('h', 'ada')", "42501");
        // Hold and retention are the owners'.
        assert_fails(
            "SELECT progressdb.update_thread('h', NULL, 'ada', legal_hold => true)",
            "42501",
        );
        let t = json("SELECT progressdb.update_thread('h', NULL, 'alice', legal_hold => true, retention => '30 days')");
        assert_eq!(t["legal_hold"], true);
        assert_eq!(t["retention"], "30 days");
        assert_fails(
            &format!("SELECT progressdb.purge_message('{b}', 'ada')"),
            "55000",
        );
        assert_fails(&format!("SELECT progressdb.purge_message('{b}')"), "55000");
        assert_fails("SELECT progressdb.purge_thread('h')", "55000");
        assert_eq!(texts("h"), vec!["two", "mine"]);
        let t = json(
            "SELECT progressdb.update_thread('h', NULL, legal_hold => false, retention => 'off')",
        );
        assert!(t.get("legal_hold").is_none());
        assert_eq!(t["retention"], "off");
        let t = json("SELECT progressdb.update_thread('h', NULL, retention => 'default')");
        assert!(t.get("retention").is_none());
        for bad in ["'soon'", "'-1 day'", "'0'"] {
            assert_fails(
                &format!("SELECT progressdb.update_thread('h', NULL, retention => {bad})"),
                "22023",
            );
        }
        // A soft-deleted thread can still be purged.
        run("SELECT progressdb.delete_thread('h', 'alice')");
        run("SELECT progressdb.purge_thread('h', 'alice')");
        assert_eq!(
            count("SELECT count(*) FROM progressdb.threads WHERE id = 'h'"),
            0
        );
        assert_fails("SELECT progressdb.purge_thread('h')", "P0002");
    }

    #[pg_test]
    fn retention_purges_old_and_long_deleted_messages_but_never_held_threads() {
        for t in ["old", "held", "young"] {
            for i in 0..5 {
                post(t, "alice", &format!("{t} {i}"));
            }
        }
        run("SELECT progressdb.update_thread('old', NULL, retention => '7 days')");
        run("SELECT progressdb.update_thread('held', NULL, retention => '7 days', legal_hold => true)");
        // Ten days pass for the first three messages of each thread.
        run("UPDATE progressdb.messages SET ts = ts - 10 * 86400 * 1000000000::bigint WHERE seq <= 3");
        let r = json("SELECT progressdb.apply_retention()");
        assert_eq!(r["messages"], 3, "{r}");
        assert_eq!(texts("old"), vec!["old 3", "old 4"]);
        assert_eq!(texts("held").len(), 5);
        assert_eq!(texts("young").len(), 5, "no retention: kept");
        // The server default reaches threads without their own setting.
        run("SET LOCAL progressdb.retention = '9 days'");
        let r = json("SELECT progressdb.apply_retention(max_messages => 2)");
        assert_eq!(r["messages"], 2, "a batch is at most max_messages: {r}");
        assert_eq!(r["next"], "young", "the next call goes on from there: {r}");
        let r = json("SELECT progressdb.apply_retention(from_thread => 'young')");
        assert_eq!(r["messages"], 1, "{r}");
        assert_eq!(texts("young"), vec!["young 3", "young 4"]);
        assert_eq!(texts("held").len(), 5);
        run("SET LOCAL progressdb.retention = 'off'");
        // Purge after delete: messages and threads deleted long enough ago.
        let id = post("young", "alice", "to delete");
        run(&format!("SELECT progressdb.delete_message('{id}')"));
        run("SELECT progressdb.delete_thread('old')");
        run("SET LOCAL progressdb.purge_deleted_after = '1 hour'");
        let r = json("SELECT progressdb.apply_retention()");
        assert_eq!(r["deleted"], 0, "deleted just now: {r}");
        run("UPDATE progressdb.messages SET deleted_ts = deleted_ts - 7200 * 1000000000::bigint WHERE deleted_ts IS NOT NULL");
        run("UPDATE progressdb.threads SET deleted_ts = deleted_ts - 7200 * 1000000000::bigint WHERE deleted_ts IS NOT NULL");
        let r = json("SELECT progressdb.apply_retention()");
        assert_eq!(
            (r["deleted"].as_i64(), r["threads"].as_i64()),
            (Some(1), Some(1)),
            "{r}"
        );
        assert_eq!(texts("young"), vec!["young 3", "young 4"]);
        assert_eq!(
            count("SELECT count(*) FROM progressdb.threads WHERE id = 'old'"),
            0
        );
        assert_fails("SELECT progressdb.apply_retention(0)", "22023");
    }

    #[pg_test]
    fn erase_user_purges_their_messages_and_hands_over_their_threads() {
        // Alone: purged whole.
        post("solo", "eve", "wombatmarker alone");
        // Owned with others: passes to the longest-standing admin.
        post("shared", "eve", "wombatmarker shared");
        run("SELECT progressdb.add_member('shared', 'bob', 'member')");
        run("SELECT progressdb.add_member('shared', 'ann', 'admin')");
        run("SELECT progressdb.add_member('shared', 'cid', 'admin')");
        let bobs = post("shared", "bob", "bob speaks");
        run(&format!(
            "SELECT progressdb.add_reaction('{bobs}', 'eve', 'wombatmarker')"
        ));
        let edited = post("shared", "eve", "wombatmarker to edit");
        run(&format!(
            "SELECT progressdb.edit_message('{edited}', '{{\"text\":\"wombatmarker edited\"}}')"
        ));
        // A fork saw eve's message and reaction before they changed.
        json(&format!(
            "SELECT progressdb.fork_thread('shared', '{edited}', 'shared-fork', 'bob')"
        ));
        run(&format!(
            "SELECT progressdb.add_reaction('{bobs}', 'eve', 'again')"
        ));
        run(&format!(
            "SELECT progressdb.edit_message('{edited}', '{{\"text\":\"wombatmarker twice\"}}')"
        ));
        // Held: reported, not touched.
        post("held", "eve", "kept under hold");
        run("SELECT progressdb.update_thread('held', NULL, legal_hold => true)");
        run("SELECT progressdb._sequence_events()");
        assert!(!places_of("wombatmarker").is_empty());

        let r = json("SELECT progressdb.erase_user('eve')");
        assert_eq!(
            r,
            serde_json::json!({"user": "eve", "messages": 3, "reactions": 1, "memberships": 1,
                               "threads": 1, "held": 1})
        );
        assert_eq!(places_of("wombatmarker"), Vec::<String>::new());
        assert_eq!(texts("shared"), vec!["bob speaks"]);
        assert_eq!(texts("shared-fork"), vec!["bob speaks"]);
        assert_fails("SELECT progressdb.get_thread('solo')", "P0002");
        let members = json("SELECT progressdb.list_members('shared')");
        let roles: Vec<(String, String)> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["user"].as_str().unwrap().into(),
                    m["role"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            roles,
            vec![
                ("ann".into(), "owner".into()),
                ("bob".into(), "member".into()),
                ("cid".into(), "admin".into())
            ]
        );
        let t = json("SELECT progressdb.get_thread('shared')");
        assert_eq!(
            (t["author"].as_str(), t["member_count"].as_i64()),
            (Some("ann"), Some(3))
        );
        assert_eq!(texts("held"), vec!["kept under hold"]);
        // Idempotent.
        let again = json("SELECT progressdb.erase_user('eve')");
        assert_eq!(
            again,
            serde_json::json!({"user": "eve", "messages": 0, "reactions": 0, "memberships": 0,
                               "threads": 0, "held": 1})
        );
    }
}
