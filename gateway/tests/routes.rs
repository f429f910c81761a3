//! Every documented route's happy path over real HTTP against the real binary
//! and a real PostgreSQL (embedded mode), with keys configured.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not a list: {v}"))
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_route_happy_path() {
    let dir = temp_dir("routes");
    let mut g = Gateway::embedded(&dir, 55411, &keyed_args());
    g.wait_ready();
    let b = |m: Method, p: &str| g.req(m, p, Some(BACKEND));
    let a = |m: Method, p: &str| g.req(m, p, Some(ADMIN));

    // probes and docs need no key
    let (s, v) = send(g.req(Method::GET, "/healthz", None));
    assert_eq!((s, v), (200, json!({"status":"ok"})));
    let (s, v) = send(g.req(Method::GET, "/readyz", None));
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok");
    assert!(v["version"].as_str().is_some_and(|x| !x.is_empty()), "{v}");
    let (s, v) = send(g.req(Method::GET, "/openapi.json", None));
    assert_eq!(s, 200);
    assert!(v["paths"]["/v1/threads/{thread}/messages/{id}/versions"]["get"].is_object());
    let docs = g.req(Method::GET, "/docs/", None).send().unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().unwrap().contains("openapi.json"));
    let viewer = g.req(Method::GET, "/viewer/", None).send().unwrap();
    assert_eq!(viewer.status(), 200);
    assert!(viewer.text().unwrap().contains("/admin/threads"));

    // threads
    let (s, t) = send(
        b(Method::POST, "/v1/threads")
            .body(json!({"id":"t1","title":"Hello World","author":"alice"}).to_string()),
    );
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["id"], "t1");
    assert_eq!(t["author"], "alice");
    assert_eq!(t["title"], "Hello World");
    let (s, t) = send(b(Method::GET, "/v1/threads/t1"));
    assert_eq!((s, t["title"].clone()), (200, json!("Hello World")));
    let (s, t) = send(
        b(Method::PUT, "/v1/threads/t1")
            .header("X-User-ID", "alice")
            .body(json!({"title":"Renamed"}).to_string()),
    );
    assert_eq!((s, t["title"].clone()), (200, json!("Renamed")), "{t}");
    let (s, l) = send(b(Method::GET, "/v1/threads?author=alice"));
    assert_eq!(s, 200);
    assert_eq!(ids(&l, "threads"), vec!["t1"]);
    let (s, l) = send(b(Method::GET, "/v1/threads?author=nobody"));
    assert_eq!((s, l), (200, json!({"threads":[]})));
    let (s, l) = send(b(Method::GET, "/v1/threads?title=Renamed"));
    assert_eq!(s, 200);
    assert!(ids(&l, "threads").contains(&"t1".to_string()));

    // thread metadata and history, members, read state (release 0.2)
    let (s, t) = send(
        b(Method::PUT, "/v1/threads/t1")
            .header("X-User-ID", "alice")
            .body(json!({"metadata":{"team":"core"},"history":"joined"}).to_string()),
    );
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        (
            t["title"].clone(),
            t["metadata"].clone(),
            t["history"].clone()
        ),
        (json!("Renamed"), json!({"team":"core"}), json!("joined"))
    );
    let (s, l) = send(b(
        Method::GET,
        "/v1/threads?metadata=%7B%22team%22%3A%22core%22%7D",
    ));
    assert_eq!((s, ids(&l, "threads")), (200, vec!["t1".to_string()]));
    let (s, m) = send(
        b(Method::POST, "/v1/threads/t1/members")
            .header("X-User-ID", "alice")
            .body(json!({"user":"bob","role":"reader"}).to_string()),
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        m,
        json!({"thread":"t1","user":"bob","role":"reader","joined_ts":m["joined_ts"],"added_by":"alice"})
    );
    let (s, l) = send(b(Method::GET, "/v1/threads/t1/members?limit=10"));
    assert_eq!(s, 200, "{l}");
    let users: Vec<&str> = l["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"]);
    let (s, r) = send(b(Method::POST, "/v1/threads/t1/read").header("X-User-ID", "bob"));
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["user"].clone(), r["unread"].clone()),
        (json!("bob"), json!(0))
    );
    let (s, _) = send(b(Method::DELETE, "/v1/threads/t1/members/bob"));
    assert_eq!(s, 204);
    let (_, t) = send(b(Method::GET, "/v1/threads/t1"));
    assert_eq!(t["member_count"], 1, "{t}");

    // messages
    let (s, m1) = send(
        b(Method::POST, "/v1/messages").body(
            json!({"thread":"t1","author":"alice","body":{"text":"hi"},"id":"ignored","ts":5})
                .to_string(),
        ),
    );
    assert_eq!(s, 200, "{m1}");
    let m1id = m1["id"].as_str().unwrap().to_string();
    assert_ne!(m1id, "ignored");
    assert_eq!(m1["body"], json!({"text":"hi"}));
    assert_eq!(m1["thread"], "t1");
    assert_eq!(m1["role"], "user");
    let (s, m2) = send(
        b(Method::POST, "/v1/threads/t1/messages")
            .header("X-User-ID", "alice")
            .body(json!({"body":"reply","role":"assistant","reply_to":m1id}).to_string()),
    );
    assert_eq!(s, 200, "{m2}");
    assert_eq!(m2["reply_to"], json!(m1id));
    assert_eq!(m2["role"], "assistant");
    let m2id = m2["id"].as_str().unwrap().to_string();

    let (s, l) = send(b(Method::GET, "/v1/messages?thread=t1"));
    assert_eq!(s, 200);
    assert_eq!(l["thread"], "t1");
    assert_eq!(ids(&l, "messages"), vec![m1id.clone(), m2id.clone()]);
    let (s, l) = send(b(Method::GET, "/v1/threads/t1/messages?limit=1"));
    assert_eq!(s, 200);
    assert_eq!(ids(&l, "messages"), vec![m2id.clone()]);
    assert_eq!(l["pagination"]["has_before"], true);
    let (s, l) = send(b(
        Method::GET,
        &format!("/v1/threads/t1/messages?before={m2id}"),
    ));
    assert_eq!((s, ids(&l, "messages")), (200, vec![m1id.clone()]));

    for p in [
        format!("/v1/messages/{m1id}"),
        format!("/v1/threads/t1/messages/{m1id}"),
    ] {
        let (s, m) = send(b(Method::GET, &p));
        assert_eq!((s, m["id"].clone()), (200, json!(m1id)));
    }

    // edits make versions
    let (s, e) = send(
        b(Method::PUT, &format!("/v1/messages/{m1id}"))
            .header("X-User-ID", "alice")
            .body(json!({"body":{"text":"edited"}}).to_string()),
    );
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["body"], json!({"text":"edited"}));
    assert_eq!(e["version"], 2);
    let (s, e) = send(
        b(Method::PUT, &format!("/v1/threads/t1/messages/{m1id}"))
            .body(json!({"body":[1,2]}).to_string()),
    );
    assert_eq!((s, e["version"].clone()), (200, json!(3)), "{e}");
    for p in [
        format!("/v1/messages/{m1id}/versions"),
        format!("/v1/threads/t1/messages/{m1id}/versions"),
    ] {
        let (s, v) = send(b(Method::GET, &p));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["id"], json!(m1id));
        let bodies: Vec<Value> = v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["body"].clone())
            .collect();
        assert_eq!(
            bodies,
            vec![
                json!({"text":"hi"}),
                json!({"text":"edited"}),
                json!([1, 2])
            ]
        );
    }

    // replies
    for p in [
        format!("/v1/messages/{m1id}/replies"),
        format!("/v1/threads/t1/messages/{m1id}/replies?limit=5"),
    ] {
        let (s, r) = send(b(Method::GET, &p));
        assert_eq!(s, 200, "{r}");
        assert_eq!(ids(&r, "replies"), vec![m2id.clone()]);
    }

    // reactions
    let (s, m) = send(
        b(Method::POST, &format!("/v1/messages/{m1id}/reactions"))
            .body(json!({"id":"bob","reaction":"👍"}).to_string()),
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["reactions"], json!({"bob":"👍"}));
    let (s, _) = send(
        b(
            Method::POST,
            &format!("/v1/threads/t1/messages/{m1id}/reactions"),
        )
        .body(json!({"id":"carol","reaction":"🎉"}).to_string()),
    );
    assert_eq!(s, 200);
    for p in [
        format!("/v1/messages/{m1id}/reactions"),
        format!("/v1/threads/t1/messages/{m1id}/reactions"),
    ] {
        let (s, r) = send(b(Method::GET, &p));
        assert_eq!(s, 200);
        assert_eq!(
            r,
            json!({"id": m1id, "reactions":[{"id":"bob","reaction":"👍"},{"id":"carol","reaction":"🎉"}]})
        );
    }
    let r = b(
        Method::DELETE,
        &format!("/v1/messages/{m1id}/reactions/bob"),
    )
    .send()
    .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.text().unwrap(), "");
    let (s, _) = send(b(
        Method::DELETE,
        &format!("/v1/threads/t1/messages/{m1id}/reactions/carol"),
    ));
    assert_eq!(s, 204);
    let (_, r) = send(b(Method::GET, &format!("/v1/messages/{m1id}/reactions")));
    assert_eq!(r["reactions"], json!([]));

    // soft delete and restore, both forms
    for (del, restore) in [
        (
            format!("/v1/messages/{m2id}"),
            format!("/v1/messages/{m2id}/restore"),
        ),
        (
            format!("/v1/threads/t1/messages/{m2id}"),
            format!("/v1/threads/t1/messages/{m2id}/restore"),
        ),
    ] {
        let (s, _) = send(b(Method::DELETE, &del));
        assert_eq!(s, 204);
        let (_, l) = send(b(Method::GET, "/v1/messages?thread=t1"));
        assert_eq!(ids(&l, "messages"), vec![m1id.clone()]);
        let (_, l) = send(b(
            Method::GET,
            "/v1/messages?thread=t1&include_deleted=true",
        ));
        assert_eq!(ids(&l, "messages"), vec![m1id.clone(), m2id.clone()]);
        let (s, m) = send(b(Method::POST, &restore));
        assert_eq!(s, 200, "{m}");
        assert_eq!(m["id"], json!(m2id));
        assert!(m.get("deleted").is_none() || m["deleted"] == false, "{m}");
    }

    // no thread → a generated one, owned by the author
    let (s, m) = send(
        b(Method::POST, "/v1/messages").body(json!({"author":"dave","body":{"a":1}}).to_string()),
    );
    assert_eq!(s, 200, "{m}");
    let gen_thread = m["thread"].as_str().unwrap().to_string();
    let (s, t) = send(b(Method::GET, &format!("/v1/threads/{gen_thread}")));
    assert_eq!((s, t["author"].clone()), (200, json!("dave")));

    // signing (backend only) matches an independent HMAC
    let (s, v) = send(b(Method::POST, "/v1/_sign").body(json!({"userId":"alice"}).to_string()));
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"userId":"alice","signature": signature(SIGNING, "alice")})
    );
    // …and that signature works for a frontend
    let (s, t) = send(g.signed(Method::GET, "/v1/threads/t1", "alice"));
    assert_eq!((s, t["id"].clone()), (200, json!("t1")));

    // admin
    let (s, v) = send(a(Method::GET, "/admin/health"));
    assert_eq!((s, v), (200, json!({"status":"ok","service":"progressdb"})));
    let (s, v) = send(a(Method::GET, "/admin/stats"));
    assert_eq!((s, v), (200, json!({"threads":2,"messages":3})));
    let (s, v) = send(a(Method::GET, "/admin/threads"));
    assert_eq!(s, 200);
    let mut all = ids(&v, "threads");
    all.sort();
    let mut want = vec!["t1".to_string(), gen_thread.clone()];
    want.sort();
    assert_eq!(all, want);
    let (s, v) = send(a(Method::GET, "/admin/threads?limit=1"));
    assert_eq!((s, v["threads"].as_array().unwrap().len()), (200, 1));

    let r = b(Method::GET, "/metrics").send().unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(
        text.contains(
            r#"progressdb_http_requests_total{method="POST",route="/v1/messages",status="200"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains(
        "progressdb_http_request_duration_seconds_count{route=\"/v1/threads/{thread}\"}"
    ));

    // thread delete is soft: gone from reads and lists
    let (s, _) = send(b(Method::DELETE, "/v1/threads/t1").header("X-User-ID", "alice"));
    assert_eq!(s, 204);
    let (s, _) = send(b(Method::GET, "/v1/threads/t1"));
    assert_eq!(s, 404);
    let (_, l) = send(b(Method::GET, "/v1/threads?author=alice"));
    assert_eq!(l, json!({"threads":[]}));

    // every route the OpenAPI document names exists with that method: the
    // router never answers 405, nor its own "not found" (SQL's 404s name the id)
    let (_, doc) = send(g.req(Method::GET, "/openapi.json", None));
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{thread}", "t-none")
                .replace("{id}", "msg-none")
                .replace("{identity}", "u1")
                .replace("{user}", "u1");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = a(m.clone(), &concrete).body("{}").send().unwrap();
            let status = r.status().as_u16();
            let text = r.text().unwrap();
            assert!(
                status != 405 && text != r#"{"error":"not found"}"#,
                "{method} {path} is documented but not routed: {status} {text}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 47, "documented operations");

    assert!(g.stop().success());
}
