//! `GET /`, `GET /healthy`, `GET /ready`.

use axum::{extract::State, http::StatusCode, Json};
use serde_json::{json, Value};

use crate::AppState;

/// `{"bridge_version": …}`, as Strimzi's bridge answers.
pub async fn root(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "bridge_version": state.version }))
}

/// 200 while the process lives (the status Strimzi's openapi.json documents): a liveness probe
/// that never depends on Kafka, so a Kafka outage does not make an orchestrator restart every
/// gateway.
pub async fn healthy() -> StatusCode {
    StatusCode::OK
}

/// 200 when Kafka answers, 503 otherwise: take this replica out of load balancing meanwhile.
pub async fn ready(State(state): State<AppState>) -> StatusCode {
    if state.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
