//! `/v1/threads…`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{raw_json, Body, Params};
use crate::auth::Caller;
use crate::db::Call;
use crate::error::ApiError;
use crate::AppState;

#[derive(Deserialize)]
pub struct NewThread {
    id: Option<String>,
    title: Option<String>,
    author: Option<String>,
    encrypted: Option<bool>,
    /// Kept as JSON text: whether it is an object (and small enough) is the
    /// SQL function's rule, not repeated here.
    #[serde(default, deserialize_with = "raw_json")]
    metadata: Option<Box<RawValue>>,
    history: Option<String>,
}

fn raw_text(v: Option<Box<RawValue>>) -> Option<String> {
    v.map(|b| b.get().to_string())
}

/// `POST /v1/threads` `{"title"?, "id"?, "encrypted"?, "metadata"?, "history"?}`
/// — the author is its first owner.
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let t: NewThread = body.json()?;
    let who = caller.identity(t.author.as_deref(), q.get("author").as_deref())?;
    Call::new("create_thread")
        .text(who.author)
        .opt_text("title", t.title)
        .opt_text("id", t.id)
        .opt_bool("encrypted", t.encrypted)
        .opt_json("metadata", raw_text(t.metadata))
        .opt_text("history", t.history)
        .json_response(&st.pool)
        .await
}

/// `GET /v1/threads?title=&slug=&metadata=&author=&limit=&before=&before_ts=`:
/// the caller's inbox. The actor is whose threads (memberships) to list; a
/// backend without an author (and an admin) lists all.
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    list_call(who.actor, &q)?.json_response(&st.pool).await
}

/// Shared with `/admin/threads`. `metadata` is a URL-encoded JSON document
/// (containment filter); `before_ts` is the cursor thread's `last_activity_ts`
/// as the client saw it, which keeps the page boundary where it was when that
/// thread gets a new message between two pages.
pub fn list_call(actor: Option<String>, q: &Params) -> Result<Call, ApiError> {
    Ok(Call::new("list_threads")
        .text(actor)
        .opt_text("title", q.get("title"))
        .opt_text("slug", q.get("slug"))
        .opt_int("lim", q.int("limit")?)
        .opt_text("before", q.get("before"))
        .opt_json("metadata", q.json("metadata")?)
        .opt_bigint("before_ts", q.bigint("before_ts")?))
}

pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    Call::new("get_thread")
        .text(Some(id))
        .opt_text("actor", who.actor)
        .json_response(&st.pool)
        .await
}

#[derive(Deserialize)]
pub struct UpdateThread {
    title: Option<String>,
    author: Option<String>,
    #[serde(default, deserialize_with = "raw_json")]
    metadata: Option<Box<RawValue>>,
    history: Option<String>,
    retention: Option<String>,
    legal_hold: Option<bool>,
}

/// `PUT /v1/threads/{thread}` `{"title"?, "metadata"?, "history"?,
/// "retention"?, "legal_hold"?}`: what is absent stays as it is (SQL NULL);
/// nothing at all is SQL's 22004 → 400.
pub async fn update(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let u: UpdateThread = body.json()?;
    let who = caller.identity(u.author.as_deref(), q.get("author").as_deref())?;
    Call::new("update_thread")
        .text(Some(id))
        .text(u.title)
        .opt_text("actor", who.actor)
        .opt_json("metadata", raw_text(u.metadata))
        .opt_text("history", u.history)
        .opt_text("retention", u.retention)
        .opt_bool("legal_hold", u.legal_hold)
        .json_response(&st.pool)
        .await
}

pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    let func = if q.bool("purge")?.unwrap_or(false) {
        "purge_thread"
    } else {
        "delete_thread"
    };
    Call::new(func)
        .text(Some(id))
        .opt_text("actor", who.actor)
        .no_content(&st.pool)
        .await
}

#[derive(Deserialize)]
pub struct Fork {
    message: Option<String>,
    id: Option<String>,
    title: Option<String>,
    author: Option<String>,
}

/// `POST /v1/threads/{thread}/fork` `{"message", "id"?, "title"?}` → the new
/// Thread (with `forked_from`), owned by the caller; a backend without an
/// author forks as the service (the source's author owns the fork).
pub async fn fork(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let f: Fork = body.json()?;
    let who = caller.identity(f.author.as_deref(), q.get("author").as_deref())?;
    Call::new("fork_thread")
        .text(Some(id))
        .text(f.message)
        .opt_text("id", f.id)
        .opt_text("actor", who.actor)
        .opt_text("title", f.title)
        .json_response(&st.pool)
        .await
}
