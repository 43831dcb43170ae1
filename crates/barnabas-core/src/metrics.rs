//! The process-wide Prometheus registry and the metrics every front end shares.
//!
//! One registry per process, created by the binary and handed to each front end, which
//! registers its own families next to the shared ones here; `GET /metrics` encodes it.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Registers metric families in one lock of a [`MetricsRegistry`], one line per family:
/// `"name", "help" => handle;`. The handles are cloned into the registry (a metric is a
/// shared handle), so the caller keeps its own to update. One list per front end reads as the
/// table it is, where `Registry::register` calls took five formatted lines each.
#[macro_export]
macro_rules! register_metrics {
    ($registry:expr, { $($name:literal, $help:literal => $metric:expr;)* }) => {
        $registry.register(|r| {
            $( r.register($name, $help, $metric.clone()); )*
        })
    };
}

/// A registry front ends register into at start-up and `/metrics` encodes.
#[derive(Clone, Default)]
pub struct MetricsRegistry(Arc<Mutex<Registry>>);

impl MetricsRegistry {
    /// An empty registry with the `barnabas` prefix.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Registry::with_prefix("barnabas"))))
    }

    /// Runs `f` with the registry locked, to register metric families.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        if let Ok(mut r) = self.0.lock() {
            f(&mut r);
        }
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.0.lock() {
            let _ = encode(&mut out, &r);
        }
        out
    }
}

/// Label: which front end.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// `http`, `mqtt`, `amqp`, `sse`.
    pub protocol: String,
}

/// Labels of a refused login: which front end, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// `http`, `mqtt`, `amqp`.
    pub protocol: String,
    /// `bad_credentials` or `no_credentials`.
    pub reason: String,
}

/// Metrics of the data path, shared by all front ends.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// Records Kafka acknowledged, by front end.
    pub records_in: Family<ProtocolLabel, Counter>,
    /// Records that could not be written, by front end.
    pub records_failed: Family<ProtocolLabel, Counter>,
    /// Records handed to clients, by front end.
    pub records_out: Family<ProtocolLabel, Counter>,
    /// Time from a produce request to Kafka's acknowledgement, by front end.
    pub produce_latency: Family<ProtocolLabel, Histogram>,
    /// Refused logins, by front end and reason.
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    /// argon2 password verifications run (a remembered pair costs none; an unknown user one
    /// against the decoy hash): what logins cost the CPU, and the cache's effect.
    pub password_checks: Counter,
}

impl GatewayMetrics {
    /// Creates the shared families and registers them.
    pub fn new(registry: &MetricsRegistry) -> Self {
        let metrics = Self {
            records_in: Family::default(),
            records_failed: Family::default(),
            records_out: Family::default(),
            auth_failures: Family::default(),
            password_checks: Counter::default(),
            produce_latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
        };
        crate::register_metrics!(registry, {
            "records_produced", "Records Kafka acknowledged" => metrics.records_in;
            "records_failed", "Records that could not be written to Kafka" => metrics.records_failed;
            "records_delivered", "Records handed to clients" => metrics.records_out;
            "auth_failures", "Refused logins (bad or missing credentials), by front end and reason" => metrics.auth_failures;
            "produce_latency_seconds", "Time from a produce request to Kafka's acknowledgement" => metrics.produce_latency;
            "password_checks", "argon2 password verifications run (remembered logins cost none)" => metrics.password_checks;
        });
        metrics
    }

    /// The label for a front end.
    pub fn label(protocol: &str) -> ProtocolLabel {
        ProtocolLabel {
            protocol: protocol.to_owned(),
        }
    }
}
