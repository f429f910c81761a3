//! Forks over HTTP with signed frontend users: alice branches a conversation
//! she reads, the branch keeps the shared messages as they were while the
//! source goes on, and mistakes are 4xx JSON errors.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn call(g: &Gateway, user: &str, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb = g.signed(m, path, user);
    if let Some(b) = body {
        rb = rb.body(b.to_string());
    }
    send(rb)
}

fn texts(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"]["text"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn a_branch_over_http_keeps_what_it_shares() {
    let dir = temp_dir("forks");
    let mut g = Gateway::embedded(&dir, free_port(), &keyed_args());
    g.wait_ready();
    let mut ids = Vec::new();
    for text in ["hello", "what is 2+2?", "5"] {
        let (s, m) = call(
            &g,
            "alice",
            Method::POST,
            "/v1/threads/chat/messages",
            Some(json!({"body": {"text": text}})),
        );
        assert_eq!(s, 200, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    // Branch before the wrong answer, as a "regenerate" would.
    let (s, f) = call(
        &g,
        "alice",
        Method::POST,
        "/v1/threads/chat/fork",
        Some(json!({"message": ids[1], "id": "chat-b", "title": "retry"})),
    );
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["id"], "chat-b");
    assert_eq!(f["title"], "retry");
    assert_eq!(f["author"], "alice");
    assert_eq!(
        f["forked_from"],
        json!({"thread": "chat", "message": ids[1]})
    );
    let (s, m) = call(
        &g,
        "alice",
        Method::POST,
        "/v1/threads/chat-b/messages",
        Some(json!({"body": {"text": "4"}})),
    );
    assert_eq!(s, 200, "{m}");
    // The source changes after the fork; the branch does not.
    let (s, _) = call(
        &g,
        "alice",
        Method::PUT,
        &format!("/v1/threads/chat/messages/{}", ids[1]),
        Some(json!({"body": {"text": "what is 3+3?"}})),
    );
    assert_eq!(s, 200);
    let (s, page) = call(
        &g,
        "alice",
        Method::GET,
        "/v1/threads/chat-b/messages",
        None,
    );
    assert_eq!(s, 200, "{page}");
    assert_eq!(texts(&page), ["hello", "what is 2+2?", "4"]);
    let (s, page) = call(&g, "alice", Method::GET, "/v1/threads/chat/messages", None);
    assert_eq!(s, 200, "{page}");
    assert_eq!(texts(&page), ["hello", "what is 3+3?", "5"]);
    let (s, m) = call(
        &g,
        "alice",
        Method::GET,
        &format!("/v1/threads/chat-b/messages/{}", ids[1]),
        None,
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["body"]["text"], "what is 2+2?");
    // Mistakes: JSON errors with the right status, nothing created.
    let cases = [
        (json!({}), 400),
        (json!({"message": "msg-none"}), 404),
        (json!({"message": ids[0], "id": "chat-b"}), 409),
        (json!({"message": 5}), 400),
    ];
    for (body, want) in cases {
        let (s, e) = call(
            &g,
            "alice",
            Method::POST,
            "/v1/threads/chat/fork",
            Some(body.clone()),
        );
        assert_eq!(s, want, "{body}: {e}");
        assert!(e["error"].is_string(), "{body}: {e}");
    }
    let (s, e) = call(
        &g,
        "bob",
        Method::POST,
        "/v1/threads/chat/fork",
        Some(json!({"message": ids[0]})),
    );
    assert_eq!(s, 403, "a non-member may not fork: {e}");
    let (s, l) = call(&g, "alice", Method::GET, "/v1/threads", None);
    assert_eq!(s, 200);
    assert_eq!(l["threads"].as_array().unwrap().len(), 2, "{l}");
}
