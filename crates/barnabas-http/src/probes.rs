//! `GET /`, `GET /healthy`, `GET /ready`.

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use barnabas_core::Readiness;
use serde_json::{json, Value};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Flipped by the binary's Kafka watcher; `/ready` reports it.
    pub readiness: Readiness,
    /// Reported by `GET /` as `bridge_version`, as Strimzi's bridge does.
    pub version: &'static str,
}

/// The router with the probes; later routes are merged into it.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/healthy", get(healthy))
        .route("/ready", get(ready))
        .with_state(state)
}

async fn root(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "bridge_version": state.version }))
}

/// 204 while the process lives: a liveness probe that never depends on Kafka, so a Kafka
/// outage does not make an orchestrator restart every gateway.
async fn healthy() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// 204 when Kafka answers, 503 otherwise: take this replica out of load balancing meanwhile.
async fn ready(State(state): State<AppState>) -> StatusCode {
    if state.readiness.is_ready() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
