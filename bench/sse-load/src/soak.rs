//! Load client of `bench/soak.sh`: a long mixed load with live subscribers.
//!
//! 1. Creates `--threads` threads, each with `--members` members drawn from
//!    `--users` users (so every user's inbox holds several threads).
//! 2. Opens one Server-Sent Events stream per thread (a member,
//!    `GET /v1/threads/{id}/events`) and `--global-subs` streams of the
//!    whole feed as the service (`GET /v1/events`); they stay connected for
//!    the whole run. A stream the server ends is reopened with
//!    `Last-Event-ID` (as `EventSource` does) and counted as an error.
//! 3. Capacity: `--concurrency` closed-loop workers send the mixed load as
//!    fast as answers come back for `--capacity-secs`; the rate of 2xx
//!    answers is the capacity.
//! 4. Soak: the same mix, open loop (each request starts on its schedule,
//!    whatever the earlier ones are doing) at `--fraction` of the capacity
//!    (or `--rate`) for `--duration` seconds, over at most `--connections`
//!    connections: a request due while all are busy waits for one, and its
//!    latency counts from when it was due (more than `--max-inflight`
//!    waiting: it is shed, and counted).
//!
//! Every `--sample` seconds a line goes to `--samples` (JSON lines): 2xx
//! answers and errors in the window, the rate, latency p50/p99, events
//! received, streams connected and the gateway's VmRSS (`--gateway-pid`).
//! `--summary` gets the totals. Any answer that is not 2xx and any
//! transport error counts as an error. Exit status 1 only when the setup
//! fails; judging the run is the report's job (`bench/lib/soak.py`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

struct Opts {
    base: String,
    key: String,
    prefix: String,
    threads: usize,
    users: usize,
    members: usize,
    global_subs: usize,
    concurrency: usize,
    capacity_secs: f64,
    fraction: f64,
    rate: Option<f64>,
    duration: f64,
    sample: f64,
    max_inflight: u64,
    connections: usize,
    gateway_pid: Option<u32>,
    postgres_pid: Option<u32>,
    samples: String,
    summary: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: soak-load --base URL --key BACKEND_KEY --samples FILE --summary FILE\n\
         \x20      [--threads 100] [--users 50] [--members 5] [--global-subs 2]\n\
         \x20      [--concurrency 32] [--capacity-secs 30] [--fraction 0.5] [--rate R]\n\
         \x20      [--duration 600] [--sample 5] [--connections 64] [--max-inflight 50000]\n\
         \x20      [--prefix soak]\n\
         \x20      [--gateway-pid PID] [--postgres-pid PID]"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        base: String::new(),
        key: String::new(),
        prefix: "soak".into(),
        threads: 100,
        users: 50,
        members: 5,
        global_subs: 2,
        concurrency: 32,
        capacity_secs: 30.0,
        fraction: 0.5,
        rate: None,
        duration: 600.0,
        sample: 5.0,
        max_inflight: 50_000,
        connections: 64,
        gateway_pid: None,
        postgres_pid: None,
        samples: String::new(),
        summary: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            usage();
        }
        let v = args.next().unwrap_or_else(|| usage());
        let num = |v: &str| -> f64 {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{a}: not a number: {v}");
                usage()
            })
        };
        match a.as_str() {
            "--base" => o.base = v.trim_end_matches('/').to_string(),
            "--key" => o.key = v,
            "--prefix" => o.prefix = v,
            "--threads" => o.threads = num(&v) as usize,
            "--users" => o.users = num(&v) as usize,
            "--members" => o.members = num(&v) as usize,
            "--global-subs" => o.global_subs = num(&v) as usize,
            "--concurrency" => o.concurrency = num(&v) as usize,
            "--capacity-secs" => o.capacity_secs = num(&v),
            "--fraction" => o.fraction = num(&v),
            "--rate" => o.rate = Some(num(&v)),
            "--duration" => o.duration = num(&v),
            "--sample" => o.sample = num(&v),
            "--max-inflight" => o.max_inflight = num(&v) as u64,
            "--connections" => o.connections = num(&v) as usize,
            "--gateway-pid" => o.gateway_pid = Some(num(&v) as u32),
            "--postgres-pid" => o.postgres_pid = Some(num(&v) as u32),
            "--samples" => o.samples = v,
            "--summary" => o.summary = v,
            _ => usage(),
        }
    }
    if o.base.is_empty()
        || o.key.is_empty()
        || o.samples.is_empty()
        || o.summary.is_empty()
        || o.threads == 0
        || o.members == 0
        || o.members > o.users
        || o.concurrency == 0
        || o.connections == 0
        || o.capacity_secs <= 0.0
        || o.duration <= 0.0
        || o.sample <= 0.0
        || !(o.fraction > 0.0 && o.fraction <= 1.0)
    {
        usage();
    }
    o
}

