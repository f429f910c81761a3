//! Full-text search (sql/search.sql): the text of a message that is searched,
//! the keyed blind index of encrypted threads, and the opaque page cursor.
//!
//! Blind index: the words of an encrypted message are split and normalised
//! by PostgreSQL exactly as plaintext ones are (`to_tsvector` with the search
//! configuration), then each distinct word is replaced by
//! HMAC-SHA256(search key, word), truncated to 96 bits, in hex. The search key
//! is derived from the thread's current data key (`crypto::derived_key`), so
//! it exists only inside the backend, differs per thread, and changes when the
//! thread's key is rotated (rotate_thread_key recomputes the terms). A query
//! is blinded the same way, lexeme by lexeme, keeping its operators.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use crate::checks::fail;
use crate::{crypto, guc};

extension_sql_file!(
    "../sql/search.sql",
    name = "search",
    requires = [
        "crypto",
        "versions",
        "events",
        search_text,
        blind_terms,
        blind_query,
        encrypted_search,
        search_cursor,
        search_cursor_position
    ]
);

/// The label of the search key derived from a thread's data key. Changing it
/// makes every stored blind term unreachable (recompute them).
const SEARCH_KEY_LABEL: &[u8] = b"progressdb search v1";
/// Bytes of the HMAC kept per term: 96 bits make a collision between two
/// words of one thread practically impossible, and keep the index small.
const TERM_BYTES: usize = 12;

/// What a reader sees of a body, as one text: `text` and `content` when
/// they are strings (chat and LLM messages), otherwise every string value
/// of the document (not the keys; objects in key order).
pub fn body_text(body: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(map) = body {
        for key in ["text", "content"] {
            if let Some(Value::String(s)) = map.get(key) {
                push_part(&mut out, s);
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    collect_strings(body, &mut out);
    out
}

fn push_part(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(s);
}

fn collect_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => push_part(out, s),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

/// The searched text of a (plaintext) body.
#[pg_extern(immutable, parallel_safe, strict, name = "_search_text")]
fn search_text(body: JsonB) -> String {
    body_text(&body.0)
}

/// One blind term: the truncated HMAC of a normalised word, in hex.
pub fn blind_term(key: &[u8; 32], word: &str) -> String {
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(word.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..TERM_BYTES])
}

fn search_key(thread: &str, dek_id: i64) -> [u8; 32] {
    crypto::derived_key(thread, dek_id, SEARCH_KEY_LABEL)
}

/// The blind terms of a message's distinct words (`to_tsvector` lexemes).
#[pg_extern(stable, strict, name = "_blind_terms")]
fn blind_terms(thread: &str, dek_id: i64, words: Vec<Option<String>>) -> Vec<String> {
    let key = search_key(thread, dek_id);
    words
        .iter()
        .flatten()
        .map(|w| blind_term(&key, w))
        .collect()
}

/// Replaces every lexeme of a tsquery's text by its blind term, and phrase
/// operators by AND. Prefix and weight marks (`:*`, `:AB`) are dropped: a
/// hash has no prefixes.
pub fn blind_query_text(query: &str, term: impl Fn(&str) -> String) -> Result<String, String> {
    let mut out = String::with_capacity(query.len() * 2);
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '<' {
            // A phrase operator (<->, <N>): blind terms have no positions, and
            // a phrase never matches a vector without them. Its AND finds the
            // candidates; sql/search.sql checks the phrase on their text.
            // (<-> binds tighter than &, so its operands are already
            // parenthesised where that matters.)
            for n in chars.by_ref() {
                if n == '>' {
                    break;
                }
            }
            out.push('&');
            continue;
        }
        if c != '\'' {
            out.push(c);
            continue;
        }
        // A quoted lexeme: '' is a quote, a backslash escapes the next character.
        let mut word = String::new();
        loop {
            match chars.next() {
                None => return Err("unterminated lexeme in query".into()),
                Some('\\') => match chars.next() {
                    Some(n) => word.push(n),
                    None => return Err("unterminated lexeme in query".into()),
                },
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    word.push('\'');
                }
                Some('\'') => break,
                Some(ch) => word.push(ch),
            }
        }
        out.push('\'');
        out.push_str(&term(&word));
        out.push('\'');
        if chars.peek() == Some(&':') {
            chars.next();
            while matches!(chars.peek(), Some('*' | 'A'..='D' | 'a'..='d')) {
                chars.next();
            }
        }
    }
    Ok(out)
}

