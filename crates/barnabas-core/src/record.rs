//! Records as they travel between a front end and Kafka, and the metadata about where they live.

use bytes::Bytes;

/// One Kafka record header. Kafka allows a header without a value, and allows the same key
/// more than once, so headers are an ordered list of these rather than a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (Kafka: a UTF-8 string).
    pub key: String,
    /// Header value; `None` is Kafka's null header value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value, the common case for headers the gateway writes itself.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// A record a front end wants written to Kafka.
///
/// `value` is optional because Kafka's null value (a tombstone) is meaningful: compacted topics
/// use it to delete a key, and MQTT clears a retained message with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Kafka topic to write to.
    pub topic: String,
    /// Explicit partition; `None` lets the producer's partitioner choose (by key hash).
    pub partition: Option<i32>,
    /// Record key; drives partitioning and compaction.
    pub key: Option<Bytes>,
    /// Record value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Record headers, in order.
    pub headers: Vec<Header>,
    /// Create time in milliseconds since the Unix epoch; `None` = the time of the send.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with just a topic and a value: what most protocol publishes start as.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// Builder-style setter for the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Builder-style setter for the partition.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Builder-style append of one header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Size of the record's payload as the size limits count it: key + value + headers.
    pub fn payload_size(&self) -> usize {
        let opt = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        opt(&self.key)
            + opt(&self.value)
            + self
                .headers
                .iter()
                .map(|h| h.key.len() + opt(&h.value))
                .sum::<usize>()
    }
}

/// Where Kafka stored a record, known only once the broker acknowledged it. A front end
/// acknowledges its client only when it holds one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition the record landed in.
    pub partition: i32,
    /// Offset of the record in that partition.
    pub offset: i64,
    /// Timestamp of the record as stored, if the broker reported one.
    pub timestamp: Option<i64>,
}

/// A record read from Kafka, with everything every protocol exposes on delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its timestamp (create or log-append time), if any.
    pub timestamp: Option<i64>,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its value (`None` for a tombstone).
    pub value: Option<Bytes>,
    /// Its headers.
    pub headers: Vec<Header>,
}

impl ConsumedRecord {
    /// The first header with this key, if any, as raw bytes.
    pub fn header(&self, key: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value.as_ref())
    }
}

/// A topic and partition, the unit of assignment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// Shorthand constructor.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// A position in a partition: the next offset to read, or the offset to commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartitionOffset {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Offset; for commits and positions this is the *next* offset to read, as in Kafka.
    pub offset: i64,
}

/// Low and high watermarks of a partition: the first offset still stored and the offset the
/// next record will get. `high - low` is how many records the partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// First offset still available.
    pub low: i64,
    /// Offset the next produced record will get (log end offset).
    pub high: i64,
}

/// What the cluster says about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition number.
    pub partition: i32,
    /// Broker id of the leader (-1 when leaderless).
    pub leader: i32,
    /// Broker ids holding replicas.
    pub replicas: Vec<i32>,
    /// Broker ids of the in-sync replicas.
    pub in_sync_replicas: Vec<i32>,
}

/// What the cluster says about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Its partitions, ordered by partition number.
    pub partitions: Vec<PartitionMetadata>,
}
