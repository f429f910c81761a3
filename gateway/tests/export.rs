//! Export over HTTP (NDJSON) → `progressdb import` into a fresh embedded
//! database → export again: the same records. Ids and timestamps are
//! preserved, so the records are identical as they are; what an import
//! regenerates is not in them (timeline positions, data keys of encrypted
//! threads, search entries). Also: an import run twice writes nothing the
//! second time, reports plain progress lines when stderr is not a terminal,
//! and names the line of a bad record.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn ok(g: &Gateway, m: Method, path: &str, user: &str, body: Option<Value>) -> Value {
    let mut r = g.req(m, path, Some(BACKEND)).header("X-User-ID", user);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let (s, v) = send(r);
    assert!(s == 200 || s == 204, "{path}: {s} {v}");
    v
}

/// GET an export: 200, NDJSON, one JSON object per line.
fn export(g: &Gateway, path: &str, who: Option<&str>) -> Vec<Value> {
    let r = match who {
        Some(u) => g.signed(Method::GET, path, u),
        None => g.req(Method::GET, path, Some(BACKEND)),
    }
    .send()
    .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn import(dir: &Path, port: u16, keys: &Path, file: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_progressdb"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PROGRESSDB_") && k != "PROGRESSDB_PG_BIN" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("import")
        .arg("--db")
        .arg(dir)
        .arg("--pg-port")
        .arg(port.to_string())
        .arg("--master-key-file")
        .arg(keys)
        .args(extra)
        .arg(file)
        .env("PROGRESSDB_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run progressdb import")
}

