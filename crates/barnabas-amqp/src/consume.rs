//! A link on which the client receives: a member of a Kafka consumer group.
//!
//! Records go out only within the receiver's credit (the sender waits for it) and at most
//! [`MAX_UNSETTLED`] wait for the client's outcome. An offset is committed once the client
//! settled it `accepted` (or `rejected`, which is logged and skipped) and everything before it
//! in its partition was settled too; `released` and `modified` deliveries are read again. A
//! delivery the client never settled (it went away) is never committed: the group's next
//! reader gets it again.

use std::{
    ops::ControlFlow,
    sync::{Arc, Mutex},
    time::Duration,
};

use barnabas_core::{
    CommitRequest, ConsumedRecord, ConsumerConfig, ConsumerDriver, DriverLimits, ErrorKind,
    Fetched, OffsetReset, OffsetTracker, Principal, SeekTo, Subscription, TopicPartition,
};
use fe2o3_amqp::{
    link::{delivery::DeliveryFut, SendError},
    types::{
        definitions::{self, AmqpError},
        messaging::Outcome,
    },
    Sender,
};
use futures::{stream::FuturesUnordered, StreamExt};
use tokio::{
    sync::{mpsc, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    address::{ConsumeFrom, StartAt},
    convert, AmqpContext,
};

/// Most deliveries waiting for the client's outcome on one link.
pub const MAX_UNSETTLED: usize = 256;
/// How often settled offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

type Sent = (
    TopicPartition,
    i64,
    DeliveryFut<Result<Outcome, SendError>>,
    OwnedSemaphorePermit,
);

/// Serves the link until the client detaches or the gateway shuts down.
pub async fn run(
    sender: Sender,
    from: ConsumeFrom,
    start_at: Option<StartAt>,
    principal: Principal,
    ctx: Arc<AmqpContext>,
    shutdown: CancellationToken,
) {
    let links = ctx
        .metrics
        .links
        .get_or_create(&crate::DirectionLabel::consume())
        .clone();
    match open(&ctx, &from, start_at, principal).await {
        Ok(driver) => {
            ConsumerLink::new(sender, driver, ctx, shutdown)
                .serve()
                .await
        }
        Err(e) => {
            tracing::warn!(error = %e, group = %from.group, "consumer link not served");
            close_link(sender, Some(link_error(&e))).await;
        }
    }
    links.dec();
}

/// A receiver link with its Kafka consumer: the loop that sends records, with the channels to
/// the settler task that waits for the client's outcomes (sends run ahead of outcomes, up to
/// [`MAX_UNSETTLED`], so the two run apart).
struct ConsumerLink {
    sender: Sender,
    driver: ConsumerDriver,
    /// Which offsets were handed out, settled or given back: what may be committed, and
    /// what goes out again after a rewind.
    tracker: Arc<Mutex<OffsetTracker>>,
    /// One per delivery waiting for the client's outcome.
    permits: Arc<Semaphore>,
    /// Deliveries sent, to the settler.
    sent: mpsc::UnboundedSender<Sent>,
    /// Offsets the client released or modified, from the settler: to read again.
    rewinds: mpsc::UnboundedReceiver<(TopicPartition, i64)>,
    /// The settler task ([`settle`]).
    settler: JoinHandle<()>,
    ctx: Arc<AmqpContext>,
    shutdown: CancellationToken,
}

impl ConsumerLink {
    /// The link, its settler task started.
    fn new(
        sender: Sender,
        driver: ConsumerDriver,
        ctx: Arc<AmqpContext>,
        shutdown: CancellationToken,
    ) -> Self {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let (sent, sent_rx) = mpsc::unbounded_channel::<Sent>();
        let (rewind_tx, rewinds) = mpsc::unbounded_channel::<(TopicPartition, i64)>();
        let settler = tokio::spawn(settle(
            sent_rx,
            tracker.clone(),
            driver.clone(),
            rewind_tx,
            ctx.clone(),
        ));
        Self {
            sender,
            driver,
            tracker,
            permits: Arc::new(Semaphore::new(MAX_UNSETTLED)),
            sent,
            rewinds,
            settler,
            ctx,
            shutdown,
        }
    }

    /// Serves the link to its end, then closes it.
    async fn serve(mut self) {
        let failure = self.run().await;
        self.close(failure).await;
    }

    /// Sends records until the client detaches, the gateway stops or the consumer fails;
    /// in the last case, the error to close the link with.
    async fn run(&mut self) -> Option<definitions::Error> {
        loop {
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => ControlFlow::Break(None),
                _ = self.sender.on_detach() => ControlFlow::Break(None),
                Some(first) = self.rewinds.recv() => {
                    self.on_rewind(first).await;
                    ControlFlow::Continue(())
                }
                fetched = self.driver.fetch(64, None, Duration::from_secs(1)) => {
                    self.on_fetched(fetched).await
                }
            };
            if let ControlFlow::Break(failure) = step {
                return failure;
            }
        }
    }

    /// Seeks back to deliveries the client gave back (this one and any others waiting), so
    /// they are read and sent again.
    async fn on_rewind(&mut self, (tp, offset): (TopicPartition, i64)) {
        // Each partition is re-read from the lowest offset given back.
        let mut lowest = std::collections::BTreeMap::from([(tp, offset)]);
        while let Ok((tp, offset)) = self.rewinds.try_recv() {
            let at = lowest.entry(tp).or_insert(offset);
            *at = (*at).min(offset);
        }
        // A record given back earlier and not sent again yet (its re-read was overtaken by
        // this rewind) must not be skipped by a seek past it.
        if let Ok(t) = self.tracker.lock() {
            for (tp, offset) in &mut lowest {
                if let Some(first) = t.first_given_back(tp) {
                    *offset = (*offset).min(first);
                }
            }
        }
        let seeks = lowest
            .into_iter()
            .map(|(tp, offset)| (tp, SeekTo::Offset(offset)))
            .collect();
        if let Err(e) = self.driver.seek(seeks).await {
            tracing::debug!(error = %e, "rewinding released deliveries failed; the group will redeliver them");
        }
    }

    /// Sends what was fetched; breaks when the link is done, with the error to close it with
    /// if the consumer failed.
    async fn on_fetched(
        &mut self,
        fetched: barnabas_core::Result<Fetched>,
    ) -> ControlFlow<Option<definitions::Error>> {
        let records = match fetched {
            Ok(Fetched::Records(r)) => r,
            Ok(Fetched::TooLarge { .. }) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "consumer failed; closing the link");
                return ControlFlow::Break(Some(link_error(&e)));
            }
        };
        for r in records {
            if self.send(r).await.is_break() {
                return ControlFlow::Break(None);
            }
        }
        ControlFlow::Continue(())
    }

    /// Sends a record once the client's credit and [`MAX_UNSETTLED`] allow, and hands the
    /// delivery to the settler; breaks when the link ends or the gateway stops meanwhile.
    async fn send(&mut self, r: ConsumedRecord) -> ControlFlow<()> {
        // Re-read after a rewind: only what was given back goes out again.
        if !self.tracker.lock().is_ok_and(|mut t| t.is_due(&r)) {
            return ControlFlow::Continue(());
        }
        let permit = tokio::select! {
            p = self.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return ControlFlow::Break(()),
            },
            _ = self.shutdown.cancelled() => return ControlFlow::Break(()),
        };
        if let Ok(mut t) = self.tracker.lock() {
            t.handed(&r);
        }
        let tp = TopicPartition::new(r.topic.clone(), r.partition);
        let sent = tokio::select! {
            s = self.sender.send_batchable(convert::to_message(&r)) => s,
            _ = self.shutdown.cancelled() => return ControlFlow::Break(()),
        };
        match sent {
            Ok(fut) => {
                self.ctx.metrics.deliveries.inc();
                let _ = self.sent.send((tp, r.offset, fut, permit));
                ControlFlow::Continue(())
            }
            Err(e) => {
                tracing::debug!(error = ?e, "consumer link ended");
                ControlFlow::Break(())
            }
        }
    }

    /// Outcomes about to arrive still count; then closing the link ends the rest (never
    /// settled, so redelivered to the group later), and the settled offsets are committed.
    async fn close(self, failure: Option<definitions::Error>) {
        let Self {
            sender,
            driver,
            sent,
            mut settler,
            ..
        } = self;
        drop(sent);
        if tokio::time::timeout(crate::CLOSE_WAIT, &mut settler)
            .await
            .is_err()
        {
            close_link(sender, failure).await;
            let _ = settler.await;
        } else {
            close_link(sender, failure).await;
        }
        let _ = tokio::time::timeout(crate::CLOSE_WAIT, driver.close()).await;
    }
}

