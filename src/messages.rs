//! Messages: append with per-thread `seq`, timeline pages, get, edit, soft
//! delete and restore (SQL in `sql/messages.sql`).

use pgrx::prelude::*;

extension_sql_file!(
    "../sql/messages.sql",
    name = "messages",
    requires = ["threads"]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;
    use serde_json::{json, Value};

    fn post(thread: &str, author: &str, text: &str) -> Value {
        json(&format!(
            "SELECT progressdb.post_message('{thread}', '{author}', jsonb_build_object('text', '{text}'))"
        ))
    }

    fn texts(page: &Value) -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"]["text"].as_str().unwrap().to_string())
            .collect()
    }

    #[pg_test]
    fn post_message_returns_the_api_shape_and_creates_the_thread() {
        let m = json("SELECT progressdb.post_message('general', 'alice', '{\"text\":\"Hello\"}')");
        assert!(m["id"].as_str().unwrap().starts_with("msg-"), "{m}");
        assert_eq!(m["thread"], "general");
        assert_eq!(m["author"], "alice");
        assert_eq!(m["role"], "user");
        assert_eq!(m["body"], json!({"text": "Hello"}));
        assert_eq!(m["version"], 1);
        assert!(m["ts"].as_i64().unwrap() > 1_600_000_000_000_000_000);
        assert_eq!(m["updated_ts"], m["ts"]);
        for absent in ["reply_to", "deleted", "reactions"] {
            assert!(m.get(absent).is_none(), "{absent} must be omitted: {m}");
        }
        let t = json("SELECT progressdb.get_thread('general')");
        assert_eq!(t["author"], "alice");
        assert!(t["title"].as_str().unwrap().starts_with("New Thread #"));
    }

    #[pg_test]
    fn post_message_with_null_thread_generates_one() {
        let m = json("SELECT progressdb.post_message(NULL, 'alice', '\"hi\"', 'assistant')");
        let thread = m["thread"].as_str().unwrap();
        assert!(thread.starts_with("thread-"), "{m}");
        assert_eq!(m["role"], "assistant");
        assert_eq!(m["body"], "hi");
        assert_eq!(
            json(&format!("SELECT progressdb.get_thread('{thread}')"))["author"],
            "alice"
        );
    }

    #[pg_test]
    fn seqs_are_allocated_per_thread() {
        post("a", "alice", "1");
        post("b", "bob", "1");
        post("a", "alice", "2");
        post("a", "alice", "3");
        let seqs = Spi::get_one::<String>(
            "SELECT string_agg(thread || seq, ',' ORDER BY thread, seq) FROM progressdb.messages",
        )
        .unwrap();
        assert_eq!(seqs.as_deref(), Some("a1,a2,a3,b1"));
    }

    #[pg_test]
    fn post_message_rejects_bad_input_and_writes_nothing() {
        run("SELECT progressdb.create_thread('alice', 'x', 'mine')");
        let cases = [
            (
                "SELECT progressdb.post_message('t', 'alice', NULL)",
                "22004",
            ),
            (
                "SELECT progressdb.post_message('t', 'alice', 'null'::jsonb)",
                "22004",
            ),
            ("SELECT progressdb.post_message('t', NULL, '{}')", "22004"),
            ("SELECT progressdb.post_message('t', '', '{}')", "22023"),
            ("SELECT progressdb.post_message('', 'alice', '{}')", "22023"),
            (
                "SELECT progressdb.post_message('t', 'alice', '{}', '')",
                "22023",
            ),
            (
                "SELECT progressdb.post_message('t', 'alice', '{}', reply_to => 'msg-nope')",
                "22023",
            ),
            (
                "SELECT progressdb.post_message('mine', 'bob', '{}', actor => 'bob')",
                "42501",
            ),
        ];
        for (sql, code) in cases {
            assert_fails(sql, code);
        }
        assert_fails(
            &format!(
                "SELECT progressdb.post_message('{}', 'alice', '{{}}')",
                "t".repeat(129)
            ),
            "22023",
        );
        assert_fails(
            &format!(
                "SELECT progressdb.post_message('t', '{}', '{{}}')",
                "a".repeat(129)
            ),
            "22023",
        );
        let n = Spi::get_one::<i64>("SELECT count(*) FROM progressdb.messages").unwrap();
        assert_eq!(n, Some(0));
        let threads = Spi::get_one::<i64>("SELECT count(*) FROM progressdb.threads").unwrap();
        assert_eq!(
            threads,
            Some(1),
            "no thread may be auto-created by a failed post"
        );
    }

    #[pg_test]
    fn posting_to_a_deleted_thread_is_not_found() {
        post("t", "alice", "1");
        run("SELECT progressdb.delete_thread('t')");
        assert_fails(
            "SELECT progressdb.post_message('t', 'alice', '{}')",
            "P0002",
        );
    }

    #[pg_test]
    fn get_message_checks_thread_scope_and_ownership() {
        let m = post("t", "alice", "hello");
        let id = m["id"].as_str().unwrap();
        assert_eq!(json(&format!("SELECT progressdb.get_message('{id}')")), m);
        assert_eq!(
            json(&format!(
                "SELECT progressdb.get_message('{id}', 'alice', 't')"
            )),
            m
        );
        assert_fails(
            &format!("SELECT progressdb.get_message('{id}', in_thread => 'other')"),
            "P0002",
        );
        assert_fails(
            &format!("SELECT progressdb.get_message('{id}', 'mallory')"),
            "42501",
        );
        assert_fails("SELECT progressdb.get_message('msg-nope')", "P0002");
        assert_fails(
            &format!("SELECT progressdb.get_message('{}')", "m".repeat(129)),
            "22023",
        );
    }

    #[pg_test]
    fn list_messages_pages_newest_first_with_cursors() {
        for i in 1..=5 {
            post("t", "alice", &i.to_string());
        }
        let page = json("SELECT progressdb.list_messages('t', 2)");
        assert_eq!(page["thread"], "t");
        assert_eq!(texts(&page), ["4", "5"]);
        assert_eq!(page["pagination"]["has_before"], true);
        assert_eq!(page["pagination"]["has_after"], false);
        // Cursors are opaque positions; message ids (0.1 cursors) still work.
        let before = page["pagination"]["before"].as_str().unwrap().to_string();
        assert!(before.starts_with("c1."), "{before}");
        let oldest_on_page = page["messages"][0]["id"].as_str().unwrap();

        let older = json(&format!(
            "SELECT progressdb.list_messages('t', 2, before => '{before}')"
        ));
        assert_eq!(texts(&older), ["2", "3"]);
        assert_eq!(
            json(&format!(
                "SELECT progressdb.list_messages('t', 2, before => '{oldest_on_page}')"
            )),
            older
        );
        assert_eq!(older["pagination"]["has_before"], true);
        assert_eq!(older["pagination"]["has_after"], true);
        let oldest_cursor = older["pagination"]["before"].as_str().unwrap().to_string();
        let oldest = json(&format!(
            "SELECT progressdb.list_messages('t', 2, before => '{oldest_cursor}')"
        ));
        assert_eq!(texts(&oldest), ["1"]);
        assert_eq!(oldest["pagination"]["has_before"], false);

        let after_cursor = older["pagination"]["after"].as_str().unwrap().to_string();
        let newer = json(&format!(
            "SELECT progressdb.list_messages('t', 10, after => '{after_cursor}')"
        ));
        assert_eq!(texts(&newer), ["4", "5"]);
        assert_eq!(newer["pagination"]["has_after"], false);
        assert_eq!(newer["pagination"]["has_before"], true);

        let all = json("SELECT progressdb.list_messages('t')");
        assert_eq!(texts(&all), ["1", "2", "3", "4", "5"]);
        assert_eq!(all["pagination"]["has_before"], false);
    }

    #[pg_test]
    fn list_messages_of_an_empty_thread() {
        run("SELECT progressdb.create_thread('alice', 'x', 'empty')");
        let page = json("SELECT progressdb.list_messages('empty')");
        assert_eq!(
            page,
            json!({"thread": "empty", "messages": [],
                   "pagination": {"has_before": false, "has_after": false}})
        );
    }

    #[pg_test]
    fn list_messages_validates_input_and_ownership() {
        post("t", "alice", "1");
        assert_fails("SELECT progressdb.list_messages('t', 0)", "22023");
        assert_fails("SELECT progressdb.list_messages('t', 1001)", "22023");
        assert_fails("SELECT progressdb.list_messages('nope')", "P0002");
        assert_fails(
            "SELECT progressdb.list_messages('t', actor => 'bob')",
            "42501",
        );
        assert_fails(
            "SELECT progressdb.list_messages('t', before => 'msg-nope')",
            "22023",
        );
        let other = post("u", "alice", "x");
        let id = other["id"].as_str().unwrap();
        assert_fails(
            &format!("SELECT progressdb.list_messages('t', after => '{id}')"),
            "22023",
        );
        // A page cursor of another thread, a tampered one, a malformed one.
        post("u", "alice", "y");
        let cursor = json("SELECT progressdb.list_messages('u', 1)")["pagination"]["before"]
            .as_str()
            .unwrap()
            .to_string();
        for bad in [
            cursor.clone(),
            cursor.replace("c1.2.", "c1.1."),
            "c1.2.zz".into(),
        ] {
            assert_fails(
                &format!("SELECT progressdb.list_messages('t', before => '{bad}')"),
                "22023",
            );
        }
        assert_eq!(
            texts(&json(
                "SELECT progressdb.list_messages('t', 1000, actor => 'alice')"
            )),
            ["1"]
        );
    }

    #[pg_test]
    fn soft_delete_hides_and_restore_brings_back() {
        post("t", "alice", "1");
        let m = post("t", "alice", "2");
        let id = m["id"].as_str().unwrap();
        assert_fails(
            &format!("SELECT progressdb.delete_message('{id}', 'bob')"),
            "42501",
        );
        run(&format!(
            "SELECT progressdb.delete_message('{id}', 'alice')"
        ));
        run(&format!(
            "SELECT progressdb.delete_message('{id}', 'alice')"
        )); // idempotent
        assert_eq!(texts(&json("SELECT progressdb.list_messages('t')")), ["1"]);
        let with_deleted = json("SELECT progressdb.list_messages('t', include_deleted => true)");
        assert_eq!(texts(&with_deleted), ["1", "2"]);
        assert_eq!(with_deleted["messages"][1]["deleted"], true);
        assert_fails(&format!("SELECT progressdb.get_message('{id}')"), "P0002");
        assert_fails(
            &format!("SELECT progressdb.edit_message('{id}', '{{}}')"),
            "P0002",
        );

        assert_fails(
            &format!("SELECT progressdb.restore_message('{id}', 'bob')"),
            "42501",
        );
        let restored = json(&format!(
            "SELECT progressdb.restore_message('{id}', 'alice')"
        ));
        assert!(restored.get("deleted").is_none(), "{restored}");
        assert_eq!(
            texts(&json("SELECT progressdb.list_messages('t')")),
            ["1", "2"]
        );
        let versions =
            Spi::get_one::<i64>("SELECT count(*) FROM progressdb.message_versions").unwrap();
        assert_eq!(versions, Some(0), "delete/restore are not content versions");
    }

    #[pg_test]
    fn edit_message_is_author_only_and_validated() {
        let m = post("t", "alice", "v1");
        let id = m["id"].as_str().unwrap();
        assert_fails(
            &format!("SELECT progressdb.edit_message('{id}', '{{\"text\":\"x\"}}', 'bob')"),
            "42501",
        );
        assert_fails(
            &format!("SELECT progressdb.edit_message('{id}', 'null')"),
            "22004",
        );
        assert_fails(
            &format!("SELECT progressdb.edit_message('{id}', NULL)"),
            "22004",
        );
        assert_fails(
            &format!("SELECT progressdb.edit_message('{id}', '{{}}', in_thread => 'u')"),
            "P0002",
        );
        let e = json(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"v2\"}}', 'alice', 't')"
        ));
        assert_eq!(e["body"]["text"], "v2");
        assert_eq!(e["version"], 2);
        assert_eq!(e["id"], m["id"]);
        assert_eq!(e["ts"], m["ts"]);
        assert!(e["updated_ts"].as_i64() > m["updated_ts"].as_i64());
    }

    #[pg_test]
    fn the_message_document_is_built_inline() {
        // _message_text is a plain SQL function the planner inlines: a page
        // passes each row's columns straight to the renderer, without
        // forming a row value per message.
        let plan = Spi::get_one::<pgrx::Json>(
            "EXPLAIN (VERBOSE, FORMAT JSON) SELECT progressdb._message_text(m) FROM progressdb.messages m",
        )
        .unwrap()
        .unwrap()
        .0
        .to_string();
        assert!(plan.contains("_render_message"), "{plan}");
        assert!(!plan.contains("_message_text"), "{plan}");
    }

    fn page_plan(thread: &str) -> String {
        Spi::get_one::<pgrx::Json>(&format!(
            "EXPLAIN (FORMAT JSON) SELECT * FROM progressdb._page_older('{thread}', 9223372036854775807, 50, false)"
        ))
        .unwrap()
        .unwrap()
        .0
        .to_string()
    }

    fn assert_keyset_plan(plan: &str) {
        assert!(plan.contains("\"Index Scan\""), "{plan}");
        assert!(plan.contains("messages_pkey"), "{plan}");
        assert!(plan.contains("\"Backward\""), "{plan}");
        assert!(!plan.contains("\"Sort\""), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(!plan.contains("Bitmap"), "{plan}");
    }

    #[pg_test]
    fn newest_page_is_an_index_range_scan_without_sort() {
        // A busy thread interleaved with 50 quieter ones, as in a chat database.
        run("SELECT progressdb.post_message(CASE WHEN i % 3 = 0 THEN 'busy' ELSE 't' || (i % 50) END,
                                            'alice', jsonb_build_object('i', i))
               FROM generate_series(1, 6000) i");
        run("ANALYZE progressdb.messages");
        assert_keyset_plan(&page_plan("busy"));
    }

    #[pg_test]
    fn list_messages_keeps_the_keyset_plan_for_small_threads_too() {
        // For a thread of ~100 rows the planner alone would fetch them all and
        // sort; list_messages pins the keyset plan (a generic plan must not
        // read a busy thread's whole history to return 50 rows).
        run(
            "SELECT progressdb.post_message('t' || (i % 50), 'alice', jsonb_build_object('i', i))
               FROM generate_series(1, 5000) i",
        );
        run("ANALYZE progressdb.messages");
        let config = Spi::get_one::<String>(
            "SELECT array_to_string(proconfig, ',') FROM pg_proc WHERE oid = 'progressdb._list_messages_rows'::regproc",
        )
        .unwrap()
        .unwrap_or_default();
        assert_eq!(config, "enable_sort=off,enable_bitmapscan=off,jit=off");
        run("SET LOCAL enable_sort = off");
        run("SET LOCAL enable_bitmapscan = off");
        assert_keyset_plan(&page_plan("t7"));
    }

    /// jsonb keeps any numeric; so must every place where the extension reads
    /// a body as JSON (found by the schema fuzzer: a body holding
    /// -1.7976931348623157e+308 failed the search trigger with XX000, "a text
    /// version of jsonb must be a valid json: number out of range").
    #[pg_test]
    fn numbers_beyond_a_double_are_kept_exactly() {
        let body = r#"{"text":"huge numbers","a":-1.7976931348623157e+308,"b":1e400,"c":312696034175895600103424,"d":0.1000000000000000000000001,"e":[-1e-400]}"#;
        let want = json(&format!("SELECT '{body}'::jsonb"));
        run("SELECT progressdb.create_thread('alice', id => 'nums-e', encrypted => true)");
        for thread in ["nums", "nums-e"] {
            let m = json(&format!(
                "SELECT progressdb.post_message('{thread}', 'alice', '{body}')"
            ));
            assert_eq!(m["body"], want, "{thread}");
            let id = m["id"].as_str().unwrap();
            let got = json(&format!("SELECT progressdb.get_message('{id}')"));
            assert_eq!(got["body"], want, "{thread}");
            let page = json(&format!("SELECT progressdb.list_messages('{thread}')"));
            assert_eq!(page["messages"][0]["body"], want, "{thread}");
            let ctx = json(&format!("SELECT progressdb.context('{thread}', 1000)"));
            assert_eq!(
                ctx["messages"][0]["content"], "huge numbers",
                "{thread}: {ctx}"
            );
            let e = json(&format!(
                "SELECT progressdb.edit_message('{id}', '{{\"text\":\"huger\",\"n\":1e401}}')"
            ));
            assert_eq!(
                e["body"],
                json("SELECT '{\"text\":\"huger\",\"n\":1e401}'::jsonb")
            );
            let v = json(&format!("SELECT progressdb.message_versions('{id}')"));
            assert_eq!(v["versions"][0]["body"], want, "{thread}");
        }
        let found = json("SELECT progressdb.search(NULL, 'huger', 'nums')");
        assert_eq!(found["results"].as_array().unwrap().len(), 1, "{found}");
    }
}
