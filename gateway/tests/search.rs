//! `GET /v1/search` over real HTTP: each kind of caller searches what it may
//! read, pages follow the `next` cursor, and client mistakes are 4xx.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;

fn ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("not a search page: {v}"))
        .iter()
        .map(|r| r["message"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn search_over_http_is_scoped_paged_and_validated() {
    let dir = temp_dir("search");
    let mut g = Gateway::embedded(&dir, free_port(), &keyed_args());
    g.wait_ready();
    let back = |user: &str, m: Method, p: &str| {
        g.req(m, p, Some(BACKEND))
            .header("X-User-ID", user.to_string())
    };
    let post = |user: &str, thread: &str, text: &str| {
        let (s, m) =
            send(back(user, Method::POST, "/v1/messages").body(
                json!({"thread": thread, "author": user, "body": {"text": text}}).to_string(),
            ));
        assert_eq!(s, 200, "{m}");
        m["id"].as_str().unwrap().to_string()
    };
    let mut alices = Vec::new();
    for i in 0..5 {
        alices.push(post("alice", "sa", &format!("deploy number {i}")));
    }
    let bobs = post("bob", "sb", "deploy of bob");

    // A backend naming a user, a signed frontend user, the service.
    let (s, v) = send(back("alice", Method::GET, "/v1/search?q=deploy"));
    assert_eq!(s, 200);
    assert_eq!(ids(&v).len(), 5);
    assert!(!ids(&v).contains(&bobs));
    assert!(v["results"][0]["snippet"]
        .as_str()
        .unwrap()
        .contains("<mark>deploy</mark>"));
    let (s, v) = send(g.signed(Method::GET, "/v1/search?q=deploy", "bob"));
    assert_eq!(s, 200);
    assert_eq!(ids(&v), [bobs]);
    let (s, v) = send(g.req(Method::GET, "/v1/search?q=deploy", Some(ADMIN)));
    assert_eq!(s, 200);
    assert_eq!(ids(&v).len(), 6);
    // One thread; a phrase, URL-encoded.
    let (s, v) = send(back(
        "alice",
        Method::GET,
        "/v1/search?q=%22number%203%22&thread=sa",
    ));
    assert_eq!(s, 200);
    assert_eq!(ids(&v), [alices[3].as_str()]);

    // Pages of 2 through `next`: every match once.
    let mut seen = Vec::new();
    let mut path = "/v1/search?q=deploy&limit=2".to_string();
    loop {
        let (s, v) = send(back("alice", Method::GET, &path));
        assert_eq!(s, 200, "{v}");
        seen.extend(ids(&v));
        match v["next"].as_str() {
            Some(next) => {
                let enc: String = url_encode(next);
                path = format!("/v1/search?q=deploy&limit=2&before={enc}");
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);

    // Client mistakes.
    for (user, path, want) in [
        ("alice", "/v1/search", 400),
        ("alice", "/v1/search?q=", 400),
        ("alice", "/v1/search?q=deploy&limit=0", 400),
        ("alice", "/v1/search?q=deploy&limit=ten", 400),
        ("alice", "/v1/search?q=deploy&before=garbage", 400),
        ("alice", "/v1/search?q=deploy&thread=sb", 403),
        ("alice", "/v1/search?q=deploy&thread=nope", 404),
    ] {
        let (s, v) = send(back(user, Method::GET, path));
        assert_eq!(s, want, "{path}: {v}");
    }
    let (s, _) = send(g.req(Method::GET, "/v1/search?q=deploy", None));
    assert_eq!(s, 401);

    assert!(g.stop().success());
}

/// Percent-encodes a cursor for a query string.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
