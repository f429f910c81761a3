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

/// A cluster run by the test itself, so the gateway can be stopped and
/// started again while the data (and the SQL API) stays up.
struct External(pgcluster::Cluster);

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.0.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.0.data_dir());
        }
    }
}

/// Lines the page driver prints, read on a thread (so waits are bounded).
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A native `EventSource` in headless Chromium, on a page of another origin
/// (CORS), with the credentials in the query string (`key`, `user`,
/// `signature`: a frontend key and alice's signature): a message bob posts
/// over HTTP shows up on the page; when the gateway stops (the stream ends)
/// the browser reconnects by itself and, with `Last-Event-ID`, gets what was
/// written while it was away, then live messages again — each exactly once.
#[test]
fn eventsource_with_query_credentials_in_a_real_browser() {
    use std::time::Duration;

    let dir = temp_dir("browser-sse");
    let ext = External(pgcluster::Cluster::new(&dir, 55463).unwrap());
    ext.0.init().unwrap();
    ext.0.start().unwrap();

    let page_port = free_port();
    let mut args = keyed_args();
    args.extend([
        "--cors-origins".to_string(),
        format!("http://127.0.0.1:{page_port}"),
    ]);
    let mut g = Gateway::with_db(&ext.0.conn_string("postgres"), &args);
    g.wait_ready();

    let (s, t) = send(
        g.req(Method::POST, "/v1/threads", Some(BACKEND))
            .json(&json!({"id": "live", "title": "Live", "author": "alice"})),
    );
    assert_eq!(s, 200, "{t}");
    let (s, m) = send(
        g.req(Method::POST, "/v1/threads/live/members", Some(BACKEND))
            .header("X-User-ID", "alice")
            .json(&json!({"user": "bob"})),
    );
    assert_eq!(s, 200, "{m}");
    // Something from before the page opens: not shown (a new stream starts live).
    let (s, m) = send(
        g.signed(Method::POST, "/v1/messages", "bob")
            .json(&json!({"thread": "live", "body": {"text": "before the page"}})),
    );
    assert_eq!(s, 200, "{m}");

    let events = format!(
        "{}/v1/threads/live/events?key={FRONTEND}&user=alice&signature={}",
        g.base,
        signature(SIGNING, "alice")
    );
    let (first, away, back) = ("hello from bob", "written while away", "live again");
    let script_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let mut node = Command::new("node")
        .current_dir(script_dir)
        .arg("eventsource.mjs")
        .arg(page_port.to_string())
        .arg(&events)
        .args([first, away, back])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node (install Node.js and run `npm install` in gateway/tests/browser)");
    let lines = lines_of(&mut node);
    let mut node = KillOnDrop(node);
    let mut seen = Vec::new();
    let mut wait_for = |want: &str, within: Duration, node: &mut KillOnDrop| -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l == want || l.starts_with(&format!("{want} ")) => return l,
                Ok(l) => seen.push(l),
                Err(_) => {
                    let err = node.stop_and_read_stderr();
                    panic!(
                        "the browser did not report {want:?} within {within:?}; it said {seen:?}\n{err}"
                    );
                }
            }
        }
    };

    wait_for("open", Duration::from_secs(90), &mut node);
    let (s, m) = send(
        g.signed(Method::POST, "/v1/messages", "bob")
            .json(&json!({"thread": "live", "body": {"text": first}})),
    );
    assert_eq!(s, 200, "{m}");
    wait_for("got-first", Duration::from_secs(30), &mut node);

    // The gateway goes away: every stream ends. A message is written while
    // no gateway runs (through the SQL API), then the gateway comes back.
    assert!(g.stop().success());
    ext.0
        .psql(
            "postgres",
            &format!(
                "SELECT progressdb.post_message('live', 'bob', '{{\"text\": \"{away}\"}}', actor => 'bob')"
            ),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // the browser retries meanwhile
    g.restart();
    g.wait_ready();
    let (s, m) = send(
        g.signed(Method::POST, "/v1/messages", "bob")
            .json(&json!({"thread": "live", "body": {"text": back}})),
    );
    assert_eq!(s, 200, "{m}");
    let done = wait_for("done", Duration::from_secs(120), &mut node);
    let status = node.0.wait().unwrap();
    assert!(
        status.success(),
        "the browser driver failed after {done}: {}",
        node.stop_and_read_stderr()
    );
    eprintln!("browser: {done}");
    let report: serde_json::Value = serde_json::from_str(&done["done ".len()..]).unwrap();
    assert_eq!(report["items"].as_array().unwrap().len(), 3, "{report}");
    for item in report["items"].as_array().unwrap() {
        assert_eq!(item["author"], "bob", "{report}");
        assert_eq!(item["thread"], "live", "{report}");
    }
    assert!(g.stop().success());
}

/// The page driver, never left behind when the test fails half way.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// Ends it (if still running) and returns what it wrote to stderr.
    fn stop_and_read_stderr(&mut self) -> String {
        use std::io::Read;
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
