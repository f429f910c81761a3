//! Offline documentation: the OpenAPI document, a page listing it, and the
//! admin viewer. All embedded in the binary; no CDN, no key needed (they hold
//! no data — the viewer asks for an admin key and calls the API with it).

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const OPENAPI: &str = include_str!("../../assets/openapi.json");
const DOCS_HTML: &str = include_str!("../../assets/docs.html");
const VIEWER_HTML: &str = include_str!("../../assets/viewer.html");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn page() -> Response {
    html(DOCS_HTML)
}

pub async fn viewer() -> Response {
    html(VIEWER_HTML)
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything is inline; nothing may be loaded from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_is_valid_json_with_paths() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
        assert!(v["paths"]["/v1/messages"]["post"].is_object());
    }
}
