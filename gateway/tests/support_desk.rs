//! A support desk, end to end over HTTP with signed frontend users only:
//! customer bob opens `support-42`, adds agent carol, they talk; unread counts
//! and inbox order as each of them sees them, read state that never moves
//! backwards, a read-only observer, the last owner who cannot leave, an agent
//! who is removed, and the metadata filter of the inbox.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

struct Desk {
    g: Gateway,
}

impl Desk {
    fn call(&self, user: &str, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.g.signed(m, path, user);
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        send(rb)
    }

    /// Posts as `user` into `thread`; the new message's id.
    fn post(&self, user: &str, thread: &str, text: &str) -> String {
        let (s, m) = self.call(
            user,
            Method::POST,
            &format!("/v1/threads/{thread}/messages"),
            Some(json!({"body":{"text": text}})),
        );
        assert_eq!(s, 200, "{user} posting to {thread}: {m}");
        assert_eq!(m["author"], user);
        m["id"].as_str().unwrap().to_string()
    }

    /// The thread document as `user` sees it.
    fn thread(&self, user: &str, thread: &str) -> Value {
        let (s, t) = self.call(user, Method::GET, &format!("/v1/threads/{thread}"), None);
        assert_eq!(s, 200, "{user} reading {thread}: {t}");
        t
    }

    /// `user`'s inbox (`GET /v1/threads` with a query).
    fn inbox_page(&self, user: &str, query: &str) -> Vec<Value> {
        let (s, l) = self.call(user, Method::GET, &format!("/v1/threads{query}"), None);
        assert_eq!(s, 200, "{user}'s inbox {query}: {l}");
        l["threads"].as_array().unwrap().clone()
    }

    fn inbox(&self, user: &str) -> Vec<Value> {
        self.inbox_page(user, "")
    }

    fn mark_read(&self, user: &str, thread: &str, body: Option<Value>) -> Value {
        let (s, r) = self.call(
            user,
            Method::POST,
            &format!("/v1/threads/{thread}/read"),
            body,
        );
        assert_eq!(s, 200, "{user} marking {thread} read: {r}");
        assert_eq!(
            (r["thread"].as_str(), r["user"].as_str()),
            (Some(thread), Some(user))
        );
        r
    }
}

fn ids(threads: &[Value]) -> Vec<&str> {
    threads.iter().map(|t| t["id"].as_str().unwrap()).collect()
}

fn entry<'a>(threads: &'a [Value], id: &str) -> &'a Value {
    threads
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {threads:?}"))
}

/// A query parameter holding URL-encoded JSON.
fn meta(v: Value) -> String {
    serde_urlencoded::to_string([("metadata", v.to_string())]).unwrap()
}

