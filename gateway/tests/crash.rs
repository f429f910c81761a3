//! Crash under load. Writers post, edit, react and change members through
//! the gateway (embedded cluster) without pause while, per cycle:
//!
//! 1. the PostgreSQL postmaster is killed (`kill -9`), and once the gateway
//!    has restarted it, killed again;
//! 2. the gateway itself is killed (`kill -9`) and started again on the same
//!    data directory;
//! 3. the gateway gets SIGTERM: requests it accepted finish, the cluster
//!    stops cleanly (no crash recovery on the next start), and it is started
//!    again.
//!
//! While PostgreSQL is down every answer must be 503 (never another 5xx,
//! never a dropped connection), for the writes and for a reader paging
//! messages, members, events and `/readyz` beside them. Afterwards every write that got a 2xx is
//! there exactly once with its event in the feed, and a write that failed is
//! either wholly there (with its event) or wholly absent. Each write carries
//! a unique marker to be found by.
//!
//! Knobs (environment): `CRASH_CYCLES` (default 1), `CRASH_WRITERS`
//! (default 4), `CRASH_LOAD_MS` (load before and after each crash, default
//! 1000), `CRASH_REPORT` (a file to write the markdown summary to;
//! `tests/reliability/crash.sh` uses it).

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};

fn knob(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        _ => default,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// `kill -9` of the embedded postmaster; the gateway must restart it.
    Postmaster,
    /// `kill -9` of the gateway; restarted by the test.
    GatewayKill,
    /// SIGTERM to the gateway; restarted by the test.
    GatewayTerm,
}

impl Crash {
    fn label(self) -> &'static str {
        match self {
            Crash::Postmaster => "`kill -9` PostgreSQL postmaster",
            Crash::GatewayKill => "`kill -9` gateway",
            Crash::GatewayTerm => "SIGTERM gateway",
        }
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Post {
        marker: String,
    },
    Edit {
        msg: String,
        marker: String,
    },
    React {
        msg: String,
        identity: String,
        value: String,
    },
    AddMember {
        user: String,
    },
    RemoveMember {
        user: String,
    },
}

#[derive(Clone, Debug)]
enum Outcome {
    /// A 2xx, with its JSON body (Null for 204).
    Acked(Value),
    /// An HTTP error status and its body.
    Status(u16, String),
    /// No HTTP answer: `connect` when the connection was refused.
    Transport { connect: bool, msg: String },
}

#[derive(Clone, Debug)]
struct Op {
    writer: usize,
    phase: usize,
    kind: Kind,
    outcome: Outcome,
    started: Instant,
    ended: Instant,
}

impl Op {
    fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Acked(_))
    }
}

/// One crash: when it was done and when the gateway answered again.
#[derive(Clone, Debug)]
struct Phase {
    crash: Crash,
    at: Instant,
    /// When the gateway was down (process gone) from `at` until `ready`.
    gateway_down: bool,
    ready: Instant,
    /// SIGTERM only: how long the gateway took to exit.
    exit_took: Option<Duration>,
}

/// What a writer keeps between its writes.
struct Writer {
    w: usize,
    thread: String,
    http: Client,
    base: String,
    n: usize,
    /// Messages whose post was acknowledged.
    acked: Vec<String>,
    /// Members whose addition was acknowledged and who were not removed.
    members: Vec<String>,
}

/// Messages edited: each writer's first few (so versions are few calls).
const EDITED_PER_WRITER: usize = 4;

