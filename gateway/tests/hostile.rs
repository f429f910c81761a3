//! Hostile input into every path parameter, query parameter and JSON body
//! field of every route in the OpenAPI document (read from the running
//! gateway, so a new route is covered without touching this file), plus
//! hostile whole bodies: SQL metacharacters, unicode edge cases, NUL bytes,
//! long strings, deep JSON, numbers at the edges. Every request must end in
//! a status below 500 with, for an error, the JSON error document; after a
//! refusal, the row count of every table of the extension is what it was
//! before (nothing half-written). Each route gets fresh data. With
//! `HOSTILE_REPORT=FILE` a markdown summary is written there.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Hostile strings for parameters and string fields (`long` is where the
/// value goes: path and query values stay under the gateway's URI limit,
/// body fields get a full megabyte).
fn hostile_strings(long: usize) -> Vec<(&'static str, String)> {
    vec![
        ("sql-quote", "'; DROP TABLE progressdb.messages; --".into()),
        ("sql-or", "\" OR \"1\"=\"1".into()),
        ("dollar-quote", "$$; SELECT pg_sleep(10); $$".into()),
        ("format", "%s%n%x{}".into()),
        ("percent", "%00%2e%2e%2f".into()),
        ("path", "../../etc/passwd".into()),
        ("markup", "<script>alert(1)</script>".into()),
        ("empty", String::new()),
        ("bidi", "\u{202E}txt.exe".into()),
        ("zwj", "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}".into()),
        ("combining", "e\u{301}\u{301}".into()),
        ("max-code-point", "\u{10FFFF}".into()),
        ("nul", "a\u{0}b".into()),
        ("control", "\u{1}\u{1B}[31m\r\n".into()),
        ("long", "a".repeat(long)),
    ]
}

