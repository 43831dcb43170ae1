//! A link on which the client receives: a member of a Kafka consumer group.
//!
//! Records go out only within the receiver's credit (the sender waits for it) and at most
//! [`MAX_UNSETTLED`] wait for the client's outcome. An offset is committed once the client
//! settled it `accepted` (or `rejected`, which is logged and skipped) and everything before it
//! in its partition was settled too; `released` and `modified` deliveries are read again. A
//! delivery the client never settled (it went away) is never committed: the group's next
//! reader gets it again.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use barnabas_core::{
    CommitRequest, ConsumerConfig, ConsumerDriver, DriverLimits, ErrorKind, Fetched, OffsetReset,
    OffsetTracker, Principal, SeekTo, Subscription, TopicPartition,
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
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
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
    mut sender: Sender,
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
    let driver = match open(&ctx, &from, start_at, principal).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, group = %from.group, "consumer link not served");
            close_link(sender, Some(link_error(&e))).await;
            links.dec();
            return;
        }
    };
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let permits = Arc::new(Semaphore::new(MAX_UNSETTLED));
    let (sent_tx, sent_rx) = mpsc::unbounded_channel::<Sent>();
    let (rewind_tx, mut rewind_rx) = mpsc::unbounded_channel::<(TopicPartition, i64)>();
    let settler = tokio::spawn(settle(
        sent_rx,
        tracker.clone(),
        driver.clone(),
        rewind_tx,
        ctx.clone(),
    ));

    // Why the link is closed, when it is the gateway's doing.
    let mut failure = None;
    'link: loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sender.on_detach() => break,
            Some((tp, offset)) = rewind_rx.recv() => {
                // Each partition is re-read from the lowest offset given back.
                let mut lowest = std::collections::BTreeMap::from([(tp, offset)]);
                while let Ok((tp, offset)) = rewind_rx.try_recv() {
                    let at = lowest.entry(tp).or_insert(offset);
                    *at = (*at).min(offset);
                }
                // A record given back earlier and not sent again yet (its re-read was
                // overtaken by this rewind) must not be skipped by a seek past it.
                if let Ok(t) = tracker.lock() {
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
                if let Err(e) = driver.seek(seeks).await {
                    tracing::debug!(error = %e, "rewinding released deliveries failed; the group will redeliver them");
                }
            }
            fetched = driver.fetch(64, None, Duration::from_secs(1)) => {
                let records = match fetched {
                    Ok(Fetched::Records(r)) => r,
                    Ok(Fetched::TooLarge { .. }) => Vec::new(),
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer failed; closing the link");
                        failure = Some(link_error(&e));
                        break;
                    }
                };
                for r in records {
                    // Re-read after a rewind: only what was given back goes out again.
                    if !tracker.lock().is_ok_and(|mut t| t.is_due(&r)) {
                        continue;
                    }
                    let permit = tokio::select! {
                        p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'link },
                        _ = shutdown.cancelled() => break 'link,
                    };
                    if let Ok(mut t) = tracker.lock() {
                        t.handed(&r);
                    }
                    let tp = TopicPartition::new(r.topic.clone(), r.partition);
                    let offset = r.offset;
                    let sent = tokio::select! {
                        s = sender.send_batchable(convert::to_message(&r)) => s,
                        _ = shutdown.cancelled() => break 'link,
                    };
                    match sent {
                        Ok(fut) => {
                            ctx.metrics.deliveries.inc();
                            let _ = sent_tx.send((tp, offset, fut, permit));
                        }
                        Err(e) => {
                            tracing::debug!(error = ?e, "consumer link ended");
                            break 'link;
                        }
                    }
                }
            }
        }
    }
    // Outcomes about to arrive still count; then closing the link ends the rest (never
    // settled, so redelivered to the group later), and the settled offsets are committed.
    drop(sent_tx);
    let mut settler = settler;
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
    links.dec();
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
    let seek_to = |partition: i32| async move {
        Ok::<_, barnabas_core::Error>(match start_at {
            None => SeekTo::Beginning,
            Some(StartAt::Offset(o)) => SeekTo::Offset(o),
            Some(StartAt::Latest) => SeekTo::End,
            Some(StartAt::Time(ms)) => SeekTo::Offset(
                ctx.admin
                    .offset_for_time(&from.topic, partition, ms)
                    .await?,
            ),
        })
    };
    if let Some(partition) = from.partition {
        // The Event Hubs form: this one partition, from the filter's position (the
        // beginning without one), without joining the group.
        let partitions = ctx.admin.topic_metadata(&from.topic).await?.partitions;
        if !partitions.iter().any(|p| p.partition == partition) {
            return Err(barnabas_core::Error::UnknownPartition {
                topic: from.topic.clone(),
                partition,
            });
        }
        driver
            .assign(vec![(
                TopicPartition::new(from.topic.clone(), partition),
                Some(seek_to(partition).await?),
            )])
            .await?;
        return Ok(driver);
    }
    driver
        .subscribe(Subscription::Topics(vec![from.topic.clone()]))
        .await?;
    if start_at.is_some() {
        let partitions = ctx.admin.topic_metadata(&from.topic).await?.partitions;
        let mut seeks = Vec::with_capacity(partitions.len());
        for p in &partitions {
            seeks.push((
                TopicPartition::new(from.topic.clone(), p.partition),
                seek_to(p.partition).await?,
            ));
        }
        driver.seek_when_assigned(seeks).await?;
    }
    Ok(driver)
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
