//! SSE sources: remote Server-Sent Events streams written into Kafka (`[[sources.sse]]`),
//! built for a Casper node's event streams (`/events/main`, `/events/deploys`,
//! `/events/sigs`): one record per event, keyed by its type, with `sse.id`, `sse.url` and
//! `casper.api_version` headers, resumed after any break from the last id Kafka holds.

pub mod parser;
pub mod source;

use barnabas_core::MetricsRegistry;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

pub use source::{run, KeyRule, SourceContext, SourceSpec};

/// Label: which stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The stream's URL.
    pub url: String,
}

/// SSE source metrics.
#[derive(Clone, Default)]
pub struct SourceMetrics {
    /// Events written to Kafka.
    pub events: Family<SourceLabel, Counter>,
    /// Events skipped because their data was not JSON.
    pub malformed: Family<SourceLabel, Counter>,
    /// Reconnections (dropped streams, refused connections, Kafka refusals).
    pub reconnects: Family<SourceLabel, Counter>,
}

impl SourceMetrics {
    /// Creates and registers the families.
    pub fn new(registry: &MetricsRegistry) -> Self {
        let m = Self::default();
        barnabas_core::register_metrics!(registry, {
            "sse_source_events", "SSE events written to Kafka" => m.events;
            "sse_source_malformed", "SSE events skipped because their data was not JSON" => m.malformed;
            "sse_source_reconnects", "SSE source reconnections" => m.reconnects;
        });
        m
    }
}

impl SourceContext {
    /// What every source shares, built from the process's `services`.
    pub fn new(services: &barnabas_core::Services) -> Self {
        Self {
            publisher: services.backend.publisher.clone(),
            consumers: services.backend.consumers.clone(),
            admin: services.backend.admin.clone(),
            metrics: SourceMetrics::new(&services.registry),
        }
    }
}

/// Starts one task per source, joining `tasks`, each running until `shutdown`.
pub fn start(
    services: &barnabas_core::Services,
    sources: Vec<SourceSpec>,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    if sources.is_empty() {
        return;
    }
    let ctx = SourceContext::new(services);
    for spec in sources {
        tasks.spawn(run(spec, ctx.clone(), shutdown.clone()));
    }
}
