//! Probes: `/healthz` (the process is up) and `/readyz` (the database answers
//! and the extension is installed). Neither needs a key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::db;
use crate::error::ApiError;
use crate::AppState;

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Asks the database every time, so it flips back to 200 by itself once the
/// database returns; the pool replaces dead connections on the way.
pub async fn readyz(State(st): State<AppState>) -> Response {
    match db::ext_version(&st.pool).await {
        Ok(v) => Json(json!({"status": "ok", "version": v})).into_response(),
        Err(db::NotReady::NoExtension) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the progressdb extension is not installed",
        )
        .into_response(),
        Err(db::NotReady::Unavailable(e)) => {
            tracing::debug!("not ready: {e}");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}
