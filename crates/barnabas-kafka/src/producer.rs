//! The process-wide producer: one librdkafka `FutureProducer` shared by every connection of
//! every protocol, which is what keeps Kafka connections few and batches large.
//!
//! A record's result is returned only from its delivery report, i.e. after the broker
//! acknowledged it with acks=all, so a front end that acks on `Ok` never acks a lost record.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use barnabas_core::{Admin, Delivered, Error, Record, Result};
use futures::future::join_all;
use rdkafka::{
    error::KafkaError,
    message::{Header as RdHeader, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
    types::RDKafkaErrorCode,
};

use crate::{errors, KafkaAdmin, KafkaConfig};

/// How long a send waits for room in librdkafka's queue before answering `Overloaded`.
const QUEUE_FULL_PATIENCE: Duration = Duration::from_secs(5);

/// The gateway's producer, with a cache of topics known to exist (and their partition counts)
/// so the existence check costs a metadata round trip only the first time a topic is seen.
pub struct KafkaPublisher {
    /// Replaced when librdkafka reports a fatal error (an idempotent producer whose state the
    /// broker lost); every record in flight at that moment has already failed.
    producer: RwLock<FutureProducer>,
    config: KafkaConfig,
    admin: Arc<KafkaAdmin>,
    auto_create: bool,
    partitions: RwLock<HashMap<String, i32>>,
    /// One lock per topic being looked up, so a burst of writes to a new topic makes one
    /// metadata (and create) round trip, not one per write.
    lookups: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When the producer was last replaced after an outage (replacements are spaced out).
    renewed: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Least time between two producer replacements after outage-type failures.
const RENEW_SPACING: Duration = Duration::from_secs(5);

/// Whether a delivery failure may mean the producer's idempotence state is stale (it sat
/// through an outage, or a broker that lost its producer state answers): librdkafka would
/// keep retrying with the old producer id, so a fresh producer is needed for writes to
/// succeed again.
fn stale_producer_state(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::KafkaError;
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::InvalidProducerIdMapping
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    ) || matches!(
        e,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
    )
}

impl KafkaPublisher {
    /// Creates the producer (acks=all, idempotent, 5 ms linger, unless overridden).
    pub fn new(config: &KafkaConfig, admin: Arc<KafkaAdmin>) -> Result<Self> {
        let producer = config
            .producer_config()
            .create::<FutureProducer>()
            .map_err(|e| errors::from_kafka(&e, None, None))?;
        Ok(Self {
            producer: RwLock::new(producer),
            config: config.clone(),
            admin,
            auto_create: config.auto_create_topics,
            partitions: RwLock::new(HashMap::new()),
            renewed: std::sync::Mutex::new(None),
            lookups: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The current producer (cheap clone of a shared handle).
    fn producer(&self) -> FutureProducer {
        match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After failures: if librdkafka declared the producer dead (fatal error), make a new one
    /// so later writes can succeed again. Nothing is lost: the old producer's records failed.
    fn replace_if_fatal(&self) {
        let current = self.producer();
        let Some((code, reason)) = current.client().fatal_error() else {
            return;
        };
        self.replace(&format!("fatal error {code:?}: {reason}"));
    }

    /// After outage-type failures (see [`stale_producer_state`]): a fresh producer, at most
    /// once per [`RENEW_SPACING`]. Records still queued in the old one fail (never a false
    /// success); their clients were not acknowledged and may retry.
    fn renew_after_outage(&self) {
        let now = std::time::Instant::now();
        if let Ok(mut last) = self.renewed.lock() {
            if last.is_some_and(|t| now.duration_since(t) < RENEW_SPACING) {
                return;
            }
            *last = Some(now);
        }
        self.replace("deliveries timed out or the broker lost the producer's state");
    }

    fn replace(&self, why: &str) {
        match self.config.producer_config().create::<FutureProducer>() {
            Ok(fresh) => {
                if let Ok(mut p) = self.producer.write() {
                    *p = fresh;
                }
                tracing::warn!(why, "replaced the Kafka producer");
            }
            Err(e) => tracing::error!(error = %e, "could not replace the failed Kafka producer"),
        }
    }

    fn cached_partitions(&self, topic: &str) -> Option<i32> {
        self.partitions
            .read()
            .ok()
            .and_then(|m| m.get(topic).copied())
    }

    /// Makes sure `topic` exists (creating it if allowed) and returns its partition count.
    /// Without this check a write to a missing topic would sit in librdkafka's queue until
    /// `message.timeout.ms`, instead of getting a prompt "unknown topic" answer.
    async fn ensure_topic(&self, topic: &str, refresh: bool) -> Result<i32> {
        if !refresh {
            if let Some(n) = self.cached_partitions(topic) {
                return Ok(n);
            }
        }
        barnabas_core::validate_topic_name(topic)?;
        let lock = self
            .lookups
            .lock()
            .ok()
            .map(|mut l| l.entry(topic.to_owned()).or_default().clone());
        let _one_lookup = match &lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        // Someone else may have looked it up while this one waited.
        if !refresh {
            if let Some(n) = self.cached_partitions(topic) {
                return Ok(n);
            }
        }
        let metadata = match self.admin.topic_metadata(topic).await {
            Ok(md) => md,
            Err(Error::UnknownTopic(_)) if self.auto_create => {
                self.admin.create_topic(topic, None, None).await?;
                self.admin.topic_metadata(topic).await?
            }
            Err(e) => return Err(e),
        };
        let count = metadata.partitions.len() as i32;
        if let Ok(mut m) = self.partitions.write() {
            m.insert(topic.to_owned(), count);
        }
        Ok(count)
    }

    /// Checks topic and partition of one record before it is queued.
    async fn check(&self, record: &Record) -> Result<()> {
        let count = self.ensure_topic(&record.topic, false).await?;
        if let Some(p) = record.partition {
            // A partition may have been added since we cached the count: look once more.
            let count = if p >= count && p >= 0 {
                self.ensure_topic(&record.topic, true).await?
            } else {
                count
            };
            if p < 0 || p >= count {
                return Err(Error::UnknownPartition {
                    topic: record.topic.clone(),
                    partition: p,
                });
            }
        }
        Ok(())
    }

    /// Checks one record's topic and partition, then queues it.
    async fn queue(&self, record: &Record) -> Result<DeliveryFuture> {
        self.check(record).await?;
        self.enqueue(record).await
    }

    /// After a write: a fresh producer if deliveries timed out or the broker lost its state
    /// (`stale`); and for each topic a record `failed` to, its cached partition count dropped
    /// (it may have been deleted, re-created with fewer partitions, or be on a new cluster),
    /// and the producer replaced if librdkafka declared it dead.
    fn after_failures<'a>(&self, failed: impl IntoIterator<Item = &'a str>, stale: bool) {
        if stale {
            self.renew_after_outage();
        }
        let mut failed = failed.into_iter().peekable();
        if failed.peek().is_none() {
            return;
        }
        if let Ok(mut cache) = self.partitions.write() {
            for topic in failed {
                cache.remove(topic);
            }
        }
        self.replace_if_fatal();
    }

    /// Queues one record, waiting (bounded) while librdkafka's queue is full.
    async fn enqueue(&self, record: &Record) -> Result<DeliveryFuture> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for h in &record.headers {
            headers = headers.insert(RdHeader {
                key: &h.key,
                value: h.value.as_deref(),
            });
        }
        let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic).headers(headers);
        if let Some(k) = &record.key {
            fr = fr.key(k.as_ref());
        }
        if let Some(v) = &record.value {
            fr = fr.payload(v.as_ref());
        }
        if let Some(p) = record.partition {
            fr = fr.partition(p);
        }
        if let Some(ts) = record.timestamp {
            fr = fr.timestamp(ts);
        }
        // The clock is read only once the queue is full, not for every record.
        let mut full_since = None;
        let producer = self.producer();
        loop {
            // A record librdkafka did not take comes back with its headers, to send again
            // (building it anew per attempt copied the headers on the C heap every time).
            match producer.send_result(fr) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if full_since.get_or_insert_with(Instant::now).elapsed()
                        < QUEUE_FULL_PATIENCE =>
                {
                    fr = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(errors::from_kafka(
                        &e,
                        Some(&record.topic),
                        record.partition,
                    ))
                }
            }
        }
    }
}

/// A queued record's result once its delivery report came, and whether the failure (if any)
/// may mean the producer's idempotence state is stale.
async fn wait_for_report(
    queued: Result<DeliveryFuture>,
    record: &Record,
) -> (Result<Delivered>, bool) {
    match queued {
        Ok(future) => {
            let report = future.await;
            let stale = matches!(&report, Ok(Err((e, _))) if stale_producer_state(e));
            (delivered(report, &record.topic, record.partition), stale)
        }
        Err(e) => (Err(e), false),
    }
}

/// Turns one delivery report into the record's result.
fn delivered(
    report: std::result::Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
    topic: &str,
    partition: Option<i32>,
) -> Result<Delivered> {
    match report {
        Ok(Ok(d)) => Ok(Delivered {
            partition: d.partition,
            offset: d.offset,
            timestamp: d.timestamp.to_millis(),
        }),
        Ok(Err((e, _))) => Err(errors::from_kafka(&e, Some(topic), partition)),
        Err(_) => Err(Error::Unavailable(
            "producer shut down before Kafka acknowledged the record".into(),
        )),
    }
}

#[async_trait]
impl barnabas_core::Publisher for KafkaPublisher {
    /// Writes with this producer's own login whatever the identity: the gateway's (its ACLs
    /// were checked before), or the client's own login when this is one of
    /// [`crate::PassthroughPublisher`]'s per-principal producers.
    async fn publish(
        &self,
        _identity: barnabas_core::Identity<'_>,
        records: Vec<Record>,
    ) -> Vec<Result<Delivered>> {
        // Queue everything first (pipelining), then wait for all reports together.
        let mut pending = Vec::with_capacity(records.len());
        for record in &records {
            pending.push(self.queue(record).await);
        }
        let waits = pending
            .into_iter()
            .zip(&records)
            .map(|(queued, record)| wait_for_report(queued, record));
        let (results, stale): (Vec<_>, Vec<bool>) = join_all(waits).await.into_iter().unzip();
        let failed = records
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_err())
            .map(|(record, _)| record.topic.as_str());
        self.after_failures(failed, stale.contains(&true));
        results
    }

    /// One record without the batch's vectors (most protocol publishes are one record).
    async fn publish_one(
        &self,
        _identity: barnabas_core::Identity<'_>,
        record: Record,
    ) -> Result<Delivered> {
        let queued = self.queue(&record).await;
        let (result, stale) = wait_for_report(queued, &record).await;
        let failed = result.is_err().then_some(record.topic.as_str());
        self.after_failures(failed, stale);
        result
    }

    async fn flush(&self, timeout: Duration) -> Result<()> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(errors::from_join)?
            .map_err(|e| errors::from_kafka(&e, None, None))
    }
}
