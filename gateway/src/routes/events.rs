//! `GET /v1/threads/{thread}/events`, `GET /v1/events` (the event feed: a
//! Server-Sent Events stream with `Accept: text/event-stream`, else one JSON
//! page) and `POST /v1/threads/{thread}/typing`.
//!
//! A stream first replays what the database holds after the client's cursor
//! (`Last-Event-ID` or `?after=`), page by page through the same SQL
//! functions the JSON form calls, then registers with the live feed
//! (src/feed.rs) and goes on from there. Positions are compared, so the seam
//! between replay and live delivery neither skips nor repeats an event.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::Params;
use crate::auth::Caller;
use crate::db::Call;
use crate::error::ApiError;
use crate::feed::{self, Feed, Scope};
use crate::AppState;

/// A comment line at least this often keeps proxies and clients from
/// timing the stream out.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events per replay page.
const REPLAY_PAGE: i32 = 500;

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// The resume cursor: `Last-Event-ID` (what `EventSource` sends on
/// reconnect) wins over `?after=`.
fn cursor(headers: &HeaderMap, q: &Params) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .or_else(|| q.get("after"))
}

/// `GET /v1/threads/{thread}/events`.
pub async fn thread_events(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(thread): Path<String>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    let after = cursor(&headers, &q);
    if !wants_stream(&headers) {
        return Call::new("thread_events_text")
            .text(Some(thread))
            .opt_text("after", after)
            .opt_int("lim", q.int("limit")?)
            .opt_text("actor", who.actor)
            .json_response(&st.pool)
            .await;
    }
    let source = Source::Thread(thread.clone());
    let grants = grants(&st.pool, who.actor.as_deref(), Some(&thread)).await?;
    stream(st, source, Scope::Thread(thread), who.actor, grants, after).await
}

/// `GET /v1/events`: every thread the caller may read (the service: all).
pub async fn user_events(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    let after = cursor(&headers, &q);
    if !wants_stream(&headers) {
        return Call::new("events_text")
            .text(who.actor)
            .opt_text("after", after)
            .opt_int("lim", q.int("limit")?)
            .json_response(&st.pool)
            .await;
    }
    let grants = match &who.actor {
        Some(a) => grants(&st.pool, Some(a), None).await?,
        None => HashMap::new(),
    };
    stream(st, Source::User, Scope::User, who.actor, grants, after).await
}

/// `POST /v1/threads/{thread}/typing` → 204; at most a few per second per
/// user (429 past that). Members who may post only (SQL decides).
pub async fn typing(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(thread): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    if let Some(user) = &who.author {
        if !st.typing_limiter.allow(user) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "typing notices are limited per user: slow down",
            ));
        }
    }
    Call::new("typing")
        .text(Some(thread))
        .text(who.author)
        .no_content(&st.pool)
        .await
}

/// What `actor` may receive live, as the database decides (403/404 here,
/// before the stream starts).
async fn grants(
    pool: &Pool,
    actor: Option<&str>,
    thread: Option<&str>,
) -> Result<HashMap<String, i64>, ApiError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT thread, visible_after FROM progressdb._feed_grants($1::text, $2::text)",
        )
        .await?;
    let rows = client.query(&stmt, &[&actor, &thread]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Where replay pages come from.
#[derive(Clone)]
enum Source {
    Thread(String),
    User,
}

/// One replay page: the events as SSE frames (position, frame) and the
/// cursor after them.
async fn page(
    pool: &Pool,
    source: &Source,
    actor: Option<&str>,
    after: Option<&str>,
) -> Result<(Vec<(i64, Bytes)>, String), ApiError> {
    let client = pool.get().await?;
    let (sql, params): (&str, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>);
    let thread;
    match source {
        Source::Thread(t) => {
            thread = t.clone();
            sql = "SELECT progressdb.thread_events_text($1::text, $2::text, $3::int4, $4::text)";
            params = vec![&thread, &after, &REPLAY_PAGE, &actor];
        }
        Source::User => {
            sql = "SELECT progressdb.events_text($1::text, $2::text, $3::int4)";
            params = vec![&actor, &after, &REPLAY_PAGE];
        }
    }
    let stmt = client.prepare_cached(sql).await?;
    let row = client.query_one(&stmt, &params).await?;
    let text: String = row.try_get(0)?;
    // The events' text is passed on as SQL rendered it (as live frames are).
    let doc: PageText = serde_json::from_str(&text)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    let frames = doc
        .events
        .iter()
        .filter_map(|e| {
            let head: EventHead = serde_json::from_str(e.get()).ok()?;
            let pos: i64 = head.id.parse().ok()?;
            Some((pos, feed::frame(pos, &head.kind, e.get())))
        })
        .collect();
    let next = doc.next;
    Ok((frames, next))
}

#[derive(serde::Deserialize)]
struct PageText<'a> {
    #[serde(borrow)]
    events: Vec<&'a serde_json::value::RawValue>,
    next: String,
}

