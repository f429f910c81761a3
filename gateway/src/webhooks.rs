//! Webhooks: every event of the durable feed POSTed to each configured
//! endpoint, in feed order, at least once.
//!
//! One task per endpoint, each on its own: it reads a batch of events after
//! the position the database holds for it (`_feed_batch`), POSTs them one by
//! one, and stores its progress (`_webhook_advance`) only after a 2xx. A
//! failed POST (error, timeout, any other status) is retried, the same event
//! again, with exponential backoff, so a dead endpoint only ever holds up
//! itself. A new endpoint starts at the head of the feed (`_webhook_start`):
//! it gets the events from its first start on.
//!
//! Each POST: the event JSON as the body, exactly as the database rendered
//! it; `Content-Type: application/json`; `X-ProgressDB-Event-Id: <id>`; and
//! `X-ProgressDB-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use deadpool_postgres::Pool;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{self, redact_url};
use crate::metrics::Metrics;

/// Events read per batch.
const BATCH: i32 = 100;
/// How often a caught-up endpoint looks for new events.
const POLL: Duration = Duration::from_millis(200);
/// One POST, connecting included.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay; it doubles per failure up to the cap.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How long startup waits for the endpoints to be registered (the database
/// was just reached, so this only matters when it goes away again at once).
const REGISTER_WAIT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the tasks to notice.
const STOP_WAIT: Duration = Duration::from_secs(5);

pub const EVENT_ID_HEADER: &str = "X-ProgressDB-Event-Id";
pub const SIGNATURE_HEADER: &str = "X-ProgressDB-Signature";

