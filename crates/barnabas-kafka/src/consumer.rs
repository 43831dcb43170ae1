//! Consumer sessions: one librdkafka consumer per front-end client.
//!
//! Calls that block inside librdkafka (commit, committed, seek) run on tokio's blocking pool;
//! polling uses the stream consumer's async receive, so a long-poll holds no thread. The close
//! (leaving the group) happens on a thread of its own, whoever lets go of the client last.

use std::{
    ops::Deref,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use barnabas_core::{
    CommitRequest, ConsumedRecord, ConsumerConfig, ConsumerFactory, Error, Header, Result, SeekTo,
    Subscription, TopicPartition, TopicPartitionOffset,
};
use bytes::Bytes;
use futures::FutureExt;
use rdkafka::{
    client::ClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers, Message},
    types::RDKafkaErrorCode,
    Offset, TopicPartitionList,
};

use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

use crate::{errors, KafkaConfig};

/// Makes [`KafkaConsumer`]s with the gateway's connection settings (with identity
/// passthrough, a client's consumer logs in as the client), and keeps count of the ones whose
/// Kafka client still exists.
pub struct KafkaConsumerFactory {
    config: KafkaConfig,
    live: TaskTracker,
}

impl KafkaConsumerFactory {
    /// A factory using the `[kafka]` section for every consumer it makes.
    pub fn new(config: &KafkaConfig) -> Self {
        Self {
            config: config.clone(),
            live: TaskTracker::new(),
        }
    }
}

#[async_trait]
impl ConsumerFactory for KafkaConsumerFactory {
    async fn create(&self, config: ConsumerConfig) -> Result<Arc<dyn barnabas_core::Consumer>> {
        let logged_in;
        let kafka = match &config.principal {
            Some(principal) if self.config.passthrough() => {
                let secret = crate::passthrough::kafka_login(principal)?;
                logged_in = self.config.logged_in_as(&principal.name, secret);
                &logged_in
            }
            _ => &self.config,
        };
        let session = KafkaConsumer::new(kafka, config, self.live.token())?;
        Ok(Arc::new(session))
    }

    async fn drain(&self, timeout: Duration) -> bool {
        self.live.close();
        let drained = tokio::time::timeout(timeout, self.live.wait())
            .await
            .is_ok();
        self.live.reopen();
        drained
    }
}

/// librdkafka callbacks of one consumer: counts rebalances so the owner can react to them, and
/// keeps a refused login, which librdkafka only reports to this callback (its fetches then
/// just never return anything), so that polls can answer it.
#[derive(Default)]
pub struct SessionContext {
    generation: AtomicU64,
    login_refused: Mutex<Option<String>>,
}

impl SessionContext {
    fn login_refused(&self) -> Option<String> {
        self.login_refused.lock().ok().and_then(|r| r.clone())
    }
}

impl ClientContext for SessionContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let refused = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
        );
        if refused {
            tracing::warn!(error = %error, reason, "Kafka refused a consumer's login");
            if let Ok(mut slot) = self.login_refused.lock() {
                *slot = Some(reason.to_owned());
            }
        } else {
            // As librdkafka's default callback reports it (which this one replaces).
            tracing::warn!(error = %error, reason, "Kafka consumer error");
        }
    }
}