#[derive(serde::Deserialize)]
struct EventHead {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

fn pos_of(cursor: &str) -> i64 {
    cursor.parse().unwrap_or(0)
}

/// Starts an SSE response. The first replay page is read before answering,
/// so a bad or expired cursor is a plain 400/410, not a broken stream.
async fn stream(
    st: AppState,
    source: Source,
    scope: Scope,
    actor: Option<String>,
    grants: HashMap<String, i64>,
    after: Option<String>,
) -> Result<Response, ApiError> {
    let first = match &after {
        Some(a) => Some(page(&st.pool, &source, actor.as_deref(), Some(a)).await?),
        None => None,
    };
    let (out, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(pump(
        st.feed.clone(),
        st.pool.clone(),
        source,
        scope,
        actor,
        grants,
        first,
        out,
    ));
    let mut rx = rx;
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|f| f.map(Ok::<Bytes, Infallible>))
    });
    let mut resp = HttpBody::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// One subscriber's life: replay to the live head, register, close the
/// seam, then forward live frames and heartbeats until the client goes, the
/// subscriber is dropped for being slow, or the gateway shuts down.
#[allow(clippy::too_many_arguments)]
async fn pump(
    feed: Arc<Feed>,
    pool: Pool,
    source: Source,
    scope: Scope,
    actor: Option<String>,
    grants: HashMap<String, i64>,
    first: Option<(Vec<(i64, Bytes)>, String)>,
    out: mpsc::Sender<Bytes>,
) {
    let mut stop = feed.shutdown_signal();
    if !feed.wait_ready().await {
        return;
    }
    // Tells the client how soon to reconnect, and flushes the headers.
    if out
        .send(Bytes::from_static(b"retry: 1000\n: connected\n\n"))
        .await
        .is_err()
    {
        return;
    }
    let mut last: Option<i64> = None;
    if let Some((frames, next)) = first {
        if !send_all(&out, frames, &mut last).await {
            return;
        }
        let mut cursor = next;
        // Catch up to the live head before registering (no queue fills meanwhile).
        while pos_of(&cursor) < feed.head() {
            match page(&pool, &source, actor.as_deref(), Some(&cursor)).await {
                Ok((frames, next)) => {
                    if !send_all(&out, frames, &mut last).await {
                        return;
                    }
                    cursor = next;
                }
                Err(_) => return, // the client resumes from what it got
            }
        }
        last = Some(last.unwrap_or(0).max(pos_of(&cursor)));
    }
    let user_scope = scope == Scope::User;
    let mut sub = feed.subscribe(scope, actor.clone(), grants);
    let id = sub.id;
    // Membership changes delivered while this stream replayed reached no one:
    // ask the database again now that live delivery includes this subscriber.
    if user_scope && actor.is_some() {
        match self::grants(&pool, actor.as_deref(), None).await {
            Ok(g) => feed.set_grants(id, g),
            Err(_) => {
                feed.unsubscribe(id);
                return;
            }
        }
    }
    // Close the seam: anything between the replay and the live start.
    if let Some(l) = last {
        let mut cursor = l.to_string();
        while pos_of(&cursor) < sub.live_after {
            match page(&pool, &source, actor.as_deref(), Some(&cursor)).await {
                Ok((frames, next)) => {
                    if !send_all(&out, frames, &mut last).await {
                        feed.unsubscribe(id);
                        return;
                    }
                    cursor = next;
                }
                Err(_) => {
                    feed.unsubscribe(id);
                    return;
                }
            }
        }
    }
    let mut last = last.unwrap_or(sub.live_after).max(sub.live_after);
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            f = sub.rx.recv() => match f {
                Some(frame) => {
                    let pos = frame_pos(&frame);
                    // typing notices carry no position; events already sent are skipped
                    if pos.is_none_or(|p| p > last) {
                        if out.send(frame).await.is_err() { break; }
                        if let Some(p) = pos { last = p; }
                    }
                }
                None => break, // dropped for being slow: the client resumes
            },
            _ = beat.tick() => {
                if out.send(Bytes::from_static(b": heartbeat\n\n")).await.is_err() { break; }
            }
            _ = stop.changed() => break,
            _ = out.closed() => break,
        }
    }
    feed.unsubscribe(id);
}

/// The position in a frame's `id:` line (None for typing notices).
fn frame_pos(frame: &[u8]) -> Option<i64> {
    let rest = frame.strip_prefix(b"id: ")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

async fn send_all(
    out: &mpsc::Sender<Bytes>,
    frames: Vec<(i64, Bytes)>,
    last: &mut Option<i64>,
) -> bool {
    for (pos, f) in frames {
        if last.is_some_and(|l| pos <= l) {
            continue;
        }
        if out.send(f).await.is_err() {
            return false;
        }
        *last = Some(pos);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_positions() {
        assert_eq!(
            frame_pos(&feed::frame(42, "message.created", "{}")),
            Some(42)
        );
        assert_eq!(frame_pos(b"event: typing\ndata: {}\n\n"), None);
    }

    #[test]
    fn last_event_id_wins_over_after() {
        let mut h = HeaderMap::new();
        let q = Params::from_pairs(vec![("after".into(), "5".into())]);
        assert_eq!(cursor(&h, &q).as_deref(), Some("5"));
        h.insert("last-event-id", HeaderValue::from_static(" 9 "));
        assert_eq!(cursor(&h, &q).as_deref(), Some("9"));
        assert!(wants_stream(&{
            let mut a = HeaderMap::new();
            a.insert(
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
            a
        }));
        assert!(!wants_stream(&HeaderMap::new()));
    }
}
