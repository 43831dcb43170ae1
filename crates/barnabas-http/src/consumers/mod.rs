//! Consumer instances (`/consumers/…`): a registry of named instances, each a gateway-driven
//! Kafka consumer ([`barnabas_core::ConsumerDriver`]).

mod handlers;
mod registry;

pub use registry::{Instance, Mode, Registry};

use axum::{
    routing::{delete, get, post},
    Router,
};

use crate::AppState;

/// The `/consumers/…` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/consumers/{group}", post(handlers::create))
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
}
