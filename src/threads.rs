//! Threads: create, read, list, rename, soft delete (SQL in `sql/threads.sql`).

use pgrx::prelude::*;

extension_sql_file!("../sql/threads.sql", name = "threads");

/// The thread slug of API.md: the title lower-cased, every run of characters
/// outside `[a-z0-9]` turned into one `-`, trimmed of `-`, then `-<id>`.
pub fn make_slug(title: &str, id: &str) -> String {
    let mut slug = String::with_capacity(title.len() + id.len() + 1);
    let mut pending_dash = false;
    for c in title.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_dash && !slug.is_empty() {
                slug.push('-');
            }
            pending_dash = false;
            slug.push(c);
        } else {
            pending_dash = true;
        }
    }
    if slug.is_empty() {
        return id.to_string();
    }
    slug.push('-');
    slug.push_str(id);
    slug
}

#[pg_extern(immutable, parallel_safe)]
pub fn slugify(title: &str, id: &str) -> String {
    make_slug(title, id)
}

#[cfg(test)]
mod unit {
    use super::make_slug;

    #[test]
    fn slug_follows_the_api_example() {
        assert_eq!(
            make_slug("New Thread #3", "general"),
            "new-thread-3-general"
        );
    }

    #[test]
    fn slug_collapses_and_trims_separators() {
        assert_eq!(make_slug("  --Hello,   World!!  ", "t1"), "hello-world-t1");
        assert_eq!(make_slug("Crème brûlée", "x"), "cr-me-br-l-e-x");
    }

    #[test]
    fn slug_of_a_title_without_letters_is_the_id() {
        assert_eq!(make_slug("!!!", "t9"), "t9");
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run, sqlstate};
    use pgrx::prelude::*;
    use serde_json::json;

    #[pg_test]
    fn create_thread_with_defaults_and_get_it_back() {
        let t = json("SELECT progressdb.create_thread('alice')");
        let id = t["id"].as_str().unwrap();
        assert!(id.starts_with("thread-"), "{t}");
        let title = t["title"].as_str().unwrap();
        assert!(title.starts_with("New Thread #"), "{t}");
        assert_eq!(t["author"], "alice");
        assert!(t["slug"].as_str().unwrap().starts_with("new-thread-"));
        assert!(t["created_ts"].as_i64().unwrap() > 1_600_000_000_000_000_000);
        assert!(t.get("deleted").is_none() && t.get("encrypted").is_none());
        // the creator's view (role, unread), as create_thread returned it
        let again = json(&format!("SELECT progressdb.get_thread('{id}', 'alice')"));
        assert_eq!(again, t);
        assert_eq!(t["role"], "owner");
        assert_eq!(t["member_count"], 1);
        assert_eq!(t["last_activity_ts"], t["created_ts"]);
    }

    #[pg_test]
    fn create_thread_with_client_id_and_title() {
        let t = json("SELECT progressdb.create_thread('alice', 'Support: Login', 'general')");
        assert_eq!(t["id"], "general");
        assert_eq!(t["title"], "Support: Login");
        assert_eq!(t["slug"], "support-login-general");
    }

    #[pg_test]
    fn create_thread_rejects_bad_input_and_duplicates() {
        assert_fails("SELECT progressdb.create_thread(NULL)", "22004");
        assert_fails("SELECT progressdb.create_thread('')", "22023");
        assert_fails(
            &format!("SELECT progressdb.create_thread('{}')", "a".repeat(129)),
            "22023",
        );
        assert_fails(
            &format!(
                "SELECT progressdb.create_thread('alice', NULL, '{}')",
                "t".repeat(129)
            ),
            "22023",
        );
        assert_fails(
            "SELECT progressdb.create_thread('alice', NULL, '')",
            "22023",
        );
        assert_fails("SELECT progressdb.create_thread('alice', '   ')", "22023");
        run("SELECT progressdb.create_thread('alice', NULL, 'dup')");
        assert_fails(
            "SELECT progressdb.create_thread('bob', NULL, 'dup')",
            "23505",
        );
        let owner =
            Spi::get_one::<String>("SELECT author FROM progressdb.threads WHERE id = 'dup'");
        assert_eq!(owner.unwrap().as_deref(), Some("alice"));
        // 128 characters is still fine.
        assert_eq!(
            sqlstate(&format!(
                "SELECT progressdb.create_thread('alice', NULL, '{}')",
                "t".repeat(128)
            )),
            None
        );
    }

    #[pg_test]
    fn get_thread_checks_existence_and_ownership() {
        run("SELECT progressdb.create_thread('alice', 'Mine', 't1')");
        assert_fails("SELECT progressdb.get_thread('nope')", "P0002");
        assert_fails("SELECT progressdb.get_thread('t1', 'bob')", "42501");
        assert_eq!(
            json("SELECT progressdb.get_thread('t1', 'alice')")["id"],
            "t1"
        );
        assert_eq!(json("SELECT progressdb.get_thread('t1')")["id"], "t1");
    }

