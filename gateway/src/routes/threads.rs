//! `/v1/threads…`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use super::{Body, Params};
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
}

/// `POST /v1/threads` `{"title"?, "id"?, "encrypted"?}` — the author owns it.
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
        .json_response(&st.pool)
        .await
}

/// `GET /v1/threads?title=&slug=&author=&limit=&before=`. The actor is whose
/// threads to list; a backend without an author (and an admin) lists all.
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    list_call(who.actor, &q)?.json_response(&st.pool).await
}

pub fn list_call(actor: Option<String>, q: &Params) -> Result<Call, ApiError> {
    Ok(Call::new("list_threads")
        .text(actor)
        .opt_text("title", q.get("title"))
        .opt_text("slug", q.get("slug"))
        .opt_int("lim", q.int("limit")?)
        .opt_text("before", q.get("before")))
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
}

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
    Call::new("delete_thread")
        .text(Some(id))
        .opt_text("actor", who.actor)
        .no_content(&st.pool)
        .await
}
