//! Load client of `bench/events.sh`: live event delivery through the gateway.
//!
//! 1. Creates `--threads` threads, each with `--subs` members.
//! 2. Reads the feed's head, then opens one Server-Sent Events stream per
//!    member (`GET /v1/threads/{id}/events`, the backend key with
//!    `X-User-ID`, resuming after the head), so every event written later
//!    must reach every subscriber of its thread.
//! 3. Posts `--rate` messages per second for `--duration` seconds, open loop
//!    (each post starts on its schedule, whatever the ones before it are
//!    doing), round-robin over the threads, each by a member.
//! 4. Waits (at most `--drain` seconds) until every subscriber has every
//!    message of its thread, then checks: each successful post's
//!    `message.created` reached each subscriber of its thread exactly once,
//!    with the same event id everywhere, in increasing id order per stream.
//!
//! A stream the server ends (a subscriber dropped for being slow, say) is
//! reopened with `Last-Event-ID`, as a browser's `EventSource` would, and
//! counted. Latency: receive time minus the event's `ts` (Unix ns, set in the
//! database when the change was written; same machine, same clock), and
//! receive time minus the moment the POST was sent. With `--gateway-pid`
//! (and `--postgres-pid`, the postmaster) the gateway's RSS is sampled every
//! second and the CPU time of the gateway, PostgreSQL and this client is
//! read from /proc around the posting window.
//!
//! Results: a summary on stdout, `--json FILE` (everything), and with
//! `--md FILE` the section between `<!-- events:begin -->` and
//! `<!-- events:end -->` of that file (replaced, or appended).
//! Exit status 1 when any delivery was missed or repeated, a post failed or
//! a subscriber could not connect.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

const BEGIN: &str = "<!-- events:begin -->";
const END: &str = "<!-- events:end -->";

struct Opts {
    base: String,
    key: String,
    threads: usize,
    subs: usize,
    rate: f64,
    duration: f64,
    drain: f64,
    prefix: String,
    body_bytes: usize,
    gateway_pid: Option<u32>,
    postgres_pid: Option<u32>,
    json: Option<String>,
    md: Option<String>,
    meta: Vec<(String, String)>,
    smoke: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: sse-load --base URL --key BACKEND_KEY [--threads 100] [--subs 10] [--rate 500]\n\
         \x20              [--duration 60] [--drain 15] [--prefix ev] [--body-bytes 120]\n\
         \x20              [--gateway-pid PID] [--postgres-pid PID] [--json FILE] [--md FILE]\n\
         \x20              [--meta KEY=VALUE]... [--smoke]"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        base: String::new(),
        key: String::new(),
        threads: 100,
        subs: 10,
        rate: 500.0,
        duration: 60.0,
        drain: 15.0,
        prefix: "ev".into(),
        body_bytes: 120,
        gateway_pid: None,
        postgres_pid: None,
        json: None,
        md: None,
        meta: Vec::new(),
        smoke: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--smoke" {
            o.smoke = true;
            continue;
        }
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
            "--threads" => o.threads = num(&v) as usize,
            "--subs" => o.subs = num(&v) as usize,
            "--rate" => o.rate = num(&v),
            "--duration" => o.duration = num(&v),
            "--drain" => o.drain = num(&v),
            "--prefix" => o.prefix = v,
            "--body-bytes" => o.body_bytes = num(&v) as usize,
            "--gateway-pid" => o.gateway_pid = Some(num(&v) as u32),
            "--postgres-pid" => o.postgres_pid = Some(num(&v) as u32),
            "--json" => o.json = Some(v),
            "--md" => o.md = Some(v),
            "--meta" => match v.split_once('=') {
                Some((k, val)) => o.meta.push((k.to_string(), val.to_string())),
                None => usage(),
            },
            _ => usage(),
        }
    }
    if o.base.is_empty() || o.key.is_empty() || o.threads == 0 || o.subs == 0 || o.rate <= 0.0 {
        usage();
    }
    o
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn log(msg: impl AsRef<str>) {
    let t = unix_ns() / 1_000_000_000;
    let (h, m, s) = ((t / 3600) % 24, (t / 60) % 60, t % 60);
    eprintln!("[{h:02}:{m:02}:{s:02} UTC] {}", msg.as_ref());
}

fn thread_id(o: &Opts, t: usize) -> String {
    format!("{}{t}", o.prefix)
}

fn member(t: usize, k: usize) -> String {
    format!("u{t}_{k}")
}

// ---------------------------------------------------------------- setup