fn write_ndjson(path: &Path, recs: &[Value]) {
    let mut s = String::new();
    for r in recs {
        s.push_str(&r.to_string());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn export_import_export_is_identical() {
    let pid = std::process::id();
    let keys = PathBuf::from(format!("/tmp/pgw-enc-keys-{pid}"));
    std::fs::write(
        &keys,
        "k1:5151515151515151515151515151515151515151515151515151515151515151\n",
    )
    .unwrap();
    let key_args = ["--master-key-file".to_string(), keys.display().to_string()];
    let mut args = keyed_args();
    args.extend(key_args.iter().cloned());

    let dir_a = temp_dir("export-a");
    let port_a = free_port();
    let mut a = Gateway::embedded(&dir_a, port_a, &args);
    a.wait_ready();

    // A conversation: members, edits, replies, reactions, a delete, read state.
    ok(
        &a,
        Method::POST,
        "/v1/threads",
        "alice",
        Some(json!({"id":"t1","title":"Support","metadata":{"tier":"gold"},"history":"joined"})),
    );
    ok(
        &a,
        Method::POST,
        "/v1/threads/t1/members",
        "alice",
        Some(json!({"user":"bob","role":"member"})),
    );
    ok(
        &a,
        Method::POST,
        "/v1/threads/t1/members",
        "alice",
        Some(json!({"user":"carol","role":"reader"})),
    );
    let post = |user: &str, body: Value| -> String {
        ok(
            &a,
            Method::POST,
            "/v1/threads/t1/messages",
            user,
            Some(body),
        )["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let m1 = post("alice", json!({"body":{"text":"hello"}}));
    let m2 = post("bob", json!({"body":{"text":"hi"},"reply_to":m1}));
    ok(
        &a,
        Method::PUT,
        &format!("/v1/threads/t1/messages/{m1}"),
        "alice",
        Some(json!({"body":{"text":"hello!"}})),
    );
    ok(
        &a,
        Method::POST,
        &format!("/v1/threads/t1/messages/{m1}/reactions"),
        "bob",
        Some(json!({"reaction":"+1"})),
    );
    ok(
        &a,
        Method::POST,
        &format!("/v1/threads/t1/messages/{m1}/reactions"),
        "alice",
        Some(json!({"reaction":"eyes"})),
    );
    ok(
        &a,
        Method::DELETE,
        &format!("/v1/threads/t1/messages/{m2}"),
        "bob",
        None,
    );
    let m3 = post("bob", json!({"body":{"text":"anyone?"}}));
    ok(
        &a,
        Method::POST,
        "/v1/threads/t1/read",
        "bob",
        Some(json!({"message":m3})),
    );
    ok(
        &a,
        Method::POST,
        "/v1/threads/t1/members",
        "alice",
        Some(json!({"user":"dave"})),
    );
    post("dave", json!({"body":{"text":"late"}}));
    // An encrypted thread with an edit.
    ok(
        &a,
        Method::POST,
        "/v1/threads",
        "alice",
        Some(json!({"id":"vault","encrypted":true})),
    );
    let s1 = ok(
        &a,
        Method::POST,
        "/v1/threads/vault/messages",
        "alice",
        Some(json!({"body":{"pin":"1234"}})),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        &a,
        Method::PUT,
        &format!("/v1/threads/vault/messages/{s1}"),
        "alice",
        Some(json!({"body":{"pin":"9876"}})),
    );
    // A long thread: more records than one fetch (the portal's batch) and one import batch.
    let cluster_a = pgcluster::Cluster::new(&dir_a, port_a).unwrap();
    cluster_a
        .psql(
            "postgres",
            "SELECT progressdb.post_message('long', 'bot', jsonb_build_object('n', g)) FROM generate_series(1, 1234) g",
        )
        .unwrap();

    let t1 = export(&a, "/v1/threads/t1/export", None);
    let vault = export(&a, "/v1/threads/vault/export", None);
    let long = export(&a, "/v1/threads/long/export", None);
    assert_eq!(t1.len(), 1 + 4 + 4, "{t1:?}");
    assert_eq!(t1[0]["type"], "thread");
    assert_eq!(t1[5]["versions"][0]["body"], json!({"text":"hello"}));
    assert!(t1[6]["deleted_ts"].is_i64());
    assert_eq!(t1[6]["reply_to"], m1.as_str());
    assert_eq!(t1[2]["last_read"], m3.as_str());
    assert_eq!(vault[0]["encrypted"], true);
    assert_eq!(
        vault[2]["body"],
        json!({"pin":"9876"}),
        "plaintext in the export"
    );
    assert_eq!(vault[2]["versions"][0]["body"], json!({"pin":"1234"}));
    assert_eq!(long.len(), 2 + 1234);
    assert!(long[2..]
        .iter()
        .enumerate()
        .all(|(i, r)| r["body"]["n"] == i + 1));

    // Signed users: what they may read (dave joined late: history 'joined').
    let dave = export(&a, "/v1/threads/t1/export", Some("dave"));
    assert_eq!(dave.iter().filter(|r| r["type"] == "message").count(), 1);
    let (s, e) = send(a.signed(Method::GET, "/v1/threads/t1/export", "mallory"));
    assert_eq!(s, 403, "{e}");
    let (s, e) = send(a.req(Method::GET, "/v1/threads/nope/export", Some(BACKEND)));
    assert_eq!(s, 404, "{e}");
    // A user's export: bob's member record, his messages, his reaction to alice's.
    let bob = export(&a, "/admin/users/bob/export", None);
    let kinds: Vec<&str> = bob.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["thread", "member", "message", "message", "reaction"]
    );
    let (s, _) = send(a.signed(Method::GET, "/admin/users/bob/export", "bob"));
    assert_eq!(s, 403);

    // Into a fresh embedded database, by the import command.
    let file = PathBuf::from(format!("/tmp/pgw-export-{pid}.ndjson"));
    let all: Vec<Value> = t1.iter().chain(&vault).chain(&long).cloned().collect();
    write_ndjson(&file, &all);
    let dir_b = temp_dir("export-b");
    let port_b = free_port();
    let out = import(&dir_b, port_b, &keys, &file, &["--batch", "100"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), format!("created {}, existing 0", all.len()));
    // Not a terminal: plain progress lines, no bar.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progressdb import: "))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("records") && l.contains("bytes of")),
        "{stderr}"
    );
    assert!(!stderr.contains('\r'), "{stderr}");

    // Twice is once.
    let again = import(&dir_b, port_b, &keys, &file, &[]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        format!("created 0, existing {}", all.len())
    );

    // A bad line: refused with its line number; nothing of it written.
    let bad = PathBuf::from(format!("/tmp/pgw-export-bad-{pid}.ndjson"));
    std::fs::write(
        &bad,
        format!(
            "{}\n{}\n{{\"v\":1,\"type\":\"message\",\"thread\":\"t2\",\"id\":\"m\",\"author\":\"x\",\"ts\":\"soon\",\"body\":{{}}}}\n",
            json!({"v":1,"type":"thread","id":"t2","author":"x","created_ts":1}),
            json!({"v":1,"type":"message","thread":"t2","id":"m0","author":"x","ts":2,"body":{}})
        ),
    )
    .unwrap();
    let refused = import(&dir_b, port_b, &keys, &bad, &[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("line 3:") && err.contains("\"ts\""), "{err}");

    let mut b = Gateway::embedded(&dir_b, port_b, &args);
    b.wait_ready();
    assert_eq!(export(&b, "/v1/threads/t1/export", None), t1);
    assert_eq!(export(&b, "/v1/threads/vault/export", None), vault);
    assert_eq!(export(&b, "/v1/threads/long/export", None), long);
    assert_eq!(export(&b, "/v1/threads/t1/export", Some("dave")), dave);
    let (s, _) = send(b.req(Method::GET, "/v1/threads/t2/export", Some(BACKEND)));
    assert_eq!(s, 404, "the refused batch wrote nothing");
    // Sealed again in the new database.
    let stored = pgcluster::Cluster::new(&dir_b, port_b)
        .unwrap()
        .psql(
            "postgres",
            "SELECT m::text FROM progressdb.messages m WHERE thread = 'vault'",
        )
        .unwrap();
    assert!(
        stored.contains("pdb1:") && !stored.contains("9876"),
        "{stored}"
    );

    assert!(b.stop().success());
    assert!(a.stop().success());
    std::fs::remove_file(&file).ok();
    std::fs::remove_file(&bad).ok();
    std::fs::remove_file(&keys).ok();
}
