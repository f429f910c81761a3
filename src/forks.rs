//! Forks: O(1) branches of a conversation that keep seeing the shared
//! prefix as it was at fork time (SQL and the design in `sql/forks.sql`).

use pgrx::prelude::*;

extension_sql_file!(
    "../sql/forks.sql",
    name = "forks",
    requires = ["messages", "threads", "versions", "compaction"]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;

    /// Posts `text` to `thread` as `author`; returns the message id.
    fn post(thread: &str, author: &str, text: &str) -> String {
        let m = json(&format!(
            "SELECT progressdb.post_message('{thread}', '{author}', jsonb_build_object('text', '{text}'))"
        ));
        m["id"].as_str().unwrap().to_string()
    }

    /// The texts of a page of `thread` (as `actor`, or the service).
    fn texts(thread: &str, extra: &str) -> Vec<String> {
        let page = json(&format!(
            "SELECT progressdb.list_messages('{thread}'{extra})"
        ));
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let mut s = m["body"]["text"].as_str().unwrap_or("?").to_string();
                if m.get("deleted").is_some() {
                    s.push_str("(deleted)");
                }
                if let Some(r) = m.get("reactions") {
                    s.push_str(&format!("{r}"));
                }
                s
            })
            .collect()
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    #[pg_test]
    fn a_fork_shows_the_prefix_as_it_was_at_fork_time() {
        let ids: Vec<String> = (1..=5)
            .map(|i| post("s", "alice", &format!("m{i}")))
            .collect();
        run(&format!(
            "SELECT progressdb.add_reaction('{}', 'bob', 'A')",
            ids[1]
        ));
        let f = json(&format!(
            "SELECT progressdb.fork_thread('s', '{}', 'f', 'alice')",
            ids[2]
        ));
        assert_eq!(f["id"], "f");
        assert_eq!(f["forked_from"]["thread"], "s");
        assert_eq!(f["forked_from"]["message"], ids[2].as_str());
        assert_eq!(f["role"], "owner");
        assert_eq!(f["last_message"]["body"]["text"], "m3");
        // Later changes in the source: none shows in the fork.
        run(&format!(
            "SELECT progressdb.edit_message('{}', '{{\"text\":\"m2 edited\"}}')",
            ids[1]
        ));
        run(&format!("SELECT progressdb.delete_message('{}')", ids[0]));
        run(&format!(
            "SELECT progressdb.add_reaction('{}', 'bob', 'B')",
            ids[2]
        ));
        run(&format!(
            "SELECT progressdb.remove_reaction('{}', 'bob')",
            ids[1]
        ));
        post("s", "alice", "m6");
        let own = post("f", "alice", "f4");
        assert_eq!(
            texts("f", ""),
            ["m1", "m2{\"bob\":\"A\"}", "m3", "f4"],
            "the fork"
        );
        assert_eq!(
            texts("s", ", include_deleted => true"),
            [
                "m1(deleted)",
                "m2 edited",
                "m3{\"bob\":\"B\"}",
                "m4",
                "m5",
                "m6"
            ],
            "the source"
        );
        // Pages in both directions, by cursor, without gaps or repeats.
        let p1 = json("SELECT progressdb.list_messages('f', 3)");
        assert_eq!(p1["messages"][0]["body"]["text"], "m2");
        assert_eq!(p1["pagination"]["has_before"], true);
        assert_eq!(p1["pagination"]["has_after"], false);
        let before = p1["pagination"]["before"].as_str().unwrap();
        let p2 = json(&format!(
            "SELECT progressdb.list_messages('f', 3, before => '{before}')"
        ));
        assert_eq!(p2["messages"].as_array().unwrap().len(), 1);
        assert_eq!(p2["messages"][0]["body"]["text"], "m1");
        assert_eq!(p2["pagination"]["has_before"], false);
        assert_eq!(p2["pagination"]["has_after"], true);
        let after = p2["pagination"]["after"].as_str().unwrap();
        let p3 = json(&format!(
            "SELECT progressdb.list_messages('f', 2, after => '{after}')"
        ));
        let got: Vec<&str> = p3["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(got, ["m2", "m3"]);
        assert_eq!(p3["pagination"]["has_after"], true);
        // A message id of the prefix works as a cursor too.
        let p4 = json(&format!(
            "SELECT progressdb.list_messages('f', 5, before => '{own}')"
        ));
        assert_eq!(p4["messages"].as_array().unwrap().len(), 3);
        // Read state in a fork: a shared message is a position too.
        run("SELECT progressdb.add_member('f', 'bob', 'reader')");
        // (as if bob had joined before the fork had messages of its own)
        run("UPDATE progressdb.thread_members SET last_read_seq = 0 WHERE thread = 'f' AND user_id = 'bob'");
        let rs = json(&format!(
            "SELECT progressdb.mark_read('f', '{}', 'bob')",
            ids[1]
        ));
        assert_eq!(rs["last_read"], ids[1].as_str());
        let rs = json("SELECT progressdb.mark_read('f', actor => 'bob')");
        assert_eq!(rs["last_read"], own.as_str());
        // Deleting the prefix message in the source leaves the fork's copy.
        let g = json(&format!(
            "SELECT progressdb.get_message('{}', in_thread => 'f')",
            ids[1]
        ));
        assert_eq!(g["body"]["text"], "m2");
        assert_eq!(g["version"], 1);
        let v = json(&format!(
            "SELECT progressdb.message_versions('{}', in_thread => 'f')",
            ids[1]
        ));
        assert_eq!(v["versions"].as_array().unwrap().len(), 1);
        let v = json(&format!("SELECT progressdb.message_versions('{}')", ids[1]));
        assert_eq!(v["versions"].as_array().unwrap().len(), 2);
        // Messages after the fork point are not in the fork.
        assert_fails(
            &format!(
                "SELECT progressdb.get_message('{}', in_thread => 'f')",
                ids[3]
            ),
            "P0002",
        );
        // Prefix messages are read-only through the fork.
        assert_fails(
            &format!(
                "SELECT progressdb.edit_message('{}', '{{}}', 'alice', in_thread => 'f')",
                ids[2]
            ),
            "P0002",
        );
    }

    #[pg_test]
    fn forks_of_forks_keep_their_own_snapshots() {
        let a = post("s", "alice", "a");
        let b = post("s", "alice", "b");
        run(&format!(
            "SELECT progressdb.fork_thread('s', '{b}', 'f', 'alice')"
        ));
        let c = post("f", "alice", "c");
        let d = post("f", "alice", "d");
        // Fork the fork inside its shared prefix and after it.
        run(&format!(
            "SELECT progressdb.fork_thread('f', '{c}', 'g', 'alice')"
        ));
        run(&format!(
            "SELECT progressdb.fork_thread('f', '{a}', 'h', 'alice')"
        ));
        run(&format!(
            "SELECT progressdb.edit_message('{a}', '{{\"text\":\"a2\"}}')"
        ));
        run(&format!(
            "SELECT progressdb.edit_message('{c}', '{{\"text\":\"c2\"}}')"
        ));
        run(&format!("SELECT progressdb.delete_message('{d}')"));
        post("g", "alice", "g1");
        assert_eq!(texts("s", ""), ["a2", "b"]);
        assert_eq!(texts("f", ""), ["a", "b", "c2"]);
        assert_eq!(texts("g", ""), ["a", "b", "c", "g1"]);
        assert_eq!(texts("h", ""), ["a"]);
        // Only the forks that share a changed row got a snapshot of it.
        assert_eq!(count("SELECT count(*) FROM progressdb.fork_snapshots"), 2);
        // Replies through a fork: the prefix's as at fork time, then its own.
        let r1 = json(&format!(
            "SELECT progressdb.post_message('g', 'alice', '{{\"text\":\"re a\"}}', reply_to => '{a}')"
        ));
        assert_eq!(r1["reply_to"], a.as_str());
        let r = json(&format!(
            "SELECT progressdb.replies('{a}', in_thread => 'g')"
        ));
        assert_eq!(r["replies"].as_array().unwrap().len(), 1);
        assert_eq!(r["replies"][0]["body"]["text"], "re a");
        let r = json(&format!("SELECT progressdb.replies('{a}')"));
        assert_eq!(r["replies"].as_array().unwrap().len(), 0);
    }

    #[pg_test]
    fn forking_a_long_thread_adds_constant_rows() {
        // 100,000 messages written directly (the API path is not under test).
        run("SELECT progressdb.create_thread('alice', id => 'long')");
        run(
            "INSERT INTO progressdb.messages (thread, seq, id, author, ts, body, updated_ts)
             SELECT 'long', g, 'msg-long-' || g, 'alice', g, jsonb_build_object('text', 'n' || g), g
               FROM generate_series(1, 100000) g",
        );
        run("UPDATE progressdb.threads SET last_seq = 100000 WHERE id = 'long'");
        let rows = "SELECT (SELECT count(*) FROM progressdb.messages) + (SELECT count(*) FROM progressdb.message_versions)
                         + (SELECT count(*) FROM progressdb.fork_snapshots) + (SELECT count(*) FROM progressdb.threads)
                         + (SELECT count(*) FROM progressdb.thread_members)";
        let before = count(rows);
        run("SELECT progressdb.fork_thread('long', 'msg-long-99999', 'lf', 'alice')");
        // One thread row and its owner's membership; nothing is copied.
        assert_eq!(count(rows) - before, 2);
        let page = json("SELECT progressdb.list_messages('lf', 2)");
        assert_eq!(page["messages"][0]["body"]["text"], "n99998");
        assert_eq!(page["messages"][1]["body"]["text"], "n99999");
        assert_eq!(page["pagination"]["has_before"], true);
    }

    #[pg_test]
    fn forking_follows_the_rules_of_the_source() {
        let m1 = post("s", "alice", "one");
        run("SELECT progressdb.add_member('s', 'bob', 'reader')");
        run("SELECT progressdb.update_thread('s', NULL, history => 'joined')");
        let m2 = post("s", "alice", "two");
        // Not a member: may not fork.
        assert_fails(
            &format!("SELECT progressdb.fork_thread('s', '{m2}', actor => 'carol')"),
            "42501",
        );
        // Bob joined after m1 (history 'joined'): he may not fork at it, and
        // his fork at m2 does not show it.
        assert_fails(
            &format!("SELECT progressdb.fork_thread('s', '{m1}', actor => 'bob')"),
            "P0002",
        );
        let f = json(&format!(
            "SELECT progressdb.fork_thread('s', '{m2}', 'bf', 'bob', 'mine')"
        ));
        assert_eq!(f["title"], "mine");
        assert_eq!(f["member_count"], 1);
        assert_eq!(texts("bf", ", actor => 'bob'"), ["two"]);
        assert_fails(
            &format!("SELECT progressdb.get_message('{m1}', 'bob', in_thread => 'bf')"),
            "P0002",
        );
        // The fork's members are its own: alice (source owner) is not one.
        assert_fails(
            "SELECT progressdb.list_messages('bf', actor => 'alice')",
            "42501",
        );
        // Input errors.
        assert_fails("SELECT progressdb.fork_thread('s', NULL)", "22023");
        assert_fails("SELECT progressdb.fork_thread('s', 'msg-none')", "P0002");
        assert_fails("SELECT progressdb.fork_thread('nope', 'msg-none')", "P0002");
        assert_fails(
            &format!("SELECT progressdb.fork_thread('s', '{m2}', 'bf')"),
            "23505",
        );
        // A service fork is owned by the source's author.
        let svc = json(&format!("SELECT progressdb.fork_thread('s', '{m2}')"));
        assert_eq!(svc["author"], "alice");
    }

    #[pg_test]
    fn forks_of_encrypted_threads_survive_key_rotation_and_compaction() {
        run("SELECT progressdb.create_thread('alice', id => 'e', encrypted => true)");
        let ids: Vec<String> = (1..=40)
            .map(|i| post("e", "alice", &format!("zqx-marker-{i}")))
            .collect();
        run("SELECT progressdb.compact(10, 1, '0 seconds')");
        let f = json(&format!(
            "SELECT progressdb.fork_thread('e', '{}', 'ef', 'alice')",
            ids[39]
        ));
        assert_eq!(f["encrypted"], true);
        run(&format!(
            "SELECT progressdb.edit_message('{}', '{{\"text\":\"secret 2\"}}')",
            ids[0]
        ));
        run("SELECT progressdb.rotate_thread_key('e')");
        // The snapshot is sealed, under the source's new key.
        assert_eq!(
            count("SELECT count(*) FROM progressdb.fork_snapshots WHERE msg::text LIKE '%zqx-marker%'"),
            0
        );
        let g = json(&format!(
            "SELECT progressdb.get_message('{}', in_thread => 'ef')",
            ids[0]
        ));
        assert_eq!(g["body"]["text"], "zqx-marker-1");
        for i in 0..40 {
            post("ef", "alice", &format!("own{i}"));
        }
        run("SELECT progressdb.compact(10, 1, '0 seconds')");
        let all = texts("ef", ", lim => 1000");
        assert_eq!(all.len(), 80);
        assert_eq!(all[0], "zqx-marker-1");
        assert_eq!(all[79], "own39");
    }

    /// The texts of search hits for `q` in `thread`.
    fn found(q: &str, thread: &str) -> Vec<String> {
        let r = json(&format!(
            "SELECT progressdb.search(NULL, '{q}', '{thread}')"
        ));
        let mut v: Vec<String> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["message"]["body"]["text"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    #[pg_test]
    fn search_in_a_fork_covers_the_prefix_as_it_was() {
        let a = post("s", "alice", "apple banana");
        let c = post("s", "alice", "cherry tart");
        run(&format!("SELECT progressdb.fork_thread('s', '{c}', 'f')"));
        run(&format!("SELECT progressdb.fork_thread('f', '{c}', 'g')"));
        run(&format!(
            "SELECT progressdb.edit_message('{a}', '{{\"text\":\"durian\"}}')"
        ));
        run(&format!("SELECT progressdb.delete_message('{c}')"));
        post("f", "alice", "apple pie");
        assert_eq!(found("apple", "f"), ["apple banana", "apple pie"]);
        assert_eq!(found("cherry", "f"), ["cherry tart"]);
        assert!(found("durian", "f").is_empty());
        assert_eq!(found("durian", "s"), ["durian"]);
        assert!(found("cherry", "s").is_empty());
        // A fork of the fork: the snapshots of its source serve it too.
        assert_eq!(found("apple", "g"), ["apple banana"]);
        assert_eq!(found("tart", "g"), ["cherry tart"]);
        let hit = json("SELECT progressdb.search(NULL, 'banana', 'g')");
        assert_eq!(hit["results"][0]["snippet"], "apple <mark>banana</mark>");
    }

    #[pg_test]
    fn encrypted_search_in_a_fork_after_key_rotation() {
        run("SET progressdb.encrypted_search = on");
        run("SELECT progressdb.create_thread('alice', id => 'es', encrypted => true)");
        let a = post("es", "alice", "zebra crossing");
        let b = post("es", "alice", "yak shaving");
        run(&format!("SELECT progressdb.fork_thread('es', '{b}', 'ef')"));
        run(&format!(
            "SELECT progressdb.edit_message('{a}', '{{\"text\":\"walrus\"}}')"
        ));
        run("SELECT progressdb.rotate_thread_key('es')");
        assert_eq!(found("zebra", "ef"), ["zebra crossing"]);
        assert_eq!(found("yak", "ef"), ["yak shaving"]);
        assert!(found("walrus", "ef").is_empty());
        assert_eq!(found("walrus", "es"), ["walrus"]);
        assert_eq!(
            count("SELECT count(*) FROM progressdb.fork_snapshots WHERE msg::text LIKE '%zebra%'"),
            0
        );
    }

    #[pg_test]
    fn context_of_a_fork_reads_the_prefix_as_it_was() {
        let sys =
            json("SELECT progressdb.post_message('c', 'dev', '{\"text\":\"be terse\"}', 'system')");
        let q = post("c", "alice", "question one");
        let a = json(
            "SELECT progressdb.post_message('c', 'bot', '{\"text\":\"answer one\"}', 'assistant')",
        );
        let gone = post("c", "alice", "deleted before the fork");
        run(&format!("SELECT progressdb.delete_message('{gone}')"));
        let a_id = a["id"].as_str().unwrap();
        run(&format!(
            "SELECT progressdb.fork_thread('c', '{a_id}', 'cf')"
        ));
        // After the fork: the source's system prompt and question change.
        run(&format!(
            "SELECT progressdb.edit_message('{}', '{{\"text\":\"be verbose\"}}')",
            sys["id"].as_str().unwrap()
        ));
        run(&format!("SELECT progressdb.delete_message('{q}')"));
        post("cf", "alice", "question two");
        let ctx = json("SELECT progressdb.context('cf', 100000)");
        let got: Vec<(String, String)> = ctx["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_string(),
                    m["content"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want = [
            ("system", "be terse"),
            ("user", "question one"),
            ("assistant", "answer one"),
            ("user", "question two"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(ctx["dropped"], 0);
        // One token short of everything: the oldest live message is dropped.
        let all = ctx["tokens"].as_i64().unwrap();
        let small = json(&format!("SELECT progressdb.context('cf', {})", all - 1));
        assert_eq!(small["messages"].as_array().unwrap().len(), 3, "{small}");
        assert_eq!(small["messages"][1]["content"], "answer one", "{small}");
        assert_eq!(small["dropped"], 1, "{small}");
        let src = json("SELECT progressdb.context('c', 100000)");
        assert_eq!(src["messages"][0]["content"], "be verbose");
        assert_eq!(src["messages"].as_array().unwrap().len(), 2);
    }
}
