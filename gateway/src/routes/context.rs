//! `GET /v1/threads/{thread}/context`: the thread as an LLM request wants it
//! (SQL `context_text()`, the text face of `context()`; README "AI conversations").

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;

use super::Params;
use crate::auth::Caller;
use crate::db::Call;
use crate::error::ApiError;
use crate::AppState;

/// `?max_tokens=&format=&tokenizer=&author=` →
/// `{"thread","format","tokenizer","tokens","dropped",("system",)"messages"}`.
/// The caller must be able to read the thread; what is in range, and every
/// refusal of a value (400), is the SQL function's rule.
pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(thread): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    let max_tokens = q
        .int("max_tokens")?
        .ok_or_else(|| ApiError::bad_request("max_tokens is required"))?;
    Call::new("context_text")
        .text(Some(thread))
        .opt_int("max_tokens", Some(max_tokens))
        .opt_text("actor", who.actor)
        .opt_text("format", q.get("format"))
        .opt_text("tokenizer", q.get("tokenizer"))
        .json_response(&st.pool)
        .await
}
