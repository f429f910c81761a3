//! `POST /v1/_sign`: a backend turns a user id into the signature its frontend
//! will send as `X-User-Signature`. Backend keys only (enforced by scope).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Body;
use crate::error::ApiError;
use crate::AppState;

#[derive(Deserialize)]
pub struct SignRequest {
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

pub async fn sign(State(st): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let r: SignRequest = body.json()?;
    // Signing needs no database, so this check is the gateway's own.
    let user = r
        .user_id
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("userId is required"))?;
    let signature = st.keys.sign(&user).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "no signing secret configured",
        )
    })?;
    Ok(Json(json!({ "userId": user, "signature": signature })))
}
