//! `"encrypted": true` through HTTP: the gateway passes the flag, the embedded
//! cluster gets the key file path, readers get plaintext, storage holds none.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[test]
fn encrypted_thread_over_http_stores_no_plaintext() {
    let dir = temp_dir("enc");
    let keys = std::path::PathBuf::from(format!("/tmp/pgw-enc-keys-{}", std::process::id()));
    std::fs::write(
        &keys,
        "k1:4242424242424242424242424242424242424242424242424242424242424242\n",
    )
    .unwrap();
    let mut g = Gateway::embedded(
        &dir,
        55447,
        &["--master-key-file".into(), keys.display().to_string()],
    );
    g.wait_ready();

    let (s, t) = send(
        g.req(Method::POST, "/v1/threads", Some("sk_example"))
            .json(&json!({"id": "vault", "title": "Vault", "encrypted": true, "author": "alice"})),
    );
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["encrypted"], true);
    let (s, m) = send(
        g.req(
            Method::POST,
            "/v1/threads/vault/messages",
            Some("sk_example"),
        )
        .json(&json!({"author": "alice", "body": {"text": "card 4111 secret"}})),
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["body"]["text"], "card 4111 secret");
    let (s, page) = send(g.req(
        Method::GET,
        "/v1/threads/vault/messages?author=alice",
        Some("sk_example"),
    ));
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["messages"][0]["body"]["text"], "card 4111 secret");

    let cluster = pgcluster::Cluster::new(&dir, 55447).unwrap();
    let stored = cluster
        .psql("postgres", "SELECT m::text FROM progressdb.messages m")
        .unwrap();
    assert!(stored.contains("pdb1:"), "{stored}");
    assert!(!stored.contains("4111"), "plaintext in storage: {stored}");

    // Without the key file: a clear error for the encrypted thread, plain ones work.
    std::fs::remove_file(&keys).unwrap();
    let (s, e) = send(g.req(
        Method::GET,
        "/v1/threads/vault/messages?author=alice",
        Some("sk_example"),
    ));
    assert_eq!(s, 500, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("encryption key problem") && msg.contains("master_key_file"),
        "{msg}"
    );
    let (s, _) = send(
        g.req(Method::POST, "/v1/messages", Some("sk_example"))
            .json(&json!({"thread": "plain", "author": "alice", "body": {"text": "hi"}})),
    );
    assert_eq!(s, 200);
    assert!(g.stop().success());
}