fn unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn log(msg: impl AsRef<str>) {
    let t = unix_s() as i64;
    let (h, m, s) = ((t / 3600) % 24, (t / 60) % 60, t % 60);
    eprintln!("[{h:02}:{m:02}:{s:02} UTC] {}", msg.as_ref());
}

fn thread_id(o: &Opts, t: usize) -> String {
    format!("{}{t}", o.prefix)
}

/// Member `k` of thread `t`: users are shared between threads, so each
/// user is a member of about threads × members / users threads.
fn member(o: &Opts, t: usize, k: usize) -> String {
    format!("{}u{}", o.prefix, (t * o.members + k) % o.users)
}

/// xorshift64*: enough randomness to pick operations, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

// ---------------------------------------------------------------- the mix

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Post,
    Edit,
    React,
    Unreact,
    Timeline,
    Inbox,
    Thread,
    Read,
}

/// (operation, weight in percent, name). Reads are 60 %, writes 40 %.
const MIX: [(Op, u64, &str); 8] = [
    (Op::Post, 25, "post"),
    (Op::Edit, 5, "edit"),
    (Op::React, 8, "react"),
    (Op::Unreact, 2, "unreact"),
    (Op::Timeline, 30, "timeline"),
    (Op::Inbox, 15, "inbox"),
    (Op::Thread, 5, "thread"),
    (Op::Read, 10, "read"),
];

fn op_index(op: Op) -> usize {
    MIX.iter().position(|m| m.0 == op).unwrap_or(0)
}

fn mix_text() -> String {
    let mut s = String::new();
    for (i, (_, w, name)) in MIX.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{name} {w}%");
    }
    s
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    err: AtomicU64,
    shed: AtomicU64,
    inflight: AtomicU64,
    events: AtomicU64,
    streams: AtomicU64,
    drops: AtomicU64,
    out_of_order: AtomicU64,
    op_ok: [AtomicU64; 8],
    op_err: [AtomicU64; 8],
    /// Latencies of the current sample window, µs.
    lat: Mutex<Vec<u32>>,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Counters {
    fn error(&self, e: String) {
        self.err.fetch_add(1, Ordering::Relaxed);
        let mut v = self.errors.lock().unwrap();
        if v.len() < 20 {
            v.push(format!("{:.0} {e}", unix_s()));
        }
    }
}

struct World {
    o: Opts,
    client: reqwest::Client,
    c: Counters,
    /// Recent messages of each thread: (message id, author).
    recent: Vec<Mutex<VecDeque<(String, String)>>>,
}

