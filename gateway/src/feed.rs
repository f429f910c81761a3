//! Live delivery of the event feed: one loop reads new events from the
//! database and fans them out to every Server-Sent Events subscriber.
//!
//! The loop wakes when this gateway has just written (a kick), when another
//! process's sequencer round or a typing notice is announced (one LISTEN
//! connection), and every `POLL` otherwise. Each round reads
//! `progressdb._feed_batch` (the service's view, rendered once) and hands
//! each event, as a ready SSE frame, to the subscribers that may see it.
//!
//! Who may see what is the database's decision: a subscriber carries the
//! grants `progressdb._feed_grants` gave it (per thread, events of messages
//! after `visible_after`), re-asked whenever a membership or thread event
//! concerns it, before that batch is delivered. A subscriber's queue is
//! bounded; one that falls behind is dropped (its stream ends) and resumes
//! with `Last-Event-ID`, so a slow client never slows the others or grows
//! memory without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::AsyncMessage;

/// Events a subscriber may have queued before it is dropped.
pub const QUEUE: usize = 1024;
/// Longest wait between rounds when nothing announced new events.
const POLL: Duration = Duration::from_millis(250);
/// Events read per round.
const BATCH: i32 = 1000;

/// What a subscription covers.
#[derive(Clone, Debug, PartialEq)]
pub enum Scope {
    Thread(String),
    /// Every thread the user may read (the service: every thread).
    User,
}

/// One live subscriber.
pub struct Subscriber {
    id: u64,
    scope: Scope,
    /// None: the service, which sees everything.
    user: Option<String>,
    /// thread → visible_after, as `_feed_grants` said.
    grants: Mutex<HashMap<String, i64>>,
    tx: mpsc::Sender<Bytes>,
}

impl Subscriber {
    fn may_see(&self, ev: &Event) -> bool {
        if self.user.is_none() {
            return true;
        }
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        match grants.get(&ev.thread) {
            Some(&vis) => ev.seq.is_none_or(|s| s > vis),
            None => false,
        }
    }

    fn covers(&self, thread: &str) -> bool {
        match &self.scope {
            Scope::Thread(t) => t == thread,
            Scope::User => true,
        }
    }
}

/// A feed row as the loop reads it.
pub struct Event {
    pub pos: i64,
    pub thread: String,
    pub kind: String,
    pub seq: Option<i64>,
    pub subject: Option<String>,
    pub frame: Bytes,
}

/// The SSE frame of an event: `id`, `event` and one `data` line (the JSON
/// has no raw newlines: the renderer escapes them).
pub fn frame(pos: i64, kind: &str, doc: &str) -> Bytes {
    Bytes::from(format!("id: {pos}\nevent: {kind}\ndata: {doc}\n\n"))
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    subs: Vec<Arc<Subscriber>>,
    /// The last position handed to subscribers.
    head: i64,
}

pub struct Feed {
    registry: Mutex<Registry>,
    kick: Notify,
    shutdown: watch::Sender<bool>,
    /// True once the loop knows the feed's head (live positions start there).
    ready: watch::Sender<bool>,
    started: AtomicBool,
    pub dropped: AtomicU64,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            registry: Mutex::new(Registry::default()),
            kick: Notify::new(),
            shutdown: watch::channel(false).0,
            ready: watch::channel(false).0,
            started: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }
}

/// A registered subscription: its queue, and the position live delivery
/// starts after (everything later comes through the queue).
pub struct Subscription {
    pub rx: mpsc::Receiver<Bytes>,
    pub live_after: i64,
    pub id: u64,
}

impl Feed {
    /// Wakes the loop now (after a write through this gateway).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// The last position delivered live (0 before the first round).
    pub fn head(&self) -> i64 {
        self.lock().head
    }