fn hostile_numbers() -> Vec<(&'static str, String)> {
    [
        ("zero", "0"),
        ("minus-one", "-1"),
        ("int-overflow", "2147483648"),
        ("i64-overflow", "9223372036854775808"),
        ("fraction", "1.5"),
        ("huge", "1e400"),
        ("not-a-number", "NaN"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// Hostile JSON values for body fields of any type.
fn hostile_json_values() -> Vec<(&'static str, Value)> {
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    vec![
        ("null", Value::Null),
        ("wrong-type-array", json!([1, 2])),
        ("wrong-type-object", json!({"$gt": ""})),
        ("bool", json!(true)),
        ("deep", deep),
        ("big-number", serde_json::from_str("1e300").unwrap()),
        ("negative", json!(-1)),
        ("i64-max", json!(i64::MAX)),
    ]
}

/// Whole bodies that are not what any route takes.
fn hostile_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("not-json", b"{not json".to_vec()),
        ("nul-bytes", b"{\"a\":\"\x00\"}".to_vec()),
        (
            "json-nul-escape",
            br#"{"body":{"text":"a\u0000b"},"title":"a\u0000b"}"#.to_vec(),
        ),
        ("lone-surrogate", br#"{"title":"\ud800"}"#.to_vec()),
        ("deep-json", {
            let mut b = "[".repeat(100_000).into_bytes();
            b.extend("]".repeat(100_000).into_bytes());
            b
        }),
        ("array", b"[]".to_vec()),
        ("two-megabytes", {
            let mut b = b"{\"body\":{\"text\":\"".to_vec();
            b.extend(std::iter::repeat_n(b'x', 2 << 20));
            b.extend(b"\"}}");
            b
        }),
        ("invalid-utf8", b"{\"title\":\"\xff\xfe\"}".to_vec()),
    ]
}

/// Follows `$ref` and a single `allOf` wrapper.
fn resolve<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
    loop {
        if let Some(r) = s["$ref"].as_str() {
            let mut v = doc;
            for part in r.trim_start_matches("#/").split('/') {
                v = &v[part];
            }
            s = v;
        } else if let Some(all) = s["allOf"].as_array() {
            s = &all[0];
        } else {
            return s;
        }
    }
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Fixture {
    thread: String,
    msg: String,
}

/// A thread owned by alice, with rita (reader) and mike (member), a message
/// by alice with mike's reaction.
fn fixture(g: &Gateway, n: usize) -> Fixture {
    let thread = format!("h{n}");
    let (s, _) = send(
        g.req(Method::POST, "/v1/threads", Some(BACKEND))
            .body(json!({"id": thread, "author": "alice", "title": "T"}).to_string()),
    );
    assert_eq!(s, 200);
    for (user, role) in [("rita", "reader"), ("mike", "member")] {
        let (s, _) = send(
            g.req(
                Method::POST,
                &format!("/v1/threads/{thread}/members"),
                Some(BACKEND),
            )
            .body(json!({"user": user, "role": role}).to_string()),
        );
        assert_eq!(s, 200);
    }
    let (s, m) = send(
        g.req(
            Method::POST,
            &format!("/v1/threads/{thread}/messages"),
            Some(BACKEND),
        )
        .header("X-User-ID", "alice")
        .body(json!({"body": {"text": "hello world"}}).to_string()),
    );
    assert_eq!(s, 200);
    let msg = m["id"].as_str().unwrap().to_string();
    let (s, _) = send(
        g.req(
            Method::POST,
            &format!("/v1/messages/{msg}/reactions"),
            Some(BACKEND),
        )
        .body(json!({"id": "mike", "reaction": "+1"}).to_string()),
    );
    assert_eq!(s, 200);
    Fixture { thread, msg }
}

/// A valid value for a path parameter or body field, by name.
fn baseline(name: &str, path: &str, f: &Fixture) -> Option<Value> {
    Some(match name {
        "thread" => json!(f.thread),
        "id" | "message" | "reply_to" if path.contains("messages") || name != "id" => {
            json!(f.msg)
        }
        "identity" => json!("mike"),
        "user" if path.starts_with("/admin/users") => json!("nobody"),
        "user" => json!("rita"),
        "userId" => json!("u1"),
        "body" => json!({"text": "hi"}),
        "reaction" => json!("+1"),
        "role" => json!("member"),
        _ => return None,
    })
}

struct Outcome {
    requests: usize,
    by_status: BTreeMap<u16, usize>,
    failures: Vec<String>,
}

/// A query giving the row count of every table of the extension, as one
/// line — but for the timeline chunks and their bookkeeping, which the
/// background compactor writes on its own schedule (derived data).
fn counts_query(g: &Gateway) -> String {
    let (dir, port) = g.embedded.clone().expect("embedded");
    let cl = pgcluster::Cluster::new(&dir, port).unwrap();
    let sql = cl
        .psql(
            "postgres",
            "SELECT string_agg(format('(SELECT %L || count(*) FROM %s)', c.relname || '=', c.oid::regclass), ' || '' '' || ' ORDER BY c.relname)
             FROM pg_class c WHERE c.relnamespace = 'progressdb'::regnamespace AND c.relkind IN ('r', 'p')
              AND c.relname NOT IN ('message_chunks', 'compaction_state')",
        )
        .unwrap();
    format!("SELECT {}", sql.trim())
}

fn counts(g: &Gateway, query: &str) -> String {
    let (dir, port) = g.embedded.clone().expect("embedded");
    pgcluster::Cluster::new(&dir, port)
        .unwrap()
        .psql("postgres", query)
        .unwrap()
        .trim()
        .to_string()
}

#[allow(clippy::too_many_arguments)]
fn check(
    g: &Gateway,
    query: &str,
    out: &mut Outcome,
    before: &mut String,
    what: &str,
    method: &Method,
    path: &str,
    key: &str,
    body: Option<Vec<u8>>,
) {
    let mut rb = g
        .req(method.clone(), path, Some(key))
        .header("X-User-ID", "alice");
    if let Some(b) = body {
        rb = rb.header("Content-Type", "application/json").body(b);
    }
    out.requests += 1;
    let r = match rb.send() {
        Ok(r) => r,
        Err(e) => {
            out.failures.push(format!("{what}: no response: {e}"));
            return;
        }
    };
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().unwrap_or_default();
    *out.by_status.entry(status).or_default() += 1;
    if status >= 500 {
        out.failures.push(format!("{what}: {status} {text}"));
    }
    if status >= 400 {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !ct.starts_with("application/json") || !v["error"].is_string() {
            out.failures
                .push(format!("{what}: {status} not a JSON error: {ct} {text}"));
        }
        let after = counts(g, query);
        if after != *before {
            out.failures.push(format!(
                "{what}: refused with {status} but rows changed:\n  before {before}\n  after  {after}"
            ));
            *before = after;
        }
    } else {
        *before = counts(g, query);
    }
}

#[test]
fn hostile_input_is_refused_cleanly_and_writes_nothing() {
    let dir = temp_dir("hostile");
    // A master key, so that `encrypted: true` is a request the server can serve
    // (without one it is the server's 500, see tests/encryption.rs).
    let keys = std::path::PathBuf::from(format!("{}.keys", dir.display()));
    std::fs::write(
        &keys,
        "k1:3333333333333333333333333333333333333333333333333333333333333333\n",
    )
    .unwrap();
    let mut args = keyed_args();
    args.extend(["--master-key-file".to_string(), keys.display().to_string()]);
    let mut g = Gateway::embedded(&dir, free_port(), &args);
    g.wait_ready();
    let query = counts_query(&g);
    let (s, doc) = send(g.req(Method::GET, "/openapi.json", None));
    assert_eq!(s, 200);

    let mut out = Outcome {
        requests: 0,
        by_status: BTreeMap::new(),
        failures: Vec::new(),
    };
    let mut operations = 0;
    let mut n = 0;
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !["GET", "POST", "PUT", "DELETE"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            n += 1;
            let f = fixture(&g, n);
            let key = if template.starts_with("/admin") || template == "/metrics" {
                ADMIN
            } else {
                BACKEND
            };
            let params: Vec<&Value> = op["parameters"]
                .as_array()
                .map(|a| a.iter().map(|p| resolve(&doc, p)).collect())
                .unwrap_or_default();
            let path_with = |target: Option<(&str, &str)>| {
                let mut p = template.clone();
                for prm in params.iter().filter(|p| p["in"] == "path") {
                    let name = prm["name"].as_str().unwrap();
                    let v = match target {
                        Some((t, v)) if t == name => enc(v),
                        _ => baseline(name, template, &f)
                            .and_then(|v| v.as_str().map(enc))
                            .unwrap_or_else(|| "x".into()),
                    };
                    p = p.replace(&format!("{{{name}}}"), &v);
                }
                p
            };
            // The body: required fields (and those we know) at valid values.
            let schema = op["requestBody"]["content"]["application/json"]["schema"].clone();
            let schema = resolve(&doc, &schema).clone();
            let props: Vec<(String, Value)> = schema["properties"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), resolve(&doc, v).clone()))
                        .collect()
                })
                .unwrap_or_default();
            let mut base_body = serde_json::Map::new();
            for (name, _) in &props {
                if let Some(v) = baseline(name, template, &f) {
                    base_body.insert(name.clone(), v);
                }
            }
            let has_body = !op["requestBody"].is_null();
            let body_of = |m: &serde_json::Map<String, Value>| {
                has_body.then(|| Value::Object(m.clone()).to_string().into_bytes())
            };
            let mut before = counts(&g, &query);

            for prm in &params {
                let name = prm["name"].as_str().unwrap();
                let numeric = matches!(prm["schema"]["type"].as_str(), Some("integer" | "number"));
                let mut values: Vec<(&str, String)> = hostile_strings(8 << 10)
                    .into_iter()
                    .filter(|(l, _)| !matches!(*l, "sql-or" | "format" | "markup" | "combining"))
                    .collect();
                if numeric {
                    values.extend(hostile_numbers());
                }
                for (label, v) in values {
                    let what = format!("{method} {template} {}={name}:{label}", prm["in"]);
                    let path = if prm["in"] == "path" {
                        path_with(Some((name, &v)))
                    } else if prm["in"] == "query" {
                        format!("{}?{name}={}", path_with(None), enc(&v))
                    } else {
                        continue;
                    };
                    check(
                        &g,
                        &query,
                        &mut out,
                        &mut before,
                        &what,
                        &method,
                        &path,
                        key,
                        body_of(&base_body),
                    );
                }
            }
            if has_body {
                for (name, _) in &props {
                    let mut values: Vec<(&str, Value)> = hostile_strings(1 << 20)
                        .into_iter()
                        .map(|(l, s)| (l, Value::String(s)))
                        .collect();
                    values.extend(hostile_json_values());
                    for (label, v) in values {
                        let mut b = base_body.clone();
                        b.insert(name.clone(), v);
                        check(
                            &g,
                            &query,
                            &mut out,
                            &mut before,
                            &format!("{method} {template} body.{name}:{label}"),
                            &method,
                            &path_with(None),
                            key,
                            body_of(&b),
                        );
                    }
                }
                for (label, b) in hostile_bodies() {
                    check(
                        &g,
                        &query,
                        &mut out,
                        &mut before,
                        &format!("{method} {template} body:{label}"),
                        &method,
                        &path_with(None),
                        key,
                        Some(b),
                    );
                }
            }
        }
    }
    // still serving
    let (s, _) = send(g.req(Method::GET, "/healthz", None));
    assert_eq!(s, 200);
    let (s, _) = send(g.req(Method::GET, "/readyz", None));
    assert_eq!(s, 200);

    if let Ok(file) = std::env::var("HOSTILE_REPORT") {
        let mut md = format!(
            "**HTTP** (`gateway/tests/hostile.rs`): {operations} documented operations, each on \
             fresh data, every path parameter, query parameter and JSON body field given each \
             hostile value, and {} hostile whole bodies per route that takes one: {} requests, \
             {} with a status ≥ 500 or an error that is not the JSON error document or rows \
             changed by a refused request.\n\n| status | responses |\n|---|---|\n",
            hostile_bodies().len(),
            out.requests,
            out.failures.len()
        );
        for (s, k) in &out.by_status {
            md.push_str(&format!("| {s} | {k} |\n"));
        }
        std::fs::write(file, md).expect("write HOSTILE_REPORT");
    }
    assert!(operations >= 40, "{operations} operations");
    assert!(
        out.failures.is_empty(),
        "{} of {} requests failed:\n{}",
        out.failures.len(),
        out.requests,
        out.failures.join("\n")
    );
    assert!(g.stop().success());
    std::fs::remove_file(&keys).ok();
}
