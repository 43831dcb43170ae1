//! barnabas' HTTP front end: the Strimzi Kafka Bridge v2 REST API (produce, consumer
//! instances, metadata), Server-Sent Events streams, probes, OpenAPI and Prometheus metrics.
//!
//! Consumer instances are driven by the gateway (`barnabas_core::ConsumerDriver`), not by
//! their client's poll cadence, so group rebalances complete while clients are idle and
//! long-polls return as soon as records arrive.

mod auth;
mod body;
pub mod consumers;
mod error;
pub mod format;
mod metrics;
mod openapi;
mod probes;
mod produce;
mod quota;
pub mod server;
mod sse;
mod state;
mod tls;
mod topics;

pub use error::{ApiError, ApiResult};
pub use state::{AppState, HttpSettings};
pub use tls::{serve_tls, TlsPeer};

use axum::{
    extract::DefaultBodyLimit,
    http::{HeaderValue, Method},
    routing::{get, post},
    Router,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, Any, CorsLayer},
    trace::TraceLayer,
};

/// Every route of the API. `/openapi` documents exactly these (a test checks it).
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.max_body_bytes;
    let cors = cors_layer(&state.settings.cors_origins);
    // Probes and the scraper need no credentials; everything else does (when auth is on).
    let open = Router::new()
        .route("/healthy", get(probes::healthy))
        .route("/ready", get(probes::ready))
        .route("/metrics", get(metrics::metrics));
    let protected = Router::new()
        .route("/", get(probes::root))
        .route("/openapi", get(openapi::openapi))
        .route("/openapi/v3", get(openapi::openapi))
        .route("/topics", get(topics::list))
        .route(
            "/topics/{topic}",
            get(topics::get_topic).post(produce::to_topic),
        )
        .route("/topics/{topic}/partitions", get(topics::partitions))
        .route(
            "/topics/{topic}/partitions/{partition}",
            get(topics::partition).post(produce::to_partition),
        )
        .route(
            "/topics/{topic}/partitions/{partition}/offsets",
            get(topics::offsets),
        )
        .route("/topics/{topic}/events", get(sse::events))
        .route("/admin/topics", post(topics::create))
        .merge(consumers::routes(&state))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let api = open
        .merge(protected)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(body_limit));
    let api = answer_panics(api)
        .layer(TraceLayer::new_for_http())
        .with_state(state.clone());
    match cors {
        Some(cors) => api.layer(cors),
        None => api,
    }
}

/// The HTTP front end's listeners, bound by the caller (a busy port is a start-up error);
/// either may be off.
#[derive(Default)]
pub struct HttpListeners {
    /// `http.listen`.
    pub plain: Option<TcpListener>,
    /// `http.tls_listen` (served with `state.tls`).
    pub tls: Option<TcpListener>,
}

impl HttpListeners {
    /// Whether any listener is on.
    pub fn any(&self) -> bool {
        self.plain.is_some() || self.tls.is_some()
    }
}

/// Starts the HTTP front end: the tasks behind consumer instances (the idle reaper, and
/// following every replica's instances) until `state.shutdown`, and one task per listener,
/// joining `tasks`.
pub fn start(state: &AppState, listeners: HttpListeners, tasks: &mut tokio::task::JoinSet<()>) {
    // Without a listener there are no consumer instances to reap or to follow: no Kafka
    // consumer of the instances topic either.
    if !listeners.any() {
        return;
    }
    state.consumers.start_reaper(
        state.settings.consumer_idle_timeout,
        state.cluster.clone(),
        state.shutdown.clone(),
    );
    state.cluster.follow(
        state.backend.clone(),
        state.consumers.clone(),
        state.shutdown.clone(),
    );
    let (header_read_timeout, max_connections) = (
        state.settings.header_read_timeout,
        state.settings.max_connections,
    );
    if let (Some(listener), Some(tls)) = (listeners.tls, state.tls.clone()) {
        let served = serve_tls(
            listener,
            router(state.clone()),
            tls,
            header_read_timeout,
            max_connections,
            state.shutdown.clone(),
        );
        spawn_listener(tasks, "HTTPS", served);
    }
    if let Some(listener) = listeners.plain {
        let served = serve(
            listener,
            router(state.clone()),
            header_read_timeout,
            max_connections,
            state.shutdown.clone(),
        );
        spawn_listener(tasks, "HTTP", served);
    }
}

/// Runs one listener's serve loop in `tasks`; a listener that fails is logged as `name`.
fn spawn_listener(
    tasks: &mut tokio::task::JoinSet<()>,
    name: &'static str,
    served: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) {
    tasks.spawn(async move {
        if let Err(e) = served.await {
            tracing::error!(error = %e, "{name} listener failed");
        }
    });
}

/// A handler that panics is answered `500` with the JSON error body, and only its request is
/// lost: the connection and every other request go on (without this layer hyper would drop
/// the connection with no answer).
fn answer_panics<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(CatchPanicLayer::custom(error::panic_response))
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers(Any),
    )
}

/// Serves `router` on an already bound listener until `shutdown` is cancelled, then stops
/// accepting and lets in-flight requests finish. Binding happens in the caller so a busy port
/// is reported before anything starts. A request's headers must arrive within
/// `header_read_timeout` ([`server`]); a connection beyond `max_connections` is answered 503.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: std::time::Duration,
    max_connections: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (tx, incoming) = tokio::sync::mpsc::channel(64);
    tokio::spawn(barnabas_core::accept_connections(
        listener,
        "http",
        max_connections,
        shutdown.clone(),
        move |stream, addr, slot| {
            let tx = tx.clone();
            async move { tx.send((stream, addr, slot)).await.is_ok() }
        },
        server::answer_busy,
    ));
    server::serve_streams(incoming, router, header_read_timeout, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_handler_panic_is_answered_500_json_and_the_router_keeps_serving() {
        let app = answer_panics(
            Router::new()
                .route("/boom", get(|| async { panic!("a handler bug") as &str }))
                .route("/fine", get(|| async { "fine" })),
        );
        let request = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let answer = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(answer.status(), 500);
        assert_eq!(
            answer.headers()["content-type"],
            "application/vnd.kafka.v2+json"
        );
        let body = axum::body::to_bytes(answer.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error_code"], 500, "{body}");
        assert!(body["message"].is_string(), "{body}");
        let answer = app.oneshot(request("/fine")).await.unwrap();
        assert_eq!(answer.status(), 200);
    }
}
