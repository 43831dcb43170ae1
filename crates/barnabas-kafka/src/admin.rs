//! Cluster metadata, watermarks and topic creation over one librdkafka admin client.
//!
//! librdkafka's metadata and watermark calls block their thread, so each runs on tokio's
//! blocking pool; the admin client itself is cheap to share behind an `Arc`.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use barnabas_core::{Admin, Error, PartitionMetadata, Result, TopicMetadata, Watermarks};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use crate::{errors, KafkaConfig};

/// The gateway's one admin client.
pub struct KafkaAdmin {
    client: Arc<AdminClient<DefaultClientContext>>,
    /// For the lookups only a consumer handle offers (offsets by time).
    lookup_config: rdkafka::ClientConfig,
    default_partitions: i32,
    default_replication: i32,
    timeout: Duration,
}

impl KafkaAdmin {
    /// Creates the admin client (no network traffic yet).
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        let mut cfg = config.client_config("admin");
        config.apply_properties(&mut cfg);
        let client = cfg
            .create::<AdminClient<DefaultClientContext>>()
            .map_err(|e| errors::from_kafka(&e, None, None))?;
        Ok(Self {
            client: Arc::new(client),
            lookup_config: cfg,
            default_partitions: config.default_partitions,
            default_replication: config.default_replication_factor,
            timeout: Duration::from_millis(config.request_timeout_ms),
        })
    }

    /// Runs a blocking librdkafka call on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&AdminClient<DefaultClientContext>) -> Result<T> + Send + 'static,
    {
        let client = self.client.clone();
        tokio::task::spawn_blocking(move || f(&client))
            .await
            .map_err(errors::from_join)?
    }

    /// Metadata for one topic or all topics, as plain data.
    async fn metadata(&self, topic: Option<String>) -> Result<Vec<TopicMetadataResult>> {
        let timeout = self.timeout;
        self.blocking(move |client| {
            let md = client
                .inner()
                .fetch_metadata(topic.as_deref(), timeout)
                .map_err(|e| errors::from_kafka(&e, topic.as_deref(), None))?;
            Ok(md
                .topics()
                .iter()
                .map(|t| TopicMetadataResult {
                    error: t.error().map(RDKafkaErrorCode::from),
                    metadata: TopicMetadata {
                        name: t.name().to_owned(),
                        partitions: {
                            let mut ps: Vec<_> = t
                                .partitions()
                                .iter()
                                .map(|p| PartitionMetadata {
                                    partition: p.id(),
                                    leader: p.leader(),
                                    replicas: p.replicas().to_vec(),
                                    in_sync_replicas: p.isr().to_vec(),
                                })
                                .collect();
                            ps.sort_by_key(|p| p.partition);
                            ps
                        },
                    },
                })
                .collect())
        })
        .await
    }

    /// Sends one CreateTopics request; a topic that already exists is success.
    async fn create(&self, topic: &str, new_topic: NewTopic<'_>) -> Result<()> {
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = tokio::time::timeout(
            self.timeout * 2,
            self.client.create_topics([&new_topic], &opts),
        )
        .await
        .map_err(|_| errors::timeout(self.timeout * 2))?
        .map_err(|e| errors::from_kafka(&e, Some(topic), None))?;
        let mut created = false;
        for result in results {
            match result {
                Ok(_) => created = true,
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(errors::from_code(code, Some(&name), None)),
            }
        }
        if created {
            self.until_visible(topic).await;
        }
        Ok(())
    }

    /// Waits (briefly) until the broker's metadata shows a topic just created: Apache Kafka's
    /// brokers learn of a new topic from the controller a moment after CreateTopics answered,
    /// and a metadata request in between says "unknown topic". If it takes longer, callers
    /// meet that error and retry as for any other.
    async fn until_visible(&self, topic: &str) {
        let deadline = tokio::time::Instant::now() + self.timeout.min(Duration::from_secs(5));
        while !matches!(self.topic_metadata(topic).await, Ok(md) if !md.partitions.is_empty()) {
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One topic entry of a metadata answer, with its per-topic error.
struct TopicMetadataResult {
    error: Option<RDKafkaErrorCode>,
    metadata: TopicMetadata,
}

#[async_trait]
impl Admin for KafkaAdmin {
    async fn list_topics(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .metadata(None)
            .await?
            .into_iter()
            .filter(|t| t.error.is_none() && !t.metadata.name.starts_with("__"))
            .map(|t| t.metadata.name)
            .collect();
        names.sort();
        Ok(names)
    }

    async fn all_topics(&self) -> Result<Vec<TopicMetadata>> {
        Ok(self
            .metadata(None)
            .await?
            .into_iter()
            .filter(|t| t.error.is_none() && !t.metadata.name.starts_with("__"))
            .map(|t| t.metadata)
            .collect())
    }

    async fn topic_metadata(&self, topic: &str) -> Result<TopicMetadata> {
        barnabas_core::validate_topic_name(topic)?;
        let found = self
            .metadata(Some(topic.to_owned()))
            .await?
            .into_iter()
            .find(|t| t.metadata.name == topic);
        match found {
            Some(TopicMetadataResult {
                error: None,
                metadata,
            }) if !metadata.partitions.is_empty() => Ok(metadata),
            Some(TopicMetadataResult {
                error: Some(code), ..
            }) if code != RDKafkaErrorCode::UnknownTopicOrPartition
                && code != RDKafkaErrorCode::UnknownTopic =>
            {
                Err(errors::from_code(code, Some(topic), None))
            }
            _ => Err(Error::UnknownTopic(topic.to_owned())),
        }
    }

    async fn watermarks(&self, topic: &str, partition: i32) -> Result<Watermarks> {
        let md = self.topic_metadata(topic).await?;
        if !md.partitions.iter().any(|p| p.partition == partition) {
            return Err(Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            });
        }
        let timeout = self.timeout;
        let topic = topic.to_owned();
        self.blocking(move |client| {
            let (low, high) = client
                .inner()
                .fetch_watermarks(&topic, partition, timeout)
                .map_err(|e| errors::from_kafka(&e, Some(&topic), Some(partition)))?;
            Ok(Watermarks { low, high })
        })
        .await
    }

    async fn offset_for_time(&self, topic: &str, partition: i32, timestamp_ms: i64) -> Result<i64> {
        let high = self.watermarks(topic, partition).await?.high;
        let cfg = self.lookup_config.clone();
        let timeout = self.timeout;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let consumer: BaseConsumer = cfg
                .create()
                .map_err(|e| errors::from_kafka(&e, None, None))?;
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(timestamp_ms))
                .map_err(|e| errors::from_kafka(&e, Some(&topic), Some(partition)))?;
            let found = consumer
                .offsets_for_times(tpl, timeout)
                .map_err(|e| errors::from_kafka(&e, Some(&topic), Some(partition)))?;
            match found.find_partition(&topic, partition).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => Ok(o),
                // No record at or after that time: the end.
                Some(rdkafka::Offset::End | rdkafka::Offset::Invalid) | None => Ok(high),
                Some(other) => Err(Error::Unavailable(format!(
                    "offset lookup by time answered {other:?}"
                ))),
            }
        })
        .await
        .map_err(|e| Error::Unavailable(format!("offset lookup task failed: {e}")))?
    }

    async fn create_topic(
        &self,
        topic: &str,
        partitions: Option<i32>,
        replication: Option<i32>,
    ) -> Result<()> {
        barnabas_core::validate_topic_name(topic)?;
        let partitions = partitions.unwrap_or(self.default_partitions);
        if partitions < 1 {
            return Err(Error::Invalid(format!(
                "a topic needs at least one partition, not {partitions}"
            )));
        }
        let replication = replication.unwrap_or(self.default_replication);
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        self.create(topic, new_topic).await?;
        tracing::info!(topic, partitions, replication, "created topic");
        Ok(())
    }

    async fn create_compacted_topic(&self, topic: &str) -> Result<()> {
        barnabas_core::validate_topic_name(topic)?;
        let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(self.default_replication))
            .set("cleanup.policy", "compact");
        self.create(topic, new_topic).await
    }

    async fn ping(&self, timeout: Duration) -> Result<()> {
        self.blocking(move |client| {
            client
                .inner()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| errors::from_kafka(&e, None, None))
        })
        .await
    }
}
