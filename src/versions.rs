//! Message versions: the trigger that keeps previous contents, and
//! `message_versions` (SQL in `sql/versions.sql`).

use pgrx::prelude::*;

extension_sql_file!(
    "../sql/versions.sql",
    name = "versions",
    requires = ["messages"]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;

    fn bodies(v: &serde_json::Value) -> Vec<String> {
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"]["text"].as_str().unwrap().to_string())
            .collect()
    }

    #[pg_test]
    fn edits_keep_history_oldest_first_current_last() {
        let m = json("SELECT progressdb.post_message('t', 'alice', '{\"text\":\"v1\"}')");
        let id = m["id"].as_str().unwrap();
        run(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"v2\"}}')"
        ));
        run(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"v3\"}}')"
        ));
        let v = json(&format!("SELECT progressdb.message_versions('{id}')"));
        assert_eq!(v["id"], m["id"]);
        assert_eq!(bodies(&v), ["v1", "v2", "v3"]);
        let nums: Vec<i64> = v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["version"].as_i64().unwrap())
            .collect();
        assert_eq!(nums, [1, 2, 3]);
        assert_eq!(v["versions"][0]["ts"], m["ts"]);
        assert_eq!(v["versions"][0]["updated_ts"], m["updated_ts"]);
    }

    #[pg_test]
    fn a_plain_update_creates_a_version() {
        let m = json("SELECT progressdb.post_message('t', 'alice', '{\"text\":\"before\"}')");
        let id = m["id"].as_str().unwrap();
        run(&format!(
            "UPDATE progressdb.messages SET body = '{{\"text\":\"after\"}}' WHERE id = '{id}'"
        ));
        let v = json(&format!("SELECT progressdb.message_versions('{id}')"));
        assert_eq!(bodies(&v), ["before", "after"]);
        assert_eq!(
            json(&format!("SELECT progressdb.get_message('{id}')"))["version"],
            2
        );
    }

    #[pg_test]
    fn reactions_deletes_and_identical_bodies_make_no_version() {
        let m = json("SELECT progressdb.post_message('t', 'alice', '{\"text\":\"same\"}')");
        let id = m["id"].as_str().unwrap();
        run(&format!(
            "SELECT progressdb.add_reaction('{id}', 'bob', 'x')"
        ));
        run(&format!("SELECT progressdb.delete_message('{id}')"));
        run(&format!("SELECT progressdb.restore_message('{id}')"));
        run(&format!(
            "UPDATE progressdb.messages SET body = body WHERE id = '{id}'"
        ));
        let n = Spi::get_one::<i64>("SELECT count(*) FROM progressdb.message_versions").unwrap();
        assert_eq!(n, Some(0));
        assert_eq!(
            json(&format!("SELECT progressdb.get_message('{id}')"))["version"],
            1
        );
    }

    #[pg_test]
    fn versions_are_owner_checked_and_thread_scoped() {
        let m = json("SELECT progressdb.post_message('t', 'alice', '{\"text\":\"a\"}')");
        let id = m["id"].as_str().unwrap();
        assert_fails(
            &format!("SELECT progressdb.message_versions('{id}', 'bob')"),
            "42501",
        );
        assert_fails(
            &format!("SELECT progressdb.message_versions('{id}', in_thread => 'u')"),
            "P0002",
        );
        assert_fails("SELECT progressdb.message_versions('msg-nope')", "P0002");
        assert_eq!(
            bodies(&json(&format!(
                "SELECT progressdb.message_versions('{id}', 'alice', 't')"
            ))),
            ["a"]
        );
    }
}