    #[pg_test]
    fn list_threads_filters_by_owner_title_slug_and_pages() {
        run("SELECT progressdb.create_thread('alice', 'A', 'a1')");
        run("SELECT progressdb.create_thread('alice', 'B', 'a2')");
        run("SELECT progressdb.create_thread('alice', 'C', 'a3')");
        run("SELECT progressdb.create_thread('bob', 'B', 'b1')");
        let ids = |v: serde_json::Value| -> Vec<String> {
            v["threads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            ids(json("SELECT progressdb.list_threads('alice')")),
            ["a3", "a2", "a1"]
        );
        assert_eq!(ids(json("SELECT progressdb.list_threads(NULL)")).len(), 4);
        assert_eq!(
            ids(json("SELECT progressdb.list_threads(NULL, 'B')")),
            ["b1", "a2"]
        );
        assert_eq!(
            ids(json("SELECT progressdb.list_threads(NULL, slug => 'b-b1')")),
            ["b1"]
        );
        // title is a case-insensitive substring (as the original SDK expects);
        // LIKE metacharacters in it are plain characters.
        run("SELECT progressdb.create_thread('dave', 'Support: Login Problems', 'c1')");
        run("SELECT progressdb.create_thread('dave', '100% _done_', 'c2')");
        assert_eq!(
            ids(json("SELECT progressdb.list_threads(NULL, 'login')")),
            ["c1"]
        );
        assert_eq!(
            ids(json(
                "SELECT progressdb.list_threads('dave', 'SUPPORT: LOG')"
            )),
            ["c1"]
        );
        assert_eq!(
            ids(json("SELECT progressdb.list_threads(NULL, '% _')")),
            ["c2"]
        );
        assert_eq!(
            ids(json(
                "SELECT progressdb.list_threads(NULL, 'nothing like it')"
            )),
            Vec::<String>::new()
        );
        // slug stays exact
        assert_eq!(
            ids(json("SELECT progressdb.list_threads(NULL, slug => 'b')")),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(json("SELECT progressdb.list_threads('alice', lim => 2)")),
            ["a3", "a2"]
        );
        assert_eq!(
            ids(json(
                "SELECT progressdb.list_threads('alice', lim => 2, before => 'a2')"
            )),
            ["a1"]
        );
        assert_eq!(
            json("SELECT progressdb.list_threads('carol')"),
            json!({"threads": []})
        );
        assert_fails("SELECT progressdb.list_threads('alice', lim => 0)", "22023");
        assert_fails(
            "SELECT progressdb.list_threads('alice', lim => 1001)",
            "22023",
        );
        assert_fails(
            "SELECT progressdb.list_threads('alice', before => 'zzz')",
            "22023",
        );
    }

    #[pg_test]
    fn update_thread_renames_and_reslugs() {
        run("SELECT progressdb.create_thread('alice', 'Old', 't1')");
        let t = json("SELECT progressdb.update_thread('t1', 'Brand New', 'alice')");
        assert_eq!(t["title"], "Brand New");
        assert_eq!(t["slug"], "brand-new-t1");
        assert!(t["updated_ts"].as_i64() >= t["created_ts"].as_i64());
        assert_fails(
            "SELECT progressdb.update_thread('t1', 'Hijack', 'bob')",
            "42501",
        );
        assert_fails("SELECT progressdb.update_thread('t1', '')", "22023");
        assert_fails("SELECT progressdb.update_thread('nope', 'x')", "P0002");
        assert_eq!(
            json("SELECT progressdb.get_thread('t1')")["title"],
            "Brand New"
        );
    }

    #[pg_test]
    fn delete_thread_is_soft_and_owner_only() {
        run("SELECT progressdb.create_thread('alice', 'T', 't1')");
        assert_fails("SELECT progressdb.delete_thread('t1', 'bob')", "42501");
        run("SELECT progressdb.delete_thread('t1', 'alice')");
        assert_fails("SELECT progressdb.get_thread('t1')", "P0002");
        assert_eq!(
            json("SELECT progressdb.list_threads('alice')"),
            json!({"threads": []})
        );
        let kept = Spi::get_one::<bool>(
            "SELECT deleted_ts IS NOT NULL FROM progressdb.threads WHERE id = 't1'",
        );
        assert_eq!(kept.unwrap(), Some(true));
        assert_fails("SELECT progressdb.delete_thread('t1')", "P0002");
    }

    #[pg_test]
    fn stats_count_live_threads_and_messages() {
        run("SELECT progressdb.post_message('t1', 'alice', '{\"text\":\"a\"}')");
        run("SELECT progressdb.post_message('t1', 'alice', '{\"text\":\"b\"}')");
        run("SELECT progressdb.create_thread('bob', 'x', 't2')");
        assert_eq!(
            json("SELECT progressdb.stats()"),
            json!({"threads": 2, "messages": 2})
        );
    }
}
