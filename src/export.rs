//! Export and import: a thread's or a user's records as NDJSON-ready jsonb
//! rows, and `import_record`, which writes one record back (SQL and the
//! record format in `sql/export.sql`; README "Export and import").

use pgrx::prelude::*;

extension_sql_file!(
    "../sql/export.sql",
    name = "export",
    requires = [
        "forks",
        "search",
        "crypto",
        "events",
        "members",
        "threads",
        "versions",
        "lifecycle"
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;
    use serde_json::{json, Value};

    /// The records of an export call (`export_thread(...)`, `export_user(...)`), in order.
    fn export(call: &str) -> Vec<Value> {
        let v = json(&format!(
            "SELECT coalesce(jsonb_agg(r ORDER BY n), '[]') FROM progressdb.{call} WITH ORDINALITY x(r, n)"
        ));
        v.as_array().unwrap().clone()
    }

    /// Imports every record; returns what import_record answered, in order.
    fn import(recs: &[Value]) -> Vec<String> {
        recs.iter()
            .map(|r| {
                Spi::get_one_with_args::<String>(
                    "SELECT progressdb.import_record($1)",
                    &[pgrx::JsonB(r.clone()).into()],
                )
                .unwrap()
                .unwrap()
            })
            .collect()
    }

    fn count_of(answers: &[String], what: &str) -> usize {
        answers.iter().filter(|a| *a == what).count()
    }

    /// The records with thread `from` renamed to `to`.
    fn rename(recs: &[Value], from: &str, to: &str) -> Vec<Value> {
        recs.iter()
            .map(|r| {
                let mut r = r.clone();
                let key = if r["type"] == "thread" {
                    "id"
                } else {
                    "thread"
                };
                if r[key] == from {
                    r[key] = json!(to);
                }
                r
            })
            .collect()
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn post(thread: &str, author: &str, text: &str, extra: &str) -> String {
        json(&format!(
            "SELECT progressdb.post_message('{thread}', '{author}', jsonb_build_object('text', '{text}'){extra})"
        ))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The error of `sql` as `SQLSTATE message`, or None when it succeeds.
    fn error_of(sql: &str) -> Option<String> {
        run("CREATE OR REPLACE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN NULL; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$");
        Spi::get_one_with_args::<String>("SELECT pg_temp.error_of($1)", &[sql.into()]).unwrap()
    }

    /// A thread with members, edits, replies, reactions, deletes, a restore,
    /// a member who joined late (history 'joined') and read state.
    fn conversation(id: &str) -> Vec<String> {
        run(&format!(
            "SELECT progressdb.create_thread('alice', 'Round trip', '{id}', metadata => '{{\"k\":1}}', history => 'joined')"
        ));
        run(&format!(
            "SELECT progressdb.add_member('{id}', 'bob', 'member', actor => 'alice')"
        ));
        run(&format!(
            "SELECT progressdb.add_member('{id}', 'carol', 'reader', actor => 'alice')"
        ));
        let m1 = post(id, "alice", "one", "");
        let m2 = post(id, "bob", "two", &format!(", reply_to => '{m1}'"));
        run(&format!(
            "SELECT progressdb.edit_message('{m1}', '{{\"text\":\"one, edited\"}}')"
        ));
        run(&format!(
            "SELECT progressdb.edit_message('{m1}', '{{\"text\":\"one, again\"}}')"
        ));
        run(&format!(
            "SELECT progressdb.add_reaction('{m1}', 'bob', '+1')"
        ));
        run(&format!(
            "SELECT progressdb.add_reaction('{m1}', 'carol', 'heart')"
        ));
        run(&format!("SELECT progressdb.delete_message('{m2}')"));
        let m3 = post(id, "bob", "three", "");
        run(&format!("SELECT progressdb.delete_message('{m3}')"));
        run(&format!("SELECT progressdb.restore_message('{m3}')"));
        run(&format!(
            "SELECT progressdb.mark_read('{id}', '{m3}', actor => 'bob')"
        ));
        run(&format!(
            "SELECT progressdb.add_member('{id}', 'dave', 'member', actor => 'alice')"
        ));
        let m4 = post(id, "dave", "four", "");
        vec![m1, m2, m3, m4]
    }

    #[pg_test]
    fn export_records_follow_the_format() {
        let ids = conversation("rt");
        let recs = export("export_thread('rt')");
        let types: Vec<&str> = recs.iter().map(|r| r["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "thread", "member", "member", "member", "member", "message", "message", "message",
                "message"
            ]
        );
        assert!(recs.iter().all(|r| r["v"] == 1));
        let t = &recs[0];
        assert_eq!(t["id"], "rt");
        assert_eq!(t["title"], "Round trip");
        assert_eq!(t["metadata"], json!({"k":1}));
        assert_eq!(t["history"], "joined");
        assert_eq!(t["encrypted"], false);
        assert!(t.get("deleted_ts").is_none() && t.get("forked_from").is_none());
        let users: Vec<&str> = recs[1..5]
            .iter()
            .map(|r| r["user"].as_str().unwrap())
            .collect();
        assert_eq!(users, ["alice", "bob", "carol", "dave"]);
        assert_eq!(recs[1]["role"], "owner");
        assert_eq!(recs[2]["last_read"], ids[2].as_str());
        assert_eq!(recs[2]["added_by"], "alice");
        let msgs = &recs[5..];
        let got: Vec<&str> = msgs.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(msgs[0]["version"], 3);
        assert_eq!(msgs[0]["body"], json!({"text":"one, again"}));
        assert_eq!(msgs[0]["reactions"], json!({"bob":"+1","carol":"heart"}));
        let vers = msgs[0]["versions"].as_array().unwrap();
        assert_eq!(vers.len(), 2);
        assert_eq!(vers[0]["version"], 1);
        assert_eq!(vers[0]["body"], json!({"text":"one"}));
        assert_eq!(vers[1]["body"], json!({"text":"one, edited"}));
        assert_eq!(msgs[1]["reply_to"], ids[0].as_str());
        assert!(msgs[1]["deleted_ts"].is_i64());
        assert!(msgs[1].get("versions").is_none());
        assert!(msgs[2].get("deleted_ts").is_none(), "restored");

        // A user gets what they may read: dave joined after three messages
        // (history 'joined'), and no one's read state but their own.
        let dave = export("export_thread('rt', 'dave')");
        assert_eq!(dave.iter().filter(|r| r["type"] == "message").count(), 1);
        assert!(dave.iter().all(|r| r.get("last_read").is_none()));
        let bob = export("export_thread('rt', 'bob')");
        assert_eq!(bob.iter().filter(|r| r["type"] == "message").count(), 4);
        assert_eq!(
            bob.iter().filter(|r| r.get("last_read").is_some()).count(),
            1
        );
        assert_fails(
            "SELECT * FROM progressdb.export_thread('rt', 'mallory')",
            "42501",
        );
        assert_fails("SELECT * FROM progressdb.export_thread('nope')", "P0002");
        run("SELECT progressdb.delete_thread('rt')");
        assert_fails("SELECT * FROM progressdb.export_thread('rt')", "P0002");
    }

    #[pg_test]
    fn export_import_export_is_identical_and_import_is_idempotent() {
        conversation("rt");
        // The thread's own lifecycle settings travel with it.
        run("SELECT progressdb.update_thread('rt', NULL, retention => '30 days', legal_hold => true)");
        let recs = export("export_thread('rt')");
        assert_eq!(
            (&recs[0]["retention"], &recs[0]["legal_hold"]),
            (&json!("30 days"), &json!(true)),
            "{}",
            recs[0]
        );

        // Into another id: every record is new, and the copy exports the same.
        let renamed = rename(&recs, "rt", "rt-copy");
        let answers = import(&renamed);
        assert_eq!(count_of(&answers, "created"), recs.len(), "{answers:?}");
        assert_eq!(export("export_thread('rt-copy')"), renamed);
        // Read positions and join points were rebuilt: each user's view is the same.
        for user in ["alice", "bob", "carol", "dave"] {
            assert_eq!(
                export(&format!("export_thread('rt-copy', '{user}')")),
                rename(
                    &export(&format!("export_thread('rt', '{user}')")),
                    "rt",
                    "rt-copy"
                ),
                "{user}"
            );
        }
        let doc = |t: &str, u: &str| {
            let mut d = json(&format!("SELECT progressdb.get_thread('{t}', '{u}')"));
            let o = d.as_object_mut().unwrap();
            for k in ["id", "slug", "last_activity_ts"] {
                o.remove(k);
            }
            if let Some(last) = o.get_mut("last_message") {
                last.as_object_mut().unwrap().remove("thread");
            }
            d
        };
        assert_eq!(
            doc("rt", "bob"),
            doc("rt-copy", "bob"),
            "unread, last_read, role"
        );
        assert_eq!(doc("rt", "dave"), doc("rt-copy", "dave"));

        // Twice is once.
        let rows = || {
            count("SELECT (SELECT count(*) FROM progressdb.messages) + (SELECT count(*) FROM progressdb.message_versions) * 1000 + (SELECT count(*) FROM progressdb.thread_members) * 1000000 + (SELECT count(*) FROM progressdb.threads) * 1000000000")
        };
        let before = rows();
        let again = import(&renamed);
        assert_eq!(count_of(&again, "exists"), recs.len(), "{again:?}");
        assert_eq!(rows(), before);
        assert_eq!(export("export_thread('rt-copy')"), renamed);

        // After deleting the original's rows outright, it comes back as it was.
        for table in [
            "message_versions",
            "messages",
            "thread_members",
            "message_chunks",
            "compaction_state",
        ] {
            run(&format!(
                "DELETE FROM progressdb.{table} WHERE thread = 'rt'"
            ));
        }
        run("DELETE FROM progressdb.threads WHERE id = 'rt'");
        let answers = import(&recs);
        assert_eq!(count_of(&answers, "created"), recs.len());
        assert_eq!(export("export_thread('rt')"), recs);
    }

    #[pg_test]
    fn encrypted_threads_export_plaintext_and_import_sealed_under_their_own_key() {
        run("SELECT progressdb.create_thread('alice', 'Vault', 'vault', encrypted => true)");
        let m1 = post("vault", "alice", "top secret", "");
        run(&format!(
            "SELECT progressdb.edit_message('{m1}', '{{\"text\":\"still secret\"}}')"
        ));
        run(&format!(
            "SELECT progressdb.add_reaction('{m1}', 'alice', 'eyes')"
        ));
        post("vault", "alice", "second", &format!(", reply_to => '{m1}'"));
        let recs = export("export_thread('vault')");
        assert_eq!(recs[0]["encrypted"], true);
        assert_eq!(recs[2]["body"], json!({"text":"still secret"}));
        assert_eq!(recs[2]["versions"][0]["body"], json!({"text":"top secret"}));

        let renamed = rename(&recs, "vault", "vault2");
        assert_eq!(count_of(&import(&renamed), "created"), recs.len());
        assert_eq!(export("export_thread('vault2')"), renamed);
        // Sealed at rest, under a data key of the new thread.
        assert_eq!(
            count("SELECT count(*) FROM progressdb.messages WHERE thread = 'vault2' AND body IS NULL AND body_enc::text NOT LIKE '%secret%'"),
            2
        );
        assert_eq!(
            count("SELECT count(*) FROM progressdb.message_versions WHERE thread = 'vault2' AND body IS NULL AND body_enc IS NOT NULL"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM progressdb.thread_keys k JOIN progressdb.threads t ON t.id = k.thread AND t.dek_id = k.dek_id WHERE t.id = 'vault2'"),
            1
        );
        assert_eq!(
            json(&format!(
                "SELECT progressdb.get_message('{m1}', in_thread => 'vault2')"
            ))["body"]["text"],
            "still secret"
        );
        assert_eq!(
            json(&format!(
                "SELECT progressdb.message_versions('{m1}', in_thread => 'vault2')"
            ))["versions"][0]["body"]["text"],
            "top secret"
        );
    }

    #[pg_test]
    fn bad_records_are_refused_with_nothing_written() {
        conversation("rt");
        let good = export("export_thread('rt')");
        let msg = good[5].clone();
        let with = |base: &Value, k: &str, v: Value| {
            let mut r = base.clone();
            r[k] = v;
            r
        };
        let without = |base: &Value, k: &str| {
            let mut r = base.clone();
            r.as_object_mut().unwrap().remove(k);
            r
        };
        let fresh_msg = with(&msg, "id", json!("msg-new"));
        let fresh_thread = with(&good[0], "id", json!("t-new"));
        let bad: Vec<(Value, &str)> = vec![
            (json!([1]), "JSON object"),
            (without(&good[0], "v"), "\"v\""),
            (with(&good[0], "v", json!(2)), "unsupported export version"),
            (with(&good[0], "type", json!("blob")), "\"type\""),
            (without(&fresh_thread, "id"), "\"id\""),
            (with(&fresh_thread, "id", json!("x".repeat(129))), "\"id\""),
            (
                with(&fresh_thread, "created_ts", json!("yesterday")),
                "\"created_ts\"",
            ),
            (
                with(&fresh_thread, "history", json!("sometimes")),
                "history",
            ),
            (with(&fresh_thread, "metadata", json!([1])), "metadata"),
            (
                with(&fresh_thread, "encrypted", json!("yes")),
                "\"encrypted\"",
            ),
            (with(&good[2], "role", json!("boss")), "role"),
            (
                with(
                    &with(&good[2], "user", json!("zed")),
                    "joined_ts",
                    json!(-1),
                ),
                "\"joined_ts\"",
            ),
            (with(&fresh_msg, "body", Value::Null), "\"body\""),
            (without(&fresh_msg, "author"), "\"author\""),
            (with(&fresh_msg, "ts", json!(1.5)), "\"ts\""),
            (with(&fresh_msg, "version", json!(0)), "\"version\""),
            (
                with(&fresh_msg, "reactions", json!({"bob": 1})),
                "\"reactions\"",
            ),
            (with(&fresh_msg, "reply_to", json!(7)), "\"reply_to\""),
            (
                with(
                    &fresh_msg,
                    "versions",
                    json!([{"version": 3, "body": {}, "updated_ts": 1}]),
                ),
                "versions[0]",
            ),
            (
                with(
                    &fresh_msg,
                    "versions",
                    json!([{"version": 1, "updated_ts": 1}]),
                ),
                "versions[0]: field \"body\"",
            ),
            (
                with(
                    &fresh_msg,
                    "versions",
                    json!([{"version": 2, "body": 1, "updated_ts": 1}, {"version": 1, "body": 1, "updated_ts": 1}]),
                ),
                "versions[1]",
            ),
        ];
        let state = || {
            count("SELECT (SELECT count(*) FROM progressdb.messages) + (SELECT count(*) FROM progressdb.message_versions) * 1000 + (SELECT count(*) FROM progressdb.thread_members) * 1000000 + (SELECT count(*) FROM progressdb.threads) * 1000000000 + (SELECT sum(last_seq) FROM progressdb.threads)::bigint")
        };
        let before = state();
        for (rec, needle) in bad {
            let sql = format!(
                "SELECT progressdb.import_record('{}'::jsonb)",
                rec.to_string().replace('\'', "''")
            );
            let err = error_of(&sql).unwrap_or_else(|| panic!("accepted: {rec}"));
            assert!(err.starts_with("22023 "), "{rec}: {err}");
            assert!(err.contains(needle), "{rec}: {err} (wants {needle})");
        }
        assert_eq!(state(), before);
        // A record of a thread that is not there is not found (P0002), also unwritten.
        assert_fails(
            &format!(
                "SELECT progressdb.import_record('{}'::jsonb)",
                with(&fresh_msg, "thread", json!("elsewhere"))
                    .to_string()
                    .replace('\'', "''")
            ),
            "P0002",
        );
        assert_eq!(state(), before);
        // The fresh message itself is fine.
        assert_eq!(import(&[fresh_msg]), ["created"]);
    }

    #[pg_test]
    fn a_fork_exports_its_timeline_as_it_shows_it() {
        let a = post("src", "alice", "a", "");
        let b = post("src", "alice", "b", "");
        post("src", "alice", "c", "");
        let f = json(&format!(
            "SELECT progressdb.fork_thread('src', '{b}', id => 'fk')"
        ));
        assert_eq!(f["forked_from"]["thread"], "src");
        run(&format!(
            "SELECT progressdb.edit_message('{a}', '{{\"text\":\"a, later\"}}')"
        ));
        let own = post("fk", "alice", "d", "");
        let recs = export("export_thread('fk')");
        assert_eq!(recs[0]["forked_from"], json!({"thread":"src","message":b}));
        let msgs: Vec<&Value> = recs.iter().filter(|r| r["type"] == "message").collect();
        let ids: Vec<&str> = msgs.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [a.as_str(), b.as_str(), own.as_str()]);
        assert!(msgs.iter().all(|m| m["thread"] == "fk"));
        assert_eq!(
            msgs[0]["body"],
            json!({"text":"a"}),
            "as it was at fork time"
        );
        assert!(msgs[0].get("versions").is_none());

        // Imported, it stands alone (no forked_from) with the same timeline.
        let copy = rename(&recs, "fk", "fk2");
        import(&copy);
        let mut want = copy.clone();
        want[0].as_object_mut().unwrap().remove("forked_from");
        assert_eq!(export("export_thread('fk2')"), want);
    }

    #[pg_test]
    fn a_user_export_holds_their_threads_messages_and_reactions() {
        let mine = post("t1", "alice", "mine", "");
        let bobs = post("t1", "bob", "hers", "");
        run("SELECT progressdb.add_member('t1', 'bob')");
        run(&format!(
            "SELECT progressdb.add_reaction('{bobs}', 'alice', 'wow')"
        ));
        run(&format!(
            "SELECT progressdb.edit_message('{mine}', '{{\"text\":\"mine, edited\"}}')"
        ));
        // A thread alice wrote in and left.
        post("t2", "carol", "hi", "");
        run("SELECT progressdb.add_member('t2', 'alice')");
        let left = post("t2", "alice", "bye", "");
        run("SELECT progressdb.remove_member('t2', 'alice', actor => 'alice')");
        post("t3", "carol", "not hers", "");

        let recs = export("export_user('alice')");
        let kinds: Vec<(String, String)> = recs
            .iter()
            .map(|r| {
                (
                    r["type"].as_str().unwrap().to_string(),
                    r.get("thread")
                        .or(r.get("id"))
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        let k = |t: &str, th: &str| (t.to_string(), th.to_string());
        assert_eq!(
            kinds,
            [
                k("thread", "t1"),
                k("member", "t1"),
                k("message", "t1"),
                k("reaction", "t1"),
                k("thread", "t2"),
                k("message", "t2"),
            ]
        );
        assert_eq!(recs[1]["user"], "alice");
        assert_eq!(recs[2]["id"], mine.as_str());
        assert_eq!(recs[2]["versions"][0]["body"], json!({"text":"mine"}));
        assert_eq!(
            recs[3],
            json!({"v":1,"type":"reaction","thread":"t1","message":bobs,"identity":"alice","reaction":"wow"})
        );
        assert_eq!(recs[5]["id"], left.as_str());
        assert_fails("SELECT * FROM progressdb.export_user('')", "22023");

        // Into an empty database: her threads and messages; a reaction to a
        // message that is not there is skipped, and comes back where it is.
        run("DELETE FROM progressdb.message_versions; DELETE FROM progressdb.messages; DELETE FROM progressdb.thread_members; DELETE FROM progressdb.threads");
        let answers = import(&recs);
        assert_eq!(
            answers,
            ["created", "created", "created", "skipped", "created", "created"]
        );
        let again = import(&recs);
        assert_eq!(
            again,
            ["exists", "exists", "exists", "skipped", "exists", "exists"]
        );
        import(&[
            json!({"v":1,"type":"message","thread":"t1","id":bobs,"author":"bob","ts":1,"body":{"text":"x"}}),
        ]);
        assert_eq!(import(&recs[3..4]), ["created"]);
        assert_eq!(import(&recs[3..4]), ["exists"]);
        assert_eq!(
            json(&format!("SELECT progressdb.get_message('{bobs}')"))["reactions"],
            json!({"alice":"wow"})
        );
    }

    #[pg_test]
    fn export_thread_streams_in_timeline_order_without_sorting() {
        post("big", "alice", "x", "");
        // Inlined into the caller's query: an index range scan in seq order,
        // no Sort and no function result collected first. (Which scan the
        // planner picks depends on the table's size on disk, which other
        // tests running at the same time change: bitmap scans and seq scans
        // are turned off so that the test checks the shape, not the costs.)
        run("SET LOCAL enable_bitmapscan = off");
        run("SET LOCAL enable_seqscan = off");
        let plan: Vec<String> = Spi::connect(|c| {
            c.select(
                "EXPLAIN (COSTS OFF) SELECT r::text FROM progressdb.export_thread('big') r",
                None,
                &[],
            )
            .unwrap()
            .map(|row| row.get::<String>(1).unwrap().unwrap())
            .collect()
        });
        let plan = plan.join("\n");
        // (a thread's members may be sorted: there are few)
        assert!(!plan.contains("Sort Key: m."), "{plan}");
        assert!(!plan.contains("Function Scan on export_thread"), "{plan}");
        assert!(plan.contains("messages_pkey"), "{plan}");
    }
}
