//! Webhooks end to end: the real gateway POSTs every event of the feed to a
//! local receiver that checks each signature, while two dead endpoints (one
//! refusing connections, one accepting and never answering) keep failing
//! beside it. The receiver is down at first, answers 503 once, and the
//! gateway restarts in between: every event still arrives, signed, in order.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "whsec_test_secret";

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Arrival {
    id: i64,
    /// The signature header matched HMAC-SHA256(SECRET, body).
    signed: bool,
    /// Content-Type was application/json and the body's "id" equals the header.
    well_formed: bool,
    path: String,
}

/// A tiny HTTP/1.1 server on a given port: records every POST, answers 503
/// to the very first one (the gateway must retry that event), 200 after.
struct Receiver {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        listener.set_nonblocking(true).unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (arrivals.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve_one(stream, &a);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver {
            arrivals,
            stop,
            thread: Some(thread),
        }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request, records it, answers, closes the connection.
fn serve_one(stream: TcpStream, arrivals: &Mutex<Vec<Arrival>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut len, mut id, mut sig, mut ct) = (0usize, None, None, None);
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = value.parse().unwrap_or(0),
            "x-progressdb-event-id" => id = Some(value),
            "x-progressdb-signature" => sig = Some(value),
            "content-type" => ct = Some(value),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;

    let first = {
        let mut all = arrivals.lock().unwrap();
        let header_id: i64 = id.as_deref().and_then(|s| s.parse().ok()).unwrap_or(-1);
        let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let expected_sig = format!(
            "sha256={}",
            signature(SECRET, &String::from_utf8_lossy(&body))
        );
        all.push(Arrival {
            id: header_id,
            signed: sig.as_deref() == Some(expected_sig.as_str()),
            well_formed: method == "POST"
                && ct.as_deref() == Some("application/json")
                && doc["id"].as_str() == id.as_deref()
                && doc["type"].is_string()
                && doc["thread"].is_string(),
            path,
        });
        all.len() == 1
    };
    let status = if first {
        "503 Service Unavailable"
    } else {
        "200 OK"
    };
    let mut out = stream;
    out.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes(),
    )?;
    out.flush()
}

/// Every event id the feed holds for `thread`, through the public SQL API.
fn feed_ids(cluster: &pgcluster::Cluster, thread: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut after = Value::Null;
    loop {
        let cursor = match &after {
            Value::String(s) => format!("'{s}'"),
            _ => "NULL".into(),
        };
        let page = cluster
            .psql(
                "postgres",
                &format!("SELECT progressdb.thread_events('{thread}', {cursor}, 100)::text"),
            )
            .expect("read the feed");
        let page: Value = serde_json::from_str(&page).expect("a JSON page");
        let events = page["events"].as_array().expect("events").clone();
        if events.is_empty() {
            return ids;
        }
        for e in &events {
            ids.push(e["id"].as_str().unwrap().parse().unwrap());
        }
        after = page["next"].clone();
    }
}

/// Each endpoint's stored progress (`endpoint` → delivered through).
fn progress(cluster: &pgcluster::Cluster) -> Vec<(String, i64)> {
    cluster
        .psql(
            "postgres",
            "SELECT endpoint || ' ' || delivered FROM progressdb.webhook_progress ORDER BY endpoint",
        )
        .expect("read webhook progress")
        .lines()
        .map(|l| {
            let (e, d) = l.rsplit_once(' ').unwrap();
            (e.to_string(), d.parse().unwrap())
        })
        .collect()
}