/// The link error for a consumer failure: `amqp:unauthorized-access` when Kafka (or the
/// identity passthrough) refuses this client's reads, `amqp:internal-error` otherwise.
fn link_error(e: &barnabas_core::Error) -> definitions::Error {
    let condition = match e.kind() {
        ErrorKind::Unauthorized => AmqpError::UnauthorizedAccess,
        ErrorKind::NotFound => AmqpError::NotFound,
        _ => AmqpError::InternalError,
    };
    definitions::Error::new(condition, Some(e.to_string()), None)
}

/// Closes the link (detach with `closed`), with the error if there is one; bounded.
async fn close_link(sender: Sender, error: Option<definitions::Error>) {
    let _ = match error {
        Some(e) => tokio::time::timeout(crate::CLOSE_WAIT, sender.close_with_error(e)).await,
        None => tokio::time::timeout(crate::CLOSE_WAIT, sender.close()).await,
    };
}

/// The Kafka consumer behind a link: a member of the group reading the topic, or (the Event
/// Hubs form) a reader of the one partition; from where `start_at` says.
async fn open(
    ctx: &AmqpContext,
    from: &ConsumeFrom,
    start_at: Option<StartAt>,
    principal: Principal,
) -> barnabas_core::Result<ConsumerDriver> {
    let session = ctx
        .consumers
        .create(ConsumerConfig {
            group_id: from.group.clone(),
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            explicit_offset_store: true,
            principal: Some(principal),
            ..ConsumerConfig::default()
        })
        .await?;
    let driver = ConsumerDriver::spawn(
        session,
        DriverLimits {
            max_records: 512,
            max_bytes: 8 * 1024 * 1024,
            poll_batch: 256,
        },
    );
    if let Some(partition) = from.partition {
        // The Event Hubs form: this one partition, from the filter's position (the
        // beginning without one), without joining the group.
        assign_partition(ctx, &driver, &from.topic, partition, start_at).await?;
        return Ok(driver);
    }
    driver
        .subscribe(Subscription::Topics(vec![from.topic.clone()]))
        .await?;
    if let Some(start_at) = start_at {
        seek_when_assigned(ctx, &driver, &from.topic, start_at).await?;
    }
    Ok(driver)
}

