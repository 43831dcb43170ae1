//! HTTP metrics (requests by route and status, live consumer instances) and `GET /metrics`.

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use barnabas_core::MetricsRegistry;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::AppState;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/topics/{topic}`), never the raw path, so cardinality stays bounded.
    route: String,
    method: String,
    status: String,
}

/// HTTP-only metrics.
#[derive(Clone, Default)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    /// Live consumer instances.
    pub consumer_instances: Gauge,
}

impl HttpMetrics {
    /// Creates and registers the HTTP families.
    pub fn new(registry: &MetricsRegistry) -> Self {
        let m = Self::default();
        barnabas_core::register_metrics!(registry, {
            "http_requests", "HTTP requests by route, method and status" => m.requests;
            "http_consumer_instances", "Live HTTP consumer instances" => m.consumer_instances;
        });
        m
    }
}

/// Middleware: counts every request by route template, method and status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method()).to_owned();
    let resp = next.run(req).await;
    state
        .http_metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16().to_string(),
        })
        .inc();
    resp
}

/// The method as a label, from a fixed set: a client may send any token as its method, and
/// each distinct label value is a series kept for the life of the process.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.registry.encode(),
    )
        .into_response()
}
