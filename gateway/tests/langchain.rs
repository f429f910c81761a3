//! `progressdb import --from-langchain`: a chat-history table written by the
//! real langchain-postgres package (tests/langchain/fill.py, in the venv
//! `scripts/setup-python.sh` makes) is imported into a fresh gateway
//! database, every session is read back through
//! `GET /v1/threads/{id}/context` and the message list and compared with
//! what fill.py says it wrote; a second import changes nothing, and one
//! after the application wrote another message adds just that.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use reqwest::Method;
use serde_json::Value;

/// One more message in a session, through the package (argv: conninfo,
/// table, session id).
const ADD_ONE: &str = r#"
import sys, psycopg
from langchain_core.messages import HumanMessage
from langchain_postgres import PostgresChatMessageHistory
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    history = PostgresChatMessageHistory(sys.argv[2], sys.argv[3], sync_connection=conn)
    history.add_messages([HumanMessage(content="And tomorrow?")])
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway crate lives in the workspace")
        .to_path_buf()
}

/// The venv's python. Its absence is a failure, never a skip.
fn venv_python() -> PathBuf {
    let py = repo_root().join(".venv-langchain/bin/python");
    assert!(
        py.exists(),
        "{} is missing: this test needs the pinned langchain-postgres. \
         Run `bash scripts/setup-python.sh` (scripts/test.sh runs it before the integration tests).",
        py.display()
    );
    py
}

fn output_text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `progressdb import --from-langchain SOURCE --table TABLE` into `db`.
fn import(db: &str, source: &str, table: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_progressdb"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PROGRESSDB_") && k != "PROGRESSDB_PG_BIN" {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "import",
        "--db",
        db,
        "--from-langchain",
        source,
        "--table",
        table,
    ])
    .output()
    .expect("run progressdb import")
}

/// The source database: a private cluster, stopped and removed on drop.
struct Source {
    cluster: pgcluster::Cluster,
    dir: PathBuf,
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn json_args(v: &Value) -> Value {
    serde_json::from_str(v.as_str().expect("arguments are a JSON string"))
        .expect("arguments parse as JSON")
}

/// Compares one session's context window with fill.py's messages (system
/// messages first, as the openai format puts them).
fn check_context(session: &str, window: &Value, expected: &[Value]) {
    let (sys, rest): (Vec<&Value>, Vec<&Value>) =
        expected.iter().partition(|m| m["role"] == "system");
    let want: Vec<&Value> = sys.into_iter().chain(rest).collect();
    let got = window["messages"].as_array().expect("messages");
    assert_eq!(window["dropped"], 0, "{session}: {window}");
    assert_eq!(got.len(), want.len(), "{session}: {window}");
    let mut made_up_call: Option<Value> = None;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let at = format!("{session} message {i}: got {g}, want {w}");
        assert_eq!(g["role"], w["role"], "{at}");
        assert_eq!(g["content"], w["content"], "{at}");
        match w.get("tool_calls") {
            None => assert!(g.get("tool_calls").is_none(), "{at}"),
            Some(calls) => {
                let calls = calls.as_array().unwrap();
                let gc = g["tool_calls"].as_array().unwrap_or_else(|| panic!("{at}"));
                assert_eq!(gc.len(), calls.len(), "{at}");
                for (c, e) in gc.iter().zip(calls) {
                    assert_eq!(c["type"], "function", "{at}");
                    assert_eq!(c["function"]["name"], e["name"], "{at}");
                    assert_eq!(json_args(&c["function"]["arguments"]), e["args"], "{at}");
                    if e["id"] == "*" {
                        assert!(c["id"].as_str().is_some_and(|s| !s.is_empty()), "{at}");
                        made_up_call = Some(c["id"].clone());
                    } else {
                        assert_eq!(c["id"], e["id"], "{at}");
                    }
                }
            }
        }
        match w.get("tool_call_id") {
            None => assert!(g.get("tool_call_id").is_none(), "{at}"),
            Some(id) if id == "*" => {
                assert_eq!(Some(&g["tool_call_id"]), made_up_call.as_ref(), "{at}")
            }
            Some(id) => assert_eq!(&g["tool_call_id"], id, "{at}"),
        }
    }
}