#[test]
fn support_desk_scenario() {
    let dir = temp_dir("desk");
    let mut g = Gateway::embedded(&dir, free_port(), &keyed_args());
    g.wait_ready();
    let d = Desk { g };
    let support = json!({"kind":"support","priority":"high","customer":"bob"});

    // carol's own desk thread, and two older threads of bob's
    let (s, t) = d.call(
        "carol",
        Method::POST,
        "/v1/threads",
        Some(json!({"id":"carol-desk","title":"Queue","metadata":{"kind":"internal"}})),
    );
    assert_eq!((s, t["role"].as_str()), (200, Some("owner")), "{t}");
    d.post("carol", "carol-desk", "queue check");
    // posting to a missing thread creates it, owned by the poster
    d.post("bob", "bob-notes", "note to self");
    assert_eq!(d.thread("bob", "bob-notes")["role"], "owner");
    let (s, t) = d.call(
        "bob",
        Method::POST,
        "/v1/threads",
        Some(json!({"id":"bob-returns","title":"Return label",
                    "metadata":{"kind":"support","priority":"low","customer":"bob"}})),
    );
    assert_eq!(s, 200, "{t}");
    d.post("bob", "bob-returns", "I need a return label");

    // bob opens the support thread: its first owner, alone, nothing posted yet
    let (s, t) = d.call(
        "bob",
        Method::POST,
        "/v1/threads",
        Some(json!({"id":"support-42","title":"Order 42 never arrived","metadata": support})),
    );
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["author"], "bob");
    assert_eq!(t["metadata"], support);
    assert_eq!(t["history"], "shared");
    assert_eq!(t["member_count"], 1);
    assert_eq!(t["role"], "owner");
    assert_eq!(t["unread"], 0);
    assert!(t.get("last_message").is_none(), "{t}");
    assert!(t["last_activity_ts"].is_i64(), "{t}");

    // carol is a stranger until bob adds her
    let (s, _) = d.call("carol", Method::GET, "/v1/threads/support-42", None);
    assert_eq!(s, 403);
    let (s, m) = d.call(
        "bob",
        Method::POST,
        "/v1/threads/support-42/members",
        Some(json!({"user":"carol"})),
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        (&m["thread"], &m["user"], &m["role"], &m["added_by"]),
        (
            &json!("support-42"),
            &json!("carol"),
            &json!("member"),
            &json!("bob")
        )
    );
    assert!(m["joined_ts"].is_i64(), "{m}");
    let t = d.thread("carol", "support-42");
    assert_eq!(
        (t["role"].clone(), t["unread"].clone()),
        (json!("member"), json!(0))
    );
    assert_eq!(t["member_count"], 2);

    // bob writes: carol's unread goes up, bob's own messages never count
    let m1 = d.post("bob", "support-42", "My order 42 never arrived");
    let m2 = d.post("bob", "support-42", "Tracking says it was delivered");
    let t = d.thread("carol", "support-42");
    assert_eq!(t["unread"], 2, "{t}");
    assert_eq!(t["last_message"]["id"], json!(m2));
    assert_eq!(d.thread("bob", "support-42")["unread"], 0);
    // each inbox: the thread with the newest message first, only one's own threads
    let carol = d.inbox("carol");
    assert_eq!(ids(&carol), ["support-42", "carol-desk"]);
    assert_eq!(entry(&carol, "support-42")["unread"], 2);
    assert_eq!(entry(&carol, "support-42")["last_message"]["id"], json!(m2));
    assert_eq!(
        ids(&d.inbox("bob")),
        ["support-42", "bob-returns", "bob-notes"]
    );

    // carol catches up (empty JSON body = up to the newest), then answers
    let r = d.mark_read("carol", "support-42", Some(json!({})));
    assert_eq!(
        (r["last_read"].clone(), r["unread"].clone()),
        (json!(m2), json!(0))
    );
    let t = d.thread("carol", "support-42");
    assert_eq!(
        (t["last_read"].clone(), t["unread"].clone()),
        (json!(m2), json!(0))
    );
    let (s, m3) = d.call(
        "carol",
        Method::POST,
        "/v1/threads/support-42/messages",
        Some(json!({"body":{"text":"Sorry! Checking with the courier"},"reply_to": m1})),
    );
    assert_eq!(s, 200, "{m3}");
    let m3 = m3["id"].as_str().unwrap().to_string();
    assert_eq!(
        d.thread("carol", "support-42")["unread"],
        0,
        "own reply counted"
    );
    let t = d.thread("bob", "support-42");
    assert_eq!(t["unread"], 1, "{t}");
    assert_eq!(t["last_message"]["id"], json!(m3));

    // carol's desk gets news: it moves to the top of her inbox, not of bob's
    d.post("carol", "carol-desk", "shift handover");
    assert_eq!(ids(&d.inbox("carol")), ["carol-desk", "support-42"]);
    assert_eq!(
        ids(&d.inbox("bob")),
        ["support-42", "bob-returns", "bob-notes"]
    );

    // last_read never moves backwards through the read route
    let r = d.mark_read("bob", "support-42", Some(json!({"message": m3})));
    assert_eq!(
        (r["last_read"].clone(), r["unread"].clone()),
        (json!(m3), json!(0))
    );
    let r = d.mark_read("bob", "support-42", Some(json!({"message": m1})));
    assert_eq!(r["last_read"], json!(m3), "moved backwards: {r}");
    let r = d.mark_read("bob", "support-42", None); // no body at all
    assert_eq!(
        (r["last_read"].clone(), r["unread"].clone()),
        (json!(m3), json!(0))
    );
    let t = d.thread("bob", "support-42");
    assert_eq!(
        (t["last_read"].clone(), t["unread"].clone()),
        (json!(m3), json!(0))
    );
    let (s, _) = d.call(
        "bob",
        Method::POST,
        "/v1/threads/support-42/read",
        Some(json!({"message": "msg-does-not-exist"})),
    );
    assert_eq!(s, 404);

    // a read-only observer: reads and marks read, cannot post or react
    let (s, m) = d.call(
        "bob",
        Method::POST,
        "/v1/threads/support-42/members",
        Some(json!({"user":"dave","role":"reader"})),
    );
    assert_eq!((s, m["role"].clone()), (200, json!("reader")), "{m}");
    let (s, l) = d.call("dave", Method::GET, "/v1/threads/support-42/messages", None);
    assert_eq!(s, 200, "{l}");
    let seen: Vec<&str> = l["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, [m1.as_str(), m2.as_str(), m3.as_str()]);
    // read state starts where one joins: what came before is not unread
    assert_eq!(d.thread("dave", "support-42")["unread"], 0);
    let (s, _) = d.call(
        "dave",
        Method::POST,
        "/v1/threads/support-42/messages",
        Some(json!({"body":{"text":"me too"}})),
    );
    assert_eq!(s, 403, "a reader posted");
    let (s, _) = d.call(
        "dave",
        Method::POST,
        &format!("/v1/threads/support-42/messages/{m1}/reactions"),
        Some(json!({"reaction":"+1"})),
    );
    assert_eq!(s, 403, "a reader reacted");
    let m4 = d.post("carol", "support-42", "The courier will redeliver tomorrow");
    assert_eq!(d.thread("dave", "support-42")["unread"], 1);
    assert_eq!(d.thread("bob", "support-42")["unread"], 1);
    let r = d.mark_read("dave", "support-42", None);
    assert_eq!(
        (r["last_read"].clone(), r["unread"].clone()),
        (json!(m4), json!(0))
    );

    // members, sorted by user, paged by name
    let (s, l) = d.call("carol", Method::GET, "/v1/threads/support-42/members", None);
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["thread"], "support-42");
    let who: Vec<(&str, &str)> = l["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        who,
        [("bob", "owner"), ("carol", "member"), ("dave", "reader")]
    );
    let (_, l) = d.call(
        "carol",
        Method::GET,
        "/v1/threads/support-42/members?limit=2",
        None,
    );
    assert_eq!(l["members"].as_array().unwrap().len(), 2);
    let (_, l) = d.call(
        "carol",
        Method::GET,
        "/v1/threads/support-42/members?after=carol",
        None,
    );
    assert_eq!(l["members"][0]["user"], "dave");
    assert_eq!(l["members"].as_array().unwrap().len(), 1);

    // the only owner can neither leave nor step down; a member cannot remove him
    let (s, e) = d.call(
        "bob",
        Method::DELETE,
        "/v1/threads/support-42/members/bob",
        None,
    );
    assert_eq!(s, 409, "{e}");
    let (s, e) = d.call(
        "bob",
        Method::POST,
        "/v1/threads/support-42/members",
        Some(json!({"user":"bob","role":"member"})),
    );
    assert_eq!(s, 409, "{e}");
    let (s, _) = d.call(
        "carol",
        Method::DELETE,
        "/v1/threads/support-42/members/bob",
        None,
    );
    assert_eq!(s, 403);
    assert_eq!(d.thread("bob", "support-42")["role"], "owner");

    // the inbox filters: metadata containment, title substring (any case)
    let q = |v: Value| format!("?{}", meta(v));
    assert_eq!(
        ids(&d.inbox_page("bob", &q(json!({"kind":"support"})))),
        ["support-42", "bob-returns"]
    );
    assert_eq!(
        ids(&d.inbox_page("bob", &q(json!({"kind":"support","priority":"high"})))),
        ["support-42"]
    );
    assert!(d
        .inbox_page("bob", &q(json!({"kind":"internal"})))
        .is_empty());
    // carol sees only what she is a member of
    assert_eq!(
        ids(&d.inbox_page("carol", &q(json!({"kind":"support"})))),
        ["support-42"]
    );
    assert_eq!(
        ids(&d.inbox_page("carol", &q(json!({"kind":"internal"})))),
        ["carol-desk"]
    );
    assert_eq!(ids(&d.inbox_page("bob", "?title=ORDER")), ["support-42"]);
    let (s, _) = d.call("bob", Method::GET, "/v1/threads?metadata=%7Bkind", None);
    assert_eq!(s, 400, "metadata that is not JSON");
    let (s, _) = d.call(
        "bob",
        Method::GET,
        &format!("/v1/threads{}", q(json!([1]))),
        None,
    );
    assert_eq!(s, 400, "metadata that is not an object");
    // metadata alone can be updated (title kept), by an admin or owner only
    let waiting = json!({"kind":"support","priority":"high","customer":"bob","status":"waiting"});
    let (s, t) = d.call(
        "bob",
        Method::PUT,
        "/v1/threads/support-42",
        Some(json!({"metadata": waiting})),
    );
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        (t["metadata"].clone(), t["title"].clone()),
        (waiting, json!("Order 42 never arrived"))
    );
    let (s, _) = d.call(
        "carol",
        Method::PUT,
        "/v1/threads/support-42",
        Some(json!({"metadata":{"status":"closed"}})),
    );
    assert_eq!(s, 403, "a member changed metadata");
    assert_eq!(
        ids(&d.inbox_page("carol", &q(json!({"status":"waiting"})))),
        ["support-42"]
    );

    // the inbox cursor: a page boundary stays put when its thread gets news
    let page1 = d.inbox_page("bob", "?limit=2");
    assert_eq!(ids(&page1), ["support-42", "bob-returns"]);
    let seen_ts = page1[1]["last_activity_ts"].as_i64().unwrap();
    d.post("bob", "bob-returns", "label printed, thanks");
    let page2 = d.inbox_page(
        "bob",
        &format!("?limit=2&before=bob-returns&before_ts={seen_ts}"),
    );
    assert_eq!(ids(&page2), ["bob-notes"]);
    // (without before_ts the cursor is where bob-returns is now: the top)
    let moved = d.inbox_page("bob", "?limit=2&before=bob-returns");
    assert_eq!(ids(&moved), ["support-42", "bob-notes"]);

    // the agent is removed: nothing of the thread is hers any more
    let (s, _) = d.call(
        "bob",
        Method::DELETE,
        "/v1/threads/support-42/members/carol",
        None,
    );
    assert_eq!(s, 204);
    for (m, path, body) in [
        (Method::GET, "/v1/threads/support-42", None),
        (Method::GET, "/v1/threads/support-42/messages", None),
        (
            Method::POST,
            "/v1/threads/support-42/messages",
            Some(json!({"body":{"text":"still here?"}})),
        ),
        (Method::POST, "/v1/threads/support-42/read", None),
        (Method::GET, "/v1/threads/support-42/members", None),
    ] {
        let (s, e) = d.call("carol", m.clone(), path, body);
        assert_eq!(s, 403, "{m} {path} after removal: {e}");
    }
    assert_eq!(ids(&d.inbox("carol")), ["carol-desk"]);
    assert_eq!(d.thread("bob", "support-42")["member_count"], 2);

    // the observer leaves by himself
    let (s, _) = d.call(
        "dave",
        Method::DELETE,
        "/v1/threads/support-42/members/dave",
        None,
    );
    assert_eq!(s, 204);
    let (s, _) = d.call("dave", Method::GET, "/v1/threads/support-42", None);
    assert_eq!(s, 403);
    assert!(d.inbox("dave").is_empty());

    let Desk { mut g } = d;
    assert!(g.stop().success());
}
