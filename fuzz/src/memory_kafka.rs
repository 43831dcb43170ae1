//! A tiny in-memory stand-in for Kafka behind barnabas-core's ports, **for fuzzing only**:
//! a fuzz target runs thousands of sessions a second, which a real broker cannot serve, and
//! what is fuzzed is the protocol session in front of the ports, not Kafka. Integration tests
//! never use this (they run the embedded tansu broker).
//!
//! One partition per topic; a publish appends and acknowledges at once; a consumer session
//! reads a subscribed topic from the start or the end and returns what was appended since.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use barnabas_core::{
    Admin, Backend, CommitRequest, ConsumedRecord, ConsumerConfig, ConsumerFactory,
    Consumer, Delivered, Error, OffsetReset, PartitionMetadata, Publisher, Record, Result,
    SeekTo, Subscription, TopicMetadata, TopicPartition, TopicPartitionOffset, Watermarks,
};

/// Every topic's records, in order.
#[derive(Default)]
struct Log {
    topics: Mutex<BTreeMap<String, Vec<ConsumedRecord>>>,
}

impl Log {
    fn topics(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<ConsumedRecord>>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end(&self, topic: &str) -> i64 {
        self.topics().get(topic).map_or(0, |r| r.len() as i64)
    }
}

/// The backend: publisher, consumer factory and admin over one shared log.
pub fn backend() -> Backend {
    let log = Arc::new(Log::default());
    Backend {
        publisher: Arc::new(MemoryPublisher(log.clone())),
        consumers: Arc::new(MemoryConsumers(log.clone())),
        admin: Arc::new(MemoryAdmin(log)),
    }
}

struct MemoryPublisher(Arc<Log>);

#[async_trait]
impl Publisher for MemoryPublisher {
    /// One in-memory log for everyone: the fuzzed front ends' principals do not matter here.
    async fn publish(
        &self,
        _identity: barnabas_core::Identity<'_>,
        records: Vec<Record>,
    ) -> Vec<Result<Delivered>> {
        let mut topics = self.0.topics();
        records
            .into_iter()
            .map(|r| {
                barnabas_core::validate_topic_name(&r.topic)?;
                let log = topics.entry(r.topic.clone()).or_default();
                let offset = log.len() as i64;
                log.push(ConsumedRecord {
                    topic: r.topic,
                    partition: 0,
                    offset,
                    timestamp: r.timestamp.or(Some(0)),
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
                Ok(Delivered {
                    partition: 0,
                    offset,
                    timestamp: Some(0),
                })
            })
            .collect()
    }

    async fn flush(&self, _timeout: Duration) -> Result<()> {
        Ok(())
    }
}

struct MemoryConsumers(Arc<Log>);

#[async_trait]
impl ConsumerFactory for MemoryConsumers {
    async fn create(&self, config: ConsumerConfig) -> Result<Arc<dyn Consumer>> {
        Ok(Arc::new(MemoryConsumer {
            log: self.0.clone(),
            reset: config.auto_offset_reset,
            state: Mutex::default(),
        }))
    }

    async fn drain(&self, _timeout: Duration) -> bool {
        true
    }
}

#[derive(Default)]
struct SessionState {
    subscription: Option<Subscription>,
    /// Next offset to read, per assigned topic (partition 0).
    positions: HashMap<String, i64>,
    committed: HashMap<String, i64>,
    closed: bool,
}

struct MemoryConsumer {
    log: Arc<Log>,
    reset: OffsetReset,
    state: Mutex<SessionState>,
}

impl MemoryConsumer {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, SessionState>> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.closed {
            return Err(Error::IllegalState("consumer is closed".into()));
        }
        Ok(s)
    }

    fn start(&self, topic: &str) -> i64 {
        match self.reset {
            OffsetReset::Earliest => 0,
            _ => self.log.end(topic),
        }
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn subscribe(&self, subscription: Subscription) -> Result<()> {
        let topics = match &subscription {
            Subscription::Topics(t) => t.clone(),
            // Patterns read nothing here: the session code around them is what is fuzzed.
            Subscription::Pattern(_) => Vec::new(),
        };
        let starts: Vec<(String, i64)> =
            topics.iter().map(|t| (t.clone(), self.start(t))).collect();
        let mut s = self.state()?;
        s.positions = starts.into_iter().collect();
        s.subscription = Some(subscription);
        Ok(())
    }

    async fn assign_at(&self, partitions: Vec<(TopicPartition, Option<SeekTo>)>) -> Result<()> {
        let starts: Vec<(String, i64)> = partitions
            .iter()
            .map(|(tp, seek)| {
                let at = match seek {
                    Some(SeekTo::Offset(o)) => *o,
                    Some(SeekTo::Beginning) => 0,
                    Some(SeekTo::End) => self.log.end(&tp.topic),
                    None => self.start(&tp.topic),
                };
                (tp.topic.clone(), at)
            })
            .collect();
        let mut s = self.state()?;
        s.positions = starts.into_iter().collect();
        s.subscription = None;
        Ok(())
    }

    async fn unsubscribe(&self) -> Result<()> {
        let mut s = self.state()?;
        s.positions.clear();
        s.subscription = None;
        Ok(())
    }

    fn subscription(&self) -> Option<Subscription> {
        self.state().ok().and_then(|s| s.subscription.clone())
    }

    async fn assignment(&self) -> Result<Vec<TopicPartition>> {
        Ok(self
            .state()?
            .positions
            .keys()
            .map(|t| TopicPartition::new(t, 0))
            .collect())
    }

    async fn poll(&self, max_records: usize, timeout: Duration) -> Result<Vec<ConsumedRecord>> {
        let out = {
            let mut s = self.state()?;
            let topics = self.log.topics();
            let mut out = Vec::new();
            for (topic, at) in s.positions.iter_mut() {
                if let Some(records) = topics.get(topic) {
                    let from = usize::try_from(*at).unwrap_or(0).min(records.len());
                    let take = (records.len() - from).min(max_records.saturating_sub(out.len()));
                    out.extend_from_slice(&records[from..from + take]);
                    *at = (from + take) as i64;
                }
            }
            out
        };
        if out.is_empty() {
            tokio::time::sleep(timeout).await;
        }
        Ok(out)
    }

    async fn commit(&self, request: CommitRequest) -> Result<()> {
        let mut s = self.state()?;
        match request {
            CommitRequest::AllConsumed => {
                let positions = s.positions.clone();
                s.committed.extend(positions);
            }
            CommitRequest::Offsets(offsets) => {
                for o in offsets {
                    s.committed.insert(o.topic, o.offset);
                }
            }
        }
        Ok(())
    }

    async fn committed(&self) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        let s = self.state()?;
        Ok(s.positions
            .keys()
            .map(|t| (TopicPartition::new(t, 0), s.committed.get(t).copied()))
            .collect())
    }

    async fn committed_offsets(
        &self,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        let s = self.state()?;
        Ok(partitions
            .into_iter()
            .map(|tp| {
                let c = s.committed.get(&tp.topic).copied();
                (tp, c)
            })
            .collect())
    }

    async fn seek(&self, positions: Vec<(TopicPartition, SeekTo)>) -> Result<()> {
        let ends: Vec<(String, SeekTo, i64)> = positions
            .into_iter()
            .map(|(tp, to)| {
                let end = self.log.end(&tp.topic);
                (tp.topic, to, end)
            })
            .collect();
        let mut s = self.state()?;
        for (topic, to, end) in ends {
            let at = match to {
                SeekTo::Offset(o) => o,
                SeekTo::Beginning => 0,
                SeekTo::End => end,
            };
            s.positions.insert(topic, at);
        }
        Ok(())
    }

    async fn positions(&self) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        Ok(self
            .state()?
            .positions
            .iter()
            .map(|(t, at)| (TopicPartition::new(t, 0), Some(*at)))
            .collect())
    }

