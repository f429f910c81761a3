//! Reactions: one per identity per message, latest wins (SQL in `sql/reactions.sql`).

use pgrx::prelude::*;

extension_sql_file!(
    "../sql/reactions.sql",
    name = "reactions",
    requires = ["messages"]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;
    use serde_json::json;

    #[pg_test]
    fn one_reaction_per_identity_latest_wins_sorted_by_identity() {
        let m = json("SELECT progressdb.post_message('t', 'alice', '{}')");
        let id = m["id"].as_str().unwrap();
        run(&format!(
            "SELECT progressdb.add_reaction('{id}', 'zed', '👍')"
        ));
        run(&format!(
            "SELECT progressdb.add_reaction('{id}', 'bob', '👍')"
        ));
        let latest = json(&format!(
            "SELECT progressdb.add_reaction('{id}', 'bob', '🎉')"
        ));
        assert_eq!(latest["reactions"], json!({"bob": "🎉", "zed": "👍"}));
        run(&format!(
            "SELECT progressdb.add_reaction('{id}', 'amy', 'ok')"
        ));
        assert_eq!(
            json(&format!("SELECT progressdb.reactions('{id}')")),
            json!({"id": id, "reactions": [
                {"id": "amy", "reaction": "ok"},
                {"id": "bob", "reaction": "🎉"},
                {"id": "zed", "reaction": "👍"}]})
        );
    }

    #[pg_test]
    fn remove_reaction_is_idempotent() {
        let m = json("SELECT progressdb.post_message('t', 'alice', '{}')");
        let id = m["id"].as_str().unwrap();
        run(&format!(
            "SELECT progressdb.add_reaction('{id}', 'bob', 'x')"
        ));
        run(&format!("SELECT progressdb.remove_reaction('{id}', 'bob')"));
        run(&format!("SELECT progressdb.remove_reaction('{id}', 'bob')"));
        assert_eq!(
            json(&format!("SELECT progressdb.reactions('{id}')"))["reactions"],
            json!([])
        );
        assert!(json(&format!("SELECT progressdb.get_message('{id}')"))
            .get("reactions")
            .is_none());
    }

    #[pg_test]
    fn reactions_validate_input_and_access() {
        let m = json("SELECT progressdb.post_message('t', 'alice', '{}')");
        let id = m["id"].as_str().unwrap();
        assert_fails(
            &format!("SELECT progressdb.add_reaction('{id}', '', 'x')"),
            "22023",
        );
        assert_fails(
            &format!("SELECT progressdb.add_reaction('{id}', NULL, 'x')"),
            "22004",
        );
        assert_fails(
            &format!("SELECT progressdb.add_reaction('{id}', 'bob', NULL)"),
            "22004",
        );
        assert_fails(
            &format!("SELECT progressdb.add_reaction('{id}', 'bob', '')"),
            "22023",
        );
        assert_fails(
            &format!("SELECT progressdb.add_reaction('{id}', 'bob', 'x', 'bob')"),
            "42501",
        );
        assert_fails(
            &format!("SELECT progressdb.add_reaction('{id}', 'bob', 'x', in_thread => 'u')"),
            "P0002",
        );
        assert_fails(
            &format!("SELECT progressdb.reactions('{id}', 'bob')"),
            "42501",
        );
        assert_fails(
            &format!("SELECT progressdb.remove_reaction('{id}', 'bob', 'bob')"),
            "42501",
        );
        assert_fails(
            "SELECT progressdb.add_reaction('msg-nope', 'bob', 'x')",
            "P0002",
        );
        let n = Spi::get_one::<bool>("SELECT reactions = '{}' FROM progressdb.messages").unwrap();
        assert_eq!(n, Some(true));
    }
}
