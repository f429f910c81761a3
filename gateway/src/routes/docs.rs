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

    /// The fuzzer (tests/reliability/fuzz.sh) generates from this document
    /// and holds every answer to it, so it must say what the API enforces:
    /// every `limit` is 1–1000 (the extension's `check_limit`), and every
    /// 4xx/5xx is the `Error` document.
    #[test]
    fn documented_limits_and_error_bodies_are_what_the_api_does() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut limits = 0;
        let mut errors = 0;
        for (path, item) in v["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["name"] == "limit" {
                        assert_eq!(p["schema"]["type"], "integer", "{method} {path}");
                        assert_eq!(p["schema"]["minimum"], 1, "{method} {path}");
                        assert_eq!(p["schema"]["maximum"], 1000, "{method} {path}");
                        limits += 1;
                    }
                }
                for (code, r) in op["responses"].as_object().unwrap() {
                    if !(code.starts_with('4') || code.starts_with('5')) {
                        continue;
                    }
                    let r = match r["$ref"].as_str() {
                        Some(name) => {
                            let name = name.rsplit('/').next().unwrap();
                            &v["components"]["responses"][name]
                        }
                        None => r,
                    };
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {code}"
                    );
                    errors += 1;
                }
            }
        }
        assert_eq!(limits, 10);
        assert!(errors > 200, "{errors}");
        assert_eq!(
            v["components"]["schemas"]["Error"]["required"],
            serde_json::json!(["error"])
        );
    }
}
