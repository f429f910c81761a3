//! The Message and page documents, written straight to JSON text.
//!
//! This is the one place their shape is defined (API.md). Every read renders
//! through it: `_message_text` on rows (sql/render.sql), the timeline chunks,
//! which store each message's document rendered at compaction
//! (src/chunk_codec.rs), and the page document around them. The `jsonb`
//! functions of the SQL API parse this text; the `_text` functions and the
//! gateway pass it on as it is, so a page costs no JSON building at read time.
//!
//! Page cursors are opaque strings that carry the timeline position (seq) and
//! a tag binding it to its thread, so the next page starts without looking the
//! cursor up; message ids (the cursors of 0.1) are still accepted.

use pgrx::prelude::*;

use crate::crypto;

extension_sql_file!("../sql/render.sql", name = "render", requires = ["schema"]);

/// A stored message's fields, as the document shows them.
pub struct Message<'a> {
    pub id: &'a str,
    pub thread: &'a str,
    pub author: &'a str,
    pub role: &'a str,
    pub ts: i64,
    pub version: i32,
    pub updated_ts: i64,
    pub reply_to: Option<&'a str>,
    pub deleted_ts: Option<i64>,
    /// The reactions object as JSON text; None when there are none.
    pub reactions: Option<&'a str>,
}

/// Appends `s` as a JSON string, escaped as PostgreSQL's `to_json(text)` does.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                out.push_str("\\u00");
                out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
                out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

pub fn write_field_str(out: &mut String, key: &str, val: &str) {
    out.push_str(key);
    write_str(out, val);
}

pub fn write_field_int(out: &mut String, key: &str, val: i64) {
    use std::fmt::Write;
    out.push_str(key);
    let _ = write!(out, "{val}"); // writing to a String cannot fail
}

/// The document up to the body's value: `{"id":…,…,"body":`.
pub fn write_head(out: &mut String, m: &Message) {
    write_field_str(out, "{\"id\":", m.id);
    write_field_str(out, ",\"thread\":", m.thread);
    write_field_str(out, ",\"author\":", m.author);
    write_field_str(out, ",\"role\":", m.role);
    write_field_int(out, ",\"ts\":", m.ts);
    out.push_str(",\"body\":");
}

/// The document after the body's value. Optional fields are omitted when empty.
pub fn write_tail(out: &mut String, m: &Message) {
    write_field_int(out, ",\"version\":", i64::from(m.version));
    write_field_int(out, ",\"updated_ts\":", m.updated_ts);
    if let Some(r) = m.reply_to {
        write_field_str(out, ",\"reply_to\":", r);
    }
    if let Some(d) = m.deleted_ts {
        write_field_int(out, ",\"deleted\":true,\"deleted_ts\":", d);
    }
    if let Some(r) = m.reactions {
        out.push_str(",\"reactions\":");
        out.push_str(r);
    }
    out.push('}');
}

/// The whole Message document; `body` is the body's JSON text.
pub fn write_message(out: &mut String, m: &Message, body: &str) {
    write_head(out, m);
    out.push_str(body);
    write_tail(out, m);
}

/// The page document of `list_messages`; `messages` is the documents joined by commas.
pub fn write_page(
    out: &mut String,
    thread: &str,
    messages: &str,
    has_before: bool,
    has_after: bool,
    cursors: Option<(i64, i64)>,
) {
    write_field_str(out, "{\"thread\":", thread);
    out.push_str(",\"messages\":[");
    out.push_str(messages);
    out.push_str("],\"pagination\":{\"has_before\":");
    out.push_str(if has_before { "true" } else { "false" });
    out.push_str(",\"has_after\":");
    out.push_str(if has_after { "true" } else { "false" });
    if let Some((lo, hi)) = cursors {
        write_field_str(out, ",\"before\":", &cursor(thread, lo));
        write_field_str(out, ",\"after\":", &cursor(thread, hi));
    }
    out.push_str("}}");
}

/// Cursors look like `c1.<seq>.<tag>`: the tag (a hash of thread and seq)
/// makes a cursor of another thread, or a mistyped one, fail loudly instead
/// of silently paging somewhere else. It is not a secret: a position is not
/// an authorization, every page still applies the reader's visibility.
const CURSOR_PREFIX: &str = "c1.";

