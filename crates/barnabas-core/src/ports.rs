//! The ports front ends use to reach Kafka: publish, consume, administer.
//!
//! They are object-safe traits (`Arc<dyn Publisher>`, `Box<dyn Consumer>`) so the
//! binary decides the implementation once and front ends stay generic over it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{
    ConsumedRecord, Delivered, Record, Result, TopicMetadata, TopicPartition, TopicPartitionOffset,
    Watermarks,
};

/// Whose login a write reaches Kafka with.
#[derive(Debug, Clone, Copy)]
pub enum Identity<'a> {
    /// The gateway's own: its state topics, SSE sources, anything no client stands behind.
    Gateway,
    /// A client's: with identity passthrough the records reach Kafka logged in as this
    /// principal (Kafka's own ACLs apply); otherwise as the gateway, after the gateway's ACLs
    /// allowed the principal the write.
    Client(&'a crate::Principal),
}

/// Writes records to Kafka and reports each one's fate only after the broker acknowledged it.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Writes all records as `identity`, as one pipelined batch, and returns one result per
    /// record in the same order. A record's `Ok` means Kafka acknowledged it (acks=all); an
    /// `Err` means it was not written. Records to the same partition keep their relative
    /// order. Every publisher says what it does with the identity (there is no default that
    /// would drop a client's unnoticed).
    async fn publish(&self, identity: Identity<'_>, records: Vec<Record>)
        -> Vec<Result<Delivered>>;

    /// [`publish`](Self::publish) for the one record most protocol publishes are.
    async fn publish_one(&self, identity: Identity<'_>, record: Record) -> Result<Delivered> {
        let mut results = self.publish(identity, vec![record]).await;
        results
            .pop()
            .unwrap_or_else(|| Err(crate::Error::Invalid("publisher returned no result".into())))
    }

    /// Waits (bounded) until everything handed to the publisher was acknowledged or failed;
    /// used at shutdown so that nothing accepted is dropped on the floor.
    async fn flush(&self, timeout: Duration) -> Result<()>;
}

/// Where a consumer starts when its group has no committed offset for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest record still stored.
    Earliest,
    /// Only records produced from now on.
    #[default]
    Latest,
    /// Fail instead of guessing.
    None,
}

impl OffsetReset {
    /// The librdkafka / Kafka spelling, also what the HTTP API accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
            OffsetReset::None => "none",
        }
    }
}

/// How a consumer session is to be created.
#[derive(Debug, Clone, Default)]
pub struct ConsumerConfig {
    /// Kafka consumer group. Required for commits and subscriptions.
    pub group_id: String,
    /// Start position when the group has no committed offset.
    pub auto_offset_reset: OffsetReset,
    /// Let the Kafka client commit periodically by itself.
    pub enable_auto_commit: bool,
    /// Extra client properties for this consumer only (e.g. `fetch.min.bytes`).
    pub properties: BTreeMap<String, String>,
    /// When true, reading a record does not mark it consumed: the owner calls
    /// [`Consumer::store_offsets`] once the record reached its client. A front end that
    /// reads ahead into a buffer needs this, so that "commit all consumed" (and auto-commit)
    /// covers only what clients actually received.
    pub explicit_offset_store: bool,
    /// The client this consumer reads for. With identity passthrough
    /// (`kafka.identity = "passthrough"`) the consumer logs in to Kafka as this principal, so
    /// Kafka's own ACLs apply to its reads as to its writes; `None` (the gateway's own state
    /// topics) always logs in as the gateway.
    pub principal: Option<crate::Principal>,
}

/// What a consumer subscribes to: the group protocol then assigns partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Exactly these topics.
    Topics(Vec<String>),
    /// Every topic whose name matches this regular expression (now and as topics appear).
    Pattern(String),
}

/// What to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitRequest {
    /// Everything this session has returned from `poll` so far.
    AllConsumed,
    /// Exactly these positions (each the next offset to read).
    Offsets(Vec<TopicPartitionOffset>),
}

/// Where to move a partition's read position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// To this offset (the next record returned has it, if it still exists).
    Offset(i64),
    /// To the oldest stored record.
    Beginning,
    /// To the end: only new records.
    End,
}