#[test]
fn import_from_langchain_postgres() {
    let python = venv_python();

    // The source: a cluster of its own, filled by the package itself.
    let src_dir = temp_dir("lcsrc");
    let src_port = free_port();
    let cluster = pgcluster::Cluster::new(&src_dir, src_port).unwrap();
    cluster.init().unwrap();
    cluster.start().unwrap();
    let source = Source {
        cluster,
        dir: src_dir.clone(),
    };
    let table = "message_store";
    let fill = Command::new(&python)
        .arg(repo_root().join("tests/langchain/fill.py"))
        .arg(source.cluster.conn_string("postgres"))
        .arg(table)
        .output()
        .expect("run fill.py");
    assert!(
        fill.status.success(),
        "fill.py failed: {}",
        output_text(&fill)
    );
    let summary: Value = serde_json::from_slice(&fill.stdout).expect("fill.py prints JSON");
    let sessions = summary["sessions"].as_array().unwrap();
    let total = summary["message_count"].as_u64().unwrap();
    assert_eq!(sessions.len(), 4);
    assert!(total > 600, "more rows than one read batch: {total}");
    // The URL form the README shows, with the unix socket as a query parameter.
    let url = format!(
        "postgres://postgres@localhost/postgres?host={}&port={src_port}",
        source.cluster.socket_dir().display()
    );

    // A fresh gateway database; the import talks to it by connection string.
    let dir = temp_dir("langchain");
    let pg_port = free_port();
    let mut g = Gateway::embedded(&dir, pg_port, &keyed_args());
    g.wait_ready();
    let db = pgcluster::Cluster::new(&dir, pg_port)
        .unwrap()
        .conn_string("postgres");

    let first = import(&db, &url, table);
    assert!(first.status.success(), "import: {}", output_text(&first));
    let records = sessions.len() as u64 + total;
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        format!("created {records}, existing 0"),
        "{}",
        output_text(&first)
    );

    let stats = |g: &Gateway| {
        let (s, v) = send(g.req(Method::GET, "/admin/stats", Some(ADMIN)));
        assert_eq!(s, 200, "{v}");
        (
            v["threads"].as_u64().unwrap(),
            v["messages"].as_u64().unwrap(),
        )
    };
    assert_eq!(stats(&g), (sessions.len() as u64, total));

    let read_back = |g: &Gateway| -> Vec<Vec<String>> {
        let mut ids = Vec::new();
        for s in sessions {
            let sid = s["session_id"].as_str().unwrap();
            let thread = format!("lc-{sid}");
            let expected = s["messages"].as_array().unwrap();

            let (st, t) = send(g.req(Method::GET, &format!("/v1/threads/{thread}"), Some(BACKEND)));
            assert_eq!(st, 200, "{t}");
            assert_eq!(t["title"], format!("LangChain session {sid}"));
            assert_eq!(t["author"], "langchain");

            let (st, w) = send(g.req(
                Method::GET,
                &format!("/v1/threads/{thread}/context?max_tokens=1000000"),
                Some(BACKEND),
            ));
            assert_eq!(st, 200, "{w}");
            check_context(sid, &w, expected);

            // The timeline itself: every row in order, ids from the row
            // ids, names kept in the body.
            let (st, page) = send(g.req(
                Method::GET,
                &format!("/v1/threads/{thread}/messages?limit=1000"),
                Some(BACKEND),
            ));
            assert_eq!(st, 200, "{page}");
            let msgs = page["messages"].as_array().unwrap();
            assert_eq!(msgs.len(), expected.len(), "{sid}");
            let mut last_row = 0i64;
            let mut session_ids = Vec::new();
            for (m, e) in msgs.iter().zip(expected) {
                assert_eq!(m["role"], e["role"], "{m}");
                assert_eq!(m["author"], e["role"], "{m}");
                assert_eq!(m["body"]["content"], e["content"], "{m}");
                assert_eq!(m["body"].get("name"), e.get("name"), "{m}");
                let id = m["id"].as_str().unwrap();
                let row: i64 = id
                    .strip_prefix(&format!("{thread}-"))
                    .unwrap_or_else(|| panic!("message id {id} names its session"))
                    .parse()
                    .unwrap();
                assert!(row > last_row, "ids follow the table's row order: {id}");
                last_row = row;
                session_ids.push(id.to_string());
            }
            ids.push(session_ids);
        }
        ids
    };
    let ids = read_back(&g);

    // The marker words are findable.
    for (marker, session) in summary["markers"].as_array().unwrap().iter().zip([0, 1, 1]) {
        let (st, r) = send(g.req(
            Method::GET,
            &format!("/v1/search?q={}", marker.as_str().unwrap()),
            Some(BACKEND),
        ));
        assert_eq!(st, 200, "{r}");
        let hits = r["results"].as_array().unwrap();
        assert_eq!(hits.len(), 1, "{marker}: {r}");
        assert_eq!(
            hits[0]["message"]["thread"],
            format!("lc-{}", sessions[session]["session_id"].as_str().unwrap())
        );
    }

    // Again: everything is found and skipped, nothing duplicated.
    let second = import(&db, &url, table);
    assert!(
        second.status.success(),
        "second import: {}",
        output_text(&second)
    );
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).trim(),
        format!("created 0, existing {records}"),
        "{}",
        output_text(&second)
    );
    assert_eq!(stats(&g), (sessions.len() as u64, total));
    assert_eq!(read_back(&g), ids);

    // The application goes on writing; the next import adds just that.
    let weather = sessions[0]["session_id"].as_str().unwrap();
    let more = Command::new(&python)
        .arg("-c")
        .arg(ADD_ONE)
        .arg(source.cluster.conn_string("postgres"))
        .arg(table)
        .arg(weather)
        .output()
        .expect("run python");
    assert!(
        more.status.success(),
        "add a message: {}",
        output_text(&more)
    );
    let third = import(&db, &url, table);
    assert_eq!(
        String::from_utf8_lossy(&third.stdout).trim(),
        format!("created 1, existing {records}"),
        "{}",
        output_text(&third)
    );
    assert_eq!(stats(&g), (sessions.len() as u64, total + 1));
    let (st, w) = send(g.req(
        Method::GET,
        &format!("/v1/threads/lc-{weather}/context?max_tokens=1000000"),
        Some(BACKEND),
    ));
    assert_eq!(st, 200, "{w}");
    assert_eq!(
        w["messages"].as_array().unwrap().last().unwrap(),
        &serde_json::json!({"role": "user", "content": "And tomorrow?"})
    );

    // A table that is not there is a clear error, not an empty import.
    let missing = import(&db, &url, "no_such_table");
    assert!(!missing.status.success(), "{}", output_text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no table no_such_table"),
        "{}",
        output_text(&missing)
    );

    g.stop();
    drop(source);
}
