//! `GET /v1/threads/{thread}/context` over real HTTP: the document of SQL
//! `context()` passed through, for whoever may read the thread, and every
//! refusal a 400/403/404, never a 500.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[test]
fn context_route() {
    let dir = temp_dir("context");
    let mut g = Gateway::embedded(&dir, free_port(), &keyed_args());
    g.wait_ready();
    let b = |m: Method, p: &str| g.req(m, p, Some(BACKEND)).header("X-User-ID", "alice");

    let (s, _) =
        send(b(Method::POST, "/v1/threads").body(json!({"id":"ai","title":"AI"}).to_string()));
    assert_eq!(s, 200);
    let (s, _) = send(
        b(Method::POST, "/v1/threads/ai/members")
            .body(json!({"user":"rita","role":"reader"}).to_string()),
    );
    assert_eq!(s, 200);
    for (role, body) in [
        ("system", json!({"text":"You are a helpful assistant."})),
        ("user", json!({"text":"What is 2+2?"})),
        ("assistant", json!({"content":"4"})),
        ("user", json!({"text":"And 3+3?"})),
    ] {
        let (s, m) = send(
            b(Method::POST, "/v1/threads/ai/messages")
                .body(json!({"role": role, "body": body}).to_string()),
        );
        assert_eq!(s, 200, "{m}");
    }

    let (s, d) = send(b(Method::GET, "/v1/threads/ai/context?max_tokens=4000"));
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["thread"], "ai");
    assert_eq!(d["format"], "openai");
    assert_eq!(d["tokenizer"], "o200k_base");
    assert_eq!(d["dropped"], 0);
    assert!(d["tokens"].as_i64().unwrap() > 0);
    assert_eq!(
        d["messages"],
        json!([
            {"role":"system","content":"You are a helpful assistant."},
            {"role":"user","content":"What is 2+2?"},
            {"role":"assistant","content":"4"},
            {"role":"user","content":"And 3+3?"}
        ])
    );

    // A reader signed in from a frontend; the anthropic format.
    let (s, a) = send(g.signed(
        Method::GET,
        "/v1/threads/ai/context?max_tokens=4000&format=anthropic&tokenizer=cl100k_base",
        "rita",
    ));
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["system"], "You are a helpful assistant.");
    assert_eq!(a["tokenizer"], "cl100k_base");
    assert_eq!(a["messages"].as_array().unwrap().len(), 3);

    // Refusals.
    for (path, want) in [
        ("/v1/threads/ai/context", 400),
        ("/v1/threads/ai/context?max_tokens=0", 400),
        ("/v1/threads/ai/context?max_tokens=-3", 400),
        ("/v1/threads/ai/context?max_tokens=99999999", 400),
        ("/v1/threads/ai/context?max_tokens=ten", 400),
        ("/v1/threads/ai/context?max_tokens=100&format=xml", 400),
        ("/v1/threads/ai/context?max_tokens=100&tokenizer=gpt2", 400),
        // the system prompt alone needs more than 2 tokens
        ("/v1/threads/ai/context?max_tokens=2", 400),
        ("/v1/threads/nope/context?max_tokens=100", 404),
    ] {
        let (s, e) = send(b(Method::GET, path));
        assert_eq!(s, want, "{path}: {e}");
    }
    let (s, _) = send(g.signed(Method::GET, "/v1/threads/ai/context?max_tokens=100", "bob"));
    assert_eq!(s, 403, "not a member");
    let (s, _) = send(g.req(Method::GET, "/v1/threads/ai/context?max_tokens=100", None));
    assert_eq!(s, 401);

    assert!(g.stop().success());
}