/// The running delivery tasks; [`Webhooks::stop`] ends them.
pub struct Webhooks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts one delivery task per endpoint and waits (bounded) until each has
/// registered, so events written once the gateway serves reach every new
/// endpoint. With no endpoint configured nothing runs.
pub async fn start(
    cfg: &config::Webhooks,
    pool: Pool,
    metrics: Arc<Metrics>,
) -> Result<Webhooks, String> {
    let (stop, stop_rx) = watch::channel(false);
    let mut hooks = Webhooks {
        stop,
        tasks: Vec::new(),
    };
    if cfg.urls.is_empty() {
        return Ok(hooks);
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("progressdb-webhooks/", env!("CARGO_PKG_VERSION")))
        .timeout(POST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // A receiver answers where it was configured; a redirect is a failure.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot set up the webhook HTTP client: {e}"))?;
    let secret: Arc<[u8]> = Arc::from(cfg.secret.as_bytes());
    let mut registered = Vec::new();
    for url in &cfg.urls {
        let (tx, rx) = oneshot::channel();
        registered.push(rx);
        let d = Deliverer {
            url: url.clone(),
            label: redact_url(url),
            pool: pool.clone(),
            client: client.clone(),
            secret: secret.clone(),
            metrics: metrics.clone(),
            stop: stop_rx.clone(),
        };
        tracing::info!(endpoint = %d.label, "webhook endpoint configured");
        hooks.tasks.push(tokio::spawn(d.run(tx)));
    }
    let all = async {
        for rx in registered {
            let _ = rx.await;
        }
    };
    if tokio::time::timeout(REGISTER_WAIT, all).await.is_err() {
        tracing::warn!(
            "webhook endpoints not all registered within {}s; they keep trying",
            REGISTER_WAIT.as_secs()
        );
    }
    Ok(hooks)
}

impl Webhooks {
    /// Tells every task to stop (an in-flight POST is abandoned: its event
    /// was not marked delivered, so it is sent again next time) and waits
    /// for them, bounded.
    pub async fn stop(self) {
        if self.tasks.is_empty() {
            return;
        }
        self.stop.send_replace(true);
        for mut t in self.tasks {
            if tokio::time::timeout(STOP_WAIT, &mut t).await.is_err() {
                t.abort();
            }
        }
        tracing::info!("webhook deliveries stopped");
    }
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
pub fn signature_header(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// The delay before retry number `failures` (1 for the first failure):
/// 200 ms doubling per failure, capped at 30 s, before jitter.
pub fn backoff_delay(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    BACKOFF_START.saturating_mul(1u32 << shift).min(BACKOFF_CAP)
}

/// Takes up to a tenth off `d` (`r` picks how much), so endpoints that
/// failed together do not retry in lockstep; never above the cap.
pub fn with_jitter(d: Duration, r: u64) -> Duration {
    let tenth = d / 10;
    let nanos = u64::try_from(tenth.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return d;
    }
    d - Duration::from_nanos(r % nanos)
}

fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Consecutive failures and the delay they call for.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        with_jitter(backoff_delay(self.failures), random_u64())
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Resolves once shutdown is asked for (or nobody can ask any more).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn pg_err(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// A failed request, described without its URL (it may carry a token).
fn http_err(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", POST_TIMEOUT.as_secs());
    }
    let e = e.without_url();
    let mut out = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// One endpoint's delivery loop and what it needs.
struct Deliverer {
    url: String,
    /// The URL as logs and metrics show it.
    label: String,
    pool: Pool,
    client: reqwest::Client,
    secret: Arc<[u8]>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl Deliverer {
    /// Sleeps for `d` unless shutdown comes first; true when stopping.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = stopped(&mut self.stop) => true,
        }
    }

    async fn run(mut self, registered: oneshot::Sender<()>) {
        let mut backoff = Backoff::default();
        let mut delivered = loop {
            match self.register().await {
                Ok(pos) => break pos,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        endpoint = %self.label,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot register the webhook endpoint: {e}"
                    );
                    if self.pause(delay).await {
                        return;
                    }
                }
            }
        };
        let _ = registered.send(());
        tracing::debug!(endpoint = %self.label, delivered, "webhook endpoint registered");
        // What the database holds; behind `delivered` only after a failed store.
        let mut stored = delivered;
        backoff.reset();
        loop {
            if *self.stop.borrow() {
                return;
            }
            let batch = match self.batch(delivered).await {
                Ok(b) => b,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        endpoint = %self.label,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot read the event feed for webhooks: {e}"
                    );
                    if self.pause(delay).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            if batch.is_empty() {
                if stored < delivered && self.advance(delivered).await.is_ok() {
                    stored = delivered;
                }
                if self.pause(POLL).await {
                    return;
                }
                continue;
            }
            for (pos, doc) in batch {
                if !self.deliver(pos, doc).await {
                    return;
                }
                delivered = pos;
                match self.advance(pos).await {
                    Ok(()) => stored = pos,
                    // Delivered all the same; stored with a later event or
                    // once caught up (a restart before that resends).
                    Err(e) => tracing::warn!(
                        endpoint = %self.label,
                        event = pos,
                        "cannot store webhook progress: {e}"
                    ),
                }
            }
        }
    }

    /// POSTs one event until a 2xx answers; false when stopping first.
    async fn deliver(&mut self, pos: i64, doc: String) -> bool {
        let id = pos.to_string();
        let signature = signature_header(&self.secret, doc.as_bytes());
        let body = Bytes::from(doc);
        let mut backoff = Backoff::default();
        loop {
            let req = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(EVENT_ID_HEADER, &id)
                .header(SIGNATURE_HEADER, &signature)
                .body(body.clone());
            let answer = tokio::select! {
                r = req.send() => r,
                _ = stopped(&mut self.stop) => return false,
            };
            let failure = match answer {
                Ok(resp) if resp.status().is_success() => {
                    self.metrics.webhook_post(&self.label, true);
                    return true;
                }
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(e) => http_err(e),
            };
            self.metrics.webhook_post(&self.label, false);
            let delay = backoff.next_delay();
            tracing::warn!(
                endpoint = %self.label,
                event = %id,
                attempt = backoff.failures,
                retry_in_ms = delay.as_millis() as u64,
                "webhook delivery failed: {failure}"
            );
            if self.pause(delay).await {
                return false;
            }
        }
    }

    async fn register(&self) -> Result<i64, String> {
        let c = self.pool.get().await.map_err(|e| e.to_string())?;
        let st = c
            .prepare_cached("SELECT progressdb._webhook_start($1::text)")
            .await
            .map_err(pg_err)?;
        let row = c.query_one(&st, &[&self.url]).await.map_err(pg_err)?;
        row.try_get::<_, i64>(0).map_err(pg_err)
    }

    async fn batch(&self, after: i64) -> Result<Vec<(i64, String)>, String> {
        let c = self.pool.get().await.map_err(|e| e.to_string())?;
        let st = c
            .prepare_cached("SELECT pos, doc FROM progressdb._feed_batch($1::bigint, $2::integer)")
            .await
            .map_err(pg_err)?;
        let rows = c.query(&st, &[&after, &BATCH]).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(pg_err)
    }

    async fn advance(&self, pos: i64) -> Result<(), String> {
        let c = self.pool.get().await.map_err(|e| e.to_string())?;
        let st = c
            .prepare_cached("SELECT progressdb._webhook_advance($1::text, $2::bigint)")
            .await
            .map_err(pg_err)?;
        c.execute(&st, &[&self.url, &pos]).await.map_err(pg_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_sha256_hmac_in_lowercase_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature_header(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = br#"{"id":"7","type":"message.created"}"#;
        let a = signature_header(b"whsec", body);
        assert_eq!(a.len(), "sha256=".len() + 64);
        assert_eq!(a, a.to_ascii_lowercase());
        assert_ne!(a, signature_header(b"other", body));
        assert_ne!(a, signature_header(b"whsec", b"{}"));
    }

    #[test]
    fn backoff_doubles_from_200ms_and_caps_at_30s() {
        let ms = |n| backoff_delay(n).as_millis();
        assert_eq!(
            (1..=9).map(ms).collect::<Vec<_>>(),
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000]
        );
        assert_eq!(ms(10), 30000);
        assert_eq!(ms(u32::MAX), 30000);
        assert_eq!(ms(0), 200);
    }

    #[test]
    fn jitter_takes_at_most_a_tenth_off() {
        for d in [backoff_delay(1), backoff_delay(5), BACKOFF_CAP] {
            for r in [0, 1, 12345, u64::MAX, random_u64()] {
                let j = with_jitter(d, r);
                assert!(j <= d && j >= d - d / 10, "{d:?} → {j:?}");
            }
        }
        assert_eq!(with_jitter(Duration::ZERO, 5), Duration::ZERO);
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first <= BACKOFF_START && first >= BACKOFF_START * 9 / 10);
        for _ in 0..20 {
            assert!(b.next_delay() <= BACKOFF_CAP);
        }
        b.reset();
        assert!(b.next_delay() <= BACKOFF_START);
    }
}
