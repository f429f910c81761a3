//! `/admin/*` and `/metrics` (backend and admin keys).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::Params;
use crate::db::Call;
use crate::error::ApiError;
use crate::AppState;

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "service": "progressdb"}))
}

pub async fn stats(State(st): State<AppState>) -> Result<Response, ApiError> {
    Call::new("stats").json_response(&st.pool).await
}

/// All threads, any owner (`?title=&slug=&limit=&before=` paginate and filter).
pub async fn threads(State(st): State<AppState>, q: Params) -> Result<Response, ApiError> {
    super::threads::list_call(None, &q)?
        .json_response(&st.pool)
        .await
}

/// `DELETE /admin/users/{user}`: erases the user (every message with all
/// its copies, reactions, memberships; see `erase_user`) → the counts.
pub async fn erase_user(
    State(st): State<AppState>,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    Call::new("erase_user")
        .text(Some(user))
        .json_response(&st.pool)
        .await
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
