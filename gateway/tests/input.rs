//! Bad input → the right 4xx with a JSON error body and nothing written;
//! HTTP hygiene: body limit, unknown routes, wrong methods, CORS, rate limit.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn stats(g: &Gateway) -> Value {
    let (s, v) = send(g.req(Method::GET, "/admin/stats", Some(ADMIN)));
    assert_eq!(s, 200);
    v
}

#[test]
fn bad_input_is_rejected_and_writes_nothing() {
    let dir = temp_dir("input");
    let mut g = Gateway::embedded(&dir, 55431, &keyed_args());
    g.wait_ready();
    let b = |m: Method, p: &str| g.req(m, p, Some(BACKEND));

    let (s, _) =
        send(b(Method::POST, "/v1/threads").body(json!({"id":"b1","author":"alice"}).to_string()));
    assert_eq!(s, 200);
    let (s, m) = send(
        b(Method::POST, "/v1/messages")
            .body(json!({"thread":"b1","author":"alice","body":{"v":1}}).to_string()),
    );
    assert_eq!(s, 200);
    let mid = m["id"].as_str().unwrap().to_string();
    let before = stats(&g);
    assert_eq!(before, json!({"threads":1,"messages":1}));

    let long = "x".repeat(300);
    let big = format!(
        r#"{{"thread":"b1","author":"alice","body":"{}"}}"#,
        "y".repeat(101 * 1024)
    );
    let cases: Vec<(Method, String, String, u16)> = vec![
        // malformed and mistyped JSON (the gateway's job)
        (
            Method::POST,
            "/v1/messages".into(),
            r#"{"thread":"b1","#.into(),
            400,
        ),
        (Method::POST, "/v1/messages".into(), "".into(), 400),
        (
            Method::POST,
            "/v1/messages".into(),
            r#"[{"thread":"b1"}]"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/messages".into(),
            r#"{"thread":5,"author":"alice","body":1}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/messages".into(),
            r#"{"thread":"b1","author":["alice"],"body":1}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/messages".into(),
            r#"{"thread":"b1","author":"alice","body":1,"role":7}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/threads".into(),
            r#"{"author":"alice","encrypted":"yes"}"#.into(),
            400,
        ),
        (
            Method::PUT,
            "/v1/threads/b1".into(),
            r#"{"title":false}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/_sign".into(),
            r#"{"userId":12}"#.into(),
            400,
        ),
        (Method::POST, "/v1/_sign".into(), r#"{}"#.into(), 400),
        // null or missing body, bad values (the SQL functions' job)
        (
            Method::POST,
            "/v1/messages".into(),
            r#"{"thread":"b1","author":"alice","body":null}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/messages".into(),
            r#"{"thread":"b1","author":"alice"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/messages".into(),
            format!(r#"{{"thread":"{long}","author":"alice","body":1}}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/messages".into(),
            format!(r#"{{"thread":"b1","author":"{long}","body":1}}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/threads".into(),
            format!(r#"{{"id":"{long}","author":"alice"}}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/threads".into(),
            r#"{"id":"b1","author":"alice"}"#.into(),
            409,
        ),
        (
            Method::PUT,
            "/v1/threads/b1".into(),
            r#"{"title":"  "}"#.into(),
            400,
        ),
        (
            Method::PUT,
            format!("/v1/messages/{mid}"),
            r#"{"body":null}"#.into(),
            400,
        ),
        (
            Method::PUT,
            format!("/v1/messages/{mid}"),
            r#"{"body":"#.into(),
            400,
        ),
        (
            Method::POST,
            format!("/v1/messages/{mid}/reactions"),
            r#"{"id":"bob"}"#.into(),
            400,
        ),
        (
            Method::POST,
            format!("/v1/messages/{mid}/reactions"),
            r#"{"id":"bob","reaction":1}"#.into(),
            400,
        ),
        // too large
        (Method::POST, "/v1/messages".into(), big, 413),
        // unknown ids
        (
            Method::PUT,
            "/v1/messages/msg-nope".into(),
            r#"{"body":1}"#.into(),
            404,
        ),
        (
            Method::POST,
            "/v1/messages/msg-nope/reactions".into(),
            r#"{"id":"bob","reaction":"x"}"#.into(),
            404,
        ),
        (
            Method::PUT,
            "/v1/threads/nope".into(),
            r#"{"title":"x"}"#.into(),
            404,
        ),
        (
            Method::POST,
            "/v1/messages".into(),
            r#"{"thread":"b1","author":"alice","body":1,"reply_to":"msg-nope"}"#.into(),
            400,
        ),
        // members, read state, thread metadata and history (release 0.2)
        (
            Method::POST,
            "/v1/threads/b1/members".into(),
            r#"{"user":5}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/threads/b1/members".into(),
            r#"{}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/threads/b1/members".into(),
            r#"{"user":"zed","role":"king"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/threads/nope/members".into(),
            r#"{"user":"zed"}"#.into(),
            404,
        ),
        (
            Method::POST,
            "/v1/threads/b1/read".into(),
            r#"{"author":"alice","message":7}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/threads/b1/read".into(),
            r#"["alice"]"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/threads/b1/read".into(),
            r#"{"author":"alice","message":"msg-nope"}"#.into(),
            404,
        ),
        (Method::PUT, "/v1/threads/b1".into(), r#"{}"#.into(), 400),
        (
            Method::PUT,
            "/v1/threads/b1".into(),
            r#"{"metadata":[1]}"#.into(),
            400,
        ),
        (
            Method::PUT,
            "/v1/threads/b1".into(),
            r#"{"history":"sometimes"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/threads".into(),
            r#"{"author":"alice","metadata":"x"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/threads".into(),
            r#"{"author":"alice","history":"never"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/v1/threads".into(),
            format!(
                r#"{{"author":"alice","metadata":{{"notes":"{}"}}}}"#,
                "n".repeat(17 * 1024)
            ),
            400,
        ),
    ];
    let mut failures = Vec::new();
    for (m, p, body, want) in &cases {
        let (s, v) = send(b(m.clone(), p).body(body.clone()));
        if s != *want {
            failures.push(format!("{m} {p} {:.80}: want {want}, got {s} {v}", body));
        }
    }
    let reads: Vec<(String, u16)> = vec![
        ("/v1/messages?thread=b1&limit=abc".into(), 400),
        ("/v1/messages?thread=b1&limit=1.5".into(), 400),
        ("/v1/messages?thread=b1&limit=0".into(), 400),
        ("/v1/messages?thread=b1&limit=1001".into(), 400),
        ("/v1/messages?thread=b1&include_deleted=maybe".into(), 400),
        ("/v1/messages?thread=b1&before=msg-nope".into(), 400),
        ("/v1/messages".into(), 400),
        ("/v1/threads?limit=x".into(), 400),
        ("/v1/threads?metadata=%7Bkind".into(), 400),
        ("/v1/threads?metadata=%5B1%5D".into(), 400),
        ("/v1/threads?before_ts=yesterday".into(), 400),
        ("/v1/threads/b1/members?limit=0".into(), 400),
        ("/v1/threads/nope/members".into(), 404),
        ("/v1/messages/msg-nope".into(), 404),
        ("/v1/messages/msg-nope/versions".into(), 404),
        ("/v1/threads/nope".into(), 404),
        ("/v1/threads/nope/messages".into(), 404),
        (format!("/v1/threads/{long}"), 400),
        (format!("/v1/messages/{long}"), 400),
    ];
    for (p, want) in &reads {
        let (s, v) = send(b(Method::GET, p));
        if s != *want {
            failures.push(format!("GET {p:.80}: want {want}, got {s} {v}"));
        }
    }
    for p in ["/v1/messages/msg-nope", "/v1/threads/nope"] {
        let (s, v) = send(b(Method::DELETE, p));
        if s != 404 {
            failures.push(format!("DELETE {p}: want 404, got {s} {v}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // nothing was written: same counts, same message, same title
    assert_eq!(stats(&g), before);
    let (_, m) = send(b(Method::GET, &format!("/v1/messages/{mid}")));
    assert_eq!(
        (m["version"].clone(), m["body"].clone()),
        (json!(1), json!({"v":1}))
    );
    assert!(m.get("reactions").is_none(), "{m}");
    let (_, t) = send(b(Method::GET, "/v1/threads/b1"));
    assert_eq!(t["author"], "alice");
    assert_eq!(t["history"], "shared", "{t}");
    assert_eq!(t["member_count"], 1, "{t}");
    let (_, l) = send(b(Method::GET, "/v1/threads/b1/members"));
    assert_eq!(l["members"].as_array().map(Vec::len), Some(1), "{l}");
    assert_eq!(l["members"][0]["user"], "alice");
    let (_, l) = send(b(Method::GET, "/v1/messages?thread=b1"));
    assert_eq!(l["messages"].as_array().unwrap().len(), 1);

    // a body just under the limit is accepted
    let ok = format!(
        r#"{{"thread":"b1","author":"alice","body":"{}"}}"#,
        "y".repeat(90 * 1024)
    );
    let (s, _) = send(b(Method::POST, "/v1/messages").body(ok));
    assert_eq!(s, 200);

    assert!(g.stop().success());
}

#[test]
fn routes_methods_cors_and_rate_limit() {
    let dir = temp_dir("hyg");
    let mut args = keyed_args();
    // a tiny bucket: 3 requests, then no refill for hours (no race with a slow machine)
    let rps = args.iter().position(|a| a == "0").unwrap();
    args[rps] = "0.0001".into();
    args.extend(["--rate-burst", "3", "--cors-origins", "https://app.example"].map(String::from));
    let mut g = Gateway::embedded(&dir, 55432, &args);
    g.wait_ready();

    // unknown route and wrong method are JSON too (no key needed to learn that)
    let (s, _) = send(g.req(Method::GET, "/v2/nothing", None));
    assert_eq!(s, 404);

    // CORS: preflight 204; only the configured origin is echoed
    let r = g
        .req(Method::OPTIONS, "/v1/messages", None)
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("X-User-Signature"));
    let r = g
        .req(Method::OPTIONS, "/v1/messages", None)
        .header("Origin", "https://evil.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = g
        .req(Method::GET, "/healthz", None)
        .header("Origin", "https://app.example")
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    // rate limit per key: the burst passes, the next is 429 (JSON); other keys unaffected
    for _ in 0..3 {
        let (s, _) = send(g.req(Method::GET, "/admin/health", Some(BACKEND)));
        assert_eq!(s, 200);
    }
    let (s, v) = send(g.req(Method::GET, "/admin/health", Some(BACKEND)));
    assert_eq!(s, 429, "{v}");
    let (s, _) = send(g.req(Method::GET, "/admin/health", Some(ADMIN)));
    assert_eq!(s, 200);
    let (s, _) = send(g.req(Method::PATCH, "/v1/threads", Some(ADMIN)));
    assert_eq!(s, 405);

    assert!(g.stop().success());
}
