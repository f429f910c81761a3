//! Request counters and latency histograms, rendered as Prometheus text.
//!
//! Labels use the matched route template (`/v1/messages/{id}`), never the raw
//! path, so ids do not explode the series count.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::AppState;

const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Latency>,
    webhooks: Family<WebhookLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Latency>::default();
        let webhooks = Family::<WebhookLabels, Counter>::default();
        let mut registry = Registry::default();
        // Families are shared handles: the registry encodes the same series
        // that `observe` updates.
        registry.register(
            // the text encoder appends `_total` to counters
            "progressdb_http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "progressdb_http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "progressdb_webhook_posts",
            "Webhook POST attempts by endpoint (origin and path) and outcome",
            webhooks.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            webhooks,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Route,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    endpoint: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

/// A route label that costs a refcount bump, not a `String`, per request:
/// `MatchedPath` is an `Arc<str>` the router already holds.
#[derive(Clone, Debug)]
enum Route {
    Matched(MatchedPath),
    Unmatched,
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Route::Matched(p) => p.as_str(),
            Route::Unmatched => "unmatched",
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl Hash for Route {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Clients choose the method, so anything outside the standard set shares
/// one label rather than minting a series per invented method.
fn method_label(m: &Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// A fixed-bucket histogram of plain atomics. prometheus-client's own
/// `Histogram` takes a mutex on every `observe`, which would serialise
/// concurrent requests to the same (typically the busiest) route.
#[derive(Debug, Default)]
struct Latency {
    /// Per-bucket, not cumulative; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_bits: AtomicU64,
}

impl Latency {
    fn observe(&self, secs: f64) {
        let i = BUCKETS.partition_point(|le| *le < secs);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        // No atomic f64 add exists; retry on the rare concurrent update.
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + secs).to_bits())
            });
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets)
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        // Counted from the same loads as the buckets so `_count` always
        // equals the `+Inf` bucket even while requests are being recorded.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = f64::from_bits(self.sum_bits.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl Metrics {
    fn observe(&self, method: &'static str, route: Route, status: u16, secs: f64) {
        self.latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(secs);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// Counts one webhook POST: `delivered` (a 2xx answer) or `failed`.
    /// `endpoint` is the redacted URL (configured, so few series).
    pub fn webhook_post(&self, endpoint: &str, delivered: bool) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                endpoint: endpoint.to_string(),
                outcome: if delivered { "delivered" } else { "failed" },
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    async fn time(&self, req: Request, next: Next) -> Response {
        let start = Instant::now();
        let method = method_label(req.method());
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or(Route::Unmatched, |p| Route::Matched(p.clone()));
        let resp = next.run(req).await;
        let secs = start.elapsed().as_secs_f64();
        let status = resp.status().as_u16();
        tracing::debug!(
            method,
            route = route.as_str(),
            status,
            ms = secs * 1000.0,
            "request"
        );
        self.observe(method, route, status, secs);
        resp
    }
}

/// Middleware: times every request and counts it under its route template.
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    st.metrics.time(req, next).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::middleware::from_fn;
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    /// Sends requests through a real router so the labels come from axum's
    /// `MatchedPath`, as in production.
    async fn send(app: &Router, method: Method, path: &str) -> StatusCode {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(req).await.unwrap().status()
    }

    fn app(m: &Arc<Metrics>) -> Router {
        let m = m.clone();
        Router::new()
            .route("/v1/messages/{id}", get(|| async { "ok" }))
            .route("/v1/messages", post(|| async { StatusCode::BAD_REQUEST }))
            .layer(from_fn(move |req: Request, next: Next| {
                let m = m.clone();
                async move { m.time(req, next).await }
            }))
    }

    fn line<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
    }

    fn value(text: &str, series: &str) -> String {
        line(text, series).rsplit(' ').next().unwrap().to_string()
    }

    #[tokio::test]
    async fn counts_requests_by_route_template() {
        let m = Arc::new(Metrics::default());
        let app = app(&m);
        assert_eq!(send(&app, Method::GET, "/v1/messages/a").await, 200);
        assert_eq!(send(&app, Method::GET, "/v1/messages/b").await, 200);
        assert_eq!(send(&app, Method::POST, "/v1/messages").await, 400);
        assert_eq!(send(&app, Method::GET, "/nope").await, 404);
        let ext = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(send(&app, ext, "/v1/messages/c").await, 405);

        let t = m.render();
        assert!(
            t.contains("# TYPE progressdb_http_requests_total counter\n"),
            "{t}"
        );
        let req = |labels: &str| value(&t, &format!("progressdb_http_requests_total{{{labels}}}"));
        assert_eq!(
            req(r#"method="GET",route="/v1/messages/{id}",status="200""#),
            "2"
        );
        assert_eq!(
            req(r#"method="POST",route="/v1/messages",status="400""#),
            "1"
        );
        assert_eq!(
            req(r#"method="OTHER",route="/v1/messages/{id}",status="405""#),
            "1"
        );
        assert_eq!(req(r#"method="GET",route="unmatched",status="404""#), "1");
        assert!(
            !t.contains("/v1/messages/a"),
            "raw path leaked into labels:\n{t}"
        );
        let count = value(
            &t,
            r#"progressdb_http_request_duration_seconds_count{route="/v1/messages/{id}"}"#,
        );
        assert_eq!(count, "3");
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_and_sum() {
        let m = Metrics::default();
        let r = || Route::Unmatched;
        m.observe("GET", r(), 200, 0.003);
        m.observe("GET", r(), 200, 0.005); // on a bound: counts in that bucket
        m.observe("GET", r(), 200, 2.0);
        m.observe("GET", r(), 200, 9.0); // past the last bound: +Inf only
        let t = m.render();
        assert!(
            t.contains("# TYPE progressdb_http_request_duration_seconds histogram\n"),
            "{t}"
        );
        let h = "progressdb_http_request_duration_seconds";
        let bucket = |le: &str| value(&t, &format!(r#"{h}_bucket{{route="unmatched",le="{le}"}}"#));
        let want = [
            ("0.001", "0"),
            ("0.0025", "0"),
            ("0.005", "2"),
            ("0.01", "2"),
            ("0.5", "2"),
            ("1", "2"),
            ("5", "3"),
            ("+Inf", "4"),
        ];
        for (le, n) in want {
            assert_eq!(bucket(le), n, "le={le}\n{t}");
        }
        assert_eq!(
            value(&t, &format!(r#"{h}_count{{route="unmatched"}}"#)),
            "4"
        );
        let sum: f64 = value(&t, &format!(r#"{h}_sum{{route="unmatched"}}"#))
            .parse()
            .unwrap();
        assert!((sum - 11.008).abs() < 1e-9, "sum {sum}");
        assert_eq!(
            value(
                &t,
                r#"progressdb_http_requests_total{method="GET",route="unmatched",status="200"}"#
            ),
            "4"
        );
    }

    #[test]
    fn concurrent_observations_are_not_lost() {
        let m = Arc::new(Metrics::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.observe("GET", Route::Unmatched, 200, 0.5);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let t = m.render();
        let h = "progressdb_http_request_duration_seconds";
        assert_eq!(
            value(&t, &format!(r#"{h}_count{{route="unmatched"}}"#)),
            "8000"
        );
        assert_eq!(
            value(&t, &format!(r#"{h}_sum{{route="unmatched"}}"#)),
            "4000.0"
        );
    }
}