/// Waits (bounded) until the receiver has every id of `want` and the live
/// endpoint's stored progress reached the last; returns the arrivals and
/// every endpoint's progress.
fn wait_delivered(
    receiver: &Receiver,
    cluster: &pgcluster::Cluster,
    live_key: &str,
    want: &[i64],
) -> (Vec<Arrival>, Vec<(String, i64)>) {
    let last = *want.iter().max().expect("some events");
    let want: HashSet<i64> = want.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let arrivals = receiver.arrivals();
        let got: HashSet<i64> = arrivals.iter().map(|a| a.id).collect();
        let p = progress(cluster);
        let stored = p.iter().find(|(e, _)| e == live_key).map(|(_, d)| *d);
        if want.is_subset(&got) && stored == Some(last) {
            return (arrivals, p);
        }
        assert!(
            Instant::now() < deadline,
            "not every event delivered within 60s: missing {:?}, live progress {stored:?} of {last}",
            want.difference(&got).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Posts `n` messages, edits the first, reacts to two: the events to expect.
fn write_some(g: &Gateway, thread: &str, tag: &str, n: usize) {
    let b = |m: Method, p: &str| {
        g.req(m, p, Some(BACKEND))
            .header("content-type", "application/json")
    };
    let mut ids = Vec::new();
    for i in 0..n {
        let (s, m) = send(
            b(Method::POST, &format!("/v1/threads/{thread}/messages")).body(
                json!({"author": "alice", "body": {"text": format!("{tag} {i}")}}).to_string(),
            ),
        );
        assert_eq!(s, 200, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let (s, e) = send(
        b(
            Method::PUT,
            &format!("/v1/threads/{thread}/messages/{}", ids[0]),
        )
        .header("X-User-ID", "alice")
        .body(json!({"body": {"text": format!("{tag} edited")}}).to_string()),
    );
    assert_eq!(s, 200, "{e}");
    for (who, r) in [("bob", "👍"), ("carol", "🎉")] {
        let (s, m) = send(
            b(
                Method::POST,
                &format!("/v1/messages/{}/reactions", ids[n - 1]),
            )
            .body(json!({"id": who, "reaction": r}).to_string()),
        );
        assert_eq!(s, 200, "{m}");
    }
}

#[test]
fn every_event_reaches_a_live_endpoint_signed_and_in_order_beside_dead_ones() {
    let dir = temp_dir("webhooks");
    let pg_port = free_port();
    let live_port = free_port();
    // Nobody ever listens here.
    let refused_port = free_port();
    // Accepts connections (the kernel does, from its backlog), never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();

    let live = format!("http://127.0.0.1:{live_port}/hook?token=t1");
    let refused = format!("http://127.0.0.1:{refused_port}/refused");
    let hanging = format!("http://127.0.0.1:{silent_port}/hanging");
    let mut args = keyed_args();
    for u in [&refused, &hanging, &live] {
        args.extend(["--webhook-url".to_string(), u.clone()]);
    }
    args.extend(["--webhook-secret".to_string(), SECRET.to_string()]);

    let mut g = Gateway::embedded(&dir, pg_port, &args);
    g.wait_ready();
    let cluster = pgcluster::Cluster::new(&dir, pg_port).unwrap();
    let start = progress(&cluster);
    assert_eq!(
        start.len(),
        3,
        "every endpoint registered at startup: {start:?}"
    );

    // Phase 1: the receiver is down.
    let (s, t) = send(
        g.req(Method::POST, "/v1/threads", Some(BACKEND))
            .header("content-type", "application/json")
            .body(json!({"id": "wh", "title": "Hooks", "author": "alice"}).to_string()),
    );
    assert_eq!(s, 200, "{t}");
    write_some(&g, "wh", "down", 3);
    // Let the live endpoint fail a few times (its backoff grows meanwhile).
    std::thread::sleep(Duration::from_secs(3));

    // Phase 2: the receiver comes up and catches up, this gateway still
    // running (the endpoint recovers from its backoff by itself).
    let receiver = Receiver::start(live_port);
    write_some(&g, "wh", "up", 3);
    let live_key = reqwest::Url::parse(&live).unwrap().to_string();
    let before = feed_ids(&cluster, "wh");
    let before_last = *before.iter().max().unwrap();
    wait_delivered(&receiver, &cluster, &live_key, &before);
    let arrivals_before_restart = receiver.arrivals().len();

    // Phase 3: a restart (the in-flight posts to the silent endpoint are
    // abandoned, progress comes back from the database), then more events.
    // Serially these would wait out the silent endpoint's 10 s timeouts.
    assert!(g.stop().success(), "clean stop");
    g.restart();
    g.wait_ready();
    write_some(&g, "wh", "after restart", 6);
    let (s, t) = send(
        g.req(Method::PUT, "/v1/threads/wh", Some(BACKEND))
            .header("content-type", "application/json")
            .header("X-User-ID", "alice")
            .body(json!({"title": "Renamed"}).to_string()),
    );
    assert_eq!(s, 200, "{t}");

    let expected = feed_ids(&cluster, "wh");
    // The thread, then per write_some n messages + 1 edit + 2 reactions, and
    // the rename: at least one event each.
    let writes = 1 + (3 + 3) + (3 + 3) + (6 + 3) + 1;
    assert!(
        expected.len() >= writes,
        "fewer events than writes ({writes}): {expected:?}"
    );
    let (arrivals, stored) = wait_delivered(&receiver, &cluster, &live_key, &expected);
    let want: HashSet<i64> = expected.iter().copied().collect();

    assert!(
        arrivals.iter().all(|a| a.signed),
        "bad signature: {arrivals:?}"
    );
    assert!(arrivals.iter().all(|a| a.well_formed), "{arrivals:?}");
    assert!(
        arrivals.iter().all(|a| a.path == "/hook?token=t1"),
        "{arrivals:?}"
    );
    // At-least-once: the 503-answered event came again. First arrivals in order.
    let first = arrivals[0].id;
    assert!(
        arrivals.iter().filter(|a| a.id == first).count() >= 2,
        "the event answered 503 was not retried: {arrivals:?}"
    );
    let mut seen = HashSet::new();
    let firsts: Vec<i64> = arrivals
        .iter()
        .filter(|a| seen.insert(a.id))
        .map(|a| a.id)
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "first arrivals out of order: {firsts:?}"
    );
    assert!(
        firsts.iter().all(|id| want.contains(id)),
        "an event the feed does not hold: {firsts:?} vs {expected:?}"
    );

    // Progress survived the restart: nothing stored before it came again.
    let resent: Vec<i64> = arrivals[arrivals_before_restart..]
        .iter()
        .map(|a| a.id)
        .filter(|id| *id <= before_last)
        .collect();
    assert!(
        resent.is_empty(),
        "re-sent after the restart although stored as delivered: {resent:?}"
    );

    // The dead endpoints delivered nothing, kept failing, and held up no one.
    for (url, before) in [&refused, &hanging].iter().map(|u| {
        let key = reqwest::Url::parse(u).unwrap().to_string();
        let b = start.iter().find(|(e, _)| *e == key).map(|(_, d)| *d);
        (key, b)
    }) {
        let now = stored.iter().find(|(e, _)| *e == url).map(|(_, d)| *d);
        assert_eq!(now, before, "{url} advanced without a receiver");
        assert!(now.unwrap() < expected[0], "{url}: {stored:?}");
    }
    let (s, _) = send(g.req(Method::GET, "/readyz", None));
    assert_eq!(s, 200);
    let metrics = g
        .req(Method::GET, "/metrics", Some(ADMIN))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let series = |endpoint: &str, outcome: &str| -> u64 {
        let prefix = format!(
            "progressdb_webhook_posts_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let refused_label = format!("http://127.0.0.1:{refused_port}/refused");
    assert!(series(&refused_label, "failed") >= 1, "{metrics}");
    assert_eq!(series(&refused_label, "delivered"), 0, "{metrics}");
    let live_label = format!("http://127.0.0.1:{live_port}/hook");
    assert!(series(&live_label, "delivered") >= 1, "{metrics}");
    assert!(
        !metrics.contains("token=t1") && !metrics.contains(SECRET),
        "{metrics}"
    );

    assert!(g.stop().success(), "clean stop with posts in flight");
    drop(receiver);
    drop(silent);
}

#[test]
fn a_webhook_url_without_a_secret_or_with_a_bad_scheme_is_refused() {
    for args in [
        vec!["--webhook-url", "http://127.0.0.1:9/x"],
        vec![
            "--webhook-url",
            "ftp://127.0.0.1/x",
            "--webhook-secret",
            "s",
        ],
        vec!["--webhook-url", "not a url", "--webhook-secret", "s"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_progressdb"))
            .args(&args)
            .args([
                "--db",
                "/nonexistent/never-created",
                "--addr",
                "127.0.0.1:0",
            ])
            .env_remove("PROGRESSDB_WEBHOOK_URLS")
            .env_remove("PROGRESSDB_WEBHOOK_SECRET")
            .env_remove("PROGRESSDB_CONFIG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--webhook-"), "{args:?}: {err}");
    }
}
