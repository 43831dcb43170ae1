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
    /// librdkafka properties whose values are read from files at start (e.g.
    /// `"sasl.password" = "/run/secrets/kafka-password"`), so secrets stay out of the config
    /// and out of `check-config`; the file's content, without its trailing newline, wins over
    /// `properties`.
    pub secret_files: BTreeMap<String, String>,
    /// Whose identity clients' writes and reads reach Kafka with: `"gateway"` (the gateway's
    /// own login from `properties`) or `"passthrough"` (each client's own user name and
    /// password, as the SASL login of a producer of its own and of its consumers, so Kafka's
    /// ACLs apply per client; needs a SASL `security.protocol`; clients that log in without a
    /// password can neither write nor read).
    pub identity: String,
    /// With `identity = "passthrough"`: clients' producers open at once at most (each is a
    /// librdkafka producer with its own connections); the least recently used idle one makes
    /// room, and one idle for 5 minutes is closed.
    pub passthrough_producers: usize,
    /// Topics (and consumer groups) starting with this belong to the gateway: no client
    /// writes or reads them through any protocol or mapping, whatever the ACL says. The
    /// gateway's own `barnabas.*` topics and Kafka's `__*` are protected whatever this is;
    /// another value protects that prefix as well.
    pub internal_prefix: String,
}

/// `kafka.identity` values.
pub const IDENTITY_GATEWAY: &str = "gateway";
/// See [`IDENTITY_GATEWAY`].
pub const IDENTITY_PASSTHROUGH: &str = "passthrough";

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
            secret_files: BTreeMap::new(),
            identity: IDENTITY_GATEWAY.into(),
            passthrough_producers: 64,
            internal_prefix: "barnabas.".into(),
        }
    }
}

/// A `[kafka]` section the gateway cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    /// `identity` is neither `gateway` nor `passthrough`.
    #[error("kafka.identity must be \"gateway\" or \"passthrough\", not {0:?}")]
    UnknownIdentity(String),
    /// Identity passthrough without a SASL `security.protocol` (the value found).
    #[error(
        "kafka.identity = \"passthrough\" logs clients in to Kafka with SASL: set \
         kafka.properties.\"security.protocol\" to SASL_PLAINTEXT or SASL_SSL (now {0:?})"
    )]
    PassthroughWithoutSasl(Option<String>),
    /// A `secret_files` entry that cannot be read (never its content).
    #[error("kafka.secret_files.\"{property}\": cannot read {path}: {source}")]
    SecretFile {
        /// The property it fills.
        property: String,
        /// The file.
        path: String,
        /// Why it cannot be read.
        source: std::io::Error,
    },
}

impl KafkaConfig {
    /// Checks `identity` (and that passthrough has a SASL login to pass the identity in).
    pub fn validate_identity(&self) -> Result<(), KafkaConfigError> {
        match self.identity.as_str() {
            IDENTITY_GATEWAY => Ok(()),
            IDENTITY_PASSTHROUGH => {
                let protocol = self
                    .properties
                    .get("security.protocol")
                    .map(|p| p.to_ascii_uppercase())
                    .unwrap_or_default();
                if protocol == "SASL_PLAINTEXT" || protocol == "SASL_SSL" {
                    Ok(())
                } else {
                    let now = self.properties.get("security.protocol").cloned();
                    Err(KafkaConfigError::PassthroughWithoutSasl(now))
                }
            }
            other => Err(KafkaConfigError::UnknownIdentity(other.to_owned())),
        }
    }

    /// Whether clients' writes and reads reach Kafka with their own identity.
    pub fn passthrough(&self) -> bool {
        self.identity == IDENTITY_PASSTHROUGH
    }

    /// These settings with the SASL login of `user` instead of the gateway's (identity
    /// passthrough): the mechanism, `security.protocol` and TLS stay the operator's.
    pub fn logged_in_as(&self, user: &str, secret: &barnabas_core::Secret) -> KafkaConfig {
        let mut config = self.clone();
        config
            .properties
            .insert("sasl.username".into(), user.to_owned());
        config
            .properties
            .insert("sasl.password".into(), secret.expose().to_owned());
        config.client_id = format!("{}-{user}", self.client_id);
        config
    }

