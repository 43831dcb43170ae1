//! The protocol-neutral heart of barnabas.
//!
//! Every front end (HTTP, MQTT, AMQP) turns what its clients send into the [`Record`]s defined
//! here and talks to Kafka only through the traits in [`ports`]; the Kafka adapter implements
//! them. Keeping this crate free of both protocols and rdkafka is what lets each front end be
//! tested and reasoned about on its own, and lets the adapter change without touching them.

pub mod auth;
pub mod catalog;
pub mod driver;
pub mod error;
pub mod health;
pub mod inflight;
pub mod internal;
pub mod keyed_log;
pub mod listener;
pub mod mapping;
pub mod metered;
pub mod metrics;
pub mod ports;
pub mod rate;
pub mod record;
pub mod services;
pub mod tls;
pub mod topic;
pub mod tracker;

pub use auth::{Access, AuthError, Authenticator, Credentials, LoginSource, Principal, Secret};
pub use catalog::{TopicCatalog, TopicList};
pub use driver::{ConsumerDriver, DriverLimits, Fetched};
pub use error::{Error, ErrorKind, Result};
pub use health::Readiness;
pub use inflight::{HeldBytes, InFlightBytes, OrderedWindow, MAX_INFLIGHT_BYTES};
pub use internal::InternalTopics;
pub use keyed_log::{Apply, KeyedLog};
pub use listener::{accept_connections, serve_connections};
pub use mapping::{FilterLevel, MappingRule, Resolved, Sources, TopicMapper};
pub use metered::MeteredPublisher;
pub use metrics::{GatewayMetrics, MetricsRegistry};
pub use ports::{
    Admin, Backend, CommitRequest, Consumer, ConsumerConfig, ConsumerFactory, Identity,
    OffsetReset, Publisher, SeekTo, Subscription,
};
pub use record::{
    ConsumedRecord, Delivered, Header, PartitionMetadata, Record, TopicMetadata, TopicPartition,
    TopicPartitionOffset, Watermarks,
};
pub use services::Services;
pub use topic::validate_topic_name;
pub use tracker::OffsetTracker;
