//! The event streams end to end: real `text/event-stream` connections to the
//! real gateway (embedded PostgreSQL), read incrementally by a small SSE
//! client over a plain TCP socket, while other users change things through
//! HTTP. Resume with `Last-Event-ID`/`?after=` (also across gateway and
//! PostgreSQL restarts), authorization (headers and EventSource-style query
//! credentials), per-user streams following membership, removed members,
//! typing notices, cursor errors and a slow client that must not hold up a
//! fast one.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// A Server-Sent Events client (HTTP/1.1 over a plain socket, chunked bodies).
// ---------------------------------------------------------------------------

/// One dispatched SSE event (frames without `data:` are not events).
#[derive(Debug, Clone)]
struct Frame {
    id: Option<String>,
    event: String,
    data: String,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }

    /// The event position (its `id:`); panics for id-less frames.
    fn pos(&self) -> i64 {
        self.id
            .as_deref()
            .unwrap_or_else(|| panic!("a frame without id: {self:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("a non-numeric id: {self:?}"))
    }
}

enum Next {
    Frame(Frame),
    /// The response body ended (or the server closed the connection).
    End,
    Timeout,
}

type Headers = Vec<(String, String)>;

/// A refused stream: status, content type, body.
#[derive(Debug)]
struct Refused {
    status: u16,
    content_type: String,
    body: String,
}

struct Sse {
    sock: TcpStream,
    /// Bytes read from the socket, not decoded yet.
    raw: Vec<u8>,
    /// Decoded body bytes not yet parsed into frames.
    body: Vec<u8>,
    chunked: bool,
    /// Unread body length when the body has a Content-Length.
    remaining: Option<usize>,
    ended: bool,
    frames: VecDeque<Frame>,
    /// Comment lines seen (`: connected`, heartbeats).
    comments: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Sse {
    /// `GET path` with `Accept: text/event-stream` and `headers`; Ok once a
    /// 200 `text/event-stream` response's headers arrived, else the refusal.
    fn open(g: &Gateway, path: &str, headers: &[(String, String)]) -> Result<Sse, Refused> {
        let hostport = g.base.strip_prefix("http://").expect("http base");
        let addr = hostport.to_socket_addrs().unwrap().next().unwrap();
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        sock.set_nodelay(true).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        (&sock).write_all(req.as_bytes()).expect("send the request");
        let mut s = Sse {
            sock,
            raw: Vec::new(),
            body: Vec::new(),
            chunked: false,
            remaining: None,
            ended: false,
            frames: VecDeque::new(),
            comments: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let end = loop {
            if let Some(p) = find(&s.raw, b"\r\n\r\n") {
                break p;
            }
            assert!(
                !s.ended && Instant::now() < deadline,
                "no response headers for GET {path}: {:?}",
                String::from_utf8_lossy(&s.raw)
            );
            s.read_more(deadline);
        };
        let head = String::from_utf8_lossy(&s.raw[..end]).into_owned();
        s.raw.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {head}"));
        let mut hs = HashMap::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                hs.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        s.chunked = hs
            .get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if !s.chunked {
            s.remaining = Some(
                hs.get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(usize::MAX),
            );
        }
        let content_type = hs.get("content-type").cloned().unwrap_or_default();
        if status != 200 {
            let body = s.read_to_end(deadline);
            return Err(Refused {
                status,
                content_type,
                body,
            });
        }
        assert!(
            content_type.starts_with("text/event-stream"),
            "GET {path}: 200 with content type {content_type:?}"
        );
        Ok(s)
    }

    /// Reads what the socket has (waits up to 250 ms, never past `deadline`).
    fn read_more(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left.clamp(Duration::from_millis(1), Duration::from_millis(250));
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 65536];
        match self.sock.read(&mut buf) {
            Ok(0) => self.ended = true,
            Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => self.ended = true, // reset: the stream is over
        }
    }

    /// Moves complete chunks (or plain body bytes) from `raw` to `body`.
    fn decode(&mut self) {
        if !self.chunked {
            let take = self.raw.len().min(self.remaining.unwrap_or(usize::MAX));
            self.body.extend(self.raw.drain(..take));
            if let Some(r) = self.remaining.as_mut() {
                *r -= take;
                if *r == 0 {
                    self.ended = true;
                }
            }
            return;
        }
        let mut at = 0;
        while let Some(eol) = find(&self.raw[at..], b"\r\n") {
            let line = String::from_utf8_lossy(&self.raw[at..at + eol]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                self.ended = true;
                at = self.raw.len();
                break;
            }
            let start = at + eol + 2;
            if self.raw.len() < start + size + 2 {
                break;
            }
            self.body.extend_from_slice(&self.raw[start..start + size]);
            at = start + size + 2;
        }
        self.raw.drain(..at);
    }

    /// Parses complete frames out of `body`.
    fn parse(&mut self) {
        while let Some(p) = find(&self.body, b"\n\n") {
            let text = String::from_utf8_lossy(&self.body[..p]).into_owned();
            self.body.drain(..p + 2);
            let (mut id, mut event, mut data) = (None, None, Vec::new());
            for line in text.split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "id" => id = Some(value.to_string()),
                    "event" => event = Some(value.to_string()),
                    "data" => data.push(value.to_string()),
                    _ => {} // retry:, unknown fields
                }
            }
            if !data.is_empty() {
                self.frames.push_back(Frame {
                    id,
                    event: event.unwrap_or_else(|| "message".into()),
                    data: data.join("\n"),
                });
            }
        }
    }

    fn next(&mut self, deadline: Instant) -> Next {
        loop {
            self.decode();
            self.parse();
            if let Some(f) = self.frames.pop_front() {
                return Next::Frame(f);
            }
            if self.ended {
                return Next::End;
            }
            if Instant::now() >= deadline {
                return Next::Timeout;
            }
            self.read_more(deadline);
        }
    }

    fn read_to_end(&mut self, deadline: Instant) -> String {
        while !self.ended && Instant::now() < deadline {
            self.decode();
            if self.ended {
                break;
            }
            self.read_more(deadline);
        }
        self.decode();
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The next `n` frames that carry an id (typing notices skipped), within `within`.
    fn take(&mut self, n: usize, within: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            match self.next(deadline) {
                Next::Frame(f) if f.id.is_none() => {}
                Next::Frame(f) => got.push(f),
                Next::End => panic!("stream ended after {} of {n} events: {got:#?}", got.len()),
                Next::Timeout => panic!(
                    "only {} of {n} events within {within:?}: {got:#?}",
                    got.len()
                ),
            }
        }
        got
    }

    /// Frames (with ids) until `pred` holds for one (included).
    fn until(&mut self, within: Duration, pred: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        loop {
            match self.next(deadline) {
                Next::Frame(f) if f.id.is_none() => {}
                Next::Frame(f) => {
                    let done = pred(&f);
                    got.push(f);
                    if done {
                        return got;
                    }
                }
                Next::End => panic!("stream ended before the awaited event: {got:#?}"),
                Next::Timeout => {
                    panic!("the awaited event did not come within {within:?}: {got:#?}")
                }
            }
        }
    }

    /// Every frame until the stream ends; panics if it does not end in time.
    fn until_end(&mut self, within: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        loop {
            match self.next(deadline) {
                Next::Frame(f) => got.push(f),
                Next::End => return got,
                Next::Timeout => panic!(
                    "the stream did not end within {within:?}; got {} frames meanwhile",
                    got.len()
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Callers, actions and the JSON form.
// ---------------------------------------------------------------------------

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// A frontend request signed as `user`.
fn as_user(user: &str) -> Headers {
    vec![
        h("Authorization", &format!("Bearer {FRONTEND}")),
        h("X-User-ID", user),
        h("X-User-Signature", &signature(SIGNING, user)),
    ]
}

/// The backend key, acting as `user` (None: the service).
fn as_backend(user: Option<&str>) -> Headers {
    let mut v = vec![h("Authorization", &format!("Bearer {BACKEND}"))];
    if let Some(u) = user {
        v.push(h("X-User-ID", u));
    }
    v
}

fn as_admin() -> Headers {
    vec![h("Authorization", &format!("Bearer {ADMIN}"))]
}

fn call(
    g: &Gateway,
    method: Method,
    path: &str,
    who: &Headers,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = g.client.request(method, g.url(path));
    for (k, v) in who {
        rb = rb.header(k, v);
    }
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    send(rb)
}

fn ok(g: &Gateway, method: Method, path: &str, who: &Headers, body: Option<Value>) -> Value {
    let what = format!("{method} {path}");
    let (s, v) = call(g, method, path, who, body);
    assert!((200..300).contains(&s), "{what}: {s} {v}");
    v
}

fn start(name: &str) -> Gateway {
    let dir = temp_dir(name);
    let mut g = Gateway::embedded(&dir, free_port(), &keyed_args());
    g.wait_ready();
    g
}

fn create_thread(g: &Gateway, id: &str, owner: &str) {
    ok(
        g,
        Method::POST,
        "/v1/threads",
        &as_backend(None),
        Some(json!({"id": id, "title": format!("Thread {id}"), "author": owner})),
    );
}

fn add_member(g: &Gateway, thread: &str, user: &str, role: &str) {
    ok(
        g,
        Method::POST,
        &format!("/v1/threads/{thread}/members"),
        &as_admin(),
        Some(json!({"user": user, "role": role})),
    );
}

fn remove_member(g: &Gateway, thread: &str, user: &str) {
    let (s, v) = call(
        g,
        Method::DELETE,
        &format!("/v1/threads/{thread}/members/{user}"),
        &as_admin(),
        None,
    );
    assert_eq!(s, 204, "remove {user} from {thread}: {v}");
}

/// Posts a message as `author` (backend key); returns its id.
fn post(g: &Gateway, thread: &str, author: &str, text: &str) -> String {
    let m = ok(
        g,
        Method::POST,
        &format!("/v1/threads/{thread}/messages"),
        &as_backend(Some(author)),
        Some(json!({"body": {"text": text}})),
    );
    m["id"].as_str().expect("message id").to_string()
}

/// Every event of `path` (a JSON events route) after `after`, page by page,
/// through the JSON form (`Accept: application/json`).
fn json_events(g: &Gateway, path: &str, who: &Headers, after: Option<&str>) -> Vec<Value> {
    // Every change committed so far numbered first: a JSON read skips a
    // sequencer round that another process is running (it does not wait).
    head_of(g);
    let mut out = Vec::new();
    let mut cursor = after.map(String::from);
    loop {
        let q = match &cursor {
            Some(c) => format!("{path}?limit=1000&after={c}"),
            None => format!("{path}?limit=1000"),
        };
        let mut rb = g.client.get(g.url(&q)).header("Accept", "application/json");
        for (k, v) in who {
            rb = rb.header(k, v);
        }
        let (s, page) = send(rb);
        assert_eq!(s, 200, "GET {q}: {page}");
        let events = page["events"].as_array().expect("events").clone();
        let next = page["next"].as_str().expect("next cursor").to_string();
        let done = events.is_empty() && cursor.as_deref() == Some(next.as_str());
        out.extend(events);
        if done {
            return out;
        }
        cursor = Some(next);
    }
}

/// The feed's head once every change committed so far has its position:
/// polls (bounded) until the queue of committed, not yet numbered events is
/// empty, and reads the head in the same snapshot. (The JSON form's `next`
/// can lag: a sequencer round running elsewhere is skipped, not waited for.)
fn head_of(g: &Gateway) -> String {
    let (dir, port) = g.embedded.clone().expect("an embedded cluster");
    let cluster = pgcluster::Cluster::new(&dir, port).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster
            .psql(
                "postgres",
                "SELECT coalesce((SELECT last_pos FROM progressdb.feed_state), 0) || ' ' \
                 || NOT EXISTS (SELECT 1 FROM progressdb.feed_queue)",
            )
            .expect("read the feed's head");
        let (head, settled) = out.split_once(' ').expect("head and state");
        if settled == "true" {
            return head.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "committed events still unnumbered after 30s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stream opened at the feed's current head, so that it carries exactly
/// what happens from now on. (Without a cursor, a stream may also carry
/// events that committed just before it was opened but that the gateway
/// had not delivered yet.)
fn live(g: &Gateway, path: &str, who: &Headers) -> Sse {
    let head = head_of(g);
    Sse::open(
        g,
        path,
        &[who.clone(), vec![h("Last-Event-ID", &head)]].concat(),
    )
    .unwrap_or_else(|e| panic!("GET {path} from the head: {e:?}"))
}

/// The stream's frames are exactly the JSON form's events: same ids, same
/// types, same documents, in the same order.
fn assert_same(frames: &[Frame], docs: &[Value], what: &str) {
    let f_ids: Vec<i64> = frames.iter().map(Frame::pos).collect();
    let d_ids: Vec<i64> = docs
        .iter()
        .map(|d| d["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(f_ids, d_ids, "{what}: stream ids vs JSON form ids");
    for (f, d) in frames.iter().zip(docs) {
        assert_eq!(f.event, d["type"].as_str().unwrap(), "{what}: event type");
        assert_eq!(&f.json(), d, "{what}: event document");
    }
}

fn strictly_increasing(frames: &[Frame]) -> bool {
    frames.windows(2).all(|w| w[0].pos() < w[1].pos())
}

const SHORT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

/// Every kind of change another user makes through HTTP reaches a member's
/// thread stream, in order, as the JSON form has it.
#[test]
fn a_member_receives_every_kind_of_change_in_order() {
    let g = start("sse-kinds");
    create_thread(&g, "t1", "alice");
    add_member(&g, "t1", "bob", "member");
    add_member(&g, "t1", "carol", "member");
    // No cursor: live from about now on; what precedes `before` is skipped.
    let before = head_of(&g);
    let mut s = Sse::open(&g, "/v1/threads/t1/events", &as_user("bob")).expect("bob's stream");

    let alice = as_backend(Some("alice"));
    let id = post(&g, "t1", "alice", "hello");
    ok(
        &g,
        Method::PUT,
        &format!("/v1/threads/t1/messages/{id}"),
        &alice,
        Some(json!({"body": {"text": "hello, edited"}})),
    );
    ok(
        &g,
        Method::POST,
        &format!("/v1/threads/t1/messages/{id}/reactions"),
        &alice,
        Some(json!({"id": "alice", "reaction": "👍"})),
    );
    ok(
        &g,
        Method::DELETE,
        &format!("/v1/threads/t1/messages/{id}/reactions/alice"),
        &alice,
        None,
    );
    ok(
        &g,
        Method::DELETE,
        &format!("/v1/threads/t1/messages/{id}"),
        &alice,
        None,
    );
    ok(
        &g,
        Method::POST,
        &format!("/v1/threads/t1/messages/{id}/restore"),
        &alice,
        None,
    );
    ok(
        &g,
        Method::POST,
        "/v1/threads/t1/read",
        &as_backend(Some("carol")),
        Some(json!({})),
    );
    ok(
        &g,
        Method::PUT,
        "/v1/threads/t1",
        &alice,
        Some(json!({"title": "Renamed"})),
    );

    let before_pos: i64 = before.parse().unwrap();
    let mut frames = Vec::new();
    while frames.len() < 8 {
        frames.extend(
            s.take(1, SHORT)
                .into_iter()
                .filter(|f| f.pos() > before_pos),
        );
    }
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message.created",
            "message.updated",
            "reaction.added",
            "reaction.removed",
            "message.deleted",
            "message.restored",
            "member.read",
            "thread.updated"
        ]
    );
    assert!(strictly_increasing(&frames), "{frames:#?}");
    let docs: Vec<Value> = frames.iter().map(Frame::json).collect();
    for (f, d) in frames.iter().zip(&docs) {
        assert_eq!(d["id"].as_str(), f.id.as_deref(), "{d}");
        assert_eq!(d["type"].as_str(), Some(f.event.as_str()), "{d}");
        assert_eq!(d["thread"], "t1", "{d}");
        assert!(d["ts"].is_number() || d["ts"].is_string(), "{d}");
    }
    for d in &docs[..6] {
        assert_eq!(d["data"]["id"].as_str(), Some(id.as_str()), "{d}");
    }
    assert_eq!(docs[0]["data"]["body"]["text"], "hello", "{}", docs[0]);
    assert_eq!(docs[0]["actor"], "alice", "{}", docs[0]);
    assert_eq!(
        docs[1]["data"]["body"]["text"], "hello, edited",
        "{}",
        docs[1]
    );
    assert_eq!(docs[1]["actor"], "alice", "{}", docs[1]);
    assert_eq!(
        docs[2]["data"]["reactions"]["alice"], "👍",
        "the message after the reaction: {}",
        docs[2]
    );
    assert!(
        docs[3]["data"]["reactions"].get("alice").is_none(),
        "the message after the reaction went: {}",
        docs[3]
    );
    assert!(
        !docs[4]["data"]["deleted_ts"].is_null() || docs[4]["data"]["deleted"] == true,
        "deleted: {}",
        docs[4]
    );
    assert_eq!(
        docs[5]["data"]["body"]["text"], "hello, edited",
        "{}",
        docs[5]
    );
    assert_eq!(docs[6]["data"]["user"], "carol", "{}", docs[6]);
    assert_eq!(
        docs[6]["data"]["last_read"].as_str(),
        Some(id.as_str()),
        "{}",
        docs[6]
    );
    assert_eq!(docs[6]["actor"], "carol", "{}", docs[6]);
    assert_eq!(docs[7]["data"]["title"], "Renamed", "{}", docs[7]);
    assert_eq!(docs[7]["actor"], "alice", "{}", docs[7]);

    // The stream says what the JSON form says, to the byte of each document.
    let json = json_events(&g, "/v1/threads/t1/events", &as_user("bob"), Some(&before));
    assert_same(&frames, &json, "live stream vs JSON form");
    assert!(s.comments >= 1, "the ': connected' comment was not seen");
}

/// Dropping the connection and resuming from the last seen id, by
/// `Last-Event-ID` or by `?after=`, gives exactly the later events.
#[test]
fn resume_gives_exactly_the_later_events() {
    let g = start("sse-resume");
    create_thread(&g, "t2", "alice");
    add_member(&g, "t2", "bob", "member");
    let bob = as_user("bob");
    let start_cursor = head_of(&g);
    let mut s = Sse::open(
        &g,
        "/v1/threads/t2/events",
        &[bob.clone(), vec![h("Last-Event-ID", &start_cursor)]].concat(),
    )
    .expect("stream");
    let first: Vec<String> = (0..5)
        .map(|i| post(&g, "t2", "alice", &format!("a{i}")))
        .collect();
    let seen = s.take(5, SHORT);
    assert_eq!(
        seen.iter()
            .map(|f| f.json()["data"]["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        first
    );
    let last = seen.last().unwrap().id.clone().unwrap();
    drop(s);

    // More happens while bob is away: posts, an edit of an old message, a reaction.
    for i in 0..5 {
        post(&g, "t2", "alice", &format!("b{i}"));
    }
    ok(
        &g,
        Method::PUT,
        &format!("/v1/threads/t2/messages/{}", first[0]),
        &as_backend(Some("alice")),
        Some(json!({"body": {"text": "a0 edited"}})),
    );
    ok(
        &g,
        Method::POST,
        &format!("/v1/threads/t2/messages/{}/reactions", first[1]),
        &as_backend(Some("alice")),
        Some(json!({"id": "alice", "reaction": "🎉"})),
    );
    let expected = json_events(&g, "/v1/threads/t2/events", &bob, Some(&last));
    assert_eq!(expected.len(), 7, "{expected:#?}");
    // The JSON form from the start cursor is the five seen, then the same seven.
    let all = json_events(&g, "/v1/threads/t2/events", &bob, Some(&start_cursor));
    assert_same(&seen, &all[..5], "first connection vs JSON form");
    assert_eq!(&all[5..], &expected[..]);

    let mut marker_no = 0;
    let mut check = |g: &Gateway, s: &mut Sse, expected: &[Value], what: &str| {
        let got = s.take(expected.len(), SHORT);
        assert_same(&got, expected, what);
        // Nothing more (no duplicate, nothing extra): the next event is a new one.
        marker_no += 1;
        let m = post(g, "t2", "alice", &format!("marker {marker_no}"));
        let next = s.take(1, SHORT);
        assert_eq!(next[0].event, "message.created", "{what}: {next:#?}");
        assert_eq!(
            next[0].json()["data"]["id"].as_str(),
            Some(m.as_str()),
            "{what}"
        );
        assert!(next[0].pos() > got.last().unwrap().pos(), "{what}");
        next[0].id.clone().unwrap()
    };

    // Last-Event-ID (what EventSource sends on reconnect).
    let mut r = Sse::open(
        &g,
        "/v1/threads/t2/events",
        &[bob.clone(), vec![h("Last-Event-ID", &last)]].concat(),
    )
    .expect("resume by Last-Event-ID");
    let m1 = check(&g, &mut r, &expected, "Last-Event-ID");
    drop(r);

    // ?after= (the same cursor): the same events, then both markers.
    let mut expected2 = expected.clone();
    let tail = json_events(
        &g,
        "/v1/threads/t2/events",
        &bob,
        expected.last().unwrap()["id"].as_str(),
    );
    assert_eq!(tail.len(), 1, "the first marker: {tail:#?}");
    assert_eq!(tail[0]["id"].as_str(), Some(m1.as_str()));
    expected2.extend(tail);
    let mut r = Sse::open(&g, &format!("/v1/threads/t2/events?after={last}"), &bob)
        .expect("resume by ?after=");
    check(&g, &mut r, &expected2, "?after=");
    drop(r);

    // Last-Event-ID wins over ?after=; a resume from the middle of what was seen.
    let mid = seen[2].id.clone().unwrap();
    let from_mid = json_events(&g, "/v1/threads/t2/events", &bob, Some(&mid));
    let mut r = Sse::open(
        &g,
        "/v1/threads/t2/events?after=0",
        &[bob.clone(), vec![h("Last-Event-ID", &mid)]].concat(),
    )
    .expect("resume from the middle");
    check(&g, &mut r, &from_mid, "Last-Event-ID over ?after=");
}

/// Resume across a gateway restart, then across a PostgreSQL restart under
/// a running gateway (which must recover by itself).
#[test]
fn resume_across_gateway_and_postgres_restarts() {
    let dir = temp_dir("sse-restart");
    let pg_port = free_port();
    let mut g = Gateway::embedded(&dir, pg_port, &keyed_args());
    g.wait_ready();
    create_thread(&g, "t3", "alice");
    add_member(&g, "t3", "bob", "member");
    let bob = as_user("bob");

    // --- the gateway restarts ---
    let mut s = live(&g, "/v1/threads/t3/events", &bob);
    for i in 0..3 {
        post(&g, "t3", "alice", &format!("before gw restart {i}"));
    }
    let seen = s.take(3, SHORT);
    let last = seen[2].id.clone().unwrap();
    assert!(g.stop().success(), "clean stop with a stream open");
    // The open stream ends with the shutdown (what EventSource reconnects on).
    let rest = s.until_end(Duration::from_secs(10));
    assert!(rest.is_empty(), "events after the last one: {rest:#?}");
    g.restart();
    g.wait_ready();
    let mut after_restart = Vec::new();
    for i in 0..3 {
        after_restart.push(post(&g, "t3", "alice", &format!("after gw restart {i}")));
    }
    let expected = json_events(&g, "/v1/threads/t3/events", &bob, Some(&last));
    assert_eq!(expected.len(), 3, "{expected:#?}");
    let mut r = Sse::open(
        &g,
        "/v1/threads/t3/events",
        &[bob.clone(), vec![h("Last-Event-ID", &last)]].concat(),
    )
    .expect("resume after the gateway restart");
    let got = r.take(3, SHORT);
    assert_same(&got, &expected, "after the gateway restart");
    let ids: Vec<String> = got
        .iter()
        .map(|f| f.json()["data"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, after_restart);
    let l0 = got.last().unwrap().id.clone().unwrap();

    // --- PostgreSQL restarts under the running gateway ---
    // `r` stays open through it; `l0` is where a reconnect resumes from.
    let mut posted: Vec<(String, String)> = Vec::new(); // (text, id) of 2xx posts
    let mut failed_texts: Vec<String> = Vec::new();
    for i in 0..3 {
        let text = format!("before pg restart {i}");
        posted.push((text.clone(), post(&g, "t3", "alice", &text)));
    }
    let live_before = r.take(3, SHORT);
    let l1 = live_before.last().unwrap().id.clone().unwrap();

    let cluster = pgcluster::Cluster::new(&dir, pg_port)
        .unwrap()
        .with_setting("shared_preload_libraries", "progressdb");
    cluster.stop().expect("stop PostgreSQL");
    // During the outage: writes fail (503), or, if one got through, it counts.
    for i in 0..2 {
        let text = format!("during pg outage {i}");
        let (st, v) = call(
            &g,
            Method::POST,
            "/v1/threads/t3/messages",
            &as_backend(Some("alice")),
            Some(json!({"body": {"text": text}})),
        );
        if (200..300).contains(&st) {
            posted.push((text, v["id"].as_str().unwrap().to_string()));
        } else {
            assert_eq!(st, 503, "a write with PostgreSQL down: {v}");
            failed_texts.push(text);
        }
    }
    cluster.start().expect("start PostgreSQL again");
    // The gateway recovers by itself: writes succeed again (bounded retries).
    for i in 0..3 {
        let text = format!("after pg restart {i}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let t = format!("{text} (attempt {attempt})");
            let (st, v) = call(
                &g,
                Method::POST,
                "/v1/threads/t3/messages",
                &as_backend(Some("alice")),
                Some(json!({"body": {"text": t}})),
            );
            if (200..300).contains(&st) {
                posted.push((t, v["id"].as_str().unwrap().to_string()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not recover from a PostgreSQL restart within 60s: {st} {v}"
            );
            failed_texts.push(t);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let expected = json_events(&g, "/v1/threads/t3/events", &bob, Some(&l0));
    // Every successful post exactly once; nothing but those and failed attempts.
    let created: Vec<(String, String)> = expected
        .iter()
        .filter(|e| e["type"] == "message.created")
        .map(|e| {
            (
                e["data"]["body"]["text"].as_str().unwrap().to_string(),
                e["data"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (text, id) in &posted {
        let n = created.iter().filter(|(_, i)| i == id).count();
        assert_eq!(
            n, 1,
            "post {text:?} ({id}) appears {n} times: {expected:#?}"
        );
    }
    for (text, _) in &created {
        assert!(
            posted.iter().any(|(t, _)| t == text) || failed_texts.contains(text),
            "an event of a message nobody posted: {text:?}"
        );
    }

    // A subscriber reconnecting from before the restart gets all of it, once.
    let mut re = Sse::open(
        &g,
        "/v1/threads/t3/events",
        &[bob.clone(), vec![h("Last-Event-ID", &l0)]].concat(),
    )
    .expect("resume after the PostgreSQL restart");
    let got = re.take(expected.len(), Duration::from_secs(30));
    assert_same(&got, &expected, "resume across the PostgreSQL restart");
    let marker = post(&g, "t3", "alice", "marker after pg restart");
    let next = re.take(1, SHORT);
    assert_eq!(
        next[0].json()["data"]["id"].as_str(),
        Some(marker.as_str()),
        "{next:#?}"
    );

    // The stream that stayed open: what it delivered after the restart is a
    // gap-free continuation (it may have ended instead, then it resumes).
    let mut cont = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match r.next(deadline) {
            Next::Frame(f) if f.id.is_none() => {}
            Next::Frame(f) => {
                let is_marker = f.json()["data"]["id"].as_str() == Some(marker.as_str());
                cont.push(f);
                if is_marker {
                    break;
                }
            }
            Next::End => break,
            Next::Timeout => panic!(
                "the stream open across the PostgreSQL restart neither went on nor ended: {cont:#?}"
            ),
        }
    }
    eprintln!(
        "pg-restart test: the stream open across the restart delivered {} events after it",
        cont.len()
    );
    let mut want = json_events(&g, "/v1/threads/t3/events", &bob, Some(&l1));
    want.truncate(cont.len());
    assert_same(
        &cont,
        &want,
        "the stream open across the PostgreSQL restart",
    );
    drop(re);
    drop(r);
    drop(g);
}

/// Outsiders are refused on both forms; EventSource-style query credentials
/// work on the stream routes only, and never reach the log.
#[test]
fn authorization_and_query_string_credentials() {
    let dir = temp_dir("sse-auth");
    let mut g = Gateway::embedded_logged(&dir, free_port(), &keyed_args(), "debug");
    g.wait_ready();
    create_thread(&g, "t4", "alice");
    add_member(&g, "t4", "bob", "member");

    for (who, what) in [
        (as_user("eve"), "signed outsider"),
        (as_backend(Some("eve")), "backend key as an outsider"),
    ] {
        let e = Sse::open(&g, "/v1/threads/t4/events", &who)
            .err()
            .unwrap_or_else(|| panic!("{what}: a stream was opened"));
        assert_eq!(e.status, 403, "{what}: {e:?}");
        assert!(
            e.content_type.starts_with("application/json"),
            "{what}: {e:?}"
        );
        let v: Value = serde_json::from_str(&e.body).unwrap();
        assert!(v["error"].is_string(), "{what}: {e:?}");
        let (s, v) = call(&g, Method::GET, "/v1/threads/t4/events", &who, None);
        assert_eq!(s, 403, "{what}, JSON form: {v}");
        let (s, v) = call(&g, Method::GET, "/v1/threads/t4/events?after=0", &who, None);
        assert_eq!(s, 403, "{what}, JSON form with a cursor: {v}");
    }

    // EventSource style: no headers, credentials in the query string.
    let sig = signature(SIGNING, "bob");
    let q = format!("key={FRONTEND}&user=bob&signature={sig}");
    let head = head_of(&g);
    let mut s = Sse::open(&g, &format!("/v1/threads/t4/events?{q}&after={head}"), &[])
        .expect("a member with query credentials");
    let mut u =
        Sse::open(&g, &format!("/v1/events?after={head}&{q}"), &[]).expect("the user stream too");
    let id = post(&g, "t4", "alice", "for bob");
    for (st, what) in [(&mut s, "thread stream"), (&mut u, "user stream")] {
        let f = st.take(1, SHORT);
        assert_eq!(
            f[0].json()["data"]["id"].as_str(),
            Some(id.as_str()),
            "{what}: {f:#?}"
        );
    }
    // The JSON form takes them too.
    let (st, v) = send(
        g.client
            .get(g.url(&format!("/v1/threads/t4/events?{q}")))
            .header("Accept", "application/json"),
    );
    assert_eq!(st, 200, "{v}");
    // An outsider with valid query credentials: 403, not a stream.
    let eve_sig = signature(SIGNING, "eve");
    let e = Sse::open(
        &g,
        &format!("/v1/threads/t4/events?key={FRONTEND}&user=eve&signature={eve_sig}"),
        &[],
    )
    .err()
    .expect("eve refused");
    assert_eq!(e.status, 403, "{e:?}");

    // A bad signature in the query: 401 on both forms.
    let bad = signature("not the secret", "bob");
    let bad_q = format!("key={FRONTEND}&user=bob&signature={bad}");
    for path in ["/v1/threads/t4/events", "/v1/events"] {
        let e = Sse::open(&g, &format!("{path}?{bad_q}"), &[])
            .err()
            .expect("bad signature refused");
        assert_eq!(e.status, 401, "{path}: {e:?}");
        assert!(e.content_type.starts_with("application/json"), "{e:?}");
        let (st, v) = send(g.client.get(g.url(&format!("{path}?{bad_q}"))));
        assert_eq!(st, 401, "{path} JSON form: {v}");
    }
    // A signature of another user: 401 as well.
    let e = Sse::open(
        &g,
        &format!("/v1/threads/t4/events?key={FRONTEND}&user=bob&signature={eve_sig}"),
        &[],
    )
    .err()
    .expect("someone else's signature refused");
    assert_eq!(e.status, 401, "{e:?}");

    // Other routes never read credentials from the URL.
    for path in [
        format!("/v1/threads/t4/messages?{q}"),
        format!("/v1/threads/t4?{q}"),
        format!("/v1/threads/t4/events/x?{q}"),
        format!("/v1/messages?thread=t4&{q}"),
    ] {
        let (st, v) = send(g.client.get(g.url(&path)));
        assert!(st == 401 || st == 404, "GET {path}: {st} {v}");
        if !path.contains("/events/x") {
            assert_eq!(st, 401, "GET {path}: {v}");
        }
    }
    let (st, v) = send(
        g.client
            .post(g.url(&format!("/v1/threads/t4/messages?{q}")))
            .header("content-type", "application/json")
            .body(json!({"body": {"text": "via query"}}).to_string()),
    );
    assert_eq!(st, 401, "POST with query credentials: {v}");
    // Not for typing either (a POST on a stream-like path).
    let (st, v) = send(g.client.post(g.url(&format!("/v1/threads/t4/typing?{q}"))));
    assert_eq!(st, 401, "typing with query credentials: {v}");

    drop(s);
    drop(u);
    // The log saw these requests, but neither the key nor any signature.
    let log = g.log_text();
    assert!(
        log.contains("/v1/threads/{thread}/events"),
        "the request log was not captured at debug level: {log}"
    );
    for secret in [FRONTEND, &sig, &bad, &eve_sig, SIGNING] {
        assert!(
            !log.contains(secret),
            "{secret} appears in the gateway log:\n{log}"
        );
    }
}

/// `/v1/events` follows the user's memberships on the open stream.
#[test]
fn the_user_stream_follows_membership() {
    let g = start("sse-user");
    create_thread(&g, "ta", "alice");
    create_thread(&g, "tb", "alice");
    add_member(&g, "ta", "dave", "member");
    let mut s = live(&g, "/v1/events", &as_user("dave"));

    // B's event is posted first: if it leaked it would come before A's.
    let b1 = post(&g, "tb", "alice", "b1 (dave is no member)");
    let a1 = post(&g, "ta", "alice", "a1");
    let f = s.take(1, SHORT);
    assert_eq!(f[0].event, "message.created", "{f:#?}");
    assert_eq!(f[0].json()["thread"], "ta", "{f:#?}");
    assert_eq!(f[0].json()["data"]["id"].as_str(), Some(a1.as_str()));

    // Added to B by an admin: B's later events arrive on the same stream.
    add_member(&g, "tb", "dave", "member");
    let b2 = post(&g, "tb", "alice", "b2");
    let got = s.until(SHORT, |f| f.event == "message.created");
    let last = got.last().unwrap().json();
    assert_eq!(last["thread"], "tb", "{got:#?}");
    assert_eq!(last["data"]["id"].as_str(), Some(b2.as_str()), "{got:#?}");
    for f in &got[..got.len() - 1] {
        let d = f.json();
        assert!(
            f.event == "member.added" && d["thread"] == "tb" && d["data"]["user"] == "dave",
            "only dave's own joining may come before b2: {got:#?}"
        );
    }
    assert!(
        got.iter()
            .all(|f| f.json()["data"]["id"].as_str() != Some(b1.as_str())),
        "b1 (before dave joined) came live: {got:#?}"
    );

    // Removed from A: nothing more of A (A's post comes before B's).
    remove_member(&g, "ta", "dave");
    let a2 = post(&g, "ta", "alice", "a2 (dave has left)");
    let b3 = post(&g, "tb", "alice", "b3");
    let got = s.until(SHORT, |f| f.event == "message.created");
    let last = got.last().unwrap().json();
    assert_eq!(last["data"]["id"].as_str(), Some(b3.as_str()), "{got:#?}");
    for f in &got {
        let d = f.json();
        assert!(
            d["thread"] != "ta" || (f.event == "member.removed" && d["data"]["user"] == "dave"),
            "an event of A after dave's removal: {got:#?}"
        );
        assert_ne!(d["data"]["id"].as_str(), Some(a2.as_str()), "{got:#?}");
    }
    assert!(strictly_increasing(&got));

    // The JSON form, per user: nothing of A now, B's events (all of B's history).
    let json = json_events(&g, "/v1/events", &as_user("dave"), None);
    assert!(json.iter().all(|e| e["thread"] == "tb"), "{json:#?}");
    assert!(json
        .iter()
        .any(|e| e["data"]["id"].as_str() == Some(b3.as_str())));
}

/// A member removed while watching a thread: the stream ends, and comes back 403.
#[test]
fn a_removed_member_stream_ends_and_stays_refused() {
    let g = start("sse-removed");
    create_thread(&g, "t6", "alice");
    add_member(&g, "t6", "bob", "member");
    let mut s = live(&g, "/v1/threads/t6/events", &as_user("bob"));
    let m = post(&g, "t6", "alice", "still here");
    let f = s.take(1, SHORT);
    assert_eq!(f[0].json()["data"]["id"].as_str(), Some(m.as_str()));

    remove_member(&g, "t6", "bob");
    let after = post(&g, "t6", "alice", "bob is gone");
    let rest = s.until_end(Duration::from_secs(15));
    for f in &rest {
        assert_ne!(
            f.json()["data"]["id"].as_str(),
            Some(after.as_str()),
            "a message posted after the removal reached the removed member: {rest:#?}"
        );
        assert!(
            f.id.is_none() || f.event == "member.removed",
            "unexpected event after the removal: {rest:#?}"
        );
    }
    let e = Sse::open(&g, "/v1/threads/t6/events", &as_user("bob"))
        .err()
        .expect("the removed member is refused");
    assert_eq!(e.status, 403, "{e:?}");
    let e = Sse::open(
        &g,
        "/v1/threads/t6/events",
        &[
            as_user("bob"),
            vec![h("Last-Event-ID", f[0].id.as_deref().unwrap())],
        ]
        .concat(),
    )
    .err()
    .expect("the removed member is refused on resume too");
    assert_eq!(e.status, 403, "{e:?}");
}

/// Typing notices: 204 for members who may post, an id-less `typing` event
/// on other members' streams, 403 for readers and outsiders, 429 past the burst.
#[test]
fn typing_notices() {
    let g = start("sse-typing");
    create_thread(&g, "t7", "alice");
    create_thread(&g, "t7b", "alice");
    add_member(&g, "t7", "bob", "member");
    add_member(&g, "t7b", "bob", "member");
    add_member(&g, "t7", "rita", "reader");
    add_member(&g, "t7", "tom", "member");
    let mut s = live(&g, "/v1/threads/t7/events", &as_user("bob"));
    let mut other = live(&g, "/v1/threads/t7b/events", &as_user("bob"));

    let (st, v) = call(
        &g,
        Method::POST,
        "/v1/threads/t7/typing",
        &as_user("alice"),
        None,
    );
    assert_eq!(st, 204, "{v}");
    let deadline = Instant::now() + SHORT;
    let f = match s.next(deadline) {
        Next::Frame(f) => f,
        Next::End => panic!("stream ended"),
        Next::Timeout => panic!("no typing notice"),
    };
    assert_eq!(f.event, "typing", "{f:?}");
    assert!(f.id.is_none(), "typing notices carry no id: {f:?}");
    let d = f.json();
    assert_eq!(d["thread"], "t7", "{d}");
    assert_eq!(d["actor"], "alice", "{d}");
    assert_eq!(d["type"], "typing", "{d}");

    // Not on another thread's stream: its next frame is that thread's own event.
    let m = post(&g, "t7b", "alice", "in t7b");
    let got = other.take(1, SHORT);
    assert_eq!(got[0].json()["data"]["id"].as_str(), Some(m.as_str()));
    assert!(other.frames.is_empty());

    for (who, what) in [
        (as_user("rita"), "a reader"),
        (as_user("eve"), "an outsider"),
        (as_backend(Some("eve")), "the backend key as an outsider"),
    ] {
        let (st, v) = call(&g, Method::POST, "/v1/threads/t7/typing", &who, None);
        assert_eq!(st, 403, "{what}: {v}");
    }

    // More than the burst (5) in quick succession: 429.
    let t0 = Instant::now();
    let statuses: Vec<u16> = (0..10)
        .map(|_| {
            call(
                &g,
                Method::POST,
                "/v1/threads/t7/typing",
                &as_user("tom"),
                None,
            )
            .0
        })
        .collect();
    let took = t0.elapsed();
    assert!(
        statuses[..5].iter().all(|&s| s == 204),
        "the burst is allowed: {statuses:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "ten typing calls took {took:?}: too slow to test the limit"
    );
    // One notice a second comes back; ten in under four seconds exceed it.
    assert!(
        statuses.contains(&429),
        "no 429 past the burst: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 204 || s == 429),
        "{statuses:?}"
    );
    let (st, v) = call(
        &g,
        Method::POST,
        "/v1/threads/t7/typing",
        &as_user("tom"),
        None,
    );
    if st == 429 {
        assert!(v["error"].is_string(), "{v}");
    }
    // Another user is not limited by tom's notices.
    let (st, v) = call(
        &g,
        Method::POST,
        "/v1/threads/t7/typing",
        &as_user("bob"),
        None,
    );
    assert_eq!(st, 204, "{v}");
}

/// A malformed cursor is a 400 and a cursor behind retention a 410 — plain
/// JSON errors, not streams.
#[test]
fn cursor_errors_are_json_not_streams() {
    let dir = temp_dir("sse-cursor");
    let pg_port = free_port();
    let mut g = Gateway::embedded(&dir, pg_port, &keyed_args());
    g.wait_ready();
    create_thread(&g, "t8", "alice");
    add_member(&g, "t8", "bob", "member");
    for i in 0..3 {
        post(&g, "t8", "alice", &format!("m{i}"));
    }
    let bob = as_user("bob");
    let refused = |path: &str, extra: Headers| -> Refused {
        Sse::open(&g, path, &[bob.clone(), extra].concat())
            .err()
            .unwrap_or_else(|| panic!("{path}: a stream was opened"))
    };
    for (path, extra, what) in [
        ("/v1/threads/t8/events?after=abc", vec![], "?after=abc"),
        ("/v1/events?after=abc", vec![], "/v1/events?after=abc"),
        (
            "/v1/threads/t8/events",
            vec![h("Last-Event-ID", "abc")],
            "Last-Event-ID: abc",
        ),
        ("/v1/threads/t8/events?after=-1", vec![], "?after=-1"),
        (
            "/v1/threads/t8/events?after=999999999",
            vec![],
            "a cursor ahead of the feed",
        ),
    ] {
        let e = refused(path, extra);
        assert_eq!(e.status, 400, "{what}: {e:?}");
        assert!(
            e.content_type.starts_with("application/json"),
            "{what}: {e:?}"
        );
        let v: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
        assert!(v["error"].is_string(), "{what}: {e:?}");
    }

    // Retention removes everything (1 microsecond), in one psql session.
    let head = head_of(&g);
    let cluster = pgcluster::Cluster::new(&dir, pg_port).unwrap();
    let removed = cluster
        .psql(
            "postgres",
            "SET progressdb.event_retention = '1 microsecond'; SELECT progressdb.trim_events();",
        )
        .expect("trim the feed");
    assert!(
        removed.trim().parse::<i64>().unwrap() >= 5,
        "trim_events removed {removed}"
    );
    for (path, extra, what) in [
        ("/v1/threads/t8/events?after=0", vec![], "?after=0"),
        ("/v1/events?after=0", vec![], "/v1/events?after=0"),
        (
            "/v1/threads/t8/events",
            vec![h("Last-Event-ID", "1")],
            "Last-Event-ID: 1",
        ),
    ] {
        let e = refused(path, extra);
        assert_eq!(e.status, 410, "{what}: {e:?}");
        assert!(
            e.content_type.starts_with("application/json"),
            "{what}: {e:?}"
        );
        let v: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
        assert!(v["error"].is_string(), "{what}: {e:?}");
    }
    let (st, v) = call(&g, Method::GET, "/v1/threads/t8/events?after=0", &bob, None);
    assert_eq!(st, 410, "JSON form: {v}");

    // The head itself is still a good cursor: the stream goes on from there.
    let mut s = Sse::open(
        &g,
        "/v1/threads/t8/events",
        &[bob.clone(), vec![h("Last-Event-ID", &head)]].concat(),
    )
    .expect("resume from the head after trimming");
    let m = post(&g, "t8", "alice", "after the trim");
    let f = s.take(1, SHORT);
    assert_eq!(
        f[0].json()["data"]["id"].as_str(),
        Some(m.as_str()),
        "{f:#?}"
    );
    assert_eq!(f[0].pos(), head.parse::<i64>().unwrap() + 1);
}

/// A client that stops reading is dropped once its queue (1024 events) is
/// full; a fast client on the same thread gets everything meanwhile, and the
/// slow one resumes from its last id without a gap.
#[test]
fn a_slow_client_is_dropped_without_holding_up_a_fast_one() {
    // ~1,300 of 1,600 such events were seen absorbed (queue + buffers) on
    // loopback: 2,000 leaves room for larger socket buffers.
    const MESSAGES: usize = 2000;
    const WRITERS: usize = 4;
    // Large events, so that socket buffers cannot hide the queue's limit.
    let pad = "x".repeat(16 * 1024);

    let g = start("sse-slow");
    create_thread(&g, "t9", "alice");
    add_member(&g, "t9", "fast", "member");
    add_member(&g, "t9", "slow", "member");
    let start_cursor = head_of(&g);
    let at_start = |who: &str| {
        let hs = [as_user(who), vec![h("Last-Event-ID", &start_cursor)]].concat();
        Sse::open(&g, "/v1/threads/t9/events", &hs).expect("stream")
    };
    let mut fast = at_start("fast");
    let mut slow = at_start("slow");

    let t0 = Instant::now();
    let (fast_frames, posted) = std::thread::scope(|scope| {
        let fast = &mut fast;
        let reader = scope.spawn(move || fast.take(MESSAGES, Duration::from_secs(300)));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let g = &g;
                let pad = &pad;
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for i in (w..MESSAGES).step_by(WRITERS) {
                        ids.push(post(g, "t9", "alice", &format!("{i} {pad}")));
                    }
                    ids
                })
            })
            .collect();
        let posted: HashSet<String> = writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect();
        let frames = reader.join().expect("fast reader");
        (frames, posted)
    });
    eprintln!(
        "slow-client test: {MESSAGES} messages posted and read by the fast client in {:?}",
        t0.elapsed()
    );
    assert_eq!(posted.len(), MESSAGES);
    let expected = json_events(
        &g,
        "/v1/threads/t9/events",
        &as_user("fast"),
        Some(&start_cursor),
    );
    let others: Vec<&Value> = expected
        .iter()
        .filter(|e| {
            e["type"] != "message.created"
                || !posted.contains(e["data"]["id"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(others.is_empty(), "events besides the posts: {others:#?}");
    assert_eq!(expected.len(), MESSAGES, "one event per post");
    // (a) the fast client got every event, in order, exactly as the feed has them.
    assert_same(&fast_frames, &expected, "the fast client");
    let got: HashSet<String> = fast_frames
        .iter()
        .map(|f| f.json()["data"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, posted);

    // (b) the slow one was dropped: its stream ends before it delivered everything.
    let slow_frames = slow.until_end(Duration::from_secs(60));
    eprintln!(
        "slow-client test: the slow client got {} of {MESSAGES} events before its stream ended",
        slow_frames.len()
    );
    assert!(
        slow_frames.len() < MESSAGES,
        "the slow client was not dropped (it received all {MESSAGES} events)"
    );
    assert!(
        slow_frames.len() >= 1024,
        "dropped before its queue could have been full: {} events",
        slow_frames.len()
    );
    // What it got before the end is a prefix of the feed: no gap.
    assert_same(
        &slow_frames,
        &expected[..slow_frames.len()],
        "the slow client's prefix",
    );

    // It resumes from its last id and gets exactly the rest.
    let last = slow_frames
        .last()
        .map(|f| f.id.clone().unwrap())
        .unwrap_or(start_cursor);
    let mut again = Sse::open(
        &g,
        "/v1/threads/t9/events",
        &[as_user("slow"), vec![h("Last-Event-ID", &last)]].concat(),
    )
    .expect("the slow client resumes");
    let rest = again.take(MESSAGES - slow_frames.len(), Duration::from_secs(120));
    assert_same(
        &rest,
        &expected[slow_frames.len()..],
        "the slow client's resume",
    );
    // The fast one is still connected and live.
    let m = post(&g, "t9", "alice", "after the flood");
    for (s, what) in [(&mut fast, "fast"), (&mut again, "resumed slow")] {
        let f = s.take(1, SHORT);
        assert_eq!(
            f[0].json()["data"]["id"].as_str(),
            Some(m.as_str()),
            "{what}: {f:#?}"
        );
    }
}

/// Retention can remove events before this gateway delivered them (another
/// process numbered them while its loop lagged). The gateway must not stall:
/// its live streams end (they missed events; their resume gets 410, as any
/// resume from that far back does) and new streams get new events live.
#[test]
fn live_delivery_survives_retention_overtaking_the_feed_loop() {
    let g = start("sse-trimmed");
    create_thread(&g, "t9", "alice");
    let mut s = live(&g, "/v1/threads/t9/events", &as_user("alice"));
    post(&g, "t9", "alice", "before");
    let seen = s.take(1, SHORT);
    // One transaction elsewhere: an event made, numbered and removed by
    // retention before it commits, so the gateway never sees it.
    let (dir, port) = g.embedded.clone().expect("an embedded cluster");
    let cluster = pgcluster::Cluster::new(&dir, port).unwrap();
    cluster
        .psql(
            "postgres",
            "BEGIN; SET LOCAL progressdb.event_retention = '1 microsecond'; \
             SELECT progressdb.post_message('t9', 'alice', '{\"text\":\"gone\"}'); \
             SELECT progressdb._sequence_events(); SELECT pg_sleep(0.01); \
             SELECT progressdb.trim_events(); COMMIT;",
        )
        .expect("post, number and trim in one transaction");
    let rest = s.until_end(Duration::from_secs(15));
    assert!(
        rest.iter().all(|f| f.id.is_none()),
        "no event can reach the stream: {rest:#?}"
    );
    let e = Sse::open(
        &g,
        "/v1/threads/t9/events",
        &[
            as_user("alice"),
            vec![h("Last-Event-ID", seen[0].id.as_deref().unwrap())],
        ]
        .concat(),
    )
    .err()
    .expect("a resume from before the removed events is refused");
    assert_eq!(e.status, 410, "{e:?}");
    // Live delivery goes on.
    let mut fresh = live(&g, "/v1/threads/t9/events", &as_user("alice"));
    let m = post(&g, "t9", "alice", "after");
    let f = fresh.take(1, SHORT);
    assert_eq!(f[0].json()["data"]["id"].as_str(), Some(m.as_str()));
}