impl Writer {
    fn next_op(&mut self) -> (Kind, reqwest::Method, String, Value) {
        use reqwest::Method;
        let i = self.n;
        self.n += 1;
        let w = self.w;
        let marker = format!("k{w}x{i}");
        let post = |marker: String| {
            (
                Kind::Post {
                    marker: marker.clone(),
                },
                Method::POST,
                format!("/v1/threads/{}/messages", self.thread),
                json!({"author": format!("w{w}"), "body": {"text": "crash test", "mk": marker}}),
            )
        };
        match i % 5 {
            2 if !self.acked.is_empty() => {
                let msg = self.acked[(i / 5) % self.acked.len().min(EDITED_PER_WRITER)].clone();
                (
                    Kind::Edit {
                        msg: msg.clone(),
                        marker: marker.clone(),
                    },
                    Method::PUT,
                    format!("/v1/messages/{msg}"),
                    json!({"body": {"text": "edited", "mk": marker}}),
                )
            }
            3 if !self.acked.is_empty() => {
                let msg = self.acked[(i / 5) % self.acked.len()].clone();
                let identity = format!("u{w}x{i}");
                let value = format!("r{i}");
                (
                    Kind::React {
                        msg: msg.clone(),
                        identity: identity.clone(),
                        value: value.clone(),
                    },
                    Method::POST,
                    format!("/v1/messages/{msg}/reactions"),
                    json!({"id": identity, "reaction": value}),
                )
            }
            4 if (i / 5) % 2 == 1 && !self.members.is_empty() => {
                let user = self.members.remove(0);
                (
                    Kind::RemoveMember { user: user.clone() },
                    Method::DELETE,
                    format!("/v1/threads/{}/members/{user}", self.thread),
                    Value::Null,
                )
            }
            4 => {
                let user = format!("m{w}x{i}");
                (
                    Kind::AddMember { user: user.clone() },
                    Method::POST,
                    format!("/v1/threads/{}/members", self.thread),
                    json!({"user": user, "role": "reader"}),
                )
            }
            _ => post(marker),
        }
    }

    fn run(&mut self, phase: &AtomicUsize, stop: &AtomicBool) -> Vec<Op> {
        let mut ops = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let (kind, method, path, body) = self.next_op();
            let phase_now = phase.load(Ordering::Relaxed);
            let started = Instant::now();
            let mut rb = self
                .http
                .request(method, format!("{}{}", self.base, path))
                .header("Authorization", format!("Bearer {BACKEND}"));
            if !body.is_null() {
                rb = rb
                    .header("Content-Type", "application/json")
                    .body(body.to_string());
            }
            let outcome = match rb.send() {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().unwrap_or_default();
                    if (200..300).contains(&status) {
                        Outcome::Acked(serde_json::from_str(&text).unwrap_or(Value::Null))
                    } else {
                        Outcome::Status(status, text)
                    }
                }
                Err(e) => Outcome::Transport {
                    connect: e.is_connect(),
                    msg: format!("{e:?}"),
                },
            };
            let ended = Instant::now();
            if let Outcome::Acked(v) = &outcome {
                match &kind {
                    Kind::Post { .. } => {
                        if let Some(id) = v["id"].as_str() {
                            self.acked.push(id.to_string());
                        }
                    }
                    Kind::AddMember { user } => self.members.push(user.clone()),
                    _ => {}
                }
            } else {
                // Do not spin while the gateway or the database is away.
                thread::sleep(Duration::from_millis(20));
            }
            ops.push(Op {
                writer: self.w,
                phase: phase_now,
                kind,
                outcome,
                started,
                ended,
            });
        }
        ops
    }
}

/// A read beside the writers: its answer (None: no HTTP answer).
struct Read {
    path: String,
    status: Option<u16>,
    body: String,
    started: Instant,
    ended: Instant,
}

/// Pages of messages, members and events, and /readyz, until `stop`.
fn reader(base: String, writers: usize, stop: &AtomicBool) -> Vec<Read> {
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut reads = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let t = format!("cw{}", i % writers);
        let path = match i % 4 {
            0 => format!("/v1/threads/{t}/messages?limit=20"),
            1 => format!("/v1/threads/{t}/members?limit=20"),
            2 => "/v1/events?limit=20".to_string(),
            _ => "/readyz".to_string(),
        };
        i += 1;
        let started = Instant::now();
        let (status, body) = match http
            .get(format!("{base}{path}"))
            .header("Authorization", format!("Bearer {BACKEND}"))
            .send()
        {
            Ok(r) => (Some(r.status().as_u16()), r.text().unwrap_or_default()),
            Err(e) => (None, format!("{e:?}")),
        };
        if status != Some(200) {
            thread::sleep(Duration::from_millis(20));
        }
        reads.push(Read {
            path,
            status,
            body,
            started,
            ended: Instant::now(),
        });
    }
    reads
}

/// GET with the backend key (the trusted service); panics unless 200.
fn get(g: &Gateway, path: &str) -> Value {
    let (s, v) = send(g.req(reqwest::Method::GET, path, Some(BACKEND)));
    assert_eq!(s, 200, "GET {path}: {v}");
    v
}

