//! The `[kafka]` config section and how it becomes librdkafka client properties.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// How barnabas reaches Kafka. Every key is optional; the defaults suit the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from (librdkafka
    /// `bootstrap.servers`).
    pub bootstrap_servers: String,
    /// Client id the gateway's Kafka clients present; shows up in broker logs and quotas.
    pub client_id: String,
    /// Create a topic on first write when it does not exist. The embedded broker never
    /// creates topics by itself, so the gateway does it; off = the write gets the protocol's
    /// "unknown topic" error.
    pub auto_create_topics: bool,
    /// Partitions of topics the gateway creates.
    pub default_partitions: i32,
    /// Replication factor of topics the gateway creates; -1 = the broker's default.
    pub default_replication_factor: i32,
    /// How long a write may wait for Kafka before it is answered with an error (ms). This is
    /// librdkafka's `message.timeout.ms`; a client gets a clear negative answer after it.
    pub produce_timeout_ms: u64,
    /// Timeout for metadata and admin requests (ms).
    pub request_timeout_ms: u64,
    /// librdkafka properties passed through unchanged, applied last so they override the
    /// gateway's defaults (e.g. `"compression.type" = "lz4"`, `"security.protocol" = "SASL_SSL"`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "barnabas".into(),
            auto_create_topics: true,
            default_partitions: 1,
            default_replication_factor: -1,
            produce_timeout_ms: 30_000,
            request_timeout_ms: 10_000,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Properties shared by every client: where the cluster is, who we are, then the
    /// operator's pass-through properties (which win).
    pub(crate) fn client_config(&self, role: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", format!("{}-{role}", self.client_id))
            // Fast retries: the gateway answers clients, so it must notice a broker quickly.
            .set("reconnect.backoff.max.ms", "1000")
            .set("topic.metadata.refresh.fast.interval.ms", "100");
        cfg
    }

    /// Applies the pass-through properties last, so the operator always has the final word.
    pub(crate) fn apply_properties(&self, cfg: &mut ClientConfig) {
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
    }

    /// The producer's properties: durable and ordered by default.
    pub(crate) fn producer_config(&self) -> ClientConfig {
        let mut cfg = self.client_config("producer");
        cfg.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "none")
            .set("message.timeout.ms", self.produce_timeout_ms.to_string());
        self.apply_properties(&mut cfg);
        cfg
    }
}
