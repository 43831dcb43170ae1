//! The process-wide pieces every front end is built with.

use std::sync::Arc;

use crate::{
    tls::TlsAcceptor, Authenticator, Backend, GatewayMetrics, MeteredPublisher, MetricsRegistry,
};

/// What the binary makes once and hands to each front end's `start`: one Kafka backend, one
/// metrics registry (and the data-path families the front ends share), one authenticator
/// (a principal is the same, and a guessing address is slowed down, on every protocol —
/// it keeps the failed-login throttle), one TLS server configuration (reloaded on SIGHUP for every
/// listener at once).
#[derive(Clone)]
pub struct Services {
    /// Kafka.
    pub backend: Backend,
    /// The registry `/metrics` encodes; each front end registers its own families in it.
    pub registry: MetricsRegistry,
    /// Data-path metrics shared by the front ends.
    pub gateway_metrics: GatewayMetrics,
    /// Logins and ACLs.
    pub auth: Arc<Authenticator>,
    /// The TLS server side of every TLS listener, when TLS is configured.
    pub tls: Option<Arc<TlsAcceptor>>,
}

impl Services {
    /// The producer for one front end, its writes counted under `protocol`.
    pub fn publisher(&self, protocol: &str) -> MeteredPublisher {
        MeteredPublisher::new(
            self.backend.publisher.clone(),
            &self.gateway_metrics,
            protocol,
        )
    }
}
