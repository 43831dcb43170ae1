//! What every handler shares, and the settings the binary passes in.

use std::{sync::Arc, time::Duration};

use barnabas_core::{
    Authenticator, Backend, DriverLimits, GatewayMetrics, MetricsRegistry, Readiness, Services,
};
use tokio_util::sync::CancellationToken;

use crate::{
    consumers::{Cluster, Registry},
    metrics::HttpMetrics,
};

/// The HTTP front end's settings (from the `[http]` and `[limits]` config sections).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Consumer instances idle this long are deleted and their Kafka consumer closed.
    pub consumer_idle_timeout: Duration,
    /// Largest request body accepted (`limits.max_message_bytes`); above it, 413.
    pub max_body_bytes: usize,
    /// Origins allowed by CORS; empty = no CORS headers, `*` = any origin.
    pub cors_origins: Vec<String>,
    /// Read-ahead bounds of each consumer instance.
    pub driver_limits: DriverLimits,
    /// Interval of SSE keep-alive comments.
    pub sse_keep_alive: Duration,
    /// Base URL (`http://host:port`) other replicas use to forward requests for consumer
    /// instances this replica serves.
    pub advertised_url: String,
    /// Records per second one principal may produce (`limits.publish_rate`, 0 = no limit).
    pub publish_rate: u32,
    /// Kafka consumers (consumer instances and SSE streams) one principal may hold on this
    /// replica.
    pub max_consumers_per_principal: usize,
    /// Most partitions `POST /admin/topics` creates a topic with (422 above).
    pub max_topic_partitions: i32,
    /// How long a request's headers may take to arrive (`http.header_read_timeout_ms`).
    pub header_read_timeout: Duration,
    /// Connections accepted at once (`limits.max_connections`); one more is answered 503.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            consumer_idle_timeout: Duration::from_secs(300),
            max_body_bytes: 1_048_576,
            cors_origins: Vec::new(),
            driver_limits: DriverLimits::default(),
            sse_keep_alive: Duration::from_secs(15),
            advertised_url: "http://127.0.0.1:8080".into(),
            publish_rate: 0,
            max_consumers_per_principal: 1_000,
            max_topic_partitions: 1_000,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// Shared by all handlers; cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    /// Kafka.
    pub(crate) backend: Backend,
    /// The process-wide producer, counted as `http`.
    pub(crate) publisher: barnabas_core::MeteredPublisher,
    /// Flipped by the binary's Kafka watcher; `/ready` reports it.
    pub(crate) readiness: Readiness,
    /// Reported by `GET /` as `bridge_version`.
    pub(crate) version: &'static str,
    /// Settings.
    pub(crate) settings: Arc<HttpSettings>,
    /// Consumer instances this replica serves.
    pub(crate) consumers: Arc<Registry>,
    /// Every replica's consumer instances, and forwarding to their owners.
    pub(crate) cluster: Arc<Cluster>,
    /// The process registry `/metrics` encodes.
    pub(crate) registry: MetricsRegistry,
    /// Data-path metrics shared with the other front ends.
    pub(crate) gateway_metrics: GatewayMetrics,
    /// HTTP-only metrics.
    pub(crate) http_metrics: HttpMetrics,
    /// Cancelled at shutdown: long-polls answer and SSE streams end, so draining finishes.
    pub(crate) shutdown: CancellationToken,
    /// Authentication and ACLs, shared with the other front ends.
    pub(crate) auth: Arc<Authenticator>,
    /// Produce-rate buckets per principal.
    pub(crate) rates: Arc<barnabas_core::rate::KeyedRates>,
    /// Open SSE streams per principal (`limits.max_consumers_per_principal`).
    pub(crate) sse_streams: Arc<crate::quota::StreamCounts>,
    /// The TLS server side of the HTTPS listener.
    pub(crate) tls: Option<Arc<barnabas_core::tls::TlsAcceptor>>,
}

impl AppState {
    /// Builds the state from the process's `services` and registers the HTTP metrics;
    /// `version` is reported by `GET /`, `readiness` by `/ready`.
    pub fn new(
        services: &Services,
        readiness: Readiness,
        version: &'static str,
        settings: HttpSettings,
        shutdown: CancellationToken,
    ) -> Self {
        let http_metrics = HttpMetrics::new(&services.registry);
        let consumers = Arc::new(Registry::new(http_metrics.consumer_instances.clone()));
        let cluster = Arc::new(Cluster::new(settings.advertised_url.clone()));
        let rates = Arc::new(barnabas_core::rate::KeyedRates::new(settings.publish_rate));
        Self {
            cluster,
            publisher: services.publisher("http"),
            backend: services.backend.clone(),
            readiness,
            version,
            settings: Arc::new(settings),
            consumers,
            registry: services.registry.clone(),
            gateway_metrics: services.gateway_metrics.clone(),
            http_metrics,
            shutdown,
            rates,
            sse_streams: Arc::default(),
            auth: services.auth.clone(),
            tls: services.tls.clone(),
        }
    }

    /// Closes every consumer instance this replica serves (at shutdown: they leave their
    /// groups now, so their partitions move at once).
    pub async fn close_consumers(&self) {
        self.consumers.close_all().await;
    }
}
