//! The rdkafka adapter: the only crate in barnabas that talks to Kafka.
//!
//! It implements `barnabas-core`'s [`Publisher`](barnabas_core::Publisher),
//! [`ConsumerFactory`](barnabas_core::ConsumerFactory) and [`Admin`](barnabas_core::Admin)
//! on librdkafka, with the gateway's safety defaults (acks=all, idempotence) applied under
//! whatever the operator passes through in `[kafka.properties]`.

mod admin;
mod config;
mod consumer;
mod errors;
mod passthrough;
mod producer;

pub use admin::KafkaAdmin;
pub use config::{KafkaConfig, KafkaConfigError};
pub use consumer::{KafkaConsumer, KafkaConsumerFactory};
pub use passthrough::PassthroughPublisher;
pub use producer::KafkaPublisher;

use std::sync::Arc;

use barnabas_core::Backend;

/// Builds the process-wide [`Backend`]: one admin client, one shared producer (with identity
/// passthrough, behind it a pool of producers per client), and a factory for consumers.
/// Creating clients does not contact the cluster yet; use
/// [`Admin::ping`](barnabas_core::Admin::ping) to find out whether it answers.
pub fn connect(config: &KafkaConfig) -> Result<Backend, barnabas_core::Error> {
    config
        .validate_identity()
        .map_err(|e| barnabas_core::Error::Config(e.to_string()))?;
    let admin = Arc::new(KafkaAdmin::new(config)?);
    let gateway = Arc::new(KafkaPublisher::new(config, admin.clone())?);
    let publisher: Arc<dyn barnabas_core::Publisher> = if config.passthrough() {
        let pool = Arc::new(PassthroughPublisher::new(
            gateway,
            config.clone(),
            admin.clone(),
            config.passthrough_producers,
        ));
        if tokio::runtime::Handle::try_current().is_ok() {
            pool.spawn_idle_closer(tokio_util::sync::CancellationToken::new());
        }
        pool
    } else {
        gateway
    };
    let consumers = Arc::new(KafkaConsumerFactory::new(config));
    Ok(Backend {
        publisher,
        consumers,
        admin,
    })
}
