//! Test harness: runs the real `progressdb` binary on a free local port with
//! its own embedded cluster (or a given `--db`), and talks to it over HTTP.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde_json::Value;

pub const FRONTEND: &str = "pk_test_front";
pub const BACKEND: &str = "sk_test_back";
pub const ADMIN: &str = "adm_test";
pub const SIGNING: &str = "sig_test_secret";

/// Keys configured (so NOT the development profile), no rate limit.
pub fn keyed_args() -> Vec<String> {
    [
        "--frontend-keys",
        FRONTEND,
        "--backend-keys",
        BACKEND,
        "--admin-keys",
        ADMIN,
        "--signing-keys",
        SIGNING,
        "--rate-rps",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Lowercase hex HMAC-SHA256(secret, user), computed independently of the
/// gateway (RFC 2104 over SHA-256, via the same crates' primitives).
pub fn signature(secret: &str, user: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(user.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh, short temp directory path (unix socket paths must stay short).
pub fn temp_dir(name: &str) -> PathBuf {
    let p = PathBuf::from(format!("/tmp/pgw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

pub struct Gateway {
    child: Option<Child>,
    pub base: String,
    pub client: Client,
    /// The embedded data directory and socket port, when embedded.
    pub embedded: Option<(PathBuf, u16)>,
    args: Vec<String>,
    owns_dir: bool,
    /// Where the gateway's stderr goes, and at which log level (None: inherited, `warn`).
    log: Option<(PathBuf, String)>,
}

impl Gateway {
    /// Embedded mode in `dir` with the given extra arguments.
    pub fn embedded(dir: &Path, pg_port: u16, extra: &[String]) -> Gateway {
        let mut args = vec![
            "--db".to_string(),
            dir.display().to_string(),
            "--pg-port".into(),
            pg_port.to_string(),
        ];
        args.extend(extra.iter().cloned());
        let mut g = Gateway::spawn(args);
        g.embedded = Some((dir.to_path_buf(), pg_port));
        g.owns_dir = true;
        g
    }

    /// Embedded mode like [`Gateway::embedded`], with the gateway's stderr
    /// captured at log level `level` into a file beside `dir` (see
    /// [`Gateway::log_text`]); the file goes with the directory.
    pub fn embedded_logged(dir: &Path, pg_port: u16, extra: &[String], level: &str) -> Gateway {
        let mut args = vec![
            "--db".to_string(),
            dir.display().to_string(),
            "--pg-port".into(),
            pg_port.to_string(),
        ];
        args.extend(extra.iter().cloned());
        let mut g = Gateway::prepare(args);
        g.log = Some((log_path(dir), level.to_string()));
        g.launch();
        g.embedded = Some((dir.to_path_buf(), pg_port));
        g.owns_dir = true;
        g
    }

    /// What the gateway wrote to stderr so far (when started with a log file).
    pub fn log_text(&self) -> String {
        let (path, _) = self.log.as_ref().expect("started with embedded_logged");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Any `--db` value (e.g. a connection string).
    pub fn with_db(db: &str, extra: &[String]) -> Gateway {
        let mut args = vec!["--db".to_string(), db.to_string()];
        args.extend(extra.iter().cloned());
        Gateway::spawn(args)
    }

    fn spawn(args: Vec<String>) -> Gateway {
        let mut g = Gateway::prepare(args);
        g.launch();
        g
    }

    /// The gateway on a free port, not started yet.
    fn prepare(mut args: Vec<String>) -> Gateway {
        let port = free_port();
        args.extend(["--addr".into(), format!("127.0.0.1:{port}")]);
        Gateway {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            embedded: None,
            args,
            owns_dir: false,
            log: None,
        }
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_progressdb"));
        // Only our arguments configure it: drop any PROGRESSDB_* from the
        // environment (except where the server binaries live).
        for (k, _) in std::env::vars() {
            if k.starts_with("PROGRESSDB_") && k != "PROGRESSDB_PG_BIN" {
                cmd.env_remove(k);
            }
        }
        cmd.args(&self.args)
            .env("PROGRESSDB_LOG_LEVEL", "warn")
            .stdin(Stdio::null());
        if let Some((path, level)) = &self.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open the gateway log file");
            cmd.env("PROGRESSDB_LOG_LEVEL", level).stderr(file);
        }
        self.child = Some(cmd.spawn().expect("start the gateway binary"));
    }

    /// Starts the same gateway again (same arguments, same port and directory).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.launch();
    }

    /// Waits (bounded) until /readyz says 200; panics with the last answer.
    pub fn wait_ready(&mut self) -> &mut Self {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("gateway exited early: {st}");
                }
            }
            match self.client.get(format!("{}/readyz", self.base)).send() {
                Ok(r) if r.status() == 200 => return self,
                Ok(r) => last = format!("{} {}", r.status(), r.text().unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("gateway not ready after 90s: {last}");
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gateway did not stop within 60s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (`kill -9`): no shutdown at all; waits until it is gone.
    /// The embedded cluster it started keeps running ([`Gateway::restart`]
    /// takes it over).
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9 the gateway");
        child.wait().expect("reap the gateway");
    }

    /// The gateway's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the gateway process runs.
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let r = self.client.request(method, self.url(path));
        match key {
            Some(k) => r.header("Authorization", format!("Bearer {k}")),
            None => r,
        }
    }

    /// A frontend request signed as `user`.
    pub fn signed(&self, method: Method, path: &str, user: &str) -> RequestBuilder {
        self.req(method, path, Some(FRONTEND))
            .header("X-User-ID", user)
            .header("X-User-Signature", signature(SIGNING, user))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop()));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((dir, port)) = &self.embedded {
            // Safety net: never leave a postmaster behind, even after a crash.
            if let Ok(c) = pgcluster::Cluster::new(dir, *port) {
                let _ = c.stop();
            }
            if self.owns_dir && !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(dir);
                if self.log.is_some() {
                    let _ = std::fs::remove_file(log_path(dir));
                }
            }
        }
    }
}

/// The log file of [`Gateway::embedded_logged`] for data directory `dir`.
fn log_path(dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.gateway.log", dir.display()))
}

/// Status and JSON body (Null when the body is empty or not JSON).
pub fn status_json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let text = r.text().unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        assert!(
            ct.starts_with("application/json"),
            "error {status} must be JSON, got content-type {ct:?}: {text}"
        );
        assert!(
            v["error"].is_string(),
            "error body must be {{\"error\":…}}: {text}"
        );
    }
    (status, v)
}

pub fn send(rb: RequestBuilder) -> (u16, Value) {
    status_json(rb.send().expect("request"))
}

pub fn json_body(v: Value) -> (String, String) {
    ("content-type".into(), v.to_string())
}
