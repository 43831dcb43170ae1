//! A front end's way to Kafka: the process's [`Publisher`] with the front end's produce
//! metrics — the time to Kafka's acknowledgement, the records written and failed — counted
//! in one place rather than beside every publish. Its label is built once, so the hot path
//! looks the families up without building a `String` per message.

use std::sync::Arc;

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use tokio::time::Instant;

use crate::{
    metrics::{GatewayMetrics, ProtocolLabel},
    Delivered, Identity, Principal, Publisher, Record, Result,
};

/// [`Publisher::publish`] as a client, with `barnabas_produce_latency_seconds`,
/// `barnabas_records_produced` and `barnabas_records_failed` under one `protocol` label.
#[derive(Clone)]
pub struct MeteredPublisher {
    publisher: Arc<dyn Publisher>,
    latency: Histogram,
    written: Counter,
    failed: Counter,
}

impl MeteredPublisher {
    /// `publisher`, counted under `protocol` (`mqtt`, `amqp`, `http`, `sse`).
    pub fn new(publisher: Arc<dyn Publisher>, metrics: &GatewayMetrics, protocol: &str) -> Self {
        let label = ProtocolLabel {
            protocol: protocol.to_owned(),
        };
        Self {
            publisher,
            latency: metrics.produce_latency.get_or_create(&label).clone(),
            written: metrics.records_in.get_or_create(&label).clone(),
            failed: metrics.records_failed.get_or_create(&label).clone(),
        }
    }

    /// Writes `records` on behalf of `principal` ([`Identity::Client`]): one result per
    /// record, in order, each counted.
    pub async fn publish_as(
        &self,
        principal: &Principal,
        records: Vec<Record>,
    ) -> Vec<Result<Delivered>> {
        let started = Instant::now();
        let results = self
            .publisher
            .publish(Identity::Client(principal), records)
            .await;
        let written = results.iter().filter(|r| r.is_ok()).count();
        self.count(started, written, results.len() - written);
        results
    }

    /// [`Self::publish_as`] for one record.
    pub async fn publish_one_as(&self, principal: &Principal, record: Record) -> Result<Delivered> {
        let started = Instant::now();
        let result = self
            .publisher
            .publish_one(Identity::Client(principal), record)
            .await;
        let written = usize::from(result.is_ok());
        self.count(started, written, 1 - written);
        result
    }

    fn count(&self, started: Instant, written: usize, failed: usize) {
        self.latency.observe(started.elapsed().as_secs_f64());
        self.written.inc_by(written as u64);
        self.failed.inc_by(failed as u64);
    }
}