/// Assigns the driver `partition` of `topic`, which must exist, read from `start_at`.
async fn assign_partition(
    ctx: &AmqpContext,
    driver: &ConsumerDriver,
    topic: &str,
    partition: i32,
    start_at: Option<StartAt>,
) -> barnabas_core::Result<()> {
    let partitions = ctx.admin.topic_metadata(topic).await?.partitions;
    if !partitions.iter().any(|p| p.partition == partition) {
        return Err(barnabas_core::Error::UnknownPartition {
            topic: topic.to_owned(),
            partition,
        });
    }
    let seek = seek_to(ctx, topic, partition, start_at).await?;
    driver
        .assign(vec![(
            TopicPartition::new(topic.to_owned(), partition),
            Some(seek),
        )])
        .await
}

/// Has the group member start every partition of `topic` it is given at `start_at`.
async fn seek_when_assigned(
    ctx: &AmqpContext,
    driver: &ConsumerDriver,
    topic: &str,
    start_at: StartAt,
) -> barnabas_core::Result<()> {
    let partitions = ctx.admin.topic_metadata(topic).await?.partitions;
    let mut seeks = Vec::with_capacity(partitions.len());
    for p in &partitions {
        seeks.push((
            TopicPartition::new(topic.to_owned(), p.partition),
            seek_to(ctx, topic, p.partition, Some(start_at)).await?,
        ));
    }
    driver.seek_when_assigned(seeks).await
}

