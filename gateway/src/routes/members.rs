//! `/v1/threads/{thread}/members…`: who belongs to a thread, with which role.
//!
//! Who may add, change or remove whom (the role table) is the SQL functions'
//! rule; here the acting user is resolved exactly as on the thread routes, so
//! a signed frontend user manages members as themselves, subject to their role.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use super::{Body, Params};
use crate::auth::Caller;
use crate::db::Call;
use crate::error::ApiError;
use crate::AppState;

/// `GET /v1/threads/{thread}/members?limit=&after=` → `{"thread","members"}`,
/// sorted by user; `after` is the last user name of the previous page.
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(thread): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    Call::new("list_members")
        .text(Some(thread))
        .opt_text("actor", who.actor)
        .opt_int("lim", q.int("limit")?)
        .opt_text("after", q.get("after"))
        .json_response(&st.pool)
        .await
}

#[derive(Deserialize)]
pub struct NewMember {
    /// The member to add (or whose role to change) — not the acting user,
    /// so it is never an identity candidate.
    user: Option<String>,
    role: Option<String>,
    author: Option<String>,
}

/// `POST /v1/threads/{thread}/members` `{"user","role"?}` → Member. Adding an
/// existing member changes their role.
pub async fn add(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(thread): Path<String>,
    q: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let m: NewMember = body.json()?;
    let who = caller.identity(m.author.as_deref(), q.get("author").as_deref())?;
    Call::new("add_member")
        .text(Some(thread))
        .text(m.user)
        .opt_text("role", m.role)
        .opt_text("actor", who.actor)
        .json_response(&st.pool)
        .await
}

/// `DELETE /v1/threads/{thread}/members/{user}` → 204. A user may always
/// remove themselves (leave); the last owner cannot go (SQL 55000 → 409).
pub async fn remove(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((thread, user)): Path<(String, String)>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    Call::new("remove_member")
        .text(Some(thread))
        .text(Some(user))
        .opt_text("actor", who.actor)
        .no_content(&st.pool)
        .await
}