impl ConsumerContext for SessionContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::debug!(partitions = tpl.count(), "partitions revoked");
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::debug!(partitions = tpl.count(), "partitions assigned");
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// The librdkafka consumer of one session. Dropping the last handle closes it (leaves the
/// group), which blocks with no deadline of its own — with the broker gone it can wait
/// forever. Handles are held by the session and, for the length of one call, by a poll or a
/// blocking call, so the last one can go anywhere: on a runtime worker, on the blocking pool, or
/// while a runtime shuts down, which waits for every one of its threads. So the close always
/// runs on a detached thread of its own ([`Drop`] below): an endless close never keeps a
/// runtime, the process or a test from ending.
struct Inner {
    consumer: Option<StreamConsumer<SessionContext>>,
    /// Held until the Kafka client is destroyed, so the factory can wait for it.
    live: Option<TaskTrackerToken>,
    /// Told once the client is closed (see [`KafkaConsumer::close`]).
    closed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Deref for Inner {
    type Target = StreamConsumer<SessionContext>;

    fn deref(&self) -> &Self::Target {
        // Only `drop` takes it out.
        self.consumer
            .as_ref()
            .unwrap_or_else(|| unreachable!("consumer used after drop"))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let consumer = self.consumer.take();
        let live = self.live.take();
        let closed = self.closed.take();
        let spawned = std::thread::Builder::new()
            .name("barnabas-consumer-close".into())
            .spawn(move || {
                drop(consumer);
                drop(live);
                if let Some(closed) = closed {
                    let _ = closed.send(());
                }
            });
        // Without a thread the closure, and with it the client, is dropped right here.
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to close a consumer on; closing it in place");
        }
    }
}

/// How long a consumer may take to leave its group when closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One Kafka consumer (one group member).
pub struct KafkaConsumer {
    consumer: Mutex<Option<Arc<Inner>>>,
    /// Resolves once the client is closed.
    closed: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    subscription: Mutex<Option<Subscription>>,
    timeout: Duration,
}

impl KafkaConsumer {
    /// Creates the consumer (it joins its group only on `subscribe`), holding `live` until its
    /// Kafka client is destroyed. Made by [`KafkaConsumerFactory`], which counts them.
    fn new(kafka: &KafkaConfig, config: ConsumerConfig, live: TaskTrackerToken) -> Result<Self> {
        if config.group_id.is_empty() {
            return Err(Error::Invalid("a consumer needs a group id".into()));
        }
        let mut cfg = kafka.client_config("consumer");
        // librdkafka prefetches up to 64 MiB per consumer by default; a gateway holds one
        // consumer per subscribing client, and a client that stops reading must not pin that
        // much memory each. 4 MiB keeps fetches pipelined (the consumer driver's bounded
        // read-ahead comes on top). A pass-through property still overrides it.
        cfg.set("queued.max.messages.kbytes", "4096");
        kafka.apply_properties(&mut cfg);
        // Producer-only pass-through properties would only produce warnings here.
        for key in [
            "acks",
            "enable.idempotence",
            "linger.ms",
            "compression.type",
            "message.timeout.ms",
        ] {
            cfg.remove(key);
        }
        cfg.set("group.id", &config.group_id)
            .set("auto.offset.reset", config.auto_offset_reset.as_str())
            .set("enable.auto.commit", config.enable_auto_commit.to_string())
            .set("enable.partition.eof", "false")
            .set(
                "enable.auto.offset.store",
                (!config.explicit_offset_store).to_string(),
            );
        // With KIP-848's protocol (`group.protocol = "consumer"` among the pass-through
        // properties) the broker owns session timeouts, heartbeats and assignment, and
        // librdkafka refuses a consumer that sets them: the front ends' own defaults for the
        // classic protocol (HTTP instances set `session.timeout.ms`) are left out.
        let kip848 = cfg.get("group.protocol") == Some("consumer");
        for (k, v) in &config.properties {
            if kip848 && CLASSIC_GROUP_ONLY.contains(&k.as_str()) {
                tracing::debug!(property = %k, "not set: the broker owns it under group.protocol=consumer");
                continue;
            }
            cfg.set(k, v);
        }
        let consumer: StreamConsumer<SessionContext> = cfg
            .create_with_context(SessionContext::default())
            .map_err(|e| errors::from_kafka(&e, None, None))?;
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let inner = Inner {
            consumer: Some(consumer),
            live: Some(live),
            closed: Some(closed_tx),
        };
        Ok(Self {
            consumer: Mutex::new(Some(Arc::new(inner))),
            closed: Mutex::new(Some(closed_rx)),
            subscription: Mutex::new(None),
            timeout: Duration::from_millis(kafka.request_timeout_ms),
        })
    }