/// The read position in `partition` of `topic` that `start_at` names (the beginning
/// without one); a time is looked up as the first offset at or after it.
async fn seek_to(
    ctx: &AmqpContext,
    topic: &str,
    partition: i32,
    start_at: Option<StartAt>,
) -> barnabas_core::Result<SeekTo> {
    Ok(match start_at {
        None => SeekTo::Beginning,
        Some(StartAt::Offset(o)) => SeekTo::Offset(o),
        Some(StartAt::Latest) => SeekTo::End,
        Some(StartAt::Time(ms)) => {
            SeekTo::Offset(ctx.admin.offset_for_time(topic, partition, ms).await?)
        }
    })
}

/// Waits for the client's outcomes, finishes or rewinds their offsets, and commits.
async fn settle(
    mut sent: mpsc::UnboundedReceiver<Sent>,
    tracker: Arc<Mutex<OffsetTracker>>,
    driver: ConsumerDriver,
    rewind: mpsc::UnboundedSender<(TopicPartition, i64)>,
    ctx: Arc<AmqpContext>,
) {
    let mut pending = FuturesUnordered::new();
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            item = sent.recv(), if open => match item {
                Some((tp, offset, fut, permit)) => pending.push(async move {
                    let outcome = fut.await;
                    drop(permit);
                    (tp, offset, outcome)
                }),
                None => open = false,
            },
            Some((tp, offset, outcome)) = pending.next(), if !pending.is_empty() => {
                let finished = match outcome {
                    Ok(Outcome::Accepted(_)) => {
                        ctx.gateway_metrics.records_out.get_or_create(&barnabas_core::GatewayMetrics::label("amqp")).inc();
                        true
                    }
                    Ok(Outcome::Rejected(r)) => {
                        tracing::warn!(topic = %tp.topic, partition = tp.partition, offset, error = ?r.error, "client rejected a delivery; skipped");
                        true
                    }
                    Ok(Outcome::Released(_) | Outcome::Modified(_)) => {
                        ctx.metrics.released.inc();
                        if let Ok(mut t) = tracker.lock() {
                            t.give_back(&tp, offset);
                        }
                        let _ = rewind.send((tp.clone(), offset));
                        false
                    }
                    #[allow(unreachable_patterns)]
                    Ok(_) => true,
                    // Never settled (the link or connection went): left for redelivery.
                    Err(_) => false,
                };
                if finished {
                    if let Ok(mut t) = tracker.lock() {
                        t.finished(&tp, offset);
                    }
                }
            }
            _ = tick.tick() => commit(&tracker, &driver).await,
        }
    }
    commit(&tracker, &driver).await;
}

async fn commit(tracker: &Mutex<OffsetTracker>, driver: &ConsumerDriver) {
    let offsets = match tracker.lock() {
        Ok(mut t) if t.is_dirty() => t.committable(),
        _ => return,
    };
    if offsets.is_empty() {
        return;
    }
    if let Err(e) = tokio::time::timeout(
        crate::CLOSE_WAIT,
        driver.commit(CommitRequest::Offsets(offsets)),
    )
    .await
    .unwrap_or(Err(barnabas_core::Error::Timeout(crate::CLOSE_WAIT)))
    {
        tracing::debug!(error = %e, "committing settled offsets failed; they will be redelivered");
    }
}