fn cursor_tag(thread: &str, seq: i64) -> u32 {
    // FNV-1a, 64 bits, folded to 32.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in thread
        .bytes()
        .chain(std::iter::once(0))
        .chain(seq.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

pub fn cursor(thread: &str, seq: i64) -> String {
    format!("{CURSOR_PREFIX}{seq}.{:08x}", cursor_tag(thread, seq))
}

/// What a cursor string is.
#[derive(Debug, PartialEq)]
pub enum Cursor {
    /// A page cursor of this thread: the seq it points at.
    Position(i64),
    /// A page cursor, but not of this thread (or damaged).
    Foreign,
    /// Not a page cursor: a message id (0.1 cursors).
    MessageId,
}

pub fn parse_cursor(thread: &str, s: &str) -> Cursor {
    let Some(rest) = s.strip_prefix(CURSOR_PREFIX) else {
        return Cursor::MessageId;
    };
    let Some((seq, tag)) = rest.split_once('.') else {
        return Cursor::Foreign;
    };
    if tag.len() != 8 {
        return Cursor::Foreign;
    }
    match (seq.parse::<i64>(), u32::from_str_radix(tag, 16)) {
        (Ok(seq), Ok(tag)) if seq >= 1 && cursor_tag(thread, seq) == tag => Cursor::Position(seq),
        _ => Cursor::Foreign,
    }
}

/// The Message document of a stored row (`_message_text` passes the row's
/// columns). An encrypted body (`body_enc`) is opened here, so every reader
/// gets plaintext; `body` is then the plaintext remainder, if any.
#[allow(clippy::too_many_arguments)]
#[pg_extern(stable, parallel_safe, name = "_render_message")]
fn render_message(
    id: &str,
    thread: &str,
    author: &str,
    role: &str,
    ts: i64,
    body: Option<&str>,
    body_enc: Option<&str>,
    version: i32,
    updated_ts: i64,
    reply_to: Option<&str>,
    deleted_ts: Option<i64>,
    reactions: Option<&str>,
) -> String {
    let m = Message {
        id,
        thread,
        author,
        role,
        ts,
        version,
        updated_ts,
        reply_to,
        deleted_ts,
        reactions,
    };
    let opened;
    let body = match body_enc {
        Some(env) => {
            opened = crypto::open_body_text(thread, id, version, body, env);
            opened.as_str()
        }
        None => body.unwrap_or("null"),
    };
    let mut out = String::with_capacity(160 + body.len());
    write_message(&mut out, &m, body);
    out
}

/// The page document around already rendered messages (`lo`/`hi`: the
/// oldest and newest seq on the page, for the cursors; NULL when empty).
#[pg_extern(immutable, parallel_safe, name = "_render_page")]
fn render_page(
    thread: &str,
    messages: Option<&str>,
    has_before: bool,
    has_after: bool,
    lo: Option<i64>,
    hi: Option<i64>,
) -> String {
    let messages = messages.unwrap_or("");
    let mut out = String::with_capacity(128 + messages.len());
    let cursors = lo.zip(hi).filter(|_| !messages.is_empty());
    write_page(&mut out, thread, messages, has_before, has_after, cursors);
    out
}

/// The seq a page cursor of `thread` points at; NULL when `cursor` is not a
/// page cursor (a message id); 22023 when it is one of another thread.
#[pg_extern(immutable, parallel_safe, name = "_cursor_position")]
fn cursor_position(thread: &str, cursor: &str, what: &str) -> Option<i64> {
    match parse_cursor(thread, cursor) {
        Cursor::Position(seq) => Some(seq),
        Cursor::MessageId => None,
        Cursor::Foreign => crate::checks::fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{what} cursor {cursor} is not a position in thread {thread}"),
        ),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn msg() -> Message<'static> {
        Message {
            id: "msg-1",
            thread: "t",
            author: "al\"ice",
            role: "user",
            ts: 1,
            version: 2,
            updated_ts: 3,
            reply_to: None,
            deleted_ts: None,
            reactions: None,
        }
    }

    #[test]
    fn strings_are_escaped_like_postgres() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\nd\u{1}e\u{7f}é\t");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001e\u{7f}é\\t\"");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}e\u{7f}é\t");
    }

    #[test]
    fn optional_fields_appear_only_when_set() {
        let mut plain = String::new();
        write_message(&mut plain, &msg(), "{\"text\": \"hi\"}");
        assert_eq!(
            plain,
            "{\"id\":\"msg-1\",\"thread\":\"t\",\"author\":\"al\\\"ice\",\"role\":\"user\",\"ts\":1,\
             \"body\":{\"text\": \"hi\"},\"version\":2,\"updated_ts\":3}"
        );
        let full = Message {
            reply_to: Some("msg-0"),
            deleted_ts: Some(9),
            reactions: Some("{\"bob\": \"+1\"}"),
            ..msg()
        };
        let mut s = String::new();
        write_message(&mut s, &full, "1");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["reply_to"], "msg-0");
        assert_eq!(v["deleted"], true);
        assert_eq!(v["deleted_ts"], 9);
        assert_eq!(v["reactions"]["bob"], "+1");
    }

    #[test]
    fn a_page_is_valid_json_with_cursors_only_when_not_empty() {
        let mut s = String::new();
        write_page(&mut s, "t\"1", "1,2", true, false, Some((4, 5)));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["messages"], serde_json::json!([1, 2]));
        assert_eq!(v["pagination"]["has_before"], true);
        assert_eq!(
            parse_cursor("t\"1", v["pagination"]["before"].as_str().unwrap()),
            Cursor::Position(4)
        );
        let mut e = String::new();
        write_page(&mut e, "t", "", false, false, None);
        assert_eq!(
            e,
            "{\"thread\":\"t\",\"messages\":[],\"pagination\":{\"has_before\":false,\"has_after\":false}}"
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_threads() {
        let c = cursor("general", 42);
        assert_eq!(parse_cursor("general", &c), Cursor::Position(42));
        assert_eq!(parse_cursor("random", &c), Cursor::Foreign);
        assert_eq!(
            parse_cursor("general", "msg-0123456789abcdef0123456789abcdef"),
            Cursor::MessageId
        );
        for bad in ["c1.", "c1.42", "c1.x.00000000", "c1.0.00000000", "c1.42.zz"] {
            assert_eq!(parse_cursor("general", bad), Cursor::Foreign, "{bad}");
        }
        let tampered = c.replace("c1.42.", "c1.43.");
        assert_eq!(parse_cursor("general", &tampered), Cursor::Foreign);
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::run;
    use pgrx::prelude::*;

    /// The Message document as 0.1 built it in SQL: the reference the
    /// renderer must agree with.
    const REFERENCE: &str = "
        jsonb_build_object('id', m.id, 'thread', m.thread, 'author', m.author, 'role', m.role, 'ts', m.ts,
                           'body', CASE WHEN m.body_enc IS NULL THEN m.body
                                        ELSE progressdb._open(m.thread, m.id, m.version, m.body, m.body_enc) END,
                           'version', m.version, 'updated_ts', m.updated_ts)
        || CASE WHEN m.reply_to IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('reply_to', m.reply_to) END
        || CASE WHEN m.deleted_ts IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('deleted', true, 'deleted_ts', m.deleted_ts) END
        || CASE WHEN m.reactions = '{}'::jsonb THEN '{}'::jsonb ELSE jsonb_build_object('reactions', m.reactions) END";

    /// Random text: control characters, quotes, backslashes, ASCII, and
    /// code points up to the astral planes (no NUL, no surrogates).
    const RANDOM_TEXT: &str = "CREATE FUNCTION pg_temp.rtext(n integer) RETURNS text LANGUAGE sql VOLATILE AS $$
        SELECT coalesce(string_agg(chr(CASE WHEN r < 0.08 THEN 1 + (random() * 30)::int
                                            WHEN r < 0.14 THEN (ARRAY[34, 92, 47, 39])[1 + (random() * 3)::int]
                                            WHEN r < 0.6 THEN 32 + (random() * 94)::int
                                            WHEN r < 0.9 THEN 160 + (random() * 55000)::int
                                            ELSE 65536 + (random() * 100000)::int END), ''), '')
          FROM (SELECT random() AS r FROM generate_series(1, n)) x
    $$";

    #[pg_test]
    fn the_renderer_matches_a_reference_rendering_in_sql() {
        run("SELECT setseed(0.4242)");
        run(RANDOM_TEXT);
        run("SELECT progressdb.create_thread('alice', 'E', 'enc', encrypted => true)");
        run("SELECT progressdb.create_thread('alice', 'P', 'plain')");
        // Bodies: strings, numbers, nested objects and arrays, huge texts.
        run("SELECT progressdb.post_message(
                    CASE WHEN i % 3 = 0 THEN 'enc' ELSE 'plain' END,
                    'alice',
                    CASE i % 5
                      WHEN 0 THEN to_jsonb(pg_temp.rtext(1 + (random() * 40)::int))
                      WHEN 1 THEN jsonb_build_object('text', pg_temp.rtext(30), 'n', random() * 1e6 - 5e5,
                                                     'big', (random() * 1e15)::bigint, 'ok', i % 2 = 0,
                                                     'none', NULL)
                      WHEN 2 THEN jsonb_build_object('nested', jsonb_build_array(pg_temp.rtext(5),
                                  jsonb_build_object(pg_temp.rtext(4), jsonb_build_array(1, 2.5, '[]'::jsonb,
                                      jsonb_build_object('deep', pg_temp.rtext(8))))))
                      WHEN 3 THEN jsonb_build_object('text', repeat(pg_temp.rtext(50), 400))
                      ELSE jsonb_build_array(pg_temp.rtext(3), -0.000001, 1e-7, '{}'::jsonb)
                    END,
                    pg_temp.rtext(1 + (random() * 20)::int))
               FROM generate_series(1, 150) i");
        // Edited, reacted, deleted and replying messages, and odd authors.
        run(
            "SELECT progressdb.edit_message(id, jsonb_build_object('text', pg_temp.rtext(20)))
               FROM progressdb.messages WHERE seq % 4 = 0",
        );
        run("SELECT progressdb.add_reaction(id, pg_temp.rtext(1 + (random() * 5)::int), pg_temp.rtext(3))
               FROM progressdb.messages WHERE seq % 3 = 0");
        run("SELECT progressdb.delete_message(id) FROM progressdb.messages WHERE seq % 7 = 0");
        run("SELECT progressdb.post_message(thread, 'o\"dd\\ au' || chr(10) || 'thor', '{\"text\":\"re\"}',
                                            reply_to => id)
               FROM progressdb.messages WHERE seq % 10 = 1");
        let total = Spi::get_one::<i64>("SELECT count(*) FROM progressdb.messages").unwrap();
        assert_eq!(total, Some(150 + 15));
        let differ = format!(
            "SELECT count(*) FROM progressdb.messages m
              WHERE progressdb._message_text(m)::jsonb IS DISTINCT FROM ({REFERENCE})"
        );
        assert_eq!(Spi::get_one::<i64>(&differ).unwrap(), Some(0));

        // The documents rendered into chunks agree too (opened at read time).
        run("SELECT progressdb.compact(min_run => 1, min_age => '0')");
        let chunk_differ = format!(
            "WITH pages AS (
                 SELECT jsonb_array_elements(('[' || p.docs || ']')::jsonb) AS doc
                   FROM progressdb.threads t,
                        progressdb._page_text(t.id, t.last_seq + 1, 1000, true) p)
             SELECT (SELECT count(*) FROM pages),
                    (SELECT count(*) FROM pages d JOIN progressdb.messages m ON m.id = d.doc ->> 'id'
                      WHERE d.doc IS DISTINCT FROM ({REFERENCE}))"
        );
        let chunked =
            Spi::get_one::<i64>("SELECT count(*) FROM progressdb.message_chunks").unwrap();
        assert!(chunked.unwrap_or(0) >= 2, "both threads compacted");
        let (n, bad) = Spi::get_two::<i64, i64>(&chunk_differ).unwrap();
        assert_eq!((n, bad), (total, Some(0)));
    }
}