    fn consumer(&self) -> Result<Arc<Inner>> {
        self.consumer
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| Error::IllegalState("consumer is closed".into()))
    }

    /// Runs a blocking librdkafka call on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let consumer = self.consumer()?;
        tokio::task::spawn_blocking(move || f(&consumer))
            .await
            .map_err(errors::from_join)?
    }

    fn set_subscription(&self, s: Option<Subscription>) {
        if let Ok(mut guard) = self.subscription.lock() {
            *guard = s;
        }
    }
}

/// A commit the group coordinator refused only for now: it is loading the group, has moved, or
/// is not elected yet (a broker that just started).
fn coordinator_not_ready(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
    )
}

/// librdkafka treats a topic starting with `^` as a regex matched anywhere; Kafka's Java
/// client (and so Strimzi's `topic_pattern`) matches the whole name. Anchor both ends.
fn anchored(pattern: &str) -> String {
    let inner = pattern.strip_prefix('^').unwrap_or(pattern);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    format!("^({inner})$")
}

fn to_list(partitions: &[TopicPartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    tpl
}

/// A partition list carrying an offset per partition.
fn list_at<'a>(
    items: impl IntoIterator<Item = (&'a str, i32, Offset)>,
) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in items {
        tpl.add_partition_offset(topic, partition, offset)
            .map_err(|e| errors::from_kafka(&e, Some(topic), Some(partition)))?;
    }
    Ok(tpl)
}

/// Commit/store positions as a partition list.
fn offsets_list(offsets: &[TopicPartitionOffset]) -> Result<TopicPartitionList> {
    list_at(
        offsets
            .iter()
            .map(|o| (o.topic.as_str(), o.partition, Offset::Offset(o.offset))),
    )
}

fn seek_offset(to: SeekTo) -> Offset {
    match to {
        SeekTo::Offset(n) => Offset::Offset(n),
        SeekTo::Beginning => Offset::Beginning,
        SeekTo::End => Offset::End,
    }
}

fn offset_value(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(n) => Some(n),
        _ => None,
    }
}

fn list_offsets(tpl: &TopicPartitionList) -> Vec<(TopicPartition, Option<i64>)> {
    tpl.elements()
        .iter()
        .map(|e| {
            (
                TopicPartition::new(e.topic(), e.partition()),
                offset_value(e.offset()),
            )
        })
        .collect()
}

fn to_record(m: &BorrowedMessage<'_>) -> ConsumedRecord {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key.to_owned(),
                    value: h.value.map(Bytes::copy_from_slice),
                })
                .collect()
        })
        .unwrap_or_default();
    ConsumedRecord {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key().map(Bytes::copy_from_slice),
        value: m.payload().map(Bytes::copy_from_slice),
        headers,
    }
}

/// Consumer properties of the classic group protocol that KIP-848's protocol defines broker
/// side (librdkafka refuses them with `group.protocol=consumer`).
const CLASSIC_GROUP_ONLY: [&str; 4] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

/// Errors met while fetching that do not end a poll: a subscribed topic that does not exist
/// yet (it is picked up when it appears), a broker that is briefly away (librdkafka retries).
fn is_transient(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::PartitionEOF
                // Kafka's retriable errors, which librdkafka retries by itself: a fresh
                // Apache Kafka answers NOT_COORDINATOR until it has loaded
                // __consumer_offsets, and leaders move during a rolling restart.
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::FencedLeaderEpoch
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::KafkaStorageError
                | RDKafkaErrorCode::RebalanceInProgress
        )
    ) || err.rdkafka_error_code().is_some_and(coordinator_not_ready)
}

