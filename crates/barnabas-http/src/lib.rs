//! barnabas' HTTP front end.
//!
//! For now it serves what every deployment needs from the first day: the Strimzi-compatible
//! root document and the liveness/readiness probes that orchestrators poll. The REST API for
//! producing and consuming grows here (see the HTTP issue), on the same router and listener.

mod probes;

pub use probes::{router, AppState};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on an already bound listener until `shutdown` is cancelled, then stops
/// accepting and lets in-flight requests finish. Binding happens in the caller so a busy port
/// is reported before anything starts.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
