//! Replies: messages answering a message (SQL in `sql/replies.sql`).

use pgrx::prelude::*;

extension_sql_file!(
    "../sql/replies.sql",
    name = "replies",
    requires = ["messages"]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;

    #[pg_test]
    fn replies_list_answers_in_order_and_skip_deleted() {
        let root = json("SELECT progressdb.post_message('t', 'alice', '{\"text\":\"q\"}')");
        let id = root["id"].as_str().unwrap();
        let r1 = json(&format!(
            "SELECT progressdb.post_message('t', 'bob', '{{\"text\":\"a1\"}}', reply_to => '{id}')"
        ));
        assert_eq!(r1["reply_to"], root["id"]);
        let r2 = json(&format!("SELECT progressdb.post_message('t', 'carol', '{{\"text\":\"a2\"}}', reply_to => '{id}')"));
        json(&format!("SELECT progressdb.post_message('t', 'dave', '{{\"text\":\"a3\"}}', reply_to => '{id}')"));
        run("SELECT progressdb.post_message('t', 'alice', '{\"text\":\"unrelated\"}')");
        run(&format!(
            "SELECT progressdb.delete_message('{}')",
            r2["id"].as_str().unwrap()
        ));
        let r = json(&format!("SELECT progressdb.replies('{id}')"));
        assert_eq!(r["id"], root["id"]);
        let texts: Vec<&str> = r["replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["a1", "a3"]);
        let one = json(&format!("SELECT progressdb.replies('{id}', 1)"));
        assert_eq!(one["replies"].as_array().unwrap().len(), 1);
    }

    #[pg_test]
    fn reply_to_must_be_in_the_same_thread() {
        let other = json("SELECT progressdb.post_message('elsewhere', 'alice', '{}')");
        let id = other["id"].as_str().unwrap();
        assert_fails(
            &format!("SELECT progressdb.post_message('t', 'alice', '{{}}', reply_to => '{id}')"),
            "22023",
        );
        let n = Spi::get_one::<i64>("SELECT count(*) FROM progressdb.messages").unwrap();
        assert_eq!(n, Some(1));
    }

    #[pg_test]
    fn replies_validate_limit_and_access() {
        let root = json("SELECT progressdb.post_message('t', 'alice', '{}')");
        let id = root["id"].as_str().unwrap();
        assert_fails(&format!("SELECT progressdb.replies('{id}', 0)"), "22023");
        assert_fails(
            &format!("SELECT progressdb.replies('{id}', actor => 'bob')"),
            "42501",
        );
        assert_fails("SELECT progressdb.replies('msg-nope')", "P0002");
    }
}