#[async_trait]
impl barnabas_core::Consumer for KafkaConsumer {
    async fn subscribe(&self, subscription: Subscription) -> Result<()> {
        let topics: Vec<String> = match &subscription {
            Subscription::Topics(ts) => {
                for t in ts {
                    barnabas_core::validate_topic_name(t)?;
                }
                ts.clone()
            }
            Subscription::Pattern(p) => vec![anchored(p)],
        };
        if topics.is_empty() {
            return Err(Error::Invalid("subscription names no topic".into()));
        }
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer()?
            .subscribe(&refs)
            .map_err(|e| errors::from_kafka(&e, None, None))?;
        self.set_subscription(Some(subscription));
        Ok(())
    }

    async fn assign_at(&self, partitions: Vec<(TopicPartition, Option<SeekTo>)>) -> Result<()> {
        for (tp, _) in &partitions {
            barnabas_core::validate_topic_name(&tp.topic)?;
        }
        let tpl = list_at(partitions.iter().map(|(tp, start)| {
            (
                tp.topic.as_str(),
                tp.partition,
                start.map_or(Offset::Invalid, seek_offset),
            )
        }))?;
        let consumer = self.consumer()?;
        consumer.unsubscribe();
        consumer
            .assign(&tpl)
            .map_err(|e| errors::from_kafka(&e, None, None))?;
        self.set_subscription(None);
        Ok(())
    }

    async fn unsubscribe(&self) -> Result<()> {
        let consumer = self.consumer()?;
        consumer.unsubscribe();
        // An assignment made with `assign` is not dropped by unsubscribe.
        consumer
            .unassign()
            .map_err(|e| errors::from_kafka(&e, None, None))?;
        self.set_subscription(None);
        Ok(())
    }

    fn subscription(&self) -> Option<Subscription> {
        self.subscription.lock().ok().and_then(|g| g.clone())
    }

    async fn assignment(&self) -> Result<Vec<TopicPartition>> {
        let tpl = self
            .consumer()?
            .assignment()
            .map_err(|e| errors::from_kafka(&e, None, None))?;
        let mut out: Vec<TopicPartition> =
            list_offsets(&tpl).into_iter().map(|(tp, _)| tp).collect();
        out.sort();
        Ok(out)
    }

    async fn poll(&self, max_records: usize, timeout: Duration) -> Result<Vec<ConsumedRecord>> {
        let consumer = self.consumer()?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        // Wait for the first record (or the deadline), skipping transient fetch errors.
        while out.is_empty() {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => {
                    // Nothing came: if Kafka refused the login, that is why (and will stay so).
                    return match consumer.context().login_refused() {
                        Some(reason) => Err(Error::Unauthorized(format!(
                            "Kafka refused the login: {reason}"
                        ))),
                        None => Ok(out),
                    };
                }
                Ok(Ok(m)) => out.push(to_record(&m)),
                Ok(Err(e)) if is_transient(&e) => {
                    tracing::debug!(error = %e, "transient fetch error")
                }
                Ok(Err(e)) => return Err(errors::from_kafka(&e, None, None)),
            }
        }
        // Then drain what is already buffered, without waiting.
        while out.len() < max_records {
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => out.push(to_record(&m)),
                Some(Err(e)) if is_transient(&e) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "fetch error after records were read");
                    break;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Java's `commitSync` (and so the Strimzi bridge) retries a commit the coordinator could
    /// not take yet — a group coordinator still loading or moved, as on a broker that just
    /// started — until its timeout; librdkafka's synchronous commit answers the first refusal.
    /// So the same here: retried with a growing pause, within the consumer's request timeout.
    async fn commit(&self, request: CommitRequest) -> Result<()> {
        let timeout = self.timeout;
        self.blocking(move |c| {
            let offsets = match &request {
                CommitRequest::AllConsumed => None,
                CommitRequest::Offsets(offsets) => Some(offsets_list(offsets)?),
            };
            let deadline = std::time::Instant::now() + timeout;
            let mut pause = Duration::from_millis(50);
            loop {
                let result = match &offsets {
                    None => c.commit_consumer_state(CommitMode::Sync),
                    Some(list) => c.commit(list, CommitMode::Sync),
                };
                match result {
                    Ok(()) => return Ok(()),
                    // Nothing consumed since the last commit: nothing to do.
                    Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return Ok(()),
                    Err(KafkaError::ConsumerCommit(code))
                        if coordinator_not_ready(code)
                            && std::time::Instant::now() + pause < deadline =>
                    {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    Err(e) => return Err(errors::from_kafka(&e, None, None)),
                }
            }
        })
        .await
    }

    async fn committed(&self) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        let timeout = self.timeout;
        self.blocking(move |c| {
            c.committed(timeout)
                .map(|tpl| list_offsets(&tpl))
                .map_err(|e| errors::from_kafka(&e, None, None))
        })
        .await
    }

