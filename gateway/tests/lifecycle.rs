//! Whole-process behaviour: the development-profile quickstart, data kept
//! across a SIGTERM and restart of the embedded cluster, and /readyz following
//! an external database as it goes away and comes back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::json;

#[test]
fn quickstart_in_dev_profile_survives_restart() {
    let dir = temp_dir("quick");
    let mut g = Gateway::embedded(&dir, 55441, &[]);
    g.wait_ready();

    // The README quickstart, byte for byte.
    let r = g
        .client
        .post(g.url("/v1/messages"))
        .header("Authorization", "Bearer pk_example")
        .header("Content-Type", "application/json")
        .body(r#"{"thread":"general","author":"alice","body":{"text":"Hello"}}"#)
        .send()
        .unwrap();
    let (s, m) = status_json(r);
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["thread"], "general");
    assert_eq!(m["author"], "alice");
    assert_eq!(m["body"], json!({"text":"Hello"}));
    let id = m["id"].as_str().unwrap().to_string();

    // dev profile: a frontend names its user without signing, but must name one
    let (s, l) = send(g.req(
        Method::GET,
        "/v1/messages?thread=general&author=alice",
        Some("pk_example"),
    ));
    assert_eq!(s, 200);
    assert_eq!(l["messages"][0]["id"], json!(id));
    let (s, _) = send(g.req(
        Method::GET,
        "/v1/messages?thread=general",
        Some("pk_example"),
    ));
    assert_eq!(s, 401);
    // …and ownership still applies to the named user
    let (s, _) = send(g.req(
        Method::GET,
        "/v1/messages?thread=general&author=bob",
        Some("pk_example"),
    ));
    assert_eq!(s, 403);
    let (s, v) = send(g.req(Method::GET, "/admin/stats", Some("admin_example")));
    assert_eq!((s, v), (200, json!({"threads":1,"messages":1})));

    // SIGTERM: clean exit, and the embedded cluster is stopped with it
    let st = g.stop();
    assert!(st.success(), "{st}");
    let cluster = pgcluster::Cluster::new(&dir, 55441).unwrap();
    assert!(
        !cluster.is_running(),
        "embedded PostgreSQL still running after SIGTERM"
    );

    // same directory again: the data is still there
    g.restart();
    g.wait_ready();
    let (s, m) = send(g.req(
        Method::GET,
        &format!("/v1/messages/{id}"),
        Some("sk_example"),
    ));
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["body"], json!({"text":"Hello"}));
    let (_, t) = send(g.req(Method::GET, "/v1/threads/general", Some("sk_example")));
    assert_eq!(t["author"], "alice");
    assert!(g.stop().success());
}

/// A cluster run by the test itself (the gateway only connects to it).
struct External {
    cluster: pgcluster::Cluster,
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.cluster.data_dir());
        }
    }
}

fn poll_readyz(g: &Gateway, want: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, serde_json::Value::Null);
    while Instant::now() < deadline {
        last = send(g.req(Method::GET, "/readyz", None));
        if last.0 == want {
            return last.1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/readyz did not become {want} within 30s; last {:?}", last);
}

#[test]
fn readyz_follows_an_external_database() {
    let dir = temp_dir("ext");
    let ext = External {
        cluster: pgcluster::Cluster::new(&dir, 55451).unwrap(),
    };
    ext.cluster.init().unwrap();
    ext.cluster.start().unwrap();

    let mut g = Gateway::with_db(&ext.cluster.conn_string("postgres"), &keyed_args());
    g.wait_ready();
    let v = poll_readyz(&g, 200);
    assert!(v["version"].is_string(), "{v}");
    let (s, _) = send(
        g.req(Method::POST, "/v1/threads", Some(BACKEND))
            .body(json!({"id":"e1","author":"al"}).to_string()),
    );
    assert_eq!(s, 200);

    ext.cluster.stop().unwrap();
    let v = poll_readyz(&g, 503);
    assert!(v["error"].is_string());
    // the API says 503 too, not 500
    let (s, _) = send(g.req(Method::GET, "/v1/threads/e1", Some(BACKEND)));
    assert_eq!(s, 503);
    // liveness is unaffected
    let (s, _) = send(g.req(Method::GET, "/healthz", None));
    assert_eq!(s, 200);

    ext.cluster.start().unwrap();
    let v = poll_readyz(&g, 200);
    assert_eq!(v["status"], "ok");
    // the pool recovers without a gateway restart (first call may still meet a dead connection)
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, t) = send(g.req(Method::GET, "/v1/threads/e1", Some(BACKEND)));
        if s == 200 {
            assert_eq!(t["author"], "al");
            break;
        }
        assert!(Instant::now() < deadline, "API did not recover: {s} {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(g.stop().success());
    // the gateway must not stop a database it did not start
    assert!(ext.cluster.is_running());
}