    fn store_offsets(&self, _offsets: &[TopicPartitionOffset]) -> Result<()> {
        Ok(())
    }

    async fn pause(&self, _partitions: Vec<TopicPartition>) -> Result<()> {
        Ok(())
    }

    async fn resume(&self, _partitions: Vec<TopicPartition>) -> Result<()> {
        Ok(())
    }

    fn rebalance_generation(&self) -> u64 {
        0
    }

    async fn close(&self) -> Result<()> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        Ok(())
    }
}

struct MemoryAdmin(Arc<Log>);

#[async_trait]
impl Admin for MemoryAdmin {
    async fn list_topics(&self) -> Result<Vec<String>> {
        Ok(self.0.topics().keys().cloned().collect())
    }

    async fn topic_metadata(&self, topic: &str) -> Result<TopicMetadata> {
        if !self.0.topics().contains_key(topic) {
            return Err(Error::UnknownTopic(topic.to_owned()));
        }
        Ok(TopicMetadata {
            name: topic.to_owned(),
            partitions: vec![PartitionMetadata {
                partition: 0,
                leader: 1,
                replicas: vec![1],
                in_sync_replicas: vec![1],
            }],
        })
    }

    async fn watermarks(&self, topic: &str, _partition: i32) -> Result<Watermarks> {
        Ok(Watermarks {
            low: 0,
            high: self.0.end(topic),
        })
    }

    async fn create_topic(
        &self,
        topic: &str,
        _partitions: Option<i32>,
        _replication: Option<i32>,
    ) -> Result<()> {
        barnabas_core::validate_topic_name(topic)?;
        self.0.topics().entry(topic.to_owned()).or_default();
        Ok(())
    }

    async fn create_compacted_topic(&self, topic: &str) -> Result<()> {
        self.create_topic(topic, None, None).await
    }

    async fn ping(&self, _timeout: Duration) -> Result<()> {
        Ok(())
    }
}
