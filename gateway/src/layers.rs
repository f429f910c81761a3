//! Cross-cutting HTTP middleware: CORS, request timeout, JSON error bodies.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{json_error, ApiError};

const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type, X-API-Key, X-User-ID, X-User-Signature";

/// Only configured origins are echoed (`*` in the list echoes any origin; the
/// literal `*` is never sent). Any `OPTIONS` answers 204, as in the original,
/// before authentication — browsers send preflights without credentials.
pub async fn cors(State(origins): State<Arc<Vec<String>>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| {
            origins
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
        })
        .and_then(|o| HeaderValue::from_str(o).ok());
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    if !origins.is_empty() {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    resp
}

/// Bounds every request; the database's statement_timeout matches, so the
/// work stops there too.
/// A successful write through this gateway wakes the event feed's loop, so
/// live subscribers get its events without waiting for the next poll.
pub async fn kick_feed_after_writes(
    State(st): State<crate::AppState>,
    req: Request,
    next: Next,
) -> Response {
    let write = req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD;
    let resp = next.run(req).await;
    if write && resp.status().is_success() {
        st.feed.kick();
    }
    resp
}

pub async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::unavailable("request timed out").into_response(),
    }
}

/// Every error leaves as `{"error":…}` JSON, including the ones produced by
/// the framework itself (405, a caught panic, …). Other headers (Allow, CORS)
/// are kept.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let msg = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let mut out = json_error(status, &msg);
    for (k, v) in resp.headers() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().append(k.clone(), v.clone());
        }
    }
    out
}

pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::middleware::{from_fn, from_fn_with_state};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("secret detail")
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/teapot",
                get(|| async { (StatusCode::IM_A_TEAPOT, "plain text") }),
            )
            .route("/boom", get(boom))
            .fallback(not_found)
            .layer(from_fn_with_state(Duration::from_millis(50), timeout))
            .layer(from_fn_with_state(
                Arc::new(vec!["https://ok.example".to_string()]),
                cors,
            ))
            .layer(tower_http::catch_panic::CatchPanicLayer::new())
            .layer(from_fn(json_errors))
    }

    async fn call(method: Method, uri: &str, origin: Option<&str>) -> (StatusCode, Response) {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        let r = app().oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
        (r.status(), r)
    }

    async fn error_of(r: Response) -> String {
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v["error"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn slow_requests_time_out_with_503_json() {
        let (s, r) = call(Method::GET, "/slow", None).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_of(r).await, "request timed out");
    }

    #[tokio::test]
    async fn non_json_errors_become_json() {
        let (s, r) = call(Method::GET, "/teapot", None).await;
        assert_eq!(s, StatusCode::IM_A_TEAPOT);
        assert_eq!(error_of(r).await, "i'm a teapot");
        let (s, r) = call(Method::POST, "/slow", None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert!(r.headers().contains_key(header::ALLOW));
        assert_eq!(error_of(r).await, "method not allowed");
        let (s, r) = call(Method::GET, "/boom", None).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error_of(r).await, "internal server error");
        let (s, r) = call(Method::GET, "/nope", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(error_of(r).await, "not found");
    }

    #[tokio::test]
    async fn cors_echoes_only_configured_origins() {
        let (s, r) = call(Method::OPTIONS, "/anything", Some("https://ok.example")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://ok.example"
        );
        let (s, r) = call(Method::OPTIONS, "/anything", Some("https://bad.example")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert!(!r
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        let (_, r) = call(Method::GET, "/nope", Some("https://ok.example")).await;
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://ok.example"
        );
    }
}
