//! What every handler shares, and the settings the binary passes in.

use std::{sync::Arc, time::Duration};

use barnabas_core::{
    auth::FailureThrottle, Authenticator, Backend, DriverLimits, GatewayMetrics, MetricsRegistry,
    Readiness,
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
        }
    }
}

/// Shared by all handlers; cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    /// Kafka.
    pub backend: Backend,
    /// Flipped by the binary's Kafka watcher; `/ready` reports it.
    pub readiness: Readiness,
    /// Reported by `GET /` as `bridge_version`.
    pub version: &'static str,
    /// Settings.
    pub settings: Arc<HttpSettings>,
    /// Consumer instances this replica serves.
    pub consumers: Arc<Registry>,
    /// Every replica's consumer instances, and forwarding to their owners.
    pub cluster: Arc<Cluster>,
    /// The process registry `/metrics` encodes.
    pub registry: MetricsRegistry,
    /// Data-path metrics shared with the other front ends.
    pub gateway_metrics: GatewayMetrics,
    /// HTTP-only metrics.
    pub http_metrics: HttpMetrics,
    /// Cancelled at shutdown: long-polls answer and SSE streams end, so draining finishes.
    pub shutdown: CancellationToken,
    /// Authentication and ACLs (open by default; see [`AppState::with_auth`]).
    pub auth: Arc<Authenticator>,
    /// Delays answers to repeated failed logins per client address.
    pub throttle: Arc<FailureThrottle>,
    /// Produce-rate buckets per principal.
    pub rates: Arc<barnabas_core::rate::KeyedRates>,
    /// Open SSE streams per principal (`limits.max_consumers_per_principal`).
    pub sse_streams: Arc<crate::quota::StreamCounts>,
}

impl AppState {
    /// Builds the state and registers the HTTP metrics.
    pub fn new(
        backend: Backend,
        readiness: Readiness,
        version: &'static str,
        settings: HttpSettings,
        registry: MetricsRegistry,
        gateway_metrics: GatewayMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        let http_metrics = HttpMetrics::new(&registry);
        let consumers = Arc::new(Registry::new(http_metrics.consumer_instances.clone()));
        let cluster = Arc::new(Cluster::new(settings.advertised_url.clone()));
        let rates = Arc::new(barnabas_core::rate::KeyedRates::new(settings.publish_rate));
        Self {
            cluster,
            backend,
            readiness,
            version,
            settings: Arc::new(settings),
            consumers,
            registry,
            gateway_metrics,
            http_metrics,
            shutdown,
            rates,
            sse_streams: Arc::default(),
            auth: Arc::new(Authenticator::open()),
            throttle: Arc::new(FailureThrottle::default()),
        }
    }

    /// The same state with this authenticator (and failed-login throttle), shared with the
    /// other front ends so a principal is the same everywhere.
    pub fn with_auth(mut self, auth: Arc<Authenticator>, throttle: Arc<FailureThrottle>) -> Self {
        self.auth = auth;
        self.throttle = throttle;
        self
    }
}