fn postmaster_pid(cluster: &pgcluster::Cluster) -> Option<u32> {
    match cluster.state() {
        pgcluster::State::Running(pid) if pid > 0 => Some(pid),
        _ => None,
    }
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn pg_controldata_state(cluster: &pgcluster::Cluster) -> String {
    let out = cluster
        .run_as_pg(
            Command::new(cluster.bin("pg_controldata"))
                .arg("-D")
                .arg(cluster.data_dir()),
        )
        .expect("run pg_controldata");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("Database cluster state:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| format!("(no state in pg_controldata output: {text})"))
}

fn server_log(cluster: &pgcluster::Cluster) -> String {
    std::fs::read_to_string(cluster.data_dir().join("server.log")).unwrap_or_default()
}

/// Counts of what is stored and what the feed says, by marker / identity.
#[derive(Default)]
struct Found {
    /// Messages by body marker (with their ids).
    messages: HashMap<String, Vec<String>>,
    /// Message versions (current included) by body marker.
    versions: HashMap<String, usize>,
    /// The final reactions: (message, identity) → value.
    reactions: HashMap<(String, String), String>,
    members: HashMap<String, usize>,
    created: HashMap<String, usize>,
    updated: HashMap<String, usize>,
    reacted: HashMap<(String, String), usize>,
    member_added: HashMap<String, usize>,
    member_removed: HashMap<String, usize>,
    events: usize,
}

fn collect(g: &Gateway, writers: usize, edited: &[String]) -> Found {
    let mut f = Found::default();
    let threads: Vec<String> = (0..writers).map(|w| format!("cw{w}")).collect();
    for t in &threads {
        let mut before: Option<String> = None;
        loop {
            let mut path = format!("/v1/threads/{t}/messages?limit=1000&include_deleted=true");
            if let Some(b) = &before {
                path.push_str(&format!("&before={b}"));
            }
            let page = get(g, &path);
            for m in page["messages"].as_array().unwrap() {
                let id = m["id"].as_str().unwrap().to_string();
                if let Some(r) = m["reactions"].as_object() {
                    for (who, v) in r {
                        f.reactions.insert(
                            (id.clone(), who.clone()),
                            v.as_str().unwrap_or_default().to_string(),
                        );
                    }
                }
            }
            // Posts by their marker: the first version of each message.
            for m in page["messages"].as_array().unwrap() {
                let id = m["id"].as_str().unwrap().to_string();
                let first = if m["version"].as_i64().unwrap_or(1) > 1 {
                    let v = get(g, &format!("/v1/messages/{id}/versions"));
                    v["versions"][0]["body"]["mk"].as_str().map(str::to_string)
                } else {
                    m["body"]["mk"].as_str().map(str::to_string)
                };
                if let Some(mk) = first {
                    f.messages.entry(mk).or_default().push(id);
                }
            }
            if page["pagination"]["has_before"] == json!(true) {
                before = page["pagination"]["before"].as_str().map(str::to_string);
            } else {
                break;
            }
        }
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/threads/{t}/members?limit=1000");
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let page = get(g, &path);
            let list = page["members"].as_array().unwrap();
            for m in list {
                *f.members
                    .entry(m["user"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            if list.len() < 1000 {
                break;
            }
            after = list.last().unwrap()["user"].as_str().map(str::to_string);
        }
    }
    for id in edited {
        let v = get(g, &format!("/v1/messages/{id}/versions"));
        // Edits by their marker (the first version is the post itself).
        for ver in v["versions"].as_array().unwrap().iter().skip(1) {
            if let Some(mk) = ver["body"]["mk"].as_str() {
                *f.versions.entry(mk.to_string()).or_default() += 1;
            }
        }
    }
    // The whole feed, in order: who reacted is the key a reaction.added
    // event's message has that the message's previous event had not.
    let mut last_reactions: HashMap<String, serde_json::Map<String, Value>> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = "/v1/events?limit=1000".to_string();
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = get(g, &path);
        let evs = page["events"].as_array().unwrap();
        if evs.is_empty() {
            break;
        }
        for e in evs {
            f.events += 1;
            if !threads.iter().any(|t| e["thread"] == json!(t)) {
                continue;
            }
            let d = &e["data"];
            let mk = d["body"]["mk"].as_str().unwrap_or_default().to_string();
            match e["type"].as_str().unwrap() {
                "message.created" => *f.created.entry(mk).or_default() += 1,
                "message.updated" => *f.updated.entry(mk).or_default() += 1,
                "reaction.added" => {
                    let id = d["id"].as_str().unwrap().to_string();
                    let prev = last_reactions.get(&id).cloned().unwrap_or_default();
                    let now = d["reactions"].as_object().cloned().unwrap_or_default();
                    for (who, v) in &now {
                        if prev.get(who) != Some(v) {
                            *f.reacted.entry((id.clone(), who.clone())).or_default() += 1;
                        }
                    }
                }
                "member.added" => {
                    *f.member_added
                        .entry(d["user"].as_str().unwrap().to_string())
                        .or_default() += 1
                }
                "member.removed" => {
                    *f.member_removed
                        .entry(d["user"].as_str().unwrap().to_string())
                        .or_default() += 1
                }
                _ => {}
            }
            if e["type"].as_str().unwrap().starts_with("message.")
                || e["type"].as_str().unwrap().starts_with("reaction.")
            {
                let id = d["id"].as_str().unwrap().to_string();
                last_reactions.insert(id, d["reactions"].as_object().cloned().unwrap_or_default());
            }
        }
        after = page["next"].as_str().map(str::to_string);
        assert!(after.is_some(), "an events page without next: {page}");
    }
    f
}

/// Checks one write against what is stored; returns what is wrong, and
/// whether an errored write turned out applied.
fn check(op: &Op, f: &Found) -> (Option<String>, bool) {
    let n = |m: &HashMap<String, usize>, k: &str| m.get(k).copied().unwrap_or(0);
    let acked = op.acked();
    let (stored, events, detail) = match &op.kind {
        Kind::Post { marker } => {
            let ids = f.messages.get(marker).cloned().unwrap_or_default();
            if let Outcome::Acked(v) = &op.outcome {
                if ids.len() == 1 && v["id"].as_str() != Some(ids[0].as_str()) {
                    return (
                        Some(format!("post {marker}: stored as {ids:?}, answered {v}")),
                        false,
                    );
                }
            }
            (ids.len(), n(&f.created, marker), format!("post {marker}"))
        }
        Kind::Edit { msg, marker } => (
            n(&f.versions, marker),
            n(&f.updated, marker),
            format!("edit {marker} of {msg}"),
        ),
        Kind::React {
            msg,
            identity,
            value,
        } => {
            let key = (msg.clone(), identity.clone());
            let stored = match f.reactions.get(&key) {
                Some(v) if v == value => 1,
                Some(v) => {
                    return (
                        Some(format!(
                            "reaction {identity} on {msg}: {v:?} stored, {value:?} sent"
                        )),
                        false,
                    )
                }
                None => 0,
            };
            (
                stored,
                f.reacted.get(&key).copied().unwrap_or(0),
                format!("reaction {identity} on {msg}"),
            )
        }
        Kind::AddMember { user } => {
            let added = n(&f.member_added, user);
            let removed = n(&f.member_removed, user);
            let present = n(&f.members, user);
            if added > 1 || removed > 1 || present != usize::from(added == 1 && removed == 0) {
                return (
                    Some(format!(
                        "member {user}: added {added}×, removed {removed}×, present {present}"
                    )),
                    false,
                );
            }
            (added, added, format!("add member {user}"))
        }
        Kind::RemoveMember { user } => {
            let removed = n(&f.member_removed, user);
            let present = n(&f.members, user);
            if present + removed != 1 {
                return (
                    Some(format!(
                        "remove member {user}: removed {removed}×, present {present}"
                    )),
                    false,
                );
            }
            (removed, removed, format!("remove member {user}"))
        }
    };
    if acked && (stored != 1 || events != 1) {
        return (
            Some(format!(
                "{detail} acknowledged but stored {stored}× with {events} event(s)"
            )),
            false,
        );
    }
    if !acked && (stored > 1 || stored != events) {
        return (
            Some(format!(
                "{detail} failed ({:?}) and is half-written: stored {stored}×, {events} event(s)",
                op.outcome
            )),
            false,
        );
    }
    (None, !acked && stored == 1)
}

#[derive(Default, Clone)]
struct Tally {
    attempted: usize,
    acked: usize,
    s503: usize,
    other_5xx: usize,
    other_status: usize,
    refused: usize,
    cut: usize,
}

impl Tally {
    fn add(&mut self, op: &Op) {
        self.attempted += 1;
        match &op.outcome {
            Outcome::Acked(_) => self.acked += 1,
            Outcome::Status(503, _) => self.s503 += 1,
            Outcome::Status(s, _) if *s >= 500 => self.other_5xx += 1,
            Outcome::Status(..) => self.other_status += 1,
            Outcome::Transport { connect: true, .. } => self.refused += 1,
            Outcome::Transport { connect: false, .. } => self.cut += 1,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[test]
fn crash_under_load() {
    let cycles = knob("CRASH_CYCLES", 1);
    let writers = knob("CRASH_WRITERS", 4);
    let load = Duration::from_millis(knob("CRASH_LOAD_MS", 1000) as u64);
    let run_started = Instant::now();

    let dir = temp_dir("crash");
    let pg_port = free_port();
    let mut g = Gateway::embedded_logged(&dir, pg_port, &keyed_args(), "warn");
    g.wait_ready();
    let cluster = pgcluster::Cluster::new(&dir, pg_port).unwrap();
    for w in 0..writers {
        let (s, v) = send(
            g.req(reqwest::Method::POST, "/v1/threads", Some(BACKEND))
                .body(json!({"id": format!("cw{w}"), "author": format!("w{w}")}).to_string()),
        );
        assert_eq!(s, 200, "{v}");
    }

    // The writers run from here to the end, through every crash.
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let mut writer = Writer {
                w,
                thread: format!("cw{w}"),
                // A new connection per request: a write either was refused
                // at connect, or was accepted and must get an answer.
                http: Client::builder()
                    .timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap(),
                base: g.base.clone(),
                n: 0,
                acked: Vec::new(),
                members: Vec::new(),
            };
            let (phase, stop) = (phase.clone(), stop.clone());
            thread::spawn(move || writer.run(&phase, &stop))
        })
        .collect();

    let reads_handle = {
        let (base, stop) = (g.base.clone(), stop.clone());
        thread::spawn(move || reader(base, writers, &stop))
    };

    let mut phases: Vec<Phase> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let plan = [
        Crash::Postmaster,
        Crash::Postmaster,
        Crash::GatewayKill,
        Crash::GatewayTerm,
    ];
    for _cycle in 0..cycles {
        for crash in plan {
            phase.store(phases.len(), Ordering::Relaxed);
            thread::sleep(load);
            let at;
            let mut exit_took = None;
            match crash {
                Crash::Postmaster => {
                    let pid = postmaster_pid(&cluster).expect("the postmaster runs");
                    at = Instant::now();
                    let st = Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status()
                        .unwrap();
                    assert!(st.success(), "kill -9 {pid}");
                    // The gateway notices and starts it again by itself.
                    wait_for(
                        "the gateway restarts its PostgreSQL",
                        Duration::from_secs(120),
                        || postmaster_pid(&cluster).filter(|p| *p != pid),
                    );
                    assert!(g.is_alive(), "the gateway died with its PostgreSQL");
                    g.wait_ready();
                }
                Crash::GatewayKill => {
                    let pm = postmaster_pid(&cluster);
                    at = Instant::now();
                    g.kill9();
                    // Its PostgreSQL outlives it; the next start takes it over.
                    assert_eq!(postmaster_pid(&cluster), pm);
                    g.restart();
                    g.wait_ready();
                }
                Crash::GatewayTerm => {
                    at = Instant::now();
                    let st = g.stop();
                    exit_took = Some(at.elapsed());
                    assert!(st.success(), "exit after SIGTERM under load: {st}");
                    assert!(!cluster.is_running(), "PostgreSQL still runs after SIGTERM");
                    let state = pg_controldata_state(&cluster);
                    assert_eq!(state, "shut down", "PostgreSQL was not shut down cleanly");
                    let log_before = server_log(&cluster).len();
                    g.restart();
                    g.wait_ready();
                    let log = server_log(&cluster);
                    let since = log.get(log_before..).unwrap_or(&log);
                    for bad in [
                        "not properly shut down",
                        "redo starts",
                        "automatic recovery",
                    ] {
                        assert!(
                            !since.contains(bad),
                            "crash recovery after a SIGTERM stop ({bad:?}):\n{since}"
                        );
                    }
                }
            }
            let ready = Instant::now();
            phases.push(Phase {
                crash,
                at,
                gateway_down: crash != Crash::Postmaster,
                ready,
                exit_took,
            });
            thread::sleep(load);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut ops: Vec<Op> = Vec::new();
    for h in handles {
        ops.extend(h.join().expect("writer thread"));
    }
    let reads = reads_handle.join().expect("reader thread");
    let load_ended = Instant::now();

    // Answers while it ran.
    let mut tallies = vec![Tally::default(); phases.len()];
    for op in &ops {
        tallies[op.phase].add(op);
        match &op.outcome {
            Outcome::Acked(_) | Outcome::Status(503, _) => {}
            Outcome::Status(s, body) => problems.push(format!(
                "writer {}: {:?} answered {s} (only 2xx or 503 allowed): {body}",
                op.writer, op.kind
            )),
            Outcome::Transport { msg, .. } => {
                // Only while the gateway process itself was down.
                let during_down = phases
                    .iter()
                    .any(|p| p.gateway_down && op.started <= p.ready && op.ended >= p.at);
                if !during_down {
                    problems.push(format!(
                        "{:?} got no HTTP answer while the gateway was up: {msg}",
                        op.kind
                    ));
                }
            }
        }
    }
    // Reads: 200 or 503 while the gateway is up, like the writes.
    let (mut reads_ok, mut reads_503, mut reads_down) = (0, 0, 0);
    for r in &reads {
        let gateway_down = phases
            .iter()
            .any(|p| p.gateway_down && r.started <= p.ready && r.ended >= p.at);
        match r.status {
            Some(200) => reads_ok += 1,
            Some(503) => reads_503 += 1,
            None if gateway_down => reads_down += 1,
            other => problems.push(format!(
                "GET {} answered {other:?} (only 200 or 503 allowed): {}",
                r.path, r.body
            )),
        }
    }
    let total_503: usize = tallies.iter().map(|t| t.s503).sum();
    let pm_503: usize = phases
        .iter()
        .zip(&tallies)
        .filter(|(p, _)| p.crash == Crash::Postmaster)
        .map(|(_, t)| t.s503)
        .sum();
    assert!(
        pm_503 > 0,
        "no 503 while PostgreSQL was down: the crashes were not exercised"
    );
    // After each recovery the writers got through again.
    for (i, p) in phases.iter().enumerate() {
        let after = ops
            .iter()
            .filter(|o| o.acked() && o.started >= p.ready)
            .filter(|o| phases.get(i + 1).is_none_or(|n| o.started < n.at))
            .count();
        if after == 0 {
            problems.push(format!(
                "no write acknowledged after recovering from {:?} #{i}",
                p.crash
            ));
        }
    }

    // What is stored, after the last restart.
    g.wait_ready();
    let edited: Vec<String> = {
        let mut v: Vec<String> = ops
            .iter()
            .filter_map(|o| match &o.kind {
                Kind::Edit { msg, .. } => Some(msg.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let found = collect(&g, writers, &edited);
    let mut verified = 0;
    let mut errored_applied = 0;
    let mut errored_absent = 0;
    for op in &ops {
        let (problem, applied) = check(op, &found);
        match problem {
            Some(p) => problems.push(p),
            None if op.acked() => verified += 1,
            None if applied => errored_applied += 1,
            None => errored_absent += 1,
        }
        // A request the gateway accepted and then cut off after SIGTERM
        // (not refused at connect) must not have been applied.
        if let Outcome::Transport {
            connect: false,
            msg,
        } = &op.outcome
        {
            let term = phases.iter().any(|p| {
                p.crash == Crash::GatewayTerm && op.started <= p.ready && op.ended >= p.at
            });
            if term {
                eprintln!(
                    "DBG cut during term: {} {:?} {:?}",
                    msg,
                    op.started.elapsed(),
                    op.ended.elapsed()
                );
            }
            if term && applied {
                problems.push(format!(
                    "{:?} was applied, but its connection was cut during the SIGTERM shutdown: {msg}",
                    op.kind
                ));
            }
        }
    }
    // Nothing is there twice, acknowledged or not.
    for (mk, ids) in &found.messages {
        if ids.len() > 1 {
            problems.push(format!("message {mk} stored {} times: {ids:?}", ids.len()));
        }
    }
    // In-flight at SIGTERM: started before the signal, answered 2xx after it.
    let in_flight_finished = ops
        .iter()
        .filter(|o| o.acked())
        .filter(|o| {
            phases
                .iter()
                .any(|p| p.crash == Crash::GatewayTerm && o.started < p.at && o.ended > p.at)
        })
        .count();

    // An outage is logged, not flooded: one warning per few seconds (the
    // gateway throttles them to one per 5 s), not one per failed request.
    let log = g.log_text();
    let outage_lines = log
        .lines()
        .filter(|l| {
            l.contains("database connection error")
                || l.contains("database not available")
                || l.contains("database pool error")
        })
        .count();
    let allowed = (run_started.elapsed().as_secs() as usize) / 5 + 5;
    if outage_lines > allowed {
        problems.push(format!(
            "{outage_lines} outage warnings in the gateway log (at most {allowed} expected for \
             {} s): they are not throttled",
            run_started.elapsed().as_secs()
        ));
    }

    // The summary (printed; written to CRASH_REPORT when set).
    let total = ops.len();
    let acked = ops.iter().filter(|o| o.acked()).count();
    let mut md = String::new();
    md.push_str("## Crash under load\n\n");
    md.push_str(&format!(
        "`gateway/tests/crash.rs`: {writers} concurrent HTTP writers (posts, edits, reactions, \
         member additions and removals, each with a unique marker) against the gateway on its \
         embedded cluster, loopback only, for {cycles} cycle(s) of: `kill -9` of the PostgreSQL \
         postmaster, again after the gateway restarted it, `kill -9` of the gateway (restarted \
         on the same data directory), SIGTERM to the gateway (restarted). {} s of load before and \
         after each crash; {:.0} s in all.\n\n",
        load.as_secs_f64(),
        (load_ended - run_started).as_secs_f64()
    ));
    md.push_str("| crash | times | writes attempted | acknowledged | 503 | other 5xx | other status | refused at connect | cut off | recovery (median / max) |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for crash in [Crash::Postmaster, Crash::GatewayKill, Crash::GatewayTerm] {
        let mut t = Tally::default();
        let mut rec: Vec<Duration> = Vec::new();
        for (p, pt) in phases.iter().zip(&tallies) {
            if p.crash != crash {
                continue;
            }
            rec.push(p.ready - p.at);
            t.attempted += pt.attempted;
            t.acked += pt.acked;
            t.s503 += pt.s503;
            t.other_5xx += pt.other_5xx;
            t.other_status += pt.other_status;
            t.refused += pt.refused;
            t.cut += pt.cut;
        }
        rec.sort();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
            crash.label(),
            rec.len(),
            t.attempted,
            t.acked,
            t.s503,
            t.other_5xx,
            t.other_status,
            t.refused,
            t.cut,
            rec.get(rec.len() / 2).map(|d| secs(*d)).unwrap_or_default(),
            rec.last().map(|d| secs(*d)).unwrap_or_default(),
        ));
    }
    let exits: Vec<Duration> = phases.iter().filter_map(|p| p.exit_took).collect();
    md.push_str(&format!(
        "\nIn all: {total} writes attempted, {acked} acknowledged (2xx), {} errored \
         ({total_503} of them 503, {} other 5xx, {} with another status, the rest refused at \
         connect or cut off by a `kill -9` of the gateway). The gateway logged {outage_lines} \
         (throttled) warnings about the database being away for those {total_503} 503s. \
         Beside the writers, a reader paged messages, members, events and `/readyz`: {} reads, \
         {reads_ok} answered 200, {reads_503} 503, {reads_down} got no answer while the gateway \
         was down, none anything else.\n\n",
        total - acked,
        tallies.iter().map(|t| t.other_5xx).sum::<usize>(),
        tallies.iter().map(|t| t.other_status).sum::<usize>(),
        reads.len(),
    ));
    md.push_str(&format!(
        "Verified after the last restart, against the messages, versions, reactions and members \
         as the API returns them and the whole event feed (`GET /v1/events`, {} events): \
         {verified} of {acked} acknowledged writes present exactly once with exactly one event; \
         of the {} errored writes {errored_applied} were wholly applied (committed before the \
         answer was lost) and {errored_absent} wholly absent; {} problem(s) (half-written, \
         duplicated, lost, other 5xx, or no answer while the gateway was up).\n\n",
        found.events,
        total - acked,
        problems.len()
    ));
    md.push_str(&format!(
        "Recovery is measured from the crash to `/readyz` answering 200 again: for the postmaster \
         that is the gateway noticing (it polls every 0.5 s), the dead postmaster being reaped, \
         and PostgreSQL's crash recovery; for the gateway, its restart. SIGTERM: the gateway \
         exited within {} (in-flight requests finished: {in_flight_finished} writes started \
         before the signal got their 2xx after it), `pg_controldata` said `shut down` every \
         time, and no start after it ran crash recovery.\n\n",
        exits.iter().max().map(|d| secs(*d)).unwrap_or_default()
    ));
    md.push_str(
        "Re-run: `bash tests/reliability/crash.sh` (10 cycles, 8 writers; `CRASH_CYCLES`, \
         `CRASH_WRITERS`, `CRASH_LOAD_MS` override), or the quick single cycle of the test \
         command: `cargo test -p progressdb-gateway --test crash`.\n",
    );
    println!("{md}");
    if let Ok(path) = std::env::var("CRASH_REPORT") {
        if !path.is_empty() && problems.is_empty() {
            std::fs::write(&path, &md).expect("write CRASH_REPORT");
        }
    }
    if !problems.is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "{} problem(s):\n{}\n\ngateway log (last lines):\n{}",
            problems.len(),
            problems
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(verified > 0 && verified == acked);
    assert!(g.stop().success());
}

/// The gateway and its PostgreSQL killed together (a machine's processes
/// killed, the OOM killer taking both): the next start finds the lock file
/// of a dead postmaster whose processes may still be exiting, and must wait
/// for them and recover instead of giving up.
#[test]
fn gateway_and_postgres_killed_together() {
    let dir = temp_dir("crash2");
    let pg_port = free_port();
    let mut g = Gateway::embedded_logged(&dir, pg_port, &keyed_args(), "warn");
    g.wait_ready();
    let cluster = pgcluster::Cluster::new(&dir, pg_port).unwrap();
    let (s, m) = send(
        g.req(
            reqwest::Method::POST,
            "/v1/threads/both/messages",
            Some(BACKEND),
        )
        .body(json!({"author": "al", "body": {"text": "before"}}).to_string()),
    );
    assert_eq!(s, 200, "{m}");
    let pid = postmaster_pid(&cluster).expect("the postmaster runs");
    g.kill9();
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    g.restart();
    g.wait_ready();
    assert_ne!(postmaster_pid(&cluster), Some(pid));
    let v = get(&g, &format!("/v1/messages/{}", m["id"].as_str().unwrap()));
    assert_eq!(v["body"]["text"], "before");
    let (s, v) = send(
        g.req(
            reqwest::Method::POST,
            "/v1/threads/both/messages",
            Some(BACKEND),
        )
        .body(json!({"author": "al", "body": {"text": "after"}}).to_string()),
    );
    assert_eq!(s, 200, "{v}");
    assert!(g.stop().success());
}

/// SIGTERM with connections already made whose requests are not sent yet
/// (a client that just connected, a request on its way): each is still
/// served, with `Connection: close`, while new connections are refused. (A
/// plain graceful shutdown reset them: the kernel's backlog went with the
/// closed socket, and hyper closed accepted connections it had not read.)
#[test]
fn sigterm_serves_connections_already_made() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let dir = temp_dir("crash3");
    let mut args = keyed_args();
    // A long grace, so that this test does not depend on how quickly it runs.
    args.extend(["--shutdown-grace".to_string(), "3s".to_string()]);
    let mut g = Gateway::embedded(&dir, free_port(), &args);
    g.wait_ready();
    let addr = g.base.trim_start_matches("http://").to_string();
    let mut conns: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    let pid = g.pid().unwrap();
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // Once new connections are refused, the gateway is shutting down.
    wait_for(
        "the gateway stops accepting",
        Duration::from_secs(30),
        || match TcpStream::connect(&addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    for c in conns.iter_mut() {
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .expect("send the request");
    }
    for (i, mut c) in conns.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut answer = String::new();
        let r = c.read_to_string(&mut answer);
        assert!(
            r.is_ok() && answer.starts_with("HTTP/1.1 200"),
            "connection {i} made before SIGTERM was not served: {r:?} {answer:?}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    assert!(g.stop().success());
}
