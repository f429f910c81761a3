//! The route table and the layer stack.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::Redirect;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::config::Config;
use crate::routes::{admin, docs, health, messages, sign, threads};
use crate::{auth, layers, metrics, AppState};

/// The message routes, mounted at `/v1/messages` and (thread-scoped) at
/// `/v1/threads/{thread}/messages`.
fn message_routes(r: Router<AppState>, base: &str) -> Router<AppState> {
    r.route(base, get(messages::list).post(messages::create))
        .route(
            &format!("{base}/{{id}}"),
            get(messages::get)
                .put(messages::edit)
                .delete(messages::delete),
        )
        .route(&format!("{base}/{{id}}/restore"), post(messages::restore))
        .route(&format!("{base}/{{id}}/versions"), get(messages::versions))
        .route(&format!("{base}/{{id}}/replies"), get(messages::replies))
        .route(
            &format!("{base}/{{id}}/reactions"),
            get(messages::reactions).post(messages::react),
        )
        .route(
            &format!("{base}/{{id}}/reactions/{{identity}}"),
            delete(messages::unreact),
        )
}

pub fn router(st: AppState, cfg: &Config) -> Router {
    let mut keyed = Router::new()
        .route("/v1/_sign", post(sign::sign))
        .route("/v1/threads", get(threads::list).post(threads::create))
        .route(
            "/v1/threads/{thread}",
            get(threads::get)
                .put(threads::update)
                .delete(threads::delete),
        )
        .route("/admin/health", get(admin::health))
        .route("/admin/stats", get(admin::stats))
        .route("/admin/threads", get(admin::threads))
        .route("/metrics", get(admin::metrics));
    keyed = message_routes(keyed, "/v1/messages");
    keyed = message_routes(keyed, "/v1/threads/{thread}/messages");
    // route_layer: unknown paths stay 404 instead of 401.
    let keyed = keyed.route_layer(from_fn_with_state(st.clone(), auth::require_auth));

    let public = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(docs::openapi))
        .route("/docs", get(|| async { Redirect::permanent("/docs/") }))
        .route("/docs/", get(docs::page))
        .route("/viewer", get(|| async { Redirect::permanent("/viewer/") }))
        .route("/viewer/", get(docs::viewer));

    public
        .merge(keyed)
        .fallback(layers::not_found)
        .layer(DefaultBodyLimit::max(cfg.max_body))
        .layer(from_fn_with_state(cfg.request_timeout, layers::timeout))
        .layer(from_fn_with_state(
            Arc::new(cfg.cors_origins.clone()),
            layers::cors,
        ))
        .layer(CatchPanicLayer::new())
        .layer(from_fn(layers::json_errors))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-api-key"),
            header::HeaderName::from_static("x-user-signature"),
        ]))
        .layer(from_fn_with_state(st.clone(), metrics::track))
        .with_state(st)
}
