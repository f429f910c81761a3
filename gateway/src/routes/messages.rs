//! `/v1/messages…` and their thread-scoped twins `/v1/threads/{thread}/messages…`.
//!
//! Each handler serves both forms: the path's `thread` (when present) becomes
//! the SQL `in_thread` argument, so a message outside that thread is a 404
//! raised by SQL, not checked here.

use std::collections::HashMap;

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

type Ids = Path<HashMap<String, String>>;

fn ids(p: &HashMap<String, String>) -> (Option<String>, String) {
    (
        p.get("thread").cloned(),
        p.get("id").cloned().unwrap_or_default(),
    )
}

#[derive(Deserialize)]
pub struct NewMessage {
    thread: Option<String>,
    author: Option<String>,
    #[serde(default, deserialize_with = "raw_json")]
    body: Option<Box<RawValue>>,
    role: Option<String>,
    reply_to: Option<String>,
}

/// `POST /v1/messages`, `POST /v1/threads/{thread}/messages`.
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Option<Path<HashMap<String, String>>>,
    q: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let m: NewMessage = body.json()?;
    let who = caller.identity(m.author.as_deref(), q.get("author").as_deref())?;
    let thread = match path.and_then(|Path(p)| p.get("thread").cloned()) {
        Some(t) => {
            if m.thread.as_ref().is_some_and(|bt| *bt != t) {
                return Err(ApiError::bad_request(
                    "thread in body does not match the path",
                ));
            }
            Some(t)
        }
        None => m.thread,
    };
    Call::new("post_message_text")
        .text(thread)
        .text(who.author)
        .json(m.body.map(|b| b.get().to_string()))
        .opt_text("role", m.role)
        .opt_text("reply_to", m.reply_to)
        .opt_text("actor", who.actor)
        .json_response(&st.pool)
        .await
}

/// `GET /v1/messages?thread=…`, `GET /v1/threads/{thread}/messages`.
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Option<Path<HashMap<String, String>>>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    let thread = path
        .and_then(|Path(p)| p.get("thread").cloned())
        .or_else(|| q.get("thread"));
    Call::new("list_messages_text")
        .text(thread)
        .opt_int("lim", q.int("limit")?)
        .opt_text("before", q.get("before"))
        .opt_text("after", q.get("after"))
        .opt_bool("include_deleted", q.bool("include_deleted")?)
        .opt_text("actor", who.actor)
        .json_response(&st.pool)
        .await
}

/// The call of "one SQL function on one message": the message id, the acting
/// user and, on the thread-scoped routes, the thread.
fn message_call(
    caller: &Caller,
    p: &HashMap<String, String>,
    q: &Params,
    func: &'static str,
) -> Result<Call, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    let (thread, id) = ids(p);
    Ok(Call::new(func)
        .text(Some(id))
        .opt_text("actor", who.actor)
        .opt_text("in_thread", thread))
}

/// Handlers that are nothing but `message_call` and a way to answer
/// (`json_response` passes the document through, `no_content` is 204).
macro_rules! message_routes {
    ($($(#[$doc:meta])* $name:ident => $func:literal, $answer:ident;)*) => {$(
        $(#[$doc])*
        pub async fn $name(
            State(st): State<AppState>,
            Extension(c): Extension<Caller>,
            Path(p): Ids,
            q: Params,
        ) -> Result<Response, ApiError> {
            message_call(&c, &p, &q, $func)?.$answer(&st.pool).await
        }
    )*};
}

message_routes! {
    /// `GET …/messages/{id}`
    get => "get_message", json_response;
    /// `POST …/messages/{id}/restore`
    restore => "restore_message", json_response;
    /// `GET …/messages/{id}/versions`
    versions => "message_versions", json_response;
    /// `GET …/messages/{id}/reactions`
    reactions => "reactions", json_response;
}

/// `DELETE …/messages/{id}` → 204: a soft delete, or with `?purge=true` a
/// hard delete of every copy (thread admins and owners, or the service).
pub async fn delete(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(p): Ids,
    q: Params,
) -> Result<Response, ApiError> {
    let func = if q.bool("purge")?.unwrap_or(false) {
        "purge_message"
    } else {
        "delete_message"
    };
    message_call(&c, &p, &q, func)?.no_content(&st.pool).await
}

/// `GET …/messages/{id}/replies?limit=`
pub async fn replies(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(p): Ids,
    q: Params,
) -> Result<Response, ApiError> {
    message_call(&c, &p, &q, "replies")?
        .opt_int("lim", q.int("limit")?)
        .json_response(&st.pool)
        .await
}

#[derive(Deserialize)]
pub struct Edit {
    author: Option<String>,
    #[serde(default, deserialize_with = "raw_json")]
    body: Option<Box<RawValue>>,
}

/// `PUT …/messages/{id}` `{"body":…}` → the new version.
pub async fn edit(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(p): Ids,
    q: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let e: Edit = body.json()?;
    let who = caller.identity(e.author.as_deref(), q.get("author").as_deref())?;
    let (thread, id) = ids(&p);
    Call::new("edit_message")
        .text(Some(id))
        .json(e.body.map(|b| b.get().to_string()))
        .opt_text("actor", who.actor)
        .opt_text("in_thread", thread)
        .json_response(&st.pool)
        .await
}

#[derive(Deserialize)]
pub struct React {
    id: Option<String>,
    reaction: Option<String>,
}

/// `POST …/messages/{id}/reactions` `{"id":identity,"reaction":…}`.
pub async fn react(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(p): Ids,
    q: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let r: React = body.json()?;
    let who = caller.identity(None, q.get("author").as_deref())?;
    let identity = caller.reaction_identity(r.id.as_deref(), &who)?;
    let (thread, id) = ids(&p);
    Call::new("add_reaction")
        .text(Some(id))
        .text(identity)
        .text(r.reaction)
        .opt_text("actor", who.actor)
        .opt_text("in_thread", thread)
        .json_response(&st.pool)
        .await
}

/// `DELETE …/messages/{id}/reactions/{identity}` → 204.
pub async fn unreact(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(p): Ids,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    let identity = caller.reaction_identity(p.get("identity").map(String::as_str), &who)?;
    let (thread, id) = ids(&p);
    Call::new("remove_reaction")
        .text(Some(id))
        .text(identity)
        .opt_text("actor", who.actor)
        .opt_text("in_thread", thread)
        .no_content(&st.pool)
        .await
}
