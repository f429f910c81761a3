//! The docs page and the admin viewer, driven in real headless Chromium
//! (Debian's) by `tests/browser/check.mjs` through playwright-core.
//! The README's test command installs Chromium and the node package.

mod common;

use std::process::Command;

use common::*;
use reqwest::Method;
use serde_json::json;

#[test]
fn docs_and_viewer_work_in_a_real_browser() {
    let dir = temp_dir("browser");
    let mut g = Gateway::embedded(&dir, 55449, &[]);
    g.wait_ready();
    let (s, m) = send(
        g.req(Method::POST, "/v1/messages", Some("sk_example"))
            .json(&json!({"thread": "general", "author": "alice", "body": {"text": "Hello"}})),
    );
    assert_eq!(s, 200, "{m}");
    let id = m["id"].as_str().unwrap();
    let (s, e) = send(
        g.req(
            Method::PUT,
            &format!("/v1/messages/{id}"),
            Some("sk_example"),
        )
        .json(&json!({"body": {"text": "Hello again"}})),
    );
    assert_eq!(s, 200, "{e}");

    let shots = std::env::temp_dir().join(format!("pgw-shots-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    let script_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let out = Command::new("node")
        .current_dir(script_dir)
        .arg("check.mjs")
        .arg(&g.base)
        .arg(&shots)
        .output()
        .expect("node (install Node.js and run `npm install` in gateway/tests/browser)");
    assert!(
        out.status.success(),
        "browser checks failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for shot in ["docs.png", "viewer.png"] {
        let size = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "{shot} screenshot is {size} bytes");
    }
    assert!(g.stop().success());
    let _ = std::fs::remove_dir_all(&shots);
}