    pub fn is_running(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Resolves once live delivery has a starting position (false: the
    /// gateway is shutting down first). A subscriber must not register
    /// before, or the replay would stop short of where live delivery starts.
    pub async fn wait_ready(&self) -> bool {
        let mut ready = self.ready.subscribe();
        let mut stop = self.shutdown_signal();
        tokio::select! {
            r = ready.wait_for(|r| *r) => r.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Ends every stream (graceful shutdown).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
        self.lock().subs.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribers(&self) -> usize {
        self.lock().subs.len()
    }

    /// Registers a subscriber. Under the registry lock, so every event after
    /// `live_after` reaches its queue.
    pub fn subscribe(
        &self,
        scope: Scope,
        user: Option<String>,
        grants: HashMap<String, i64>,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut reg = self.lock();
        reg.next_id += 1;
        let id = reg.next_id;
        reg.subs.push(Arc::new(Subscriber {
            id,
            scope,
            user,
            grants: Mutex::new(grants),
            tx,
        }));
        Subscription {
            rx,
            live_after: reg.head,
            id,
        }
    }

    /// Replaces a subscriber's grants (asked again after registering, so a
    /// membership change during its replay is not missed).
    pub fn set_grants(&self, id: u64, grants: HashMap<String, i64>) {
        if let Some(s) = self.lock().subs.iter().find(|s| s.id == id) {
            *s.grants.lock().unwrap_or_else(|p| p.into_inner()) = grants;
        }
    }

    pub fn unsubscribe(&self, id: u64) {
        self.lock().subs.retain(|s| s.id != id);
    }

    /// A typing notice to the live subscribers of its thread (not stored).
    fn typing(&self, thread: &str, frame: Bytes) {
        let probe = Event {
            pos: 0,
            thread: thread.to_string(),
            kind: "typing".into(),
            seq: None,
            subject: None,
            frame,
        };
        let mut reg = self.lock();
        let dropped = deliver(&mut reg.subs, &probe);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    /// Moves the head past events that are gone (retention), ending every
    /// live stream: each of them has missed those events.
    fn skip_to(&self, pos: i64) {
        let mut reg = self.lock();
        if pos > reg.head {
            tracing::warn!(
                "event feed: events {}..={pos} were removed by retention before this gateway delivered them; \
                 ending {} live streams (they resume with 410)",
                reg.head + 1,
                reg.subs.len()
            );
            reg.subs.clear();
            reg.head = pos;
        }
    }

    /// Delivers a batch read from the database (positions ascending).
    fn dispatch(&self, events: &[Event]) {
        let mut reg = self.lock();
        for ev in events {
            if ev.pos <= reg.head {
                continue; // already delivered (a round raced a restart of the loop)
            }
            let dropped = deliver(&mut reg.subs, ev);
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            reg.head = ev.pos;
        }
    }

    /// Subscribers whose grants a batch may change: the subject of a member
    /// event, or anyone covering a thread whose settings changed.
    fn affected(&self, events: &[Event]) -> Vec<(Arc<Subscriber>, String)> {
        let reg = self.lock();
        let mut out = Vec::new();
        for ev in events {
            let membership = ev.kind == "member.added" || ev.kind == "member.removed";
            let settings = ev.kind == "thread.updated";
            if !membership && !settings {
                continue;
            }
            for s in &reg.subs {
                let Some(user) = &s.user else { continue };
                if !s.covers(&ev.thread) {
                    continue;
                }
                if settings || ev.subject.as_deref() == Some(user.as_str()) {
                    out.push((s.clone(), ev.thread.clone()));
                }
            }
        }
        out
    }
}

/// Hands an event to every subscriber that covers and may see it; drops
/// (removes) the ones whose queue is full or gone. Returns how many were
/// dropped for being slow.
fn deliver(subs: &mut Vec<Arc<Subscriber>>, ev: &Event) -> u64 {
    let mut slow = 0;
    subs.retain(|s| {
        if !s.covers(&ev.thread) || !s.may_see(ev) {
            return !s.tx.is_closed();
        }
        match s.tx.try_send(ev.frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                slow += 1;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
    slow
}

/// Asks the database again what `sub` may see of `thread`; a thread-scoped
/// subscriber that may no longer read its thread is ended.
async fn refresh_grant(pool: &Pool, feed: &Feed, sub: &Subscriber, thread: &str) {
    let Ok(client) = pool.get().await else { return };
    let row = client
        .query_opt(
            "SELECT visible_after FROM progressdb._feed_grants($1::text, $2::text)",
            &[&sub.user, &thread],
        )
        .await;
    let vis: Option<i64> = match row {
        Ok(Some(r)) => r.try_get(0).ok(),
        Ok(None) => None,
        // 403/404: no longer a reader. Anything else: keep what we had.
        Err(e) if e.as_db_error().is_some() => None,
        Err(_) => return,
    };
    let mut grants = sub.grants.lock().unwrap_or_else(|p| p.into_inner());
    match vis {
        Some(v) => {
            grants.insert(thread.to_string(), v);
        }
        None => {
            grants.remove(thread);
            if matches!(sub.scope, Scope::Thread(_)) {
                drop(grants);
                feed.unsubscribe(sub.id);
            }
        }
    }
}

/// One round: read what is new, refresh grants it changes, deliver.
/// Returns how many events were read.
async fn round(pool: &Pool, feed: &Feed) -> Result<usize, String> {
    let after = feed.head();
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let stmt = client
        .prepare_cached(
            "SELECT pos, thread, type, seq, subject, doc FROM progressdb._feed_batch($1::int8, $2::int4)",
        )
        .await
        .map_err(|e| e.to_string())?;
    let rows = match client.query(&stmt, &[&after, &BATCH]).await {
        Ok(rows) => rows,
        Err(e) if e.code().map(|c| c.code()) == Some("PD410") => {
            // Retention removed events this loop had not delivered (another
            // process numbered them while it lagged). Nobody can get them
            // now: end the live streams (their reconnect gets 410, as a
            // resume from that far back does) and go on from what is left.
            let trimmed: i64 = client
                .query_one("SELECT trimmed_through FROM progressdb.feed_state", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            feed.skip_to(trimmed);
            return Ok(0);
        }
        Err(e) => return Err(e.to_string()),
    };
    drop(client);
    let events: Vec<Event> = rows
        .iter()
        .map(|r| {
            let pos: i64 = r.get(0);
            let kind: String = r.get(2);
            let doc: String = r.get(5);
            Event {
                pos,
                thread: r.get(1),
                frame: frame(pos, &kind, &doc),
                kind,
                seq: r.get(3),
                subject: r.get(4),
            }
        })
        .collect();
    for (sub, thread) in feed.affected(&events) {
        refresh_grant(pool, feed, &sub, &thread).await;
    }
    feed.dispatch(&events);
    Ok(events.len())
}

/// The delivery loop; runs until shutdown.
pub async fn run(feed: Arc<Feed>, pool: Pool, conn: String) {
    feed.started.store(true, Ordering::Relaxed);
    let mut stop = feed.shutdown_signal();
    tokio::spawn(listen(feed.clone(), conn));
    // Start live delivery at the feed's head: subscribers resume older
    // positions from the database themselves.
    loop {
        match head(&pool).await {
            Ok(h) => {
                feed.lock().head = h;
                feed.ready.send_replace(true);
                break;
            }
            Err(e) => {
                tracing::warn!("event feed: cannot read the feed's head yet: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
    let mut failures = 0u32;
    loop {
        match round(&pool, &feed).await {
            Ok(n) if n as i32 == BATCH => continue, // more waiting
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!("event feed: cannot read new events: {e}");
                }
            }
        }
        tokio::select! {
            _ = feed.kick.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn head(pool: &Pool) -> Result<i64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT progressdb._sequence_events()", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// The one LISTEN connection: sequencer rounds of other processes wake the
/// loop; typing notices go straight to subscribers. Reconnects by itself.
async fn listen(feed: Arc<Feed>, conn: String) {
    let mut stop = feed.shutdown_signal();
    let mut backoff = Duration::from_millis(200);
    loop {
        match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                backoff = Duration::from_millis(200);
                let (tx, mut rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                if client
                    .batch_execute("LISTEN progressdb_feed; LISTEN progressdb_typing")
                    .await
                    .is_ok()
                {
                    feed.kick(); // catch up with what happened while away
                    loop {
                        tokio::select! {
                            m = rx.recv() => match m {
                                Some((channel, payload)) => on_notification(&feed, &channel, &payload),
                                None => break,
                            },
                            _ = stop.changed() => { driver.abort(); return; }
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::debug!("event feed: listen connection failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn on_notification(feed: &Feed, channel: &str, payload: &str) {
    if channel == "progressdb_typing" {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) else {
            return;
        };
        if let Some(thread) = v["thread"].as_str() {
            let frame = Bytes::from(format!("event: typing\ndata: {payload}\n\n"));
            feed.typing(thread, frame);
        }
    } else {
        feed.kick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pos: i64, thread: &str, seq: Option<i64>) -> Event {
        Event {
            pos,
            thread: thread.into(),
            kind: "message.created".into(),
            seq,
            subject: None,
            frame: frame(pos, "message.created", "{}"),
        }
    }

    #[tokio::test]
    async fn streams_wait_for_the_head_and_shutdown_reaches_late_waiters() {
        let feed = Feed::default();
        // not ready yet: a waiter must not pass
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(50), feed.wait_ready()).await;
        assert!(pending.is_err(), "ready before the head is known");
        // the loop learns the head while nobody waits: still seen afterwards
        feed.ready.send_replace(true);
        assert!(feed.wait_ready().await);
        let stopped = Feed::default();
        stopped.shut_down();
        assert!(!stopped.wait_ready().await, "shutdown before anyone waited");
    }

    #[test]
    fn frames_are_one_sse_event_each() {
        assert_eq!(
            &frame(7, "message.created", "{\"a\":1}")[..],
            b"id: 7\nevent: message.created\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn delivery_follows_scope_and_grants_and_drops_the_slow() {
        let feed = Feed::default();
        let mut t1 = feed.subscribe(
            Scope::Thread("t1".into()),
            Some("u".into()),
            HashMap::from([("t1".to_string(), 5)]),
        );
        let mut all = feed.subscribe(Scope::User, None, HashMap::new());
        let mut none = feed.subscribe(Scope::User, Some("x".into()), HashMap::new());
        feed.dispatch(&[
            ev(1, "t1", Some(5)),
            ev(2, "t1", Some(6)),
            ev(3, "t2", None),
        ]);
        // t1: only the message after its visible_after, nothing of t2
        assert_eq!(t1.rx.try_recv().unwrap(), frame(2, "message.created", "{}"));
        assert!(t1.rx.try_recv().is_err());
        // the service sees all three, in order
        let got: Vec<Bytes> = std::iter::from_fn(|| all.rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 3);
        assert!(none.rx.try_recv().is_err());
        assert_eq!(feed.head(), 3);
        // a batch seen before is not delivered twice
        feed.dispatch(&[ev(3, "t2", None)]);
        assert!(all.rx.try_recv().is_err());

        // a subscriber that stops reading is dropped when its queue is full
        let before = feed.subscribers();
        let evs: Vec<Event> = (4..4 + QUEUE as i64 + 1)
            .map(|p| ev(p, "t2", None))
            .collect();
        feed.dispatch(&evs);
        assert_eq!(feed.subscribers(), before - 1, "the full one went");
        assert_eq!(feed.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(t1.id, 1);
    }
}
