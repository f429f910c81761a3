//! The route table and the layer stack.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::Redirect;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::config::Config;
use crate::routes::{
    admin, context, docs, events, export, health, members, messages, read, search, sign, threads,
};
use crate::{auth, layers, metrics, AppState};

/// One route: its path template and what each method does there.
type Route = (String, MethodRouter<AppState>);

fn route(path: &str, handlers: MethodRouter<AppState>) -> Route {
    (path.to_string(), handlers)
}

/// The message routes, mounted at `/v1/messages` and (thread-scoped) at
/// `/v1/threads/{thread}/messages`.
fn message_routes(base: &str) -> Vec<Route> {
    vec![
        route(base, get(messages::list).post(messages::create)),
        route(
            &format!("{base}/{{id}}"),
            get(messages::get)
                .put(messages::edit)
                .delete(messages::delete),
        ),
        route(&format!("{base}/{{id}}/restore"), post(messages::restore)),
        route(&format!("{base}/{{id}}/versions"), get(messages::versions)),
        route(&format!("{base}/{{id}}/replies"), get(messages::replies)),
        route(
            &format!("{base}/{{id}}/reactions"),
            get(messages::reactions).post(messages::react),
        ),
        route(
            &format!("{base}/{{id}}/reactions/{{identity}}"),
            delete(messages::unreact),
        ),
    ]
}

/// Every route that needs an API key. The router is built from this list and
/// [`public_routes`], and a test holds both against the OpenAPI document, so a
/// route cannot be served undocumented or documented unserved.
fn keyed_routes() -> Vec<Route> {
    let mut r = vec![
        route("/v1/_sign", post(sign::sign)),
        route("/v1/threads", get(threads::list).post(threads::create)),
        route(
            "/v1/threads/{thread}",
            get(threads::get)
                .put(threads::update)
                .delete(threads::delete),
        ),
        route(
            "/v1/threads/{thread}/members",
            get(members::list).post(members::add),
        ),
        route(
            "/v1/threads/{thread}/members/{user}",
            delete(members::remove),
        ),
        route("/v1/threads/{thread}/read", post(read::mark)),
        route("/v1/threads/{thread}/fork", post(threads::fork)),
        route("/v1/threads/{thread}/context", get(context::get)),
        route("/v1/threads/{thread}/export", get(export::thread)),
        route("/v1/threads/{thread}/events", get(events::thread_events)),
        route("/v1/threads/{thread}/typing", post(events::typing)),
        route("/v1/events", get(events::user_events)),
        route("/v1/search", get(search::search)),
        route("/admin/health", get(admin::health)),
        route("/admin/stats", get(admin::stats)),
        route("/admin/threads", get(admin::threads)),
        route("/admin/users/{user}", delete(admin::erase_user)),
        route("/admin/users/{user}/export", get(export::user)),
        route("/metrics", get(admin::metrics)),
    ];
    r.extend(message_routes("/v1/messages"));
    r.extend(message_routes("/v1/threads/{thread}/messages"));
    r
}

/// The API routes that need no key (also in the OpenAPI document).
fn public_routes() -> Vec<Route> {
    vec![
        route("/healthz", get(health::healthz)),
        route("/readyz", get(health::readyz)),
    ]
}

/// Pages for people, not API operations: not in the OpenAPI document.
fn page_routes() -> Vec<Route> {
    vec![
        route("/openapi.json", get(docs::openapi)),
        route("/docs", get(|| async { Redirect::permanent("/docs/") })),
        route("/docs/", get(docs::page)),
        route("/viewer", get(|| async { Redirect::permanent("/viewer/") })),
        route("/viewer/", get(docs::viewer)),
    ]
}

fn mount(r: Router<AppState>, routes: Vec<Route>) -> Router<AppState> {
    routes
        .into_iter()
        .fold(r, |r, (path, handlers)| r.route(&path, handlers))
}

pub fn router(st: AppState, cfg: &Config) -> Router {
    // route_layer: unknown paths stay 404 instead of 401.
    let keyed = mount(Router::new(), keyed_routes())
        .route_layer(from_fn_with_state(st.clone(), auth::require_auth));
    let public = mount(mount(Router::new(), public_routes()), page_routes());

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
        .layer(from_fn_with_state(
            st.clone(),
            layers::kick_feed_after_writes,
        ))
        .layer(from_fn_with_state(st.clone(), metrics::track))
        .with_state(st)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::auth::KeyRing;
    use crate::config::{Cli, DEV_BACKEND_KEY};
    use crate::metrics::Metrics;
    use crate::ratelimit::RateLimiter;

    /// The real router over a pool that can never connect: routing, auth and
    /// parsing answer as in production, database calls answer 503.
    fn app() -> Router {
        let cfg = Config::from_cli(Cli {
            db: Some("host=/nonexistent-progressdb-test port=1 user=x dbname=x".into()),
            ..Cli::default()
        })
        .unwrap();
        let st = AppState {
            pool: crate::db::make_pool("host=/nonexistent-progressdb-test port=1", &cfg).unwrap(),
            keys: Arc::new(KeyRing::new(&cfg.keys)),
            limiter: Arc::new(RateLimiter::new(0.0, 0.0)),
            metrics: Arc::new(Metrics::default()),
            dev_profile: cfg.dev_profile,
            feed: Arc::new(crate::feed::Feed::default()),
            typing_limiter: Arc::new(RateLimiter::new(0.0, 0.0)),
        };
        router(st, &cfg)
    }

    async fn status(app: &Router, method: &Method, path: &str) -> StatusCode {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            // the backend key passes every route's scope, so only routing decides
            .header("authorization", format!("Bearer {DEV_BACKEND_KEY}"))
            .body(Body::from("{}"))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
        app.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn openapi_documents_exactly_the_served_routes() {
        let doc: serde_json::Value = serde_json::from_str(docs::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
        let served: Vec<String> = keyed_routes()
            .into_iter()
            .chain(public_routes())
            .map(|(p, _)| p)
            .collect();
        let served_set: BTreeSet<&str> = served.iter().map(String::as_str).collect();
        assert_eq!(served.len(), served_set.len(), "a path is mounted twice");
        assert_eq!(
            served_set, documented,
            "served paths (left) and documented paths (right) differ"
        );
        // The pages for people are the only other routes, and no API route
        // hides among them.
        let pages: Vec<String> = page_routes().into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            pages,
            ["/openapi.json", "/docs", "/docs/", "/viewer", "/viewer/"],
            "a route added to page_routes must be a page, not an API operation"
        );
        assert!(pages.iter().all(|p| !documented.contains(p.as_str())));

        // Per path, each method is served exactly when it is documented: an
        // undocumented method is the router's 405, a documented one never is.
        let app = app();
        let methods = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ];
        let mut operations = 0;
        for (path, ops) in paths {
            let concrete: String = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            for m in &methods {
                let is_documented = ops.get(m.as_str().to_lowercase()).is_some();
                let got = status(&app, m, &concrete).await;
                assert_eq!(
                    got != StatusCode::METHOD_NOT_ALLOWED,
                    is_documented,
                    "{m} {path}: documented {is_documented}, answered {got}"
                );
                operations += usize::from(is_documented);
            }
        }
        // every documented operation was one of the methods probed
        let total: usize = paths.values().map(|o| o.as_object().unwrap().len()).sum();
        assert_eq!(operations, total);
        // and the probe itself can fail: an unknown path is the router's 404
        assert_eq!(
            status(&app, &Method::GET, "/v1/nothing-here").await,
            StatusCode::NOT_FOUND
        );
    }
}