fn lorem(rng: &mut Rng) -> String {
    const WORDS: [&str; 12] = [
        "lorem", "ipsum", "dolor", "sit", "amet", "deploy", "release", "review", "ticket", "merge",
        "coffee", "later",
    ];
    let n = 10 + rng.below(50);
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

/// One request of the mix, counted ok on a 2xx answer read to its end.
/// Its latency runs from `scheduled` (waiting for a free connection counts).
async fn one(w: &World, rng: &mut Rng, scheduled: Instant) {
    let o = &w.o;
    let roll = rng.below(100) as u64;
    let mut acc = 0;
    let mut op = Op::Post;
    for (m, weight, _) in MIX {
        acc += weight;
        if roll < acc {
            op = m;
            break;
        }
    }
    let t = rng.below(o.threads);
    let tid = thread_id(o, t);
    let user = member(o, t, rng.below(o.members));
    let picked = if matches!(op, Op::Edit | Op::React | Op::Unreact) {
        let r = w.recent[t].lock().unwrap();
        if r.is_empty() {
            None
        } else {
            Some(r[rng.below(r.len())].clone())
        }
    } else {
        None
    };
    if matches!(op, Op::Edit | Op::React | Op::Unreact) && picked.is_none() {
        op = Op::Post; // nothing to act on yet in this thread
    }
    let b = format!("{}/v1/threads/{tid}", o.base);
    let (method, url, acting, body) = match op {
        Op::Post => (
            reqwest::Method::POST,
            format!("{b}/messages"),
            user.clone(),
            Some(json!({"body": {"text": lorem(rng)}})),
        ),
        Op::Edit => {
            let (mid, author) = picked.unwrap();
            (
                reqwest::Method::PUT,
                format!("{b}/messages/{mid}"),
                author,
                Some(json!({"body": {"text": format!("edited: {}", lorem(rng))}})),
            )
        }
        Op::React => {
            let (mid, _) = picked.unwrap();
            let r = ["+1", "heart", "laugh", "eyes"][rng.below(4)];
            (
                reqwest::Method::POST,
                format!("{b}/messages/{mid}/reactions"),
                user.clone(),
                Some(json!({"id": user, "reaction": r})),
            )
        }
        Op::Unreact => {
            let (mid, _) = picked.unwrap();
            (
                reqwest::Method::DELETE,
                format!("{b}/messages/{mid}/reactions/{user}"),
                user.clone(),
                None,
            )
        }
        Op::Timeline => (
            reqwest::Method::GET,
            format!("{b}/messages?limit=50"),
            user.clone(),
            None,
        ),
        Op::Inbox => (
            reqwest::Method::GET,
            format!("{}/v1/threads?limit=20", o.base),
            user.clone(),
            None,
        ),
        Op::Thread => (reqwest::Method::GET, b.clone(), user.clone(), None),
        Op::Read => (
            reqwest::Method::POST,
            format!("{b}/read"),
            user.clone(),
            Some(json!({})),
        ),
    };
    let idx = op_index(op);
    let name = MIX[idx].2;
    let mut rb = w
        .client
        .request(method, &url)
        .header("Authorization", format!("Bearer {}", o.key))
        .header("X-User-ID", &acting);
    if let Some(body) = body {
        rb = rb
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let result = match rb.send().await {
        Ok(resp) => {
            let status = resp.status();
            match resp.bytes().await {
                Ok(bytes) if status.is_success() => Ok(bytes),
                Ok(bytes) => Err(format!(
                    "{name}: {status} {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                )),
                Err(e) => Err(format!("{name}: reading the body: {e}")),
            }
        }
        Err(e) => Err(format!("{name}: {e}")),
    };
    let us = scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32;
    match result {
        Ok(bytes) => {
            if op == Op::Post {
                let id = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(String::from));
                match id {
                    Some(id) => {
                        let mut r = w.recent[t].lock().unwrap();
                        if r.len() >= 32 {
                            r.pop_front();
                        }
                        r.push_back((id, user));
                    }
                    None => {
                        w.c.op_err[idx].fetch_add(1, Ordering::Relaxed);
                        w.c.error(format!("{name}: 2xx without a message id"));
                        return;
                    }
                }
            }
            w.c.ok.fetch_add(1, Ordering::Relaxed);
            w.c.op_ok[idx].fetch_add(1, Ordering::Relaxed);
            w.c.lat.lock().unwrap().push(us);
        }
        Err(e) => {
            w.c.op_err[idx].fetch_add(1, Ordering::Relaxed);
            w.c.error(e);
        }
    }
}

// ---------------------------------------------------------------- setup

async fn call(
    w: &World,
    method: reqwest::Method,
    path: &str,
    user: &str,
    body: Value,
) -> Result<(), String> {
    let resp = w
        .client
        .request(method.clone(), format!("{}{path}", w.o.base))
        .header("Authorization", format!("Bearer {}", w.o.key))
        .header("X-User-ID", user)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{method} {path}: {status} {text}"))
    }
}

async fn setup(w: Arc<World>) -> Result<(), String> {
    let mut tasks = Vec::new();
    for t in 0..w.o.threads {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let id = thread_id(&w.o, t);
            let owner = member(&w.o, t, 0);
            call(
                &w,
                reqwest::Method::POST,
                "/v1/threads",
                &owner,
                json!({"id": id, "title": format!("soak thread {t}")}),
            )
            .await?;
            for k in 1..w.o.members {
                call(
                    &w,
                    reqwest::Method::POST,
                    &format!("/v1/threads/{id}/members"),
                    &owner,
                    json!({"user": member(&w.o, t, k)}),
                )
                .await?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

// ---------------------------------------------------------------- subscribers

/// One stream, kept open until the run stops: `user` None = the service's
/// `/v1/events`, else that member's `/v1/threads/{thread}/events`.
async fn subscriber(w: Arc<World>, sse: reqwest::Client, path: String, user: Option<String>) {
    let url = format!("{}{path}", w.o.base);
    let mut last: Option<String> = None;
    let mut counted = false;
    while !w.c.stop.load(Ordering::Relaxed) {
        let mut rb = sse
            .get(&url)
            .header("Authorization", format!("Bearer {}", w.o.key))
            .header("Accept", "text/event-stream");
        if let Some(u) = &user {
            rb = rb.header("X-User-ID", u);
        }
        if let Some(l) = &last {
            rb = rb.header("Last-Event-ID", l);
        }
        let mut resp = match rb.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let s = r.status();
                let text = r.text().await.unwrap_or_default();
                w.c.error(format!("subscribe {path}: {s} {text}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                if !w.c.stop.load(Ordering::Relaxed) {
                    w.c.error(format!("subscribe {path}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if !counted {
            counted = true;
            w.c.streams.fetch_add(1, Ordering::Relaxed);
        }
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        let mut last_pos: i64 = last.as_deref().and_then(|l| l.parse().ok()).unwrap_or(-1);
        let ended = loop {
            let chunk = tokio::select! {
                c = resp.chunk() => c,
                _ = wait_stop(&w) => break None,
            };
            match chunk {
                Ok(Some(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    let mut consumed = 0;
                    while let Some(end) = find(&buf[consumed..], b"\n\n") {
                        let frame = &buf[consumed..consumed + end];
                        consumed += end + 2;
                        if let Some(id) = frame_id(frame) {
                            let pos: i64 = id.parse().unwrap_or(-1);
                            if pos <= last_pos {
                                w.c.out_of_order.fetch_add(1, Ordering::Relaxed);
                            }
                            last_pos = pos;
                            last = Some(id);
                            w.c.events.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    buf.drain(..consumed);
                }
                Ok(None) => break Some("the server ended the stream".to_string()),
                Err(e) => break Some(e.to_string()),
            }
        };
        match ended {
            Some(e) if !w.c.stop.load(Ordering::Relaxed) => {
                w.c.drops.fetch_add(1, Ordering::Relaxed);
                w.c.error(format!("stream {path}: {e}"));
            }
            _ => break,
        }
    }
    if counted {
        w.c.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn wait_stop(w: &World) {
    while !w.c.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn frame_id(frame: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(frame).ok()?;
    text.split('\n')
        .find_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().to_string())
}

// ---------------------------------------------------------------- /proc

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in ticks; and its parent pid.
fn proc_ticks(pid: u32) -> Option<(u64, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ut + st, ppid))
}

/// CPU ticks of `root` and its children (a postmaster and its backends).
fn tree_ticks(root: u32) -> u64 {
    let mut total = proc_ticks(root).map_or(0, |(t, _)| t);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((t, ppid)) = proc_ticks(pid) {
                if ppid == root {
                    total += t;
                }
            }
        }
    }
    total
}

/// Busy and total jiffies of the whole machine (all cores).
fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

struct CpuMark {
    at: Instant,
    gateway: u64,
    postgres: u64,
    client: u64,
    busy: u64,
    total: u64,
}

fn cpu_mark(o: &Opts) -> CpuMark {
    let (busy, total) = machine_ticks();
    CpuMark {
        at: Instant::now(),
        gateway: o.gateway_pid.and_then(proc_ticks).map_or(0, |(t, _)| t),
        postgres: o.postgres_pid.map_or(0, tree_ticks),
        client: proc_ticks(std::process::id()).map_or(0, |(t, _)| t),
        busy,
        total,
    }
}

/// Percent of one core per process group over the window, the machine's
/// busy share of all its cores, and what is left for other processes.
fn cpu_window(a: &CpuMark, b: &CpuMark, tck: f64) -> Value {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let pct = |x: u64, y: u64| round1(y.saturating_sub(x) as f64 / tck / secs * 100.0);
    let cores = (b.total.saturating_sub(a.total)) as f64 / tck / secs;
    let ours =
        (b.gateway + b.postgres + b.client).saturating_sub(a.gateway + a.postgres + a.client);
    let busy = b.busy.saturating_sub(a.busy);
    json!({
        "seconds": round1(secs),
        "cores": round1(cores),
        "gateway_pct_of_one_core": pct(a.gateway, b.gateway),
        "postgres_pct_of_one_core": pct(a.postgres, b.postgres),
        "client_pct_of_one_core": pct(a.client, b.client),
        "machine_busy_pct": round1(busy as f64 / (b.total.saturating_sub(a.total)).max(1) as f64 * 100.0),
        "others_pct_of_one_core": round1(busy.saturating_sub(ours) as f64 / tck / secs * 100.0),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

// ---------------------------------------------------------------- sampling

struct Sampler {
    out: std::fs::File,
    t0: Instant,
    last_at: Instant,
    last_ok: u64,
    last_err: u64,
    last_events: u64,
    last_shed: u64,
    soak_start: Option<Instant>,
    /// CPU of the gateway, PostgreSQL, this client and everything else,
    /// per window: is a slow window ours or the machine's?
    last_cpu: CpuMark,
    tck: f64,
}

impl Sampler {
    fn sample(&mut self, w: &World, phase: &str) -> Value {
        let now = Instant::now();
        let cpu = cpu_mark(&w.o);
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-9);
        let (ok, err) = (
            w.c.ok.load(Ordering::Relaxed),
            w.c.err.load(Ordering::Relaxed),
        );
        let events = w.c.events.load(Ordering::Relaxed);
        let shed = w.c.shed.load(Ordering::Relaxed);
        let mut lat = std::mem::take(&mut *w.c.lat.lock().unwrap());
        lat.sort_unstable();
        let q = |p: f64| -> Value {
            if lat.is_empty() {
                Value::Null
            } else {
                let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
                json!((lat[i] as f64 / 10.0).round() / 100.0)
            }
        };
        let t = match self.soak_start {
            Some(s) => now.duration_since(s).as_secs_f64(),
            None => -(self.t0.elapsed().as_secs_f64()),
        };
        let v = json!({
            "ts": unix_s(),
            "t": (t * 100.0).round() / 100.0,
            "phase": phase,
            "ok": ok - self.last_ok,
            "err": err - self.last_err,
            "shed": shed - self.last_shed,
            "rate": round1((ok - self.last_ok) as f64 / dt),
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
            "events": events - self.last_events,
            "streams": w.c.streams.load(Ordering::Relaxed),
            "inflight": w.c.inflight.load(Ordering::Relaxed),
            "rss_kib": w.o.gateway_pid.and_then(rss_kib),
            "cpu": cpu_window(&self.last_cpu, &cpu, self.tck),
        });
        let _ = writeln!(self.out, "{v}");
        let _ = self.out.flush();
        self.last_at = now;
        self.last_ok = ok;
        self.last_err = err;
        self.last_events = events;
        self.last_shed = shed;
        self.last_cpu = cpu;
        v
    }
}

fn totals(w: &World) -> (u64, u64, Vec<(u64, u64)>) {
    let per: Vec<(u64, u64)> = (0..MIX.len())
        .map(|i| {
            (
                w.c.op_ok[i].load(Ordering::Relaxed),
                w.c.op_err[i].load(Ordering::Relaxed),
            )
        })
        .collect();
    (
        w.c.ok.load(Ordering::Relaxed),
        w.c.err.load(Ordering::Relaxed),
        per,
    )
}

fn per_op(before: &[(u64, u64)], after: &[(u64, u64)]) -> Value {
    let mut m = serde_json::Map::new();
    for (i, (_, _, name)) in MIX.iter().enumerate() {
        m.insert(
            name.to_string(),
            json!({"ok": after[i].0 - before[i].0, "errors": after[i].1 - before[i].1}),
        );
    }
    Value::Object(m)
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() {
    let o = parse_opts();
    let tck = clk_tck();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build()
        .expect("http client");
    let recent = (0..o.threads)
        .map(|_| Mutex::new(VecDeque::new()))
        .collect();
    let w = Arc::new(World {
        o,
        client,
        c: Counters::default(),
        recent,
    });
    let o = &w.o;
    let mut out = match std::fs::File::create(&o.samples) {
        Ok(f) => f,
        Err(e) => {
            log(format!("FATAL: {}: {e}", o.samples));
            std::process::exit(1);
        }
    };
    let _ = out.flush();

    log(format!(
        "setup: {} threads x {} members of {} users",
        o.threads, o.members, o.users
    ));
    if let Err(e) = setup(w.clone()).await {
        log(format!("FATAL: setup failed: {e}"));
        std::process::exit(1);
    }

    // ---- subscribers, connected for the whole run
    let sse = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let mut subs = Vec::new();
    for t in 0..o.threads {
        let path = format!("/v1/threads/{}/events", thread_id(o, t));
        let user = member(o, t, 1 % o.members);
        subs.push(tokio::spawn(subscriber(
            w.clone(),
            sse.clone(),
            path,
            Some(user),
        )));
    }
    for _ in 0..o.global_subs {
        subs.push(tokio::spawn(subscriber(
            w.clone(),
            sse.clone(),
            "/v1/events".into(),
            None,
        )));
    }
    let nstreams = subs.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.c.streams.load(Ordering::Relaxed) < nstreams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected_start = w.c.streams.load(Ordering::Relaxed);
    log(format!("{connected_start} of {nstreams} streams connected"));
    // give the streams a moment to register with the live feed
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut sampler = Sampler {
        out,
        t0: Instant::now(),
        last_at: Instant::now(),
        last_ok: 0,
        last_err: 0,
        last_events: 0,
        last_shed: 0,
        soak_start: None,
        last_cpu: cpu_mark(o),
        tck,
    };
    let sample_every = Duration::from_secs_f64(o.sample);

    // ---- capacity: closed loop
    log(format!(
        "capacity: {} closed-loop workers for {} s",
        o.concurrency, o.capacity_secs
    ));
    let (ok0, err0, per0) = totals(&w);
    let cap_start = Instant::now();
    let cap_end = cap_start + Duration::from_secs_f64(o.capacity_secs);
    let mut workers = Vec::new();
    for i in 0..o.concurrency {
        let w = w.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new(1 + i as u64);
            while Instant::now() < cap_end {
                one(&w, &mut rng, Instant::now()).await;
            }
        }));
    }
    let mut next_sample = Instant::now() + sample_every;
    while Instant::now() < cap_end {
        tokio::time::sleep_until(next_sample.min(cap_end).into()).await;
        if Instant::now() >= next_sample {
            sampler.sample(&w, "capacity");
            next_sample += sample_every;
        }
    }
    for h in workers {
        let _ = h.await;
    }
    let cap_secs = cap_start.elapsed().as_secs_f64();
    let (ok1, err1, per1) = totals(&w);
    let capacity = (ok1 - ok0) as f64 / cap_secs;
    sampler.sample(&w, "capacity");
    let rate = w.o.rate.unwrap_or(capacity * w.o.fraction).max(1.0);
    log(format!(
        "capacity {capacity:.0} requests/s ({} errors); soak at {rate:.0} requests/s for {} s",
        err1 - err0,
        o.duration
    ));
    let capacity_json = json!({
        "concurrency": o.concurrency,
        "seconds": round1(cap_secs),
        "ok": ok1 - ok0,
        "errors": err1 - err0,
        "rate": round1(capacity),
        "per_op": per_op(&per0, &per1),
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    // ---- soak: open loop
    let (ok2, err2, per2) = totals(&w);
    let cpu_a = cpu_mark(o);
    let rss_start = o.gateway_pid.and_then(rss_kib);
    let start = Instant::now();
    sampler.soak_start = Some(start);
    sampler.sample(&w, "soak");
    let end = start + Duration::from_secs_f64(o.duration);
    let interval = 1.0 / rate;
    let mut next_sample = start + sample_every;
    let mut rng = Rng::new(0x50a6);
    let conns = Arc::new(tokio::sync::Semaphore::new(o.connections));
    let mut i: u64 = 0;
    loop {
        let due = start + Duration::from_secs_f64(i as f64 * interval);
        if due >= end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due.min(next_sample).into()).await;
        }
        if Instant::now() >= next_sample {
            sampler.sample(&w, "soak");
            next_sample += sample_every;
            continue;
        }
        if due > Instant::now() {
            continue;
        }
        i += 1;
        if w.c.inflight.load(Ordering::Relaxed) >= o.max_inflight {
            w.c.shed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        w.c.inflight.fetch_add(1, Ordering::Relaxed);
        let (w2, seed, conns) = (w.clone(), rng.next(), conns.clone());
        tokio::spawn(async move {
            let mut r = Rng::new(seed);
            // at most --connections requests at a time (so at most that many
            // connections); the others wait their turn, open loop
            if let Ok(_permit) = conns.acquire().await {
                one(&w2, &mut r, due).await;
            }
            w2.c.inflight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let sent = i;
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    while w.c.inflight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let soak_secs = start.elapsed().as_secs_f64();
    sampler.sample(&w, "soak");
    let cpu_b = cpu_mark(o);
    let rss_end = o.gateway_pid.and_then(rss_kib);
    let (ok3, err3, per3) = totals(&w);
    let connected_end = w.c.streams.load(Ordering::Relaxed);
    let left = w.c.inflight.load(Ordering::Relaxed);
    log(format!(
        "soak done: {sent} requests scheduled, {} ok, {} errors, {} shed, {left} unanswered; {connected_end} streams connected",
        ok3 - ok2,
        err3 - err2,
        w.c.shed.load(Ordering::Relaxed)
    ));

    w.c.stop.store(true, Ordering::Relaxed);
    for s in subs {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }

    let summary = json!({
        "mix": mix_text(),
        "mix_weights": MIX.iter().map(|(_, wgt, n)| json!({"op": n, "pct": wgt})).collect::<Vec<_>>(),
        "threads": o.threads,
        "users": o.users,
        "members": o.members,
        "streams": nstreams,
        "thread_streams": o.threads,
        "global_streams": o.global_subs,
        "capacity": capacity_json,
        "soak": {
            "fraction": o.fraction,
            "connections": o.connections,
            "target_rate": round1(rate),
            "duration_s": o.duration,
            "seconds": round1(soak_secs),
            "scheduled": sent,
            "ok": ok3 - ok2,
            "errors": err3 - err2,
            "shed": w.c.shed.load(Ordering::Relaxed),
            "unanswered": left,
            "achieved_rate": round1((ok3 - ok2) as f64 / o.duration),
            "per_op": per_op(&per2, &per3),
            "rss_kib_start": rss_start,
            "rss_kib_end": rss_end,
            "cpu": cpu_window(&cpu_a, &cpu_b, tck),
        },
        "total_errors": w.c.err.load(Ordering::Relaxed),
        "sse": {
            "connected_start": connected_start,
            "connected_end": connected_end,
            "events": w.c.events.load(Ordering::Relaxed),
            "drops": w.c.drops.load(Ordering::Relaxed),
            "out_of_order": w.c.out_of_order.load(Ordering::Relaxed),
        },
        "first_errors": w.c.errors.lock().unwrap().clone(),
    });
    if let Err(e) = std::fs::write(&o.summary, format!("{summary:#}\n")) {
        log(format!("FATAL: {}: {e}", o.summary));
        std::process::exit(1);
    }
}
