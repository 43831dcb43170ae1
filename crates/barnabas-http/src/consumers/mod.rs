//! Consumer instances (`/consumers/…`): a registry of named instances, each a gateway-driven
//! Kafka consumer ([`barnabas_core::ConsumerDriver`]).

pub mod cluster;
mod handlers;
mod registry;

pub use cluster::Cluster;
pub use registry::{Instance, InstanceSettings, Mode, Registry};

use axum::{
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
        ));
    Router::new()
        .route("/consumers/{group}", post(handlers::create))
        .merge(instances)
}
