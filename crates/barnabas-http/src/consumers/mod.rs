//! Consumer instances (`/consumers/…`): a registry of named instances, each a gateway-driven
//! Kafka consumer ([`barnabas_core::ConsumerDriver`]).

pub mod cluster;
mod handlers;
mod registry;

pub use cluster::Cluster;
pub use registry::{Instance, InstanceSettings, Mode, Registry};

use axum::{
    extract::{MatchedPath, Request},
    http::{header::CONTENT_TYPE, HeaderValue, Method},
    middleware::Next,
    response::Response,
    routing::{delete, get, post},
    Router,
};

use crate::AppState;

/// The `/consumers/…` routes. Requests for an instance another replica serves are forwarded
/// to it ([`cluster::route_to_owner`]).
pub fn routes(state: &AppState) -> Router<AppState> {
    let instances = Router::new()
        .route(
            "/consumers/{group}/instances/{name}",
            delete(handlers::delete),
        )
        .route(
            "/consumers/{group}/instances/{name}/subscription",
            post(handlers::subscribe)
                .get(handlers::subscription)
                .delete(handlers::unsubscribe),
        )
        .route(
            "/consumers/{group}/instances/{name}/assignments",
            post(handlers::assign),
        )
        .route(
            "/consumers/{group}/instances/{name}/records",
            get(handlers::records),
        )
        .route(
            "/consumers/{group}/instances/{name}/offsets",
            post(handlers::commit),
        )
        .route(
            "/consumers/{group}/instances/{name}/positions",
            post(handlers::seek),
        )
        .route(
            "/consumers/{group}/instances/{name}/positions/beginning",
            post(handlers::seek_beginning),
        )
        .route(
            "/consumers/{group}/instances/{name}/positions/end",
            post(handlers::seek_end),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::route_to_owner,
        ))
        .route_layer(axum::middleware::from_fn(unsubscribe_errors_as_json));
    Router::new()
        .route("/consumers/{group}", post(handlers::create))
        .merge(instances)
}

/// Strimzi's openapi.json documents the errors of `DELETE …/subscription` (alone of all
/// operations) as `application/json`; its bridge sends `application/vnd.kafka.v2+json` as
/// everywhere else. The body is the same JSON either way: the documented type is sent.
async fn unsubscribe_errors_as_json(request: Request, next: Next) -> Response {
    let unsubscribe = request.method() == Method::DELETE
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| p.as_str() == "/consumers/{group}/instances/{name}/subscription");
    let mut response = next.run(request).await;
    if unsubscribe && !response.status().is_success() {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}