async fn call(
    client: &reqwest::Client,
    o: &Opts,
    method: reqwest::Method,
    path: &str,
    user: Option<&str>,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut rb = client
        .request(method.clone(), format!("{}{path}", o.base))
        .header("Authorization", format!("Bearer {}", o.key));
    if let Some(u) = user {
        rb = rb.header("X-User-ID", u);
    }
    if let Some(b) = body {
        rb = rb
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = rb
        .send()
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{method} {path}: {status} {text}"));
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Threads with their members (the first member owns the thread).
async fn setup(client: &reqwest::Client, o: &Arc<Opts>) -> Result<(), String> {
    let mut tasks = Vec::new();
    for t in 0..o.threads {
        let (client, o) = (client.clone(), o.clone());
        tasks.push(tokio::spawn(async move {
            let id = thread_id(&o, t);
            let owner = member(t, 0);
            call(
                &client,
                &o,
                reqwest::Method::POST,
                "/v1/threads",
                Some(&owner),
                Some(json!({"id": id, "title": format!("bench thread {t}")})),
            )
            .await?;
            for k in 1..o.subs {
                call(
                    &client,
                    &o,
                    reqwest::Method::POST,
                    &format!("/v1/threads/{id}/members"),
                    Some(&owner),
                    Some(json!({"user": member(t, k)})),
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

/// The feed's head: the service's `GET /v1/events` paged to the end.
async fn feed_head(client: &reqwest::Client, o: &Opts) -> Result<String, String> {
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/events?limit=1000&after={a}"),
            None => "/v1/events?limit=1000".to_string(),
        };
        let page = call(client, o, reqwest::Method::GET, &path, None, None).await?;
        let next = page["next"]
            .as_str()
            .ok_or_else(|| format!("GET {path}: no next cursor in {page}"))?
            .to_string();
        let n = page["events"].as_array().map_or(0, |a| a.len());
        if n == 0 || after.as_deref() == Some(next.as_str()) {
            return Ok(next);
        }
        after = Some(next);
    }
}

// ---------------------------------------------------------------- subscribers

/// One `message.created` as a subscriber received it.
#[derive(Clone, Copy)]
struct Got {
    pos: i64,
    msg: u32,
    /// Receive time minus the event's ts, ns.
    lat_ts: i64,
    recv: i64,
}

#[derive(Default)]
struct SubState {
    /// In stream order: (event id, message id, latency from ts, receive
    /// time). Resolved to posts by message id once every post has returned
    /// (an event can arrive before its POST's answer).
    got: Vec<(i64, String, i64, i64)>,
    other_events: u64,
    connects: u32,
    /// Streams that ended or failed while the run was on.
    reconnects: u32,
    errors: Vec<String>,
    connected: bool,
}

#[derive(Deserialize)]
struct EvHead<'a> {
    ts: i64,
    #[serde(borrow)]
    data: EvData<'a>,
}

#[derive(Deserialize)]
struct EvData<'a> {
    #[serde(borrow)]
    id: &'a str,
}

/// Message id → post index, filled by the poster as posts return.
type Ids = Arc<Mutex<HashMap<String, u32>>>;

struct Shared {
    stop: AtomicBool,
    connected: AtomicU64,
    received: AtomicU64,
    ids: Ids,
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    client: reqwest::Client,
    o: Arc<Opts>,
    sh: Arc<Shared>,
    t: usize,
    k: usize,
    start: String,
    st: Arc<Mutex<SubState>>,
) {
    let url = format!("{}/v1/threads/{}/events", o.base, thread_id(&o, t));
    let user = member(t, k);
    let mut last = start;
    let mut pending: Vec<(i64, String, i64)> = Vec::new(); // pos, message id, lat
    while !sh.stop.load(Ordering::Relaxed) {
        let resp = client
            .get(&url)
            .header("Authorization", format!("Bearer {}", o.key))
            .header("X-User-ID", &user)
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", &last)
            .send()
            .await;
        let mut resp = match resp {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let s = r.status();
                let text = r.text().await.unwrap_or_default();
                fail(&st, format!("{s} {text}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                fail(&st, e.to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        {
            let mut s = st.lock().unwrap();
            s.connects += 1;
            if !s.connected {
                s.connected = true;
                sh.connected.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    let recv = unix_ns();
                    buf.extend_from_slice(&bytes);
                    // Complete frames end with a blank line (the gateway writes "\n").
                    let mut consumed = 0;
                    while let Some(end) = find(&buf[consumed..], b"\n\n") {
                        let frame = &buf[consumed..consumed + end];
                        consumed += end + 2;
                        handle_frame(frame, recv, &mut last, &mut pending, &st);
                    }
                    buf.drain(..consumed);
                    if !pending.is_empty() {
                        let mut s = st.lock().unwrap();
                        sh.received
                            .fetch_add(pending.len() as u64, Ordering::Relaxed);
                        for (pos, id, lat) in pending.drain(..) {
                            s.got.push((pos, id, lat, recv));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if !sh.stop.load(Ordering::Relaxed) {
                        st.lock().unwrap().errors.push(e.to_string());
                    }
                    break;
                }
            }
        }
        if !sh.stop.load(Ordering::Relaxed) {
            st.lock().unwrap().reconnects += 1;
        }
    }
}

fn fail(st: &Mutex<SubState>, e: String) {
    let mut s = st.lock().unwrap();
    if s.errors.len() < 5 {
        s.errors.push(e);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn handle_frame(
    frame: &[u8],
    recv: i64,
    last: &mut String,
    pending: &mut Vec<(i64, String, i64)>,
    st: &Mutex<SubState>,
) {
    let Ok(text) = std::str::from_utf8(frame) else {
        return;
    };
    let (mut id, mut kind, mut data) = (None, None, None);
    for line in text.split('\n') {
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim_start());
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = Some(v.trim_start());
        } else if let Some(v) = line.strip_prefix("data:") {
            data = Some(v.trim_start());
        }
    }
    let Some(id) = id else { return }; // comments, retry, typing notices
    *last = id.to_string();
    if kind != Some("message.created") {
        st.lock().unwrap().other_events += 1;
        return;
    }
    let pos: i64 = id.parse().unwrap_or(-1);
    match data.map(serde_json::from_str::<EvHead>) {
        Some(Ok(ev)) => pending.push((pos, ev.data.id.to_string(), recv - ev.ts)),
        _ => fail(st, format!("unparsable event {id}")),
    }
}

// ---------------------------------------------------------------- poster

#[derive(Clone, Default)]
struct Post {
    thread: usize,
    ok: bool,
    error: Option<String>,
    sent: i64,
    returned: i64,
}

async fn post_one(
    client: reqwest::Client,
    o: Arc<Opts>,
    sh: Arc<Shared>,
    i: usize,
    posts: Arc<Mutex<Vec<Post>>>,
) {
    let t = i % o.threads;
    let author = member(t, (i / o.threads) % o.subs);
    let mut text = format!("message {i} to {} from {author}: ", thread_id(&o, t));
    while text.len() < o.body_bytes {
        text.push_str("lorem ipsum ");
    }
    text.truncate(o.body_bytes.max(16));
    let body = json!({"thread": thread_id(&o, t), "body": {"text": text}}).to_string();
    let sent = unix_ns();
    let r = client
        .post(format!("{}/v1/messages", o.base))
        .header("Authorization", format!("Bearer {}", o.key))
        .header("X-User-ID", &author)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await;
    let outcome = match r {
        Ok(resp) => {
            let status = resp.status();
            match resp.text().await {
                Ok(text) if status.is_success() => {
                    match serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(String::from))
                    {
                        Some(id) => Ok(id),
                        None => Err(format!("{status}: no id in {text}")),
                    }
                }
                Ok(text) => Err(format!("{status} {text}")),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    let returned = unix_ns();
    let mut p = Post {
        thread: t,
        sent,
        returned,
        ..Post::default()
    };
    match outcome {
        Ok(id) => {
            p.ok = true;
            sh.ids.lock().unwrap().insert(id, i as u32);
        }
        Err(e) => p.error = Some(e),
    }
    posts.lock().unwrap()[i] = p;
}

// ---------------------------------------------------------------- /proc

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in ticks; and its parent pid.
fn proc_ticks(pid: u32) -> Option<(u64, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name is in parentheses and may hold spaces
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // fields after the name: state(3) ppid(4) ... utime(14) stime(15)
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let stt: u64 = f.get(12)?.parse().ok()?;
    Some((ut + stt, ppid))
}

/// CPU ticks of `root` and every process whose parent is `root` (a
/// postmaster and its backends and workers).
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

/// Busy and total jiffies of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[derive(Clone, Copy, Default)]
struct CpuMark {
    at: Option<Instant>,
    gateway: u64,
    postgres: u64,
    client: u64,
    busy: u64,
    total: u64,
}

fn cpu_mark(o: &Opts) -> CpuMark {
    let (busy, total) = machine_ticks();
    CpuMark {
        at: Some(Instant::now()),
        gateway: o.gateway_pid.and_then(proc_ticks).map_or(0, |(t, _)| t),
        postgres: o.postgres_pid.map_or(0, tree_ticks),
        client: proc_ticks(std::process::id()).map_or(0, |(t, _)| t),
        busy,
        total,
    }
}

/// Percent of one core over the window, per process group; and the
/// machine's busy percent (of all cores).
fn cpu_window(a: CpuMark, b: CpuMark, tck: f64) -> Value {
    let secs = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64().max(1e-9),
        _ => 1.0,
    };
    let pct = |x: u64, y: u64| round1((y.saturating_sub(x)) as f64 / tck / secs * 100.0);
    json!({
        "seconds": round1(secs),
        "gateway_pct_of_one_core": pct(a.gateway, b.gateway),
        "postgres_pct_of_one_core": pct(a.postgres, b.postgres),
        "client_pct_of_one_core": pct(a.client, b.client),
        "machine_busy_pct": round1((b.busy - a.busy) as f64 / ((b.total - a.total).max(1)) as f64 * 100.0),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn ms(ns: i64) -> f64 {
    (ns as f64 / 1e6 * 100.0).round() / 100.0
}

/// p50, p90, p99, p99.9, max (ms) of a sorted list (ns).
fn pcts(v: &[i64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    json!({
        "n": v.len(),
        "min": ms(v[0]),
        "p50": ms(at(0.50)),
        "p90": ms(at(0.90)),
        "p99": ms(at(0.99)),
        "p99_9": ms(at(0.999)),
        "max": ms(v[v.len() - 1]),
    })
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() {
    let o = Arc::new(parse_opts());
    let tck = clk_tck();
    let setup_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let t_setup = Instant::now();
    log(format!("setup: {} threads x {} members", o.threads, o.subs));
    if let Err(e) = setup(&setup_client, &o).await {
        log(format!("FATAL: setup failed: {e}"));
        std::process::exit(1);
    }
    let head = match feed_head(&setup_client, &o).await {
        Ok(h) => h,
        Err(e) => {
            log(format!("FATAL: cannot read the feed's head: {e}"));
            std::process::exit(1);
        }
    };
    log(format!(
        "setup done in {:.1} s; feed head {head}",
        t_setup.elapsed().as_secs_f64()
    ));

    // ---- subscribers
    let nsubs = o.threads * o.subs;
    let sh = Arc::new(Shared {
        stop: AtomicBool::new(false),
        connected: AtomicU64::new(0),
        received: AtomicU64::new(0),
        ids: Arc::new(Mutex::new(HashMap::new())),
    });
    let sub_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let mut states = Vec::with_capacity(nsubs);
    let mut sub_tasks = Vec::with_capacity(nsubs);
    let t_connect = Instant::now();
    let rss_before = o.gateway_pid.and_then(rss_kib);
    for t in 0..o.threads {
        for k in 0..o.subs {
            let st = Arc::new(Mutex::new(SubState::default()));
            states.push((t, k, st.clone()));
            sub_tasks.push(tokio::spawn(subscriber(
                sub_client.clone(),
                o.clone(),
                sh.clone(),
                t,
                k,
                head.clone(),
                st,
            )));
        }
    }
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    while (sh.connected.load(Ordering::Relaxed) as usize) < nsubs
        && Instant::now() < connect_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected = sh.connected.load(Ordering::Relaxed) as usize;
    let connect_s = t_connect.elapsed().as_secs_f64();
    log(format!(
        "{connected} of {nsubs} subscribers connected in {connect_s:.1} s"
    ));
    // A stream answers its headers before it registers with the live feed;
    // every stream resumes after `head` anyway, so nothing can slip between.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // ---- resource sampler
    let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (samples, sampling, pid) = (samples.clone(), sampling.clone(), o.gateway_pid);
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while sampling.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some(kib) = pid.and_then(rss_kib) {
                    samples
                        .lock()
                        .unwrap()
                        .push((t0.elapsed().as_secs_f64(), kib));
                }
            }
        })
    };

    // ---- poster (open loop)
    let total_posts = (o.rate * o.duration).round() as usize;
    let posts = Arc::new(Mutex::new(vec![Post::default(); total_posts]));
    let post_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()
        .expect("http client");
    log(format!(
        "posting {total_posts} messages at {} per second for {} s (open loop) to {nsubs} subscribers",
        o.rate, o.duration
    ));
    let cpu0 = cpu_mark(&o);
    let t0 = tokio::time::Instant::now();
    let mut post_tasks = Vec::with_capacity(total_posts);
    let mut late_max = Duration::ZERO;
    for i in 0..total_posts {
        let due = t0 + Duration::from_secs_f64(i as f64 / o.rate);
        let now = tokio::time::Instant::now();
        if due > now {
            tokio::time::sleep_until(due).await;
        } else {
            late_max = late_max.max(now - due);
        }
        post_tasks.push(tokio::spawn(post_one(
            post_client.clone(),
            o.clone(),
            sh.clone(),
            i,
            posts.clone(),
        )));
        if i > 0 && i % (o.rate as usize * 10).max(1) == 0 {
            log(format!(
                "  {i} posts started, {} deliveries so far",
                sh.received.load(Ordering::Relaxed)
            ));
        }
    }
    let post_window = t0.elapsed().as_secs_f64();
    for t in post_tasks {
        let _ = t.await;
    }
    let cpu1 = cpu_mark(&o);
    let posts_done = t0.elapsed().as_secs_f64();
    let posts: Vec<Post> = posts.lock().unwrap().clone();
    let ok_posts = posts.iter().filter(|p| p.ok).count();
    let expected_total = ok_posts * o.subs;
    log(format!(
        "posts: {ok_posts} of {total_posts} ok in {post_window:.1} s (all returned after {posts_done:.1} s); waiting for deliveries"
    ));

    // ---- drain
    let drain_deadline = Instant::now() + Duration::from_secs_f64(o.drain);
    while (sh.received.load(Ordering::Relaxed) as usize) < expected_total
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer: a duplicate would come now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu2 = cpu_mark(&o);
    sh.stop.store(true, Ordering::Relaxed);
    sampling.store(false, Ordering::Relaxed);
    for t in &sub_tasks {
        t.abort();
    }
    let _ = sampler.await;
    let rss_end = o.gateway_pid.and_then(rss_kib);

    // ---- checks
    let mut per_thread_expected: Vec<Vec<u32>> = vec![Vec::new(); o.threads];
    for (i, p) in posts.iter().enumerate() {
        if p.ok {
            per_thread_expected[p.thread].push(i as u32);
        }
    }
    let mut missed = 0usize;
    let mut duplicated = 0usize;
    let mut unknown = 0usize;
    let mut wrong_thread = 0usize;
    let mut out_of_order = 0usize;
    let mut pos_mismatch = 0usize;
    let mut reconnects = 0u32;
    let mut connects = 0u32;
    let mut other_events = 0u64;
    let mut subs_with_misses = 0usize;
    let mut errors: Vec<String> = Vec::new();
    let mut lat_ts: Vec<i64> = Vec::with_capacity(expected_total);
    let mut lat_sent: Vec<i64> = Vec::with_capacity(expected_total);
    let mut lat_returned: Vec<i64> = Vec::with_capacity(expected_total);
    let mut pos_of: HashMap<u32, i64> = HashMap::new();
    let mut miss_examples: Vec<String> = Vec::new();
    let ids = sh.ids.lock().unwrap().clone();
    for (t, k, st) in &states {
        let s = st.lock().unwrap();
        let mut got = Vec::with_capacity(s.got.len());
        for (pos, id, lat, recv) in &s.got {
            match ids.get(id) {
                Some(&msg) => got.push(Got {
                    pos: *pos,
                    msg,
                    lat_ts: *lat,
                    recv: *recv,
                }),
                // a message this client did not post (or whose POST failed)
                None => unknown += 1,
            }
        }
        reconnects += s.reconnects;
        connects += s.connects;
        other_events += s.other_events;
        for e in &s.errors {
            if errors.len() < 10 {
                errors.push(format!("{}: {e}", member(*t, *k)));
            }
        }
        let mut count: HashMap<u32, u32> = HashMap::new();
        let mut prev = i64::MIN;
        for g in &got {
            *count.entry(g.msg).or_default() += 1;
            if g.pos <= prev {
                out_of_order += 1;
            }
            prev = g.pos;
            if posts[g.msg as usize].thread != *t {
                wrong_thread += 1;
            }
            match pos_of.get(&g.msg) {
                Some(&p) if p != g.pos => pos_mismatch += 1,
                Some(_) => {}
                None => {
                    pos_of.insert(g.msg, g.pos);
                }
            }
            let p = &posts[g.msg as usize];
            lat_ts.push(g.lat_ts);
            lat_sent.push(g.recv - p.sent);
            lat_returned.push(g.recv - p.returned);
        }
        let mut m = 0;
        for msg in &per_thread_expected[*t] {
            match count.get(msg) {
                None => {
                    m += 1;
                    if miss_examples.len() < 10 {
                        miss_examples.push(format!("{} missed post {msg}", member(*t, *k)));
                    }
                }
                Some(&c) if c > 1 => duplicated += (c - 1) as usize,
                Some(_) => {}
            }
        }
        if m > 0 {
            subs_with_misses += 1;
        }
        missed += m;
    }
    let received: usize = lat_ts.len();
    lat_ts.sort_unstable();
    lat_sent.sort_unstable();
    lat_returned.sort_unstable();
    let mut post_lat: Vec<i64> = posts
        .iter()
        .filter(|p| p.ok)
        .map(|p| p.returned - p.sent)
        .collect();
    post_lat.sort_unstable();
    let post_errors: Vec<String> = posts
        .iter()
        .filter_map(|p| p.error.clone())
        .take(10)
        .collect();
    let failed_posts = total_posts - ok_posts;
    let samples = samples.lock().unwrap().clone();
    let rss_peak = samples.iter().map(|s| s.1).max();
    let mib = |k: Option<u64>| k.map(|k| round1(k as f64 / 1024.0));
    let lat = pcts(&lat_ts);
    let p99 = lat["p99"].as_f64();
    let target_met = p99.is_some_and(|p| p < 100.0);
    let correct = missed == 0
        && duplicated == 0
        && wrong_thread == 0
        && out_of_order == 0
        && pos_mismatch == 0
        && failed_posts == 0
        && connected == nsubs;

    let result = json!({
        "smoke": o.smoke,
        "meta": o.meta.iter().cloned().collect::<HashMap<String, String>>(),
        "config": {
            "threads": o.threads, "subscribers_per_thread": o.subs, "subscribers": nsubs,
            "rate_per_s": o.rate, "duration_s": o.duration, "body_bytes": o.body_bytes,
            "drain_s": o.drain,
        },
        "subscribers": {
            "connected": connected, "connect_s": round1(connect_s),
            "connects": connects, "reconnects": reconnects,
            "errors": errors,
        },
        "posts": {
            "planned": total_posts, "ok": ok_posts, "failed": failed_posts,
            "window_s": round1(post_window),
            "achieved_rate_per_s": round1(total_posts as f64 / post_window.max(1e-9)),
            "schedule_late_max_ms": ms(late_max.as_nanos() as i64),
            "latency_ms": pcts(&post_lat),
            "errors": post_errors,
        },
        "delivery": {
            "expected": expected_total, "received": received, "missed": missed,
            "subscribers_with_misses": subs_with_misses,
            "duplicated": duplicated, "unknown_messages": unknown,
            "wrong_thread": wrong_thread, "out_of_order": out_of_order,
            "event_id_mismatch": pos_mismatch, "other_events": other_events,
            "miss_examples": miss_examples,
            "exactly_once": correct,
        },
        "latency_ms": {
            "ts_to_receive": lat,
            "post_sent_to_receive": pcts(&lat_sent),
            "post_returned_to_receive": pcts(&lat_returned),
        },
        "target_p99_ms": 100,
        "target_met": target_met,
        "gateway": {
            "rss_mib_before_subscribers": mib(rss_before),
            "rss_mib_peak": mib(rss_peak),
            "rss_mib_end": mib(rss_end),
            "rss_samples": samples.len(),
            "rss_mib_series": samples.iter().map(|s| round1(s.1 as f64 / 1024.0)).collect::<Vec<_>>(),
        },
        "cpu_posting": cpu_window(cpu0, cpu1, tck),
        "cpu_with_drain": cpu_window(cpu0, cpu2, tck),
    });

    let summary = summary(&result);
    println!("{summary}");
    if let Some(path) = &o.json {
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&result).unwrap() + "\n")
        {
            log(format!("cannot write {path}: {e}"));
        }
    }
    if let Some(path) = &o.md {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let section = markdown(&result);
        let new = match (old.find(BEGIN), old.find(END)) {
            (Some(a), Some(b)) if b > a => {
                format!("{}{}{}", &old[..a], section, &old[b + END.len()..])
            }
            _ => {
                let mut s = old.trim_end().to_string();
                if !s.is_empty() {
                    s.push_str("\n\n");
                }
                s + &section + "\n"
            }
        };
        if let Err(e) = std::fs::write(path, new) {
            log(format!("cannot write {path}: {e}"));
        }
    }
    if !correct {
        log("FAILED: see the delivery check above");
        std::process::exit(1);
    }
}

fn fmt_lat(v: &Value) -> String {
    if v.is_null() {
        return "no data".into();
    }
    format!(
        "p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        v["p50"], v["p90"], v["p99"], v["p99_9"], v["max"]
    )
}

fn summary(r: &Value) -> String {
    let d = &r["delivery"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "subscribers: {} of {} connected ({} s), {} reconnects",
        r["subscribers"]["connected"],
        r["config"]["subscribers"],
        r["subscribers"]["connect_s"],
        r["subscribers"]["reconnects"]
    );
    let _ = writeln!(
        s,
        "posts: {} ok, {} failed, {} /s achieved; POST latency {}",
        r["posts"]["ok"],
        r["posts"]["failed"],
        r["posts"]["achieved_rate_per_s"],
        fmt_lat(&r["posts"]["latency_ms"])
    );
    let _ = writeln!(
        s,
        "deliveries: {} expected, {} received, {} missed, {} duplicated, {} unknown, {} out of order, {} wrong thread, {} id mismatches -> exactly once: {}",
        d["expected"], d["received"], d["missed"], d["duplicated"], d["unknown_messages"],
        d["out_of_order"], d["wrong_thread"], d["event_id_mismatch"],
        if d["exactly_once"].as_bool() == Some(true) { "yes" } else { "NO" }
    );
    let _ = writeln!(
        s,
        "latency (event ts -> received): {}",
        fmt_lat(&r["latency_ms"]["ts_to_receive"])
    );
    let _ = writeln!(
        s,
        "latency (POST sent -> received): {}",
        fmt_lat(&r["latency_ms"]["post_sent_to_receive"])
    );
    let _ = writeln!(
        s,
        "gateway RSS: {} MiB before subscribers, peak {} MiB, end {} MiB; CPU while posting: {}",
        r["gateway"]["rss_mib_before_subscribers"],
        r["gateway"]["rss_mib_peak"],
        r["gateway"]["rss_mib_end"],
        r["cpu_posting"]
    );
    let _ = write!(
        s,
        "target p99 < 100 ms: {}",
        if r["target_met"].as_bool() == Some(true) {
            "met"
        } else {
            "MISSED"
        }
    );
    s
}

/// A whole number without its `.0`.
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{}", x as i64),
        _ => v.to_string(),
    }
}

/// What this run showed beyond the table, in words.
fn observations(r: &Value) -> String {
    let d = &r["delivery"];
    let mut out = String::from("This run: ");
    let missed = d["missed"].as_u64().unwrap_or(0);
    let dup = d["duplicated"].as_u64().unwrap_or(0);
    if d["exactly_once"].as_bool() == Some(true) {
        let _ = write!(
            out,
            "no delivery was missed or repeated ({} of {}). ",
            d["received"], d["expected"]
        );
    } else {
        let _ = write!(
            out,
            "**{missed} deliveries missed ({} subscribers affected), {dup} repeated**; first ones: {}; \
             subscriber errors: {}; post errors: {}. ",
            d["subscribers_with_misses"],
            d["miss_examples"],
            r["subscribers"]["errors"],
            r["posts"]["errors"]
        );
    }
    if r["subscribers"]["reconnects"].as_u64() == Some(0) {
        out.push_str(
            "No stream was ended by the server (no subscriber fell a full queue behind), so resuming after a \
             drop was not exercised by this run; the browser test (gateway/tests/browser.rs) covers a native \
             `EventSource` resuming with `Last-Event-ID` after the gateway restarts. ",
        );
    } else {
        let _ = write!(
            out,
            "{} streams were ended by the server and resumed with `Last-Event-ID` (counted above). ",
            r["subscribers"]["reconnects"]
        );
    }
    let pr = &r["latency_ms"]["post_returned_to_receive"];
    if !pr.is_null() {
        let _ = write!(
            out,
            "From the moment a POST's answer was read to the delivery: p50 {} ms, p99 {} ms, min {} ms \
             (negative: a subscriber can get the event before the poster gets its answer, because the gateway \
             wakes its feed loop as soon as the write succeeded).",
            pr["p50"], pr["p99"], pr["min"]
        );
    }
    out
}

fn markdown(r: &Value) -> String {
    let m = &r["meta"];
    let c = &r["config"];
    let d = &r["delivery"];
    let p = &r["posts"];
    let l = &r["latency_ms"];
    let g = &r["gateway"];
    let cpu = &r["cpu_posting"];
    let lat_row = |name: &str, v: &Value| -> String {
        if v.is_null() {
            return format!("| {name} | – | – | – | – | – |\n");
        }
        format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            v["p50"], v["p90"], v["p99"], v["p99_9"], v["max"]
        )
    };
    let s = |v: &Value| match v {
        Value::String(x) => x.clone(),
        Value::Null => "?".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "## Event delivery (SSE)\n");
    let _ = writeln!(
        out,
        "`{}` · {} · {} cores ({}; load average {} at the start) · {} · gateway {} · git {}{}\n",
        s(&m["command"]),
        s(&m["date"]),
        s(&m["nproc"]),
        s(&m["cpu_model"]),
        s(&m["loadavg_start"]),
        s(&m["pg_version"]),
        s(&m["gateway"]),
        s(&m["git"]),
        if r["smoke"].as_bool() == Some(true) {
            " · **smoke run: numbers without meaning**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{} SSE subscribers (`GET /v1/threads/{{id}}/events`, {} per thread over {} threads, each a member: \
         backend key + `X-User-ID`) while {} messages/s of {} bytes were posted through `POST /v1/messages` for {} s, \
         open loop, round-robin over the threads. Gateway and its embedded PostgreSQL, and the load client, \
         on the same machine; `--rate-rps 0`, pool {}.\n",
        c["subscribers"], c["subscribers_per_thread"], c["threads"], num(&c["rate_per_s"]), c["body_bytes"],
        num(&c["duration_s"]), s(&m["pool_size"])
    );
    let verdict = if r["target_met"].as_bool() == Some(true) {
        "met"
    } else {
        "**missed**"
    };
    let once = if d["exactly_once"].as_bool() == Some(true) {
        "yes"
    } else {
        "**NO**"
    };
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| every subscriber got every event of its thread exactly once | {once} |"
    );
    let _ = writeln!(
        out,
        "| deliveries expected / received | {} / {} |",
        d["expected"], d["received"]
    );
    let _ = writeln!(
        out,
        "| missed / duplicated / out of order / wrong thread / event id differs between subscribers | {} / {} / {} / {} / {} |",
        d["missed"], d["duplicated"], d["out_of_order"], d["wrong_thread"], d["event_id_mismatch"]
    );
    let _ = writeln!(
        out,
        "| subscribers connected / streams ended by the server (reconnected with `Last-Event-ID`) | {} of {} in {} s / {} |",
        r["subscribers"]["connected"], c["subscribers"], r["subscribers"]["connect_s"], r["subscribers"]["reconnects"]
    );
    let _ = writeln!(
        out,
        "| posts ok / failed · achieved rate | {} / {} · {} /s (schedule never more than {} ms late) |",
        p["ok"], p["failed"], p["achieved_rate_per_s"], p["schedule_late_max_ms"]
    );
    let _ = writeln!(
        out,
        "| p99 commit→delivery < 100 ms (target) | {verdict} ({} ms) |",
        s(&l["ts_to_receive"]["p99"])
    );
    let _ = writeln!(
        out,
        "| gateway RSS: before subscribers / peak / end (sampled every second) | {} / {} / {} MiB |",
        s(&g["rss_mib_before_subscribers"]),
        s(&g["rss_mib_peak"]),
        s(&g["rss_mib_end"])
    );
    let _ = writeln!(
        out,
        "| CPU while posting ({} s), % of one core: gateway / PostgreSQL / load client · machine busy (of {} cores) | {} / {} / {} · {} % |",
        cpu["seconds"], s(&m["nproc"]), cpu["gateway_pct_of_one_core"], cpu["postgres_pct_of_one_core"],
        cpu["client_pct_of_one_core"], cpu["machine_busy_pct"]
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| latency (ms) | p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|---|"
    );
    out += &lat_row(
        "event `ts` (written in the database) → received by a subscriber",
        &l["ts_to_receive"],
    );
    out += &lat_row(
        "POST sent → received by a subscriber",
        &l["post_sent_to_receive"],
    );
    out += &lat_row("POST /v1/messages (sent → answered)", &p["latency_ms"]);
    let _ = writeln!(out);
    if let Some(notes) = m.get("notes").and_then(Value::as_str) {
        let _ = writeln!(out, "{notes}\n");
    }
    let _ = writeln!(out, "{}\n", observations(r));
    let _ = write!(out, "{END}");
    out
}
