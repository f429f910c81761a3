//! Members, roles, history visibility and read state (SQL in
//! `sql/members.sql`). `progressdb._authorize` there is the one place that
//! decides what an actor may do in a thread.

use pgrx::prelude::*;

extension_sql_file!(
    "../sql/members.sql",
    name = "members",
    requires = ["schema"]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run, sqlstate};
    use pgrx::prelude::*;
    use serde_json::Value;

    /// Thread `t` owned by `own`, with `adm` admin, `mem` member, `rdr`
    /// reader and a message by each of own, adm and mem.
    fn team() {
        run("SELECT progressdb.create_thread('own', 'Team', 't')");
        run("SELECT progressdb.add_member('t', 'adm', 'admin', 'own')");
        run("SELECT progressdb.add_member('t', 'mem', 'member', 'adm')");
        run("SELECT progressdb.add_member('t', 'rdr', 'reader', 'adm')");
        for who in ["own", "adm", "mem"] {
            run(&format!(
                "SELECT progressdb.post_message('t', '{who}', '{{\"text\":\"by {who}\"}}', actor => '{who}')"
            ));
        }
    }

    fn msg_of(author: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT id FROM progressdb.messages WHERE thread = 't' AND author = '{author}' ORDER BY seq LIMIT 1"
        ))
        .unwrap()
        .unwrap()
    }

    /// The SQLSTATE of `sql` run as `who`, rolled back (the plpgsql
    /// exception block of test_sqlstate_of is a subtransaction, and a success
    /// is undone by raising after it).
    fn outcome(sql: &str) -> Option<String> {
        let wrapped = format!(
            "DO $do$ BEGIN PERFORM ({sql}); RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'undo'; END $do$"
        );
        match sqlstate(&wrapped).as_deref() {
            Some("P0001") => None,
            other => other.map(str::to_string),
        }
    }

    #[pg_test]
    fn role_by_action_matrix() {
        team();
        let own_msg = msg_of("own");
        let mem_msg = msg_of("mem");
        // (action SQL with {a} for the actor, who may do it)
        let actions: Vec<(String, &[&str])> = vec![
            (
                "progressdb.list_messages('t', actor => {a})".into(),
                &["own", "adm", "mem", "rdr"],
            ),
            (
                "progressdb.get_thread('t', {a})".into(),
                &["own", "adm", "mem", "rdr"],
            ),
            (
                format!("progressdb.get_message('{mem_msg}', {{a}})"),
                &["own", "adm", "mem", "rdr"],
            ),
            (
                format!("progressdb.message_versions('{mem_msg}', {{a}})"),
                &["own", "adm", "mem", "rdr"],
            ),
            (
                format!("progressdb.replies('{mem_msg}', actor => {{a}})"),
                &["own", "adm", "mem", "rdr"],
            ),
            (
                format!("progressdb.reactions('{mem_msg}', {{a}})"),
                &["own", "adm", "mem", "rdr"],
            ),
            (
                "progressdb.list_members('t', {a})".into(),
                &["own", "adm", "mem", "rdr"],
            ),
            (
                "progressdb.mark_read('t', NULL, {a})".into(),
                &["own", "adm", "mem", "rdr"],
            ),
            (
                "progressdb.post_message('t', {a}, '{\"text\":\"x\"}', actor => {a})".into(),
                &["own", "adm", "mem"],
            ),
            (
                format!("progressdb.add_reaction('{own_msg}', {{a}}, 'ok', {{a}})"),
                &["own", "adm", "mem"],
            ),
            (
                format!("progressdb.remove_reaction('{own_msg}', {{a}}, {{a}})"),
                &["own", "adm", "mem"],
            ),
            // editing: only the author, while at least a member
            (
                format!("progressdb.edit_message('{mem_msg}', '{{\"text\":\"e\"}}', {{a}})"),
                &["mem"],
            ),
            // deleting and restoring anyone's: admins and owners (moderation)
            (
                format!("progressdb.delete_message('{mem_msg}', {{a}})"),
                &["own", "adm", "mem"],
            ),
            (
                format!("progressdb.restore_message('{mem_msg}', {{a}})"),
                &["own", "adm", "mem"],
            ),
            (
                format!("progressdb.delete_message('{own_msg}', {{a}})"),
                &["own", "adm"],
            ),
            (
                "progressdb.update_thread('t', 'Renamed', {a})".into(),
                &["own", "adm"],
            ),
            (
                "progressdb.update_thread('t', NULL, {a}, metadata => '{\"k\":1}')".into(),
                &["own", "adm"],
            ),
            (
                "progressdb.update_thread('t', NULL, {a}, history => 'joined')".into(),
                &["own"],
            ),
            (
                "progressdb.add_member('t', 'newbie', 'member', {a})".into(),
                &["own", "adm"],
            ),
            (
                "progressdb.add_member('t', 'newbie', 'reader', {a})".into(),
                &["own", "adm"],
            ),
            (
                "progressdb.add_member('t', 'newbie', 'admin', {a})".into(),
                &["own"],
            ),
            (
                "progressdb.add_member('t', 'newbie', 'owner', {a})".into(),
                &["own"],
            ),
            (
                "progressdb.add_member('t', 'mem', 'reader', {a})".into(),
                &["own", "adm"],
            ),
            (
                "progressdb.add_member('t', 'adm', 'member', {a})".into(),
                &["own"],
            ),
            (
                "progressdb.remove_member('t', 'mem', {a})".into(),
                &["own", "adm", "mem"],
            ),
            (
                "progressdb.remove_member('t', 'rdr', {a})".into(),
                &["own", "adm", "rdr"],
            ),
            (
                "progressdb.remove_member('t', 'adm', {a})".into(),
                &["own", "adm"],
            ),
            ("progressdb.delete_thread('t', {a})".into(), &["own"]),
        ];
        let callers = ["own", "adm", "mem", "rdr", "stranger"];
        let mut failures = Vec::new();
        for (template, allowed) in &actions {
            // the service (NULL actor) may do everything
            let sql = template.replace("{a}", "NULL");
            // (where NULL is not also a required argument: the poster, the
            // reacting identity, the member whose read state it is)
            let needs_a_user = [
                "mark_read",
                "post_message",
                "add_reaction",
                "remove_reaction",
            ]
            .iter()
            .any(|f| sql.contains(f));
            if !needs_a_user {
                if let Some(code) = outcome(&sql) {
                    failures.push(format!("service: {sql} -> {code}"));
                }
            }
            for who in callers {
                let sql = template.replace("{a}", &format!("'{who}'"));
                let got = outcome(&sql);
                let ok = allowed.contains(&who);
                let right = if ok {
                    got.is_none()
                } else {
                    got.as_deref() == Some("42501")
                };
                if !right {
                    failures.push(format!("{who}: {sql} -> {got:?} (allowed: {ok})"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[pg_test]
    fn creator_is_owner_and_the_last_owner_stays() {
        let t = json("SELECT progressdb.create_thread('alice', 'T', 't1')");
        assert_eq!(t["role"], "owner");
        assert_eq!(t["member_count"], 1);
        assert_eq!(t["history"], "shared");
        assert_eq!(t["metadata"], serde_json::json!({}));
        let ms = json("SELECT progressdb.list_members('t1')");
        assert_eq!(ms["members"][0]["user"], "alice");
        assert_eq!(ms["members"][0]["role"], "owner");
        assert_eq!(ms["members"][0]["added_by"], "alice");
        // auto-created by a post: the author owns it
        run("SELECT progressdb.post_message('t2', 'bob', '{\"text\":\"hi\"}')");
        assert_eq!(
            json("SELECT progressdb.list_members('t2')")["members"][0]["role"],
            "owner"
        );
        // the last owner can neither leave nor be demoted
        assert_fails(
            "SELECT progressdb.remove_member('t1', 'alice', 'alice')",
            "55000",
        );
        assert_fails("SELECT progressdb.remove_member('t1', 'alice')", "55000");
        assert_fails(
            "SELECT progressdb.add_member('t1', 'alice', 'admin', 'alice')",
            "55000",
        );
        // with a second owner, both work
        run("SELECT progressdb.add_member('t1', 'carol', 'owner', 'alice')");
        run("SELECT progressdb.add_member('t1', 'alice', 'admin', 'alice')");
        assert_fails(
            "SELECT progressdb.remove_member('t1', 'carol', 'carol')",
            "55000",
        );
        run("SELECT progressdb.add_member('t1', 'alice', 'owner', 'carol')");
        run("SELECT progressdb.remove_member('t1', 'carol', 'carol')");
        assert_eq!(
            json("SELECT progressdb.get_thread('t1')")["member_count"],
            1
        );
        // bad input
        assert_fails("SELECT progressdb.add_member('t1', 'x', 'king')", "22023");
        assert_fails("SELECT progressdb.add_member('t1', '', 'member')", "22023");
        assert_fails("SELECT progressdb.add_member('t1', NULL)", "22004");
        assert_fails("SELECT progressdb.add_member('nope', 'x')", "P0002");
        assert_fails("SELECT progressdb.remove_member('t1', 'ghost')", "P0002");
        // a non-member learns nothing about membership
        assert_fails(
            "SELECT progressdb.remove_member('t1', 'ghost', 'mallory')",
            "42501",
        );
        // adding an existing member with the same role changes nothing
        let before = json("SELECT progressdb.add_member('t1', 'dave')");
        let again = json("SELECT progressdb.add_member('t1', 'dave', 'member')");
        assert_eq!(before, again);
        assert!(before.get("added_by").is_none(), "{before}");
    }

    #[pg_test]
    fn members_list_sorted_with_a_cursor() {
        run("SELECT progressdb.create_thread('m', 'T', 't1')");
        for u in ["d", "b", "c", "a"] {
            run(&format!("SELECT progressdb.add_member('t1', '{u}')"));
        }
        let users = |v: Value| -> Vec<String> {
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["user"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            users(json("SELECT progressdb.list_members('t1', lim => 3)")),
            ["a", "b", "c"]
        );
        assert_eq!(
            users(json(
                "SELECT progressdb.list_members('t1', lim => 3, after => 'c')"
            )),
            ["d", "m"]
        );
    }

    /// With history 'joined', a member sees only what was posted after they
    /// joined, in every read path; owners see everything.
    #[pg_test]
    fn joined_history_hides_earlier_messages_everywhere() {
        run("SELECT progressdb.create_thread('own', 'T', 't', history => 'joined')");
        let old = json("SELECT progressdb.post_message('t', 'own', '{\"text\":\"before\"}')");
        let old_id = old["id"].as_str().unwrap().to_string();
        run(&format!(
            "SELECT progressdb.add_reaction('{old_id}', 'own', 'ok')"
        ));
        run(&format!(
            "SELECT progressdb.edit_message('{old_id}', '{{\"text\":\"before, edited\"}}')"
        ));
        run("SELECT progressdb.add_member('t', 'late', 'member', 'own')");
        let new = json(&format!(
            "SELECT progressdb.post_message('t', 'own', '{{\"text\":\"after\"}}', reply_to => '{old_id}')"
        ));
        let new_id = new["id"].as_str().unwrap().to_string();

        let texts = |v: &Value| -> Vec<String> {
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["body"]["text"].as_str().unwrap().to_string())
                .collect()
        };
        let page = json("SELECT progressdb.list_messages('t', actor => 'late')");
        assert_eq!(texts(&page), ["after"]);
        assert_eq!(page["pagination"]["has_before"], false);
        let page = json(&format!(
            "SELECT progressdb.list_messages('t', before => '{new_id}', actor => 'late')"
        ));
        assert_eq!(texts(&page), Vec::<String>::new());
        assert_eq!(
            texts(&json(
                "SELECT progressdb.list_messages('t', actor => 'own')"
            )),
            ["before, edited", "after"]
        );
        for f in [
            format!("progressdb.get_message('{old_id}', 'late')"),
            format!("progressdb.message_versions('{old_id}', 'late')"),
            format!("progressdb.replies('{old_id}', actor => 'late')"),
            format!("progressdb.reactions('{old_id}', 'late')"),
            format!("progressdb.add_reaction('{old_id}', 'late', 'x', 'late')"),
            format!("progressdb.mark_read('t', '{old_id}', 'late')"),
        ] {
            assert_fails(&format!("SELECT {f}"), "P0002");
        }
        // a cursor on a hidden message is no cursor for them
        assert_fails(
            &format!("SELECT progressdb.list_messages('t', after => '{old_id}', actor => 'late')"),
            "22023",
        );
        assert_eq!(
            json(&format!(
                "SELECT progressdb.get_message('{new_id}', 'late')"
            ))["id"],
            new_id.as_str()
        );
        // the thread's last message and unread follow the same rule
        let t = json("SELECT progressdb.get_thread('t', 'late')");
        assert_eq!(t["last_message"]["id"], new_id.as_str());
        assert_eq!(t["unread"], 1);
        // shared history: the whole timeline
        run("SELECT progressdb.update_thread('t', NULL, 'own', history => 'shared')");
        assert_eq!(
            texts(&json(
                "SELECT progressdb.list_messages('t', actor => 'late')"
            )),
            ["before, edited", "after"]
        );
        assert_eq!(
            json(&format!(
                "SELECT progressdb.message_versions('{old_id}', 'late')"
            ))["versions"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[pg_test]
    fn read_state_is_monotonic_and_unread_excludes_own_and_deleted() {
        run("SELECT progressdb.create_thread('bob', 'Help', 'h')");
        run("SELECT progressdb.post_message('h', 'bob', '{\"text\":\"help\"}')");
        run("SELECT progressdb.add_member('h', 'carol', 'member', 'bob')");
        // read state starts where carol joined
        assert_eq!(
            json("SELECT progressdb.get_thread('h', 'carol')")["unread"],
            0
        );
        let mut ids = Vec::new();
        for i in 0..4 {
            let m = json(&format!(
                "SELECT progressdb.post_message('h', 'bob', '{{\"text\":\"q{i}\"}}')"
            ));
            ids.push(m["id"].as_str().unwrap().to_string());
        }
        run("SELECT progressdb.post_message('h', 'carol', '{\"text\":\"mine\"}')");
        assert_eq!(
            json("SELECT progressdb.get_thread('h', 'carol')")["unread"],
            4
        );
        assert_eq!(
            json("SELECT progressdb.get_thread('h', 'bob')")["unread"],
            1
        );
        run(&format!("SELECT progressdb.delete_message('{}')", ids[3]));
        assert_eq!(
            json("SELECT progressdb.get_thread('h', 'carol')")["unread"],
            3
        );
        let r = json(&format!(
            "SELECT progressdb.mark_read('h', '{}', 'carol')",
            ids[1]
        ));
        assert_eq!(r["last_read"], ids[1].as_str());
        assert_eq!(r["unread"], 1);
        assert_eq!(r["user"], "carol");
        // never backwards
        let r = json(&format!(
            "SELECT progressdb.mark_read('h', '{}', 'carol')",
            ids[0]
        ));
        assert_eq!(r["last_read"], ids[1].as_str());
        assert_eq!(r["unread"], 1);
        // NULL = the newest visible message
        let r = json("SELECT progressdb.mark_read('h', NULL, 'carol')");
        assert_eq!(r["unread"], 0);
        let t = json("SELECT progressdb.get_thread('h', 'carol')");
        assert_eq!(t["last_read"], r["last_read"]);
        assert_eq!(t["role"], "member");
        assert_fails("SELECT progressdb.mark_read('h')", "22004");
        assert_fails(
            "SELECT progressdb.mark_read('h', NULL, 'stranger')",
            "42501",
        );
        assert_fails(
            "SELECT progressdb.mark_read('h', 'msg-nope', 'carol')",
            "P0002",
        );
        // an empty thread: nothing to read
        run("SELECT progressdb.create_thread('bob', 'Empty', 'e')");
        let r = json("SELECT progressdb.mark_read('e', NULL, 'bob')");
        assert_eq!(r["last_read"], Value::Null);
        assert_eq!(r["unread"], 0);
        // a service view carries no member fields
        let t = json("SELECT progressdb.get_thread('h')");
        assert!(t.get("role").is_none() && t.get("unread").is_none(), "{t}");
        assert_eq!(t["last_message"]["author"], "carol");
    }

    #[pg_test]
    fn a_removed_member_loses_access_and_authors_keep_rights_only_as_members() {
        run("SELECT progressdb.create_thread('own', 'T', 't')");
        run("SELECT progressdb.add_member('t', 'mem', 'member', 'own')");
        let m =
            json("SELECT progressdb.post_message('t', 'mem', '{\"text\":\"x\"}', actor => 'mem')");
        let id = m["id"].as_str().unwrap();
        run("SELECT progressdb.add_member('t', 'mem', 'reader', 'own')");
        assert_fails(
            &format!("SELECT progressdb.edit_message('{id}', '{{\"text\":\"y\"}}', 'mem')"),
            "42501",
        );
        assert_eq!(
            sqlstate(&format!("SELECT progressdb.get_message('{id}', 'mem')")),
            None
        );
        run("SELECT progressdb.remove_member('t', 'mem', 'own')");
        assert_fails(
            &format!("SELECT progressdb.get_message('{id}', 'mem')"),
            "42501",
        );
        assert_fails(
            "SELECT progressdb.list_messages('t', actor => 'mem')",
            "42501",
        );
        assert_eq!(
            json("SELECT progressdb.list_threads('mem')"),
            serde_json::json!({"threads": []})
        );
        // posting as someone else is refused
        assert_fails(
            "SELECT progressdb.post_message('t', 'own', '{\"text\":\"x\"}', actor => 'mem')",
            "42501",
        );
    }

    #[pg_test]
    fn inbox_newest_activity_first_with_metadata_and_cursor() {
        for (id, meta) in [
            ("a", r#"{"team":"red","prio":1}"#),
            ("b", r#"{"team":"blue"}"#),
            ("c", r#"{"team":"red"}"#),
        ] {
            run(&format!(
                "SELECT progressdb.create_thread('u', 'Thread {id}', '{id}', metadata => '{meta}')"
            ));
        }
        run("SELECT progressdb.create_thread('other', 'Not mine', 'z')");
        // activity: b, then a, then c is the newest
        for id in ["b", "a", "c"] {
            run(&format!(
                "SELECT progressdb.post_message('{id}', 'u', '{{\"text\":\"hi\"}}')"
            ));
        }
        let ids = |v: Value| -> Vec<String> {
            v["threads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            ids(json("SELECT progressdb.list_threads('u')")),
            ["c", "a", "b"]
        );
        assert_eq!(
            ids(json("SELECT progressdb.list_threads(NULL)")),
            ["c", "a", "b", "z"]
        );
        // a new post moves a thread to the top
        run("SELECT progressdb.post_message('b', 'u', '{\"text\":\"again\"}')");
        let page1 = json("SELECT progressdb.list_threads('u', lim => 2)");
        assert_eq!(ids(page1.clone()), ["b", "c"]);
        let cursor_ts = page1["threads"][1]["last_activity_ts"].as_i64().unwrap();
        // the cursor thread gets a message meanwhile: with before_ts the next
        // page still continues after it
        run("SELECT progressdb.post_message('c', 'u', '{\"text\":\"meanwhile\"}')");
        assert_eq!(
            ids(json(&format!(
                "SELECT progressdb.list_threads('u', lim => 2, before => 'c', before_ts => {cursor_ts})"
            ))),
            ["a"]
        );
        // metadata containment, for a user and for the service
        assert_eq!(
            ids(json(
                "SELECT progressdb.list_threads('u', metadata => '{\"team\":\"red\"}')"
            )),
            ["c", "a"]
        );
        assert_eq!(
            ids(json(
                "SELECT progressdb.list_threads(NULL, metadata => '{\"team\":\"red\",\"prio\":1}')"
            )),
            ["a"]
        );
        assert_fails(
            "SELECT progressdb.list_threads('u', metadata => '[1]')",
            "22023",
        );
        assert_fails(
            "SELECT progressdb.list_threads('u', before_ts => 1)",
            "22023",
        );
        let t = json("SELECT progressdb.list_threads('u', lim => 1)");
        let t = &t["threads"][0];
        assert_eq!(t["last_message"]["body"]["text"], "meanwhile");
        assert_eq!(t["role"], "owner");
        assert_eq!(t["unread"], 0);
    }

    #[pg_test]
    fn metadata_and_history_are_checked_and_updated() {
        run("SELECT progressdb.create_thread('o', 'T', 't', metadata => '{\"a\":1}')");
        assert_fails(
            "SELECT progressdb.create_thread('o', 'T', 'x1', metadata => '\"s\"')",
            "22023",
        );
        assert_fails(
            "SELECT progressdb.create_thread('o', 'T', 'x2', metadata => jsonb_build_object('k', repeat('x', 17000)))",
            "22023",
        );
        assert_fails(
            "SELECT progressdb.create_thread('o', 'T', 'x3', history => 'forever')",
            "22023",
        );
        assert_fails("SELECT progressdb.update_thread('t', NULL)", "22004");
        let t = json("SELECT progressdb.update_thread('t', NULL, metadata => '{\"b\":2}')");
        assert_eq!(t["metadata"], serde_json::json!({"b": 2}));
        assert_eq!(t["title"], "T");
        let t = json("SELECT progressdb.update_thread('t', NULL, history => 'joined')");
        assert_eq!(t["history"], "joined");
        assert_eq!(t["metadata"], serde_json::json!({"b": 2}));
        // nothing is half-written when one part is refused
        run("SELECT progressdb.add_member('t', 'adm', 'admin', 'o')");
        assert_fails(
            "SELECT progressdb.update_thread('t', 'New', 'adm', history => 'shared')",
            "42501",
        );
        assert_eq!(json("SELECT progressdb.get_thread('t')")["title"], "T");
    }
}
