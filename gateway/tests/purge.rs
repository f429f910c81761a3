//! Hard deletes over HTTP: `?purge=true` on messages and threads, the legal
//! hold that refuses them (409), retention settings on the thread, and the
//! admin's erasure of a user.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn as_user(g: &Gateway, user: &str, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb = g.signed(m, path, user);
    if let Some(b) = body {
        rb = rb.body(b.to_string());
    }
    send(rb)
}

#[test]
fn purge_hold_and_erase_over_http() {
    let dir = temp_dir("purge");
    let mut g = Gateway::embedded(&dir, free_port(), &keyed_args());
    g.wait_ready();
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let (s, m) = as_user(
            &g,
            "alice",
            Method::POST,
            "/v1/threads/room/messages",
            Some(json!({"body": {"text": text}})),
        );
        assert_eq!(s, 200, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let (s, _) = as_user(
        &g,
        "alice",
        Method::POST,
        "/v1/threads/room/members",
        Some(json!({"user": "mike"})),
    );
    assert_eq!(s, 200);

    // A member may soft-delete but not purge; the owner purges.
    let purge_one = format!("/v1/threads/room/messages/{}?purge=true", ids[0]);
    let (s, e) = as_user(&g, "mike", Method::DELETE, &purge_one, None);
    assert_eq!(s, 403, "{e}");
    let (s, _) = as_user(&g, "alice", Method::DELETE, &purge_one, None);
    assert_eq!(s, 204);
    let (s, _) = as_user(&g, "alice", Method::DELETE, &purge_one, None);
    assert_eq!(s, 404, "gone for good");
    let (s, e) = as_user(
        &g,
        "alice",
        Method::DELETE,
        &format!("/v1/threads/room/messages/{}?purge=maybe", ids[1]),
        None,
    );
    assert_eq!(s, 400, "{e}");
    // Even with include_deleted, the purged message is not in the timeline.
    let (s, page) = as_user(
        &g,
        "alice",
        Method::GET,
        "/v1/threads/room/messages?include_deleted=true",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);

    // Retention and legal hold: owners' settings, shown on the thread.
    let (s, e) = as_user(
        &g,
        "alice",
        Method::PUT,
        "/v1/threads/room",
        Some(json!({"retention": "someday"})),
    );
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("retention"), "{e}");
    let (s, t) = as_user(
        &g,
        "alice",
        Method::PUT,
        "/v1/threads/room",
        Some(json!({"retention": "90 days", "legal_hold": true})),
    );
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        (t["retention"].clone(), t["legal_hold"].clone()),
        (json!("90 days"), json!(true))
    );
    let (s, e) = as_user(
        &g,
        "alice",
        Method::DELETE,
        &format!("/v1/threads/room/messages/{}?purge=true", ids[1]),
        None,
    );
    assert_eq!(s, 409, "held: {e}");
    let (s, _) = as_user(
        &g,
        "alice",
        Method::DELETE,
        "/v1/threads/room?purge=true",
        None,
    );
    assert_eq!(s, 409);

    // The admin erases alice: the held thread stays as it is and is reported.
    let (s, r) = send(g.req(Method::DELETE, "/admin/users/alice", Some(ADMIN)));
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r,
        json!({"user": "alice", "messages": 0, "reactions": 0, "memberships": 0, "threads": 0, "held": 1})
    );
    let (s, _) = as_user(
        &g,
        "alice",
        Method::PUT,
        "/v1/threads/room",
        Some(json!({"legal_hold": false})),
    );
    assert_eq!(s, 200);
    let (s, r) = send(g.req(Method::DELETE, "/admin/users/alice", Some(ADMIN)));
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r,
        json!({"user": "alice", "messages": 2, "reactions": 0, "memberships": 1, "threads": 0, "held": 0})
    );
    // mike owns the room now; then purges it.
    let (s, t) = as_user(&g, "mike", Method::GET, "/v1/threads/room", None);
    assert_eq!(s, 200);
    assert_eq!(t["role"], "owner");
    let (s, _) = as_user(
        &g,
        "mike",
        Method::DELETE,
        "/v1/threads/room?purge=true",
        None,
    );
    assert_eq!(s, 204);
    let (s, _) = as_user(&g, "mike", Method::GET, "/v1/threads/room", None);
    assert_eq!(s, 404);
    // A frontend key never reaches the admin surface.
    let (s, _) = send(g.signed(Method::DELETE, "/admin/users/mike", "mike"));
    assert_eq!(s, 403);
}