    async fn committed_offsets(
        &self,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let timeout = self.timeout;
        self.blocking(move |c| {
            c.committed_offsets(to_list(&partitions), timeout)
                .map(|tpl| list_offsets(&tpl))
                .map_err(|e| errors::from_kafka(&e, None, None))
        })
        .await
    }

    async fn seek(&self, positions: Vec<(TopicPartition, SeekTo)>) -> Result<()> {
        let timeout = self.timeout;
        self.blocking(move |c| {
            let tpl = list_at(
                positions
                    .iter()
                    .map(|(tp, to)| (tp.topic.as_str(), tp.partition, seek_offset(*to))),
            )?;
            let result = c
                .seek_partitions(tpl, timeout)
                .map_err(|e| errors::from_kafka(&e, None, None))?;
            for e in result.elements() {
                if let Err(err) = e.error() {
                    return Err(match err.rdkafka_error_code() {
                        Some(RDKafkaErrorCode::State) => Error::IllegalState(format!(
                            "partition {} of '{}' is not assigned to this consumer",
                            e.partition(),
                            e.topic()
                        )),
                        _ => errors::from_kafka(&err, Some(e.topic()), Some(e.partition())),
                    });
                }
            }
            Ok(())
        })
        .await
    }

    async fn positions(&self) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        let tpl = self
            .consumer()?
            .position()
            .map_err(|e| errors::from_kafka(&e, None, None))?;
        let mut out = list_offsets(&tpl);
        out.sort();
        Ok(out)
    }

    fn store_offsets(&self, offsets: &[TopicPartitionOffset]) -> Result<()> {
        self.consumer()?
            .store_offsets(&offsets_list(offsets)?)
            .map_err(|e| errors::from_kafka(&e, None, None))
    }

    async fn pause(&self, partitions: Vec<TopicPartition>) -> Result<()> {
        self.consumer()?
            .pause(&to_list(&partitions))
            .map_err(|e| errors::from_kafka(&e, None, None))
    }

    async fn resume(&self, partitions: Vec<TopicPartition>) -> Result<()> {
        self.consumer()?
            .resume(&to_list(&partitions))
            .map_err(|e| errors::from_kafka(&e, None, None))
    }

    fn rebalance_generation(&self) -> u64 {
        self.consumer()
            .map_or(0, |c| c.context().generation.load(Ordering::SeqCst))
    }

    async fn close(&self) -> Result<()> {
        let taken = self.consumer.lock().ok().and_then(|mut c| c.take());
        self.set_subscription(None);
        let Some(consumer) = taken else { return Ok(()) };
        let closed = self.closed.lock().ok().and_then(|mut c| c.take());
        // If a call in flight (a long poll) still holds the client, the close starts when that
        // call lets go, and this returns at once, as before; otherwise wait for it.
        let Some(last) = Arc::into_inner(consumer) else {
            return Ok(());
        };
        drop(last);
        if let Some(closed) = closed {
            if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
                tracing::warn!(timeout = ?CLOSE_TIMEOUT, "consumer did not leave its group in time");
            }
        }
        Ok(())
    }
}
