//! The one place where failures become HTTP statuses.
//!
//! SQL functions raise errors with a SQLSTATE; `status_for_sqlstate` is the
//! single table that turns those into statuses. Nothing here matches on
//! message text. Every error body is `{"error": "..."}` as application/json.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }
}

/// SQLSTATE → HTTP status. The whole mapping; keep it here.
pub fn status_for_sqlstate(code: &str) -> StatusCode {
    match code {
        "P0002" => StatusCode::NOT_FOUND,
        "42501" => StatusCode::FORBIDDEN,
        "23505" => StatusCode::CONFLICT,
        // An event cursor older than the feed's retention: those events are
        // gone; the client re-reads the timeline and follows from the head.
        "PD410" => StatusCode::GONE,
        // object_not_in_prerequisite_state: the change would leave the thread
        // in a state it may not be in (removing or demoting its last owner).
        // The request is well-formed and allowed; the thread's current state
        // conflicts with it, so the client must change something else first.
        "55000" => StatusCode::CONFLICT,
        // statement timeout, and the server shutting down / starting up:
        // transient, so tell clients to retry.
        "57014" | "57P01" | "57P02" | "57P03" => StatusCode::SERVICE_UNAVAILABLE,
        // extension schema missing: the server is not ready for us.
        "3F000" => StatusCode::SERVICE_UNAVAILABLE,
        c if c.starts_with("22") => StatusCode::BAD_REQUEST,
        c if c.starts_with("23") => StatusCode::BAD_REQUEST,
        // connection exceptions and insufficient resources
        c if c.starts_with("08") || c.starts_with("53") => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Key-file and key-mismatch errors of encrypted threads (class 39: the key
/// file is missing or malformed; class 28: a master key is absent or wrong).
fn is_key_problem(code: &str) -> bool {
    code.starts_with("39") || code.starts_with("28")
}

/// While the database is away every request fails the same way; one
/// warning per `OUTAGE_LOG_EVERY` (with how many were folded into it) says
/// as much as thousands a second would.
const OUTAGE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

struct Throttle {
    every: std::time::Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
    folded: std::sync::atomic::AtomicU64,
}

impl Throttle {
    const fn new(every: std::time::Duration) -> Self {
        Throttle {
            every,
            last: std::sync::Mutex::new(None),
            folded: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log this one, saying that `n` were left out since the last;
    /// `None`: leave it out.
    fn check(&self, now: std::time::Instant) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.folded.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.folded.swap(0, Ordering::Relaxed))
            }
        }
    }
}

static OUTAGE_LOG: Throttle = Throttle::new(OUTAGE_LOG_EVERY);

/// A warning about the database being unavailable, throttled.
fn outage_warning(what: std::fmt::Arguments<'_>, sqlstate: Option<&str>) {
    let Some(folded) = OUTAGE_LOG.check(std::time::Instant::now()) else {
        return;
    };
    let more = if folded > 0 {
        format!(
            " (and {folded} more such failures in the last {}s)",
            OUTAGE_LOG_EVERY.as_secs()
        )
    } else {
        String::new()
    };
    match sqlstate {
        Some(code) => tracing::warn!(sqlstate = code, "{what}{more}"),
        None => tracing::warn!("{what}{more}"),
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                let status = status_for_sqlstate(db.code().code());
                if status.is_client_error() {
                    // The extension's messages are written for API users.
                    ApiError::new(status, db.message())
                } else if status == StatusCode::SERVICE_UNAVAILABLE {
                    outage_warning(
                        format_args!("database not available: {}", db.message()),
                        Some(db.code().code()),
                    );
                    ApiError::unavailable("database unavailable")
                } else if is_key_problem(db.code().code()) {
                    // Encrypted thread without a usable key: the operator must
                    // act; say so. These messages name key ids, never keys.
                    tracing::error!(sqlstate = db.code().code(), "{}", db.message());
                    ApiError::new(status, format!("encryption key problem: {}", db.message()))
                } else {
                    tracing::error!(
                        sqlstate = db.code().code(),
                        "database error: {}",
                        db.message()
                    );
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                }
            }
            // No server error: the connection broke (closed, I/O) — the database
            // is unreachable rather than the request being wrong.
            None => {
                outage_warning(format_args!("database connection error: {e}"), None);
                ApiError::unavailable("database unavailable")
            }
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(pe) => pe.into(),
            other => {
                outage_warning(format_args!("database pool error: {other}"), None);
                ApiError::unavailable("database unavailable")
            }
        }
    }
}

/// A JSON error response with the given status.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, json_ct())], body).into_response()
}

pub fn json_ct() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_error(self.status, &self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_table() {
        let cases = [
            ("P0002", 404),
            ("42501", 403),
            ("22023", 400),
            ("22004", 400),
            ("22P02", 400),
            ("23505", 409),
            ("23502", 400),
            ("23503", 400),
            ("55000", 409),
            ("55P03", 500),
            ("57014", 503),
            ("08006", 503),
            ("08001", 503),
            ("57P01", 503),
            ("42883", 500),
            ("XX000", 500),
            ("P0001", 500),
        ];
        for (code, want) in cases {
            assert_eq!(status_for_sqlstate(code).as_u16(), want, "{code}");
        }
    }

    #[test]
    fn outage_warnings_are_throttled() {
        use std::time::{Duration, Instant};
        let t = Throttle::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(t.check(t0), Some(0), "the first one is logged");
        for i in 1..=1000 {
            assert_eq!(t.check(t0 + Duration::from_millis(i)), None);
        }
        // The next one after the window says how many were left out.
        assert_eq!(t.check(t0 + Duration::from_secs(5)), Some(1000));
        assert_eq!(t.check(t0 + Duration::from_secs(6)), None);
        assert_eq!(t.check(t0 + Duration::from_secs(11)), Some(1));
    }

    #[tokio::test]
    async fn error_body_is_json() {
        let r = ApiError::forbidden("not yours").into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let b = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, serde_json::json!({"error":"not yours"}));
    }
}
