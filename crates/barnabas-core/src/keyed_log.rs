//! Shared gateway state in a compacted Kafka topic, followed by every replica.
//!
//! Several gateway processes behind one load balancer must agree on state a client expects to
//! find wherever it reconnects (MQTT persistent sessions, retained messages). Kafka already is
//! the shared, durable, ordered store, so each piece of state is a keyed record in a compacted
//! topic: the latest record of a key is its value, an empty value deletes it. Every replica
//! reads the topic from its beginning at start and then follows it, applying each record in log
//! order, so all replicas converge on the same state, and a restart rebuilds it.
//!
//! A write returns once Kafka acknowledged it; every replica, this one included, applies it
//! when the follower reads it. [`KeyedLog::caught_up`] waits until this replica has applied
//! everything written so far, by any replica.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Backend, ConsumerConfig, Error, OffsetReset, Record, Result, SeekTo, TopicPartition};

/// Applies one record of the log to the caller's state: key, value (`None` = deleted), and
/// the record's offset. A key always lands in the same partition, so a caller that also
/// updates its state at once from its own writes ([`KeyedLog::put`] returns their offset) can
/// tell an older record of a key, still on its way through the follower, from a newer one.
pub type Apply = Box<dyn Fn(&str, Option<&Bytes>, i64) + Send + Sync>;

/// One compacted topic followed from its beginning. Cheap to share behind an `Arc`.
pub struct KeyedLog {
    topic: String,
    backend: Backend,
    /// Next offset to apply, per partition (absent until the follower started).
    applied: watch::Sender<HashMap<i32, i64>>,
    /// The partitions the follower reads, once it has assigned them (`None` before, and
    /// while it restarts after an error).
    following: watch::Sender<Option<Vec<i32>>>,
    /// The last catch-up round: when it read the high watermarks, and whether this replica
    /// reached them. Held while a round runs, so concurrent callers share rounds.
    last_round: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

/// How long the follower waits between attempts while Kafka does not answer.
const RETRY: Duration = Duration::from_secs(1);

impl KeyedLog {
    /// Starts following `topic` (created compacted if missing) and applying its records with
    /// `apply`, until `shutdown`. Never fails: while Kafka is away the follower retries, and
    /// [`caught_up`](Self::caught_up) answers `false`.
    pub fn follow(
        backend: Backend,
        topic: &str,
        apply: Apply,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let log = Arc::new(Self {
            topic: topic.to_owned(),
            backend,
            applied: watch::channel(HashMap::new()).0,
            following: watch::channel(None).0,
            last_round: tokio::sync::Mutex::new(None),
        });
        let follower = log.clone();
        tokio::spawn(async move {
            loop {
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = follower.run(&apply, &shutdown) => r,
                };
                match outcome {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(topic = %follower.topic, error = %e, "following a state topic failed; retrying");
                        follower.following.send_replace(None);
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(RETRY) => {}
                        }
                    }
                }
            }
        });
        log
    }

    async fn run(&self, apply: &Apply, shutdown: &CancellationToken) -> Result<()> {
        let admin = &self.backend.admin;
        admin.create_compacted_topic(&self.topic).await?;
        let metadata = admin.topic_metadata(&self.topic).await?;
        let partitions: Vec<i32> = metadata.partitions.iter().map(|p| p.partition).collect();
        let session = self
            .backend
            .consumers
            .create(ConsumerConfig {
                // Never commits: every start reads the whole log again.
                group_id: format!("barnabas.follow.{}", follower_id()),
                auto_offset_reset: OffsetReset::Earliest,
                enable_auto_commit: false,
                properties: [("fetch.wait.max.ms".to_owned(), "50".to_owned())].into(),
                explicit_offset_store: false,
                // The gateway's own state: its own Kafka identity.
                principal: None,
            })
            .await?;
        session
            .assign_at(
                partitions
                    .iter()
                    .map(|p| {
                        (
                            TopicPartition::new(&self.topic, *p),
                            Some(SeekTo::Beginning),
                        )
                    })
                    .collect(),
            )
            .await?;
        self.applied.send_replace(HashMap::new());
        self.following.send_replace(Some(partitions));
        while !shutdown.is_cancelled() {
            let records = session.poll(1000, Duration::from_millis(200)).await?;
            if records.is_empty() {
                continue;
            }
            for r in &records {
                match r.key.as_deref().map(std::str::from_utf8) {
                    Some(Ok(key)) => {
                        apply(key, r.value.as_ref().filter(|v| !v.is_empty()), r.offset);
                    }
                    _ => {
                        tracing::debug!(topic = %self.topic, offset = r.offset, "state record without a UTF-8 key; skipped")
                    }
                }
            }
            self.applied.send_modify(|applied| {
                for r in &records {
                    applied.insert(r.partition, r.offset + 1);
                }
            });
        }
        let _ = session.close().await;
        Ok(())
    }

    /// Writes `key` = `value` (`None` deletes it); returns its offset once Kafka acknowledged
    /// it, or an error after `timeout`. Every replica (this one included) applies it when it
    /// arrives.
    pub async fn put(&self, key: &str, value: Option<Vec<u8>>, timeout: Duration) -> Result<i64> {
        let record = Record {
            topic: self.topic.clone(),
            partition: None,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(Bytes::from),
            headers: Vec::new(),
            timestamp: None,
        };
        match tokio::time::timeout(
            timeout,
            self.backend
                .publisher
                .publish_one(crate::Identity::Gateway, record),
        )
        .await
        {
            Ok(delivered) => delivered.map(|d| d.offset),
            Err(_) => Err(Error::Unavailable(format!(
                "Kafka did not acknowledge the write to {} within {timeout:?}",
                self.topic
            ))),
        }
    }

    /// Waits until this replica applied everything written to the log so far, by any replica
    /// (bounded by `timeout`). `false` when it could not get there in time, or Kafka does not
    /// answer: the caller then works with what it has.
    ///
    /// Concurrent callers share the work (a reconnect storm asks this once per CONNECT, and a
    /// watermark query per caller made every CONNECT wait behind the others' queries, issue
    /// 26): one round at a time reads the high watermarks and waits for the follower to reach
    /// them, and a caller takes the answer of the first round that *started* after it called
    /// — that round saw every write that completed before the call — running one itself when
    /// none has.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        let called = Instant::now();
        let work = async {
            let mut last = self.last_round.lock().await;
            if let Some((started, reached)) = *last {
                if started >= called {
                    return reached;
                }
            }
            let started = Instant::now();
            let reached = self.catch_up_round().await;
            *last = Some((started, reached));
            reached
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(false)
    }

    /// One catch-up round: reads each followed partition's high watermark, then waits until
    /// the follower applied up to it.
    async fn catch_up_round(&self) -> bool {
        let mut following = self.following.subscribe();
        let Ok(partitions) = following.wait_for(Option::is_some).await.map(|p| p.clone()) else {
            return false;
        };
        let mut targets = Vec::new();
        for p in partitions.unwrap_or_default() {
            match self.backend.admin.watermarks(&self.topic, p).await {
                Ok(w) => targets.push((p, w.high)),
                Err(_) => return false,
            }
        }
        // Each partition's next offset to apply has reached its high watermark.
        let reached = |applied: &HashMap<i32, i64>| {
            targets
                .iter()
                .all(|(p, high)| *high <= 0 || applied.get(p).is_some_and(|at| at >= high))
        };
        self.applied.subscribe().wait_for(reached).await.is_ok()
    }
}

/// A group id no other follower uses (the group is never joined or committed).
fn follower_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}