/// One Kafka consumer, owned by one front-end client (an HTTP consumer instance, an MQTT
/// subscription, an AMQP receiver link). Methods take `&self` so a session can be shared by
/// the task that polls it and the requests that steer it.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Joins the group's subscription; replaces any previous subscription or assignment.
    async fn subscribe(&self, subscription: Subscription) -> Result<()>;
    /// Reads exactly these partitions, outside the group protocol; replaces any subscription.
    /// Each starts at the group's committed offset (else `auto_offset_reset`).
    async fn assign(&self, partitions: Vec<TopicPartition>) -> Result<()> {
        self.assign_at(partitions.into_iter().map(|tp| (tp, None)).collect())
            .await
    }
    /// Like [`assign`](Self::assign), with an explicit start position per partition
    /// (`None` = committed offset, else `auto_offset_reset`).
    async fn assign_at(&self, partitions: Vec<(TopicPartition, Option<SeekTo>)>) -> Result<()>;
    /// Drops the subscription or assignment.
    async fn unsubscribe(&self) -> Result<()>;
    /// The current subscription, if any.
    fn subscription(&self) -> Option<Subscription>;
    /// The partitions currently assigned to this session.
    async fn assignment(&self) -> Result<Vec<TopicPartition>>;
    /// Waits up to `timeout` for records and returns at most `max_records`, returning as soon
    /// as at least one is there (after draining what is already buffered).
    async fn poll(&self, max_records: usize, timeout: Duration) -> Result<Vec<ConsumedRecord>>;
    /// Commits offsets to the group, synchronously (returns once the broker stored them).
    async fn commit(&self, request: CommitRequest) -> Result<()>;
    /// The group's committed offsets for the assigned partitions (`None` = nothing committed).
    async fn committed(&self) -> Result<Vec<(TopicPartition, Option<i64>)>>;
    /// The group's committed offsets for any partitions, assigned or not (`None` = nothing
    /// committed); lets an owner that assigns partitions itself resume where the group was.
    async fn committed_offsets(
        &self,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<(TopicPartition, Option<i64>)>>;
    /// Moves the read position of assigned partitions.
    async fn seek(&self, positions: Vec<(TopicPartition, SeekTo)>) -> Result<()>;
    /// Next offset to read for each assigned partition (`None` = not yet known).
    async fn positions(&self) -> Result<Vec<(TopicPartition, Option<i64>)>>;
    /// Marks records as consumed up to these positions (each the next offset to read), for
    /// `CommitRequest::AllConsumed` and auto-commit. Only meaningful with
    /// `ConsumerConfig::explicit_offset_store`.
    fn store_offsets(&self, offsets: &[TopicPartitionOffset]) -> Result<()>;
    /// Stops fetching these partitions while keeping them assigned (back-pressure that does
    /// not stall the group: the session keeps taking part in rebalances).
    async fn pause(&self, partitions: Vec<TopicPartition>) -> Result<()>;
    /// Resumes fetching paused partitions from where reading stopped.
    async fn resume(&self, partitions: Vec<TopicPartition>) -> Result<()>;
    /// A counter bumped on every group rebalance event (assignment or revocation), so an
    /// owner that buffers records can tell that its buffered records may belong to another
    /// member now.
    fn rebalance_generation(&self) -> u64;
    /// Leaves the group cleanly (so partitions move at once, not after a session timeout).
    async fn close(&self) -> Result<()>;
}

/// Makes consumer sessions; the binary owns one and hands it to front ends.
#[async_trait]
pub trait ConsumerFactory: Send + Sync {
    /// A new consumer with its own Kafka client.
    async fn create(&self, config: ConsumerConfig) -> Result<Arc<dyn Consumer>>;

    /// Waits (bounded) until every consumer made by this factory has left its group and
    /// released its client; `false` if some were still closing at the deadline. Shutdown calls
    /// it before stopping an embedded broker, which closing consumers still need.
    async fn drain(&self, timeout: Duration) -> bool;
}

/// Cluster metadata and topic management.
#[async_trait]
pub trait Admin: Send + Sync {
    /// Names of all topics, sorted, internal ones (`__…`) left out.
    async fn list_topics(&self) -> Result<Vec<String>>;
    /// One topic's partitions; `Error::UnknownTopic` if it does not exist.
    async fn topic_metadata(&self, topic: &str) -> Result<TopicMetadata>;
    /// Every topic with its partitions, internal ones left out; one request where the
    /// implementation can (subscriptions follow the cluster's topic list with it).
    async fn all_topics(&self) -> Result<Vec<TopicMetadata>> {
        let mut out = Vec::new();
        for name in self.list_topics().await? {
            match self.topic_metadata(&name).await {
                Ok(md) => out.push(md),
                Err(crate::Error::UnknownTopic(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
    /// Low and high watermark of one partition.
    async fn watermarks(&self, topic: &str, partition: i32) -> Result<Watermarks>;
    /// The first offset of a partition whose record timestamp is at or after `timestamp_ms`
    /// (the high watermark when every record is older). Not every adapter can look it up.
    async fn offset_for_time(&self, topic: &str, partition: i32, timestamp_ms: i64) -> Result<i64> {
        let _ = (topic, partition, timestamp_ms);
        Err(crate::Error::Unavailable(
            "this Kafka adapter cannot look offsets up by time".into(),
        ))
    }
    /// Creates a topic; `partitions`/`replication` of `None` use the configured defaults.
    /// Creating a topic that already exists is not an error.
    async fn create_topic(
        &self,
        topic: &str,
        partitions: Option<i32>,
        replication: Option<i32>,
    ) -> Result<()>;
    /// Creates a one-partition topic with `cleanup.policy=compact`, for gateway state kept by
    /// key (see [`crate::KeyedLog`]). One that already exists is not an error.
    async fn create_compacted_topic(&self, topic: &str) -> Result<()>;
    /// Asks the cluster for metadata; `Ok` means Kafka answered. Drives readiness.
    async fn ping(&self, timeout: Duration) -> Result<()>;
}

/// Everything a front end needs from Kafka, handed out once by the binary. Cloning is cheap.
#[derive(Clone)]
pub struct Backend {
    /// The process-wide producer.
    pub publisher: Arc<dyn Publisher>,
    /// Makes consumer sessions.
    pub consumers: Arc<dyn ConsumerFactory>,
    /// Metadata and topic management.
    pub admin: Arc<dyn Admin>,
}
