//! Helpers for `#[pg_test]`s: run SQL and report the SQLSTATE it failed with.

use pgrx::prelude::*;

// A plpgsql exception block is a real subtransaction, so a failing statement
// is rolled back cleanly and the test's transaction stays usable.
extension_sql!(
    r#"
CREATE FUNCTION progressdb.test_sqlstate_of(q text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;
"#,
    name = "test_sqlstate_of",
    finalize
);

/// The SQLSTATE that `sql` fails with, or None when it succeeds.
pub fn sqlstate(sql: &str) -> Option<String> {
    Spi::get_one_with_args::<String>("SELECT progressdb.test_sqlstate_of($1)", &[sql.into()])
        .expect("test_sqlstate_of")
}

/// Asserts that `sql` fails with `code`.
pub fn assert_fails(sql: &str, code: &str) {
    assert_eq!(sqlstate(sql).as_deref(), Some(code), "SQLSTATE of: {sql}");
}

/// Runs a query returning one jsonb value.
pub fn json(sql: &str) -> serde_json::Value {
    Spi::get_one::<pgrx::JsonB>(sql)
        .expect("query")
        .expect("non-null jsonb")
        .0
}

/// Runs a statement that must succeed.
pub fn run(sql: &str) {
    Spi::run(sql).expect(sql)
}
