//! Defects found by the schema fuzzer (tests/reliability/fuzz.sh), each kept
//! here as a plain regression test over real HTTP.

mod common;

use common::*;
use reqwest::Method;

/// Status and raw text: these bodies hold numbers a double cannot hold, so
/// they are compared as text, not parsed.
fn call(g: &Gateway, m: Method, path: &str, body: Option<&str>) -> (u16, String) {
    let mut r = g
        .req(m, path, Some(BACKEND))
        .header("X-User-ID", "alice")
        .header("Content-Type", "application/json");
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let r = r.send().expect("request");
    (r.status().as_u16(), r.text().unwrap())
}

/// A message body may hold any JSON number jsonb holds: beyond a double's
/// range, or more precise than one. The fuzzer posted
/// `-1.7976931348623157e+308`; the extension's search trigger read the body
/// as JSON through a double and failed with 500 ("number out of range").
/// Now it posts, reads, lists, edits, keeps versions, feeds the LLM context
/// and search, in a plain and an encrypted thread, with every digit kept.
#[test]
fn numbers_beyond_a_double_in_a_body() {
    let dir = temp_dir("fuzzed");
    let keys = std::path::PathBuf::from(format!("/tmp/pgw-fuzzed-keys-{}", std::process::id()));
    std::fs::write(
        &keys,
        "k1:5151515151515151515151515151515151515151515151515151515151515151\n",
    )
    .unwrap();
    let mut args = keyed_args();
    args.extend(["--master-key-file".into(), keys.display().to_string()]);
    let mut g = Gateway::embedded(&dir, 55451, &args);
    g.wait_ready();

    let big = format!("1{}", "0".repeat(400)); // 1e400 as jsonb writes it
    let max = format!("-17976931348623157{}", "0".repeat(292)); // -f64::MAX
    let precise = "0.1000000000000000000000001";
    let post = format!(
        r#"{{"body":{{"text":"huge numbers","a":-1.7976931348623157e+308,"b":1e400,"c":{precise}}}}}"#
    );
    let (s, t) = call(
        &g,
        Method::POST,
        "/v1/threads",
        Some(r#"{"id":"vault","encrypted":true}"#),
    );
    assert_eq!(s, 200, "{t}");

    for thread in ["plain", "vault"] {
        let (s, m) = call(
            &g,
            Method::POST,
            &format!("/v1/threads/{thread}/messages"),
            Some(&post),
        );
        assert_eq!(s, 200, "{thread}: {m}");
        for n in [big.as_str(), max.as_str(), precise] {
            assert!(m.contains(n), "{thread}: {n} not kept in {m}");
        }
        let id = m
            .split("\"id\":")
            .nth(1)
            .unwrap()
            .split('"')
            .nth(1)
            .unwrap();
        let id = id.to_string();

        for path in [
            format!("/v1/messages/{id}"),
            format!("/v1/threads/{thread}/messages"),
            format!("/v1/threads/{thread}/export"),
        ] {
            let (s, text) = call(&g, Method::GET, &path, None);
            assert_eq!(s, 200, "{path}: {text}");
            assert!(text.contains(&big), "{path}: {text}");
        }
        let (s, ctx) = call(
            &g,
            Method::GET,
            &format!("/v1/threads/{thread}/context?max_tokens=100000"),
            None,
        );
        assert_eq!(s, 200, "{thread}: {ctx}");
        assert!(ctx.contains("huge numbers"), "{ctx}");

        let (s, e) = call(
            &g,
            Method::PUT,
            &format!("/v1/messages/{id}"),
            Some(r#"{"body":{"text":"huger numbers","n":1e401}}"#),
        );
        assert_eq!(s, 200, "{thread}: {e}");
        assert!(e.contains(&format!("{big}0")), "{e}");
        let (s, v) = call(
            &g,
            Method::GET,
            &format!("/v1/messages/{id}/versions"),
            None,
        );
        assert_eq!(s, 200, "{thread}: {v}");
        assert!(v.contains(&big) && v.contains(&format!("{big}0")), "{v}");
    }
    let (s, found) = call(&g, Method::GET, "/v1/search?q=huger&thread=plain", None);
    assert_eq!(s, 200, "{found}");
    assert!(found.contains("huger numbers"), "{found}");

    assert!(g.stop().success());
    let _ = std::fs::remove_file(&keys);
}