/// A tsquery (as text) with every lexeme replaced by the thread's blind term.
#[pg_extern(stable, strict, name = "_blind_query")]
fn blind_query(thread: &str, dek_id: i64, query: &str) -> String {
    let key = search_key(thread, dek_id);
    blind_query_text(query, |w| blind_term(&key, w))
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e))
}

/// `progressdb.encrypted_search`.
#[pg_extern(stable, name = "_encrypted_search")]
fn encrypted_search() -> bool {
    guc::ENCRYPTED_SEARCH.get()
}

const CURSOR_PREFIX: &str = "s1.";

/// The opaque cursor of a search page: the position of its last result in
/// the order (rank, ts, thread, seq), all descending.
pub fn cursor(rank: f32, ts: i64, thread: &str, seq: i64) -> String {
    let inner = format!("{:08x}.{ts}.{seq}.{thread}", rank.to_bits());
    format!("{CURSOR_PREFIX}{}", B64.encode(inner))
}

pub fn parse_cursor(c: &str) -> Option<(f32, i64, String, i64)> {
    let raw = B64.decode(c.strip_prefix(CURSOR_PREFIX)?).ok()?;
    let inner = String::from_utf8(raw).ok()?;
    let mut parts = inner.splitn(4, '.');
    let bits = parts.next().filter(|b| b.len() == 8)?;
    let rank = f32::from_bits(u32::from_str_radix(bits, 16).ok()?);
    let ts = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let thread = parts.next()?.to_string();
    (rank.is_finite() && seq >= 1 && !thread.is_empty()).then_some((rank, ts, thread, seq))
}

#[pg_extern(immutable, parallel_safe, strict, name = "_search_cursor")]
fn search_cursor(rank: f32, ts: i64, thread: &str, seq: i64) -> String {
    cursor(rank, ts, thread, seq)
}

/// The position a search cursor carries; 22023 when it is not one.
#[pg_extern(immutable, parallel_safe, strict, name = "_search_cursor_position")]
fn search_cursor_position(
    c: &str,
) -> TableIterator<
    'static,
    (
        name!(rank, f32),
        name!(ts, i64),
        name!(thread, String),
        name!(seq, i64),
    ),
> {
    let Some(pos) = parse_cursor(c) else {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("before cursor {c} is not a search cursor"),
        )
    };
    TableIterator::once(pos)
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_searched_text_is_what_a_reader_sees() {
        assert_eq!(body_text(&json!({"text": "hi there", "n": 1})), "hi there");
        assert_eq!(
            body_text(&json!({"content": "answer", "tool_calls": [{"x": "no"}]})),
            "answer"
        );
        assert_eq!(
            body_text(&json!({"title": "a", "items": [{"name": "b"}, 3, "c"]})),
            "b\nc\na"
        );
        assert_eq!(body_text(&json!("plain")), "plain");
        assert_eq!(body_text(&json!(42)), "");
    }

    #[test]
    fn queries_are_blinded_lexeme_by_lexeme() {
        let t = |w: &str| format!("<{w}>");
        assert_eq!(
            blind_query_text("'deploy' & !'fail' | 'a' <-> 'b':*", t).unwrap(),
            "'<deploy>' & !'<fail>' | '<a>' & '<b>'"
        );
        assert_eq!(
            blind_query_text("'it''s' & 'a\\\\b':AB", t).unwrap(),
            "'<it's>' & '<a\\b>'"
        );
        assert_eq!(
            blind_query_text("( 'a' | 'b' ) <2> 'c'", t).unwrap(),
            "( '<a>' | '<b>' ) & '<c>'"
        );
        assert!(blind_query_text("'open", t).is_err());
    }

    #[test]
    fn blind_terms_depend_on_the_key_and_the_word_only() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        assert_eq!(blind_term(&k1, "deploy"), blind_term(&k1, "deploy"));
        assert_ne!(blind_term(&k1, "deploy"), blind_term(&k2, "deploy"));
        assert_ne!(blind_term(&k1, "deploy"), blind_term(&k1, "deploys"));
        assert_eq!(blind_term(&k1, "x").len(), TERM_BYTES * 2);
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = cursor(0.0607927, 1_757_000_000_000_000_001, "t.1 é", 42);
        assert_eq!(
            parse_cursor(&c),
            Some((
                0.0607927,
                1_757_000_000_000_000_001,
                "t.1 é".to_string(),
                42
            ))
        );
        let other = c.replacen("s1.", "s2.", 1);
        for bad in ["", "s1.", "s1.!!", "c1.42.00000000", &other] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
        let nan = format!(
            "s1.{}",
            B64.encode(format!("{:08x}.1.1.t", f32::NAN.to_bits()))
        );
        assert_eq!(parse_cursor(&nan), None);
    }
}
