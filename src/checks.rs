//! Input checks shared by every primitive, as native functions: the SQL
//! functions call them in plain assignments (`x := progressdb._ident(…)`),
//! which PL/pgSQL evaluates on its fast path, without an executor round trip.

use pgrx::prelude::*;

/// Why a value was refused: NULL where one is required (22004), or out of
/// range (22023).
#[derive(Debug, PartialEq)]
pub enum Refusal {
    Missing(String),
    Invalid(String),
}

/// Identifiers (thread ids, message ids, authors, identities): 1–128 characters.
pub fn check_ident(what: &str, val: Option<&str>) -> Result<(), Refusal> {
    let Some(v) = val else {
        return Err(Refusal::Missing(format!("{what} is required")));
    };
    let n = v.chars().count();
    if !(1..=128).contains(&n) {
        return Err(Refusal::Invalid(format!(
            "{what} must be 1-128 characters (got {n})"
        )));
    }
    Ok(())
}

/// Free text with an upper bound that must not be blank (titles, roles, reactions).
pub fn check_text(what: &str, val: Option<&str>, max_chars: i32) -> Result<(), Refusal> {
    let Some(v) = val else {
        return Err(Refusal::Missing(format!("{what} is required")));
    };
    if v.trim().is_empty() {
        return Err(Refusal::Invalid(format!("{what} must not be empty")));
    }
    if v.chars().count() > max_chars.max(0) as usize {
        return Err(Refusal::Invalid(format!(
            "{what} must be at most {max_chars} characters"
        )));
    }
    Ok(())
}

/// Page sizes: 1–1000.
pub fn check_limit(lim: Option<i32>) -> Result<(), Refusal> {
    match lim {
        Some(1..=1000) => Ok(()),
        Some(n) => Err(Refusal::Invalid(format!(
            "limit must be between 1 and 1000 (got {n})"
        ))),
        None => Err(Refusal::Invalid(
            "limit must be between 1 and 1000 (got null)".into(),
        )),
    }
}

/// Raises a PostgreSQL error with `code`; never returns.
pub fn fail(code: PgSqlErrorCode, msg: String) -> ! {
    ereport!(ERROR, code, msg);
}

fn raise(r: Refusal) -> ! {
    match r {
        Refusal::Missing(m) => fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, m),
        Refusal::Invalid(m) => fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, m),
    }
}

#[pg_extern(immutable, parallel_safe)]
fn _ident(what: &str, val: Option<&str>) -> String {
    check_ident(what, val).unwrap_or_else(|r| raise(r));
    val.unwrap_or_default().to_string()
}

#[pg_extern(immutable, parallel_safe)]
fn _text(what: &str, val: Option<&str>, max_chars: i32) -> String {
    check_text(what, val, max_chars).unwrap_or_else(|r| raise(r));
    val.unwrap_or_default().to_string()
}

#[pg_extern(immutable, parallel_safe)]
fn _limit(lim: Option<i32>) -> i32 {
    check_limit(lim).unwrap_or_else(|r| raise(r));
    lim.unwrap_or_default()
}

/// How deeply arrays and objects nest in a JSON text (0 for a scalar),
/// counting only brackets outside strings. Bodies are handed to Rust as
/// parsed JSON, whose parser stops at 128 levels with an internal error, so
/// a body is refused well before that, as a client error (sql/messages.sql).
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[pg_extern(immutable, strict, parallel_safe)]
fn _json_depth(doc: &str) -> i32 {
    i32::try_from(json_depth(doc)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn identifiers_are_one_to_128_characters() {
        assert!(check_ident("id", Some("a")).is_ok());
        assert!(
            check_ident("id", Some(&"é".repeat(128))).is_ok(),
            "characters, not bytes"
        );
        assert!(matches!(
            check_ident("id", Some("")),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            check_ident("id", Some(&"a".repeat(129))),
            Err(Refusal::Invalid(_))
        ));
        assert_eq!(
            check_ident("author", None),
            Err(Refusal::Missing("author is required".into()))
        );
    }

    #[test]
    fn text_must_not_be_blank_or_too_long() {
        assert!(check_text("title", Some("Hi"), 5).is_ok());
        assert!(matches!(
            check_text("title", Some("  "), 5),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            check_text("title", Some("toolong"), 5),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            check_text("title", None, 5),
            Err(Refusal::Missing(_))
        ));
    }

    #[test]
    fn limits_are_one_to_a_thousand() {
        assert!(check_limit(Some(1)).is_ok() && check_limit(Some(1000)).is_ok());
        for bad in [Some(0), Some(1001), Some(-5), None] {
            assert!(
                matches!(check_limit(bad), Err(Refusal::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(json_depth(r#"{"a":"[[[[{{{{\"]]]"}"#), 1);
        assert_eq!(json_depth(r#"["\\",["x"]]"#), 2);
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        assert_eq!(json_depth(&deep), 500);
    }
}
