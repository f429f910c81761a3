//! `POST /v1/threads/{thread}/read`: a member's read state in a thread.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use super::{Body, Params};
use crate::auth::Caller;
use crate::db::Call;
use crate::error::ApiError;
use crate::AppState;

#[derive(Deserialize, Default)]
pub struct MarkRead {
    message: Option<String>,
    author: Option<String>,
}

/// `{"message"?}` (an empty body too) → `{"thread","user","last_read","unread"}`.
/// No message means "up to the newest one I can see"; an older message than
/// the current `last_read` leaves it where it is (SQL's rule).
///
/// Read state always belongs to a user, so the SQL `actor` here is the
/// resolved user (the author) for every key role — for admin keys too, which
/// elsewhere act as the service: "the service has read this" means nothing.
/// A call that names no user is SQL's 22004 → 400.
pub async fn mark(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(thread): Path<String>,
    q: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let r: MarkRead = body.json_or_default()?;
    let who = caller.identity(r.author.as_deref(), q.get("author").as_deref())?;
    Call::new("mark_read")
        .text(Some(thread))
        .opt_text("message", r.message)
        .opt_text("actor", who.author)
        .json_response(&st.pool)
        .await
}