    /// Reads every `secret_files` entry into `properties`; the error names the property and
    /// the file (never the content).
    pub fn resolve_secret_files(&mut self) -> Result<(), KafkaConfigError> {
        for (property, path) in std::mem::take(&mut self.secret_files) {
            let value = match std::fs::read_to_string(&path) {
                Ok(value) => value,
                Err(source) => {
                    return Err(KafkaConfigError::SecretFile {
                        property,
                        path,
                        source,
                    })
                }
            };
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let value = value.strip_suffix('\r').unwrap_or(value);
            self.properties.insert(property, value.to_owned());
        }
        Ok(())
    }

    /// Properties shared by every client: where the cluster is, who we are, then the
    /// operator's pass-through properties (which win).
    pub(crate) fn client_config(&self, role: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", format!("{}-{role}", self.client_id))
            // Fast retries: the gateway answers clients, so it must notice a broker quickly.
            .set("reconnect.backoff.max.ms", "1000")
            .set("topic.metadata.refresh.fast.interval.ms", "100")
            // A metadata lookup or a subscription never creates a topic, even on a broker
            // with auto.create.topics.enable=true (librdkafka's producer-side default is
            // true, and the admin client is producer-typed): reads must not create topics
            // (interface §1), and writes create them only through the gateway's explicit
            // `kafka.auto_create_topics`.
            .set("allow.auto.create.topics", "false");
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
            // 1 ms, not librdkafka's 5: a publish waited the whole 5 ms (MQTT QoS 1 ack p50
            // 8.8 ms at 5 000 msg/s against 2.5 ms at 1 ms), and under load batches form
            // behind the request in flight anyway (throughput the same or higher; issue 26,
            // docs/benchmarks.md).
            .set("linger.ms", "1")
            .set("compression.type", "none")
            .set("message.timeout.ms", self.produce_timeout_ms.to_string());
        self.apply_properties(&mut cfg);
        cfg
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_client_lets_the_broker_create_topics() {
        let config = KafkaConfig::default();
        for cfg in [config.client_config("admin"), config.producer_config()] {
            assert_eq!(cfg.get("allow.auto.create.topics"), Some("false"));
        }
    }

    /// README §What it is: acks=all and the idempotent producer, unless the operator says
    /// otherwise in `[kafka.properties]` (which wins over every default).
    #[test]
    fn the_producer_waits_for_all_replicas_idempotently_and_properties_win() {
        let defaults = KafkaConfig::default().producer_config();
        assert_eq!(defaults.get("acks"), Some("all"));
        assert_eq!(defaults.get("enable.idempotence"), Some("true"));
        assert_eq!(defaults.get("linger.ms"), Some("1"));
        assert_eq!(defaults.get("compression.type"), Some("none"));
        let mut config = KafkaConfig::default();
        config.properties.insert("linger.ms".into(), "20".into());
        config
            .properties
            .insert("compression.type".into(), "zstd".into());
        let overridden = config.producer_config();
        assert_eq!(overridden.get("linger.ms"), Some("20"));
        assert_eq!(overridden.get("compression.type"), Some("zstd"));
        assert_eq!(overridden.get("acks"), Some("all"));
    }

    #[test]
    fn secret_files_become_properties_and_a_missing_one_is_named() {
        let dir = std::env::temp_dir().join(format!("barnabas-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "hunter2\n").unwrap();
        let mut config = KafkaConfig::default();
        config
            .secret_files
            .insert("sasl.password".into(), file.display().to_string());
        config.resolve_secret_files().unwrap();
        assert_eq!(config.properties["sasl.password"], "hunter2");
        assert!(config.secret_files.is_empty());

        let mut missing = KafkaConfig::default();
        missing
            .secret_files
            .insert("sasl.password".into(), "/nonexistent/secret".into());
        let err = missing.resolve_secret_files().unwrap_err().to_string();
        assert!(
            err.contains("sasl.password") && err.contains("/nonexistent/secret"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
