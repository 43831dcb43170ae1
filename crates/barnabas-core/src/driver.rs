//! A consumer driven by the gateway, not by its client's cadence.
//!
//! REST proxies poll Kafka only when their HTTP client polls, so a group rebalance waits for
//! every client's next request and an idle client gets evicted from its group. Here one task
//! per consumer (an actor) keeps the Kafka consumer polled, reads ahead into a bounded buffer,
//! and hands buffered records to whoever fetches. When the buffer is full it stops polling
//! for at most a second ([`PAUSE_AFTER`]: a reading client makes room sooner), then pauses its
//! partitions and polls on, so rebalances complete while a client does not read. Every command on the consumer
//! goes through the same task, so a seek or a rebalance never races with a read.
//!
//! Offsets are stored (for commit-all and auto-commit) only when records are handed over,
//! never when they are read ahead; on a rebalance the buffer is dropped and retained
//! partitions are rewound to the first record not handed over, so nothing is lost or handed
//! over twice by one member.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::{
    CommitRequest, ConsumedRecord, Consumer, Error, Result, SeekTo, Subscription, TopicPartition,
    TopicPartitionOffset,
};

/// Bounds of one driver's read-ahead buffer.
#[derive(Debug, Clone, Copy)]
pub struct DriverLimits {
    /// Pause fetching when this many records are buffered.
    pub max_records: usize,
    /// Pause fetching when this many payload bytes are buffered.
    pub max_bytes: usize,
    /// Most records taken from Kafka per poll.
    pub poll_batch: usize,
}

impl Default for DriverLimits {
    fn default() -> Self {
        Self {
            max_records: 1_000,
            max_bytes: 8 * 1024 * 1024,
            poll_batch: 500,
        }
    }
}

/// What a fetch got.
#[derive(Debug)]
pub enum Fetched {
    /// Records (possibly none, when the deadline passed first).
    Records(Vec<ConsumedRecord>),
    /// The next record alone is larger than the fetch allows; it stays buffered.
    TooLarge {
        /// Size of that record.
        size: usize,
    },
}

type Reply<T> = oneshot::Sender<Result<T>>;

/// How long a full buffer waits for its client to make room before the partitions are
/// paused. Pausing is not free: librdkafka drops what it prefetched for a paused partition
/// and, on resume, fetches again only after the fetch in flight returns (up to
/// `fetch.wait.max.ms`, 500 ms by default). Paused at once, a client that keeps reading
/// stalled that long every buffer's worth of records (HTTP polls of 500 records at 2 000
/// records/s against Strimzi's 120 000). So a full buffer first only stops the polling, which
/// a reading client ends within milliseconds; a client that has not made room by then gets
/// its partitions paused and the polling (and with it any rebalance) goes on. Meanwhile
/// librdkafka's own prefetch stays bounded by `queued.max.messages.kbytes`.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

enum Command {
    Subscribe(Subscription, Reply<()>),
    Assign(Vec<(TopicPartition, Option<SeekTo>)>, Reply<()>),
    Unsubscribe(Reply<()>),
    Fetch(Waiter),
    Commit(CommitRequest, Reply<()>),
    Seek(Vec<(TopicPartition, SeekTo)>, Reply<()>),
    Assignment(Reply<Vec<TopicPartition>>),
    SeekWhenAssigned(Vec<(TopicPartition, SeekTo)>, Reply<()>),
    Close(Reply<()>),
}

struct Waiter {
    max_records: usize,
    max_bytes: Option<usize>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Fetched>>,
}

/// Handle to a driven consumer; cheap to clone. When the last handle is dropped, the driver
/// task closes the consumer and ends.
#[derive(Clone)]
pub struct ConsumerDriver {
    tx: mpsc::Sender<Command>,
}

impl ConsumerDriver {
    /// Starts the driver task for `session` on the current tokio runtime.
    pub fn spawn(session: Arc<dyn Consumer>, limits: DriverLimits) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let actor = Actor {
            session,
            limits,
            rx,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            waiters: VecDeque::new(),
            generation: 0,
            active: false,
            paused: false,
            full_since: None,
            pending_seeks: BTreeMap::new(),
            failing: None,
        };
        tokio::spawn(actor.run());
        Self { tx }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Subscribes (replacing any subscription or assignment).
    pub async fn subscribe(&self, subscription: Subscription) -> Result<()> {
        self.call(|r| Command::Subscribe(subscription, r)).await
    }

    /// Assigns partitions with optional start positions (replacing any subscription).
    pub async fn assign(&self, partitions: Vec<(TopicPartition, Option<SeekTo>)>) -> Result<()> {
        self.call(|r| Command::Assign(partitions, r)).await
    }

    /// Drops the subscription or assignment, and what was read ahead.
    pub async fn unsubscribe(&self) -> Result<()> {
        self.call(Command::Unsubscribe).await
    }

    /// Waits until records are buffered (or `timeout`) and takes at most `max_records`
    /// records of at most `max_bytes` payload bytes in all. Records taken count as consumed.
    pub async fn fetch(
        &self,
        max_records: usize,
        max_bytes: Option<usize>,
        timeout: Duration,
    ) -> Result<Fetched> {
        let deadline = Instant::now() + timeout;
        self.call(|reply| {
            Command::Fetch(Waiter {
                max_records: max_records.max(1),
                max_bytes,
                deadline,
                reply,
            })
        })
        .await
    }

    /// Commits offsets (`AllConsumed` = everything fetched so far).
    pub async fn commit(&self, request: CommitRequest) -> Result<()> {
        self.call(|r| Command::Commit(request, r)).await
    }

    /// Moves read positions; what was read ahead for those partitions is dropped.
    pub async fn seek(&self, positions: Vec<(TopicPartition, SeekTo)>) -> Result<()> {
        self.call(|r| Command::Seek(positions, r)).await
    }

    /// Moves these partitions' read positions as soon as they are assigned to this member
    /// (now, or at a later rebalance); used to resume a subscription at known positions.
    pub async fn seek_when_assigned(&self, positions: Vec<(TopicPartition, SeekTo)>) -> Result<()> {
        self.call(|r| Command::SeekWhenAssigned(positions, r)).await
    }

    /// The partitions currently assigned.
    pub async fn assignment(&self) -> Result<Vec<TopicPartition>> {
        self.call(Command::Assignment).await
    }

    /// Leaves the group and stops the driver.
    pub async fn close(&self) -> Result<()> {
        self.call(Command::Close).await
    }
}

fn closed() -> Error {
    Error::IllegalState("consumer is closed".into())
}

/// Payload size of a record, as fetch limits count it.
pub fn record_size(r: &ConsumedRecord) -> usize {
    let opt = |b: &Option<bytes::Bytes>| b.as_ref().map_or(0, bytes::Bytes::len);
    opt(&r.key)
        + opt(&r.value)
        + r.headers
            .iter()
            .map(|h| h.key.len() + opt(&h.value))
            .sum::<usize>()
}

struct Actor {
    session: Arc<dyn Consumer>,
    limits: DriverLimits,
    rx: mpsc::Receiver<Command>,
    buffer: VecDeque<ConsumedRecord>,
    buffered_bytes: usize,
    waiters: VecDeque<Waiter>,
    generation: u64,
    /// Subscribed or assigned: worth polling.
    active: bool,
    paused: bool,
    /// When the buffer became full while not paused: the polling waits (see [`PAUSE_AFTER`]).
    full_since: Option<Instant>,
    /// Seeks to apply when their partition gets assigned.
    pending_seeks: BTreeMap<TopicPartition, SeekTo>,
    /// The poll error logged last, so a lasting one (a refused login) is logged once, not
    /// every poll.
    failing: Option<Error>,
}

impl Actor {
    async fn run(mut self) {
        loop {
            let next_deadline = self.waiters.iter().map(|w| w.deadline).min();
            let holding = self.full_since.filter(|_| !self.paused);
            tokio::select! {
                biased;
                cmd = self.rx.recv() => match cmd {
                    None => break,
                    Some(Command::Close(reply)) => {
                        let _ = reply.send(self.session.close().await);
                        break;
                    }
                    Some(cmd) => self.handle(cmd).await,
                },
                _ = sleep_until(next_deadline), if next_deadline.is_some() => self.expire_waiters(),
                _ = sleep_until(holding.map(|t| t + PAUSE_AFTER)), if holding.is_some() => self.pause_assigned().await,
                polled = self.session.poll(self.limits.poll_batch, Duration::from_millis(200)), if self.active && holding.is_none() => {
                    match polled {
                        Ok(records) => {
                            if self.failing.take().is_some() {
                                tracing::info!("consumer polls again");
                            }
                            self.take_in(records).await;
                        }
                        Err(e) => {
                            if self.failing.as_ref() != Some(&e) {
                                tracing::warn!(error = %e, "consumer poll failed");
                                self.failing = Some(e.clone());
                            }
                            if e.kind() == crate::ErrorKind::Unauthorized {
                                // Kafka refused the login (or an ACL): that lasts, so the
                                // clients waiting for records learn why instead of nothing.
                                for w in self.waiters.drain(..) {
                                    let _ = w.reply.send(Err(e.clone()));
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }
        for w in self.waiters.drain(..) {
            let _ = w.reply.send(Err(closed()));
        }
        let _ = self.session.close().await;
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe(s, reply) => {
                self.clear_buffer();
                let r = self.session.subscribe(s).await;
                self.active = r.is_ok() || self.active;
                self.paused = false;
                let _ = reply.send(r);
            }
            Command::Assign(ps, reply) => {
                self.clear_buffer();
                let r = self.session.assign_at(ps).await;
                self.active = r.is_ok() || self.active;
                self.paused = false;
                let _ = reply.send(r);
            }
            Command::Unsubscribe(reply) => {
                self.clear_buffer();
                self.active = false;
                self.paused = false;
                let _ = reply.send(self.session.unsubscribe().await);
            }
            Command::Fetch(w) => {
                self.waiters.push_back(w);
                self.serve_waiters().await;
            }
            Command::Commit(req, reply) => {
                let _ = reply.send(self.session.commit(req).await);
            }
            Command::Seek(positions, reply) => {
                self.drop_buffered(&positions);
                let _ = reply.send(self.session.seek(positions).await);
                self.maybe_resume().await;
            }
            Command::Assignment(reply) => {
                let _ = reply.send(self.session.assignment().await);
            }
            Command::SeekWhenAssigned(positions, reply) => {
                self.pending_seeks.extend(positions);
                self.apply_pending_seeks().await;
                let _ = reply.send(Ok(()));
            }
            Command::Close(_) => {} // handled in run()
        }
    }

    /// Records read from Kafka: buffer them, reconcile with a rebalance, note when full.
    async fn take_in(&mut self, records: Vec<ConsumedRecord>) {
        for r in records {
            self.buffered_bytes += record_size(&r);
            self.buffer.push_back(r);
        }
        let generation = self.session.rebalance_generation();
        if generation != self.generation {
            self.generation = generation;
            self.after_rebalance().await;
        } else {
            self.apply_pending_seeks().await;
        }
        if !self.paused && self.is_full() {
            self.full_since.get_or_insert_with(Instant::now);
        }
        self.serve_waiters().await;
    }

    /// After a rebalance the buffered records may belong to another member now, and retained
    /// partitions may restart from the committed offset: drop the buffer and rewind every
    /// partition still ours to its first record not handed over.
    async fn after_rebalance(&mut self) {
        let mut first: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in &self.buffer {
            first
                .entry(TopicPartition::new(r.topic.clone(), r.partition))
                .or_insert(r.offset);
        }
        self.clear_buffer();
        let assigned = self.session.assignment().await.unwrap_or_default();
        let rewind: Vec<(TopicPartition, SeekTo)> = first
            .into_iter()
            .filter(|(tp, _)| assigned.contains(tp) && !self.pending_seeks.contains_key(tp))
            .map(|(tp, offset)| (tp, SeekTo::Offset(offset)))
            .collect();
        if !rewind.is_empty() {
            if let Err(e) = self.session.seek(rewind).await {
                tracing::debug!(error = %e, "rewind after rebalance failed; restarting from committed offsets");
            }
        }
        if self.paused {
            let _ = self.session.resume(assigned).await;
        }
        self.paused = false;
        self.apply_pending_seeks().await;
    }

    /// Applies the pending seeks whose partitions are assigned now.
    async fn apply_pending_seeks(&mut self) {
        if self.pending_seeks.is_empty() {
            return;
        }
        let assigned = self.session.assignment().await.unwrap_or_default();
        let ready: Vec<(TopicPartition, SeekTo)> = assigned
            .iter()
            .filter_map(|tp| self.pending_seeks.get(tp).map(|to| (tp.clone(), *to)))
            .collect();
        if ready.is_empty() {
            return;
        }
        self.drop_buffered(&ready);
        match self.session.seek(ready.clone()).await {
            Ok(()) => {
                for (tp, _) in ready {
                    self.pending_seeks.remove(&tp);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "seek on assignment failed; retrying at the next poll")
            }
        }
    }

    fn clear_buffer(&mut self) {
        self.buffer.clear();
        self.buffered_bytes = 0;
        self.full_since = None;
    }

    /// Drops what was read ahead for these partitions (they are about to be repositioned).
    fn drop_buffered(&mut self, positions: &[(TopicPartition, SeekTo)]) {
        self.buffer.retain(|r| {
            !positions
                .iter()
                .any(|(tp, _)| tp.topic == r.topic && tp.partition == r.partition)
        });
        self.recount();
    }

    fn recount(&mut self) {
        self.buffered_bytes = self.buffer.iter().map(record_size).sum();
    }

    /// Whether the buffer holds as much as it may.
    fn is_full(&self) -> bool {
        self.buffer.len() >= self.limits.max_records || self.buffered_bytes >= self.limits.max_bytes
    }

    /// The client did not make room in [`PAUSE_AFTER`]: pause its partitions, poll on.
    async fn pause_assigned(&mut self) {
        if let Ok(assigned) = self.session.assignment().await {
            if self.session.pause(assigned).await.is_ok() {
                self.paused = true;
                return;
            }
        }
        // Not paused: poll on anyway (the buffer may overshoot by a poll) rather than hold
        // the rebalances back; the next full buffer tries again.
        self.full_since = None;
    }

    async fn maybe_resume(&mut self) {
        if !self.is_full() {
            self.full_since = None;
        }
        if self.paused
            && self.buffer.len() < self.limits.max_records / 2
            && self.buffered_bytes < self.limits.max_bytes / 2
        {
            if let Ok(assigned) = self.session.assignment().await {
                if self.session.resume(assigned).await.is_ok() {
                    self.paused = false;
                }
            }
        }
    }

    /// Hands buffered records to waiting fetches, oldest waiter first.
    async fn serve_waiters(&mut self) {
        while !self.buffer.is_empty() {
            let Some(w) = self.waiters.pop_front() else {
                break;
            };
            if w.reply.is_closed() {
                continue;
            }
            let mut taken = Vec::new();
            let mut bytes = 0;
            while taken.len() < w.max_records {
                let Some(next) = self.buffer.front() else {
                    break;
                };
                let size = record_size(next);
                if w.max_bytes.is_some_and(|max| bytes + size > max) {
                    break;
                }
                bytes += size;
                if let Some(r) = self.buffer.pop_front() {
                    taken.push(r);
                }
            }
            if taken.is_empty() {
                let size = self.buffer.front().map_or(0, record_size);
                let _ = w.reply.send(Ok(Fetched::TooLarge { size }));
                continue;
            }
            self.buffered_bytes -= bytes;
            let positions = next_positions(&taken);
            match w.reply.send(Ok(Fetched::Records(taken))) {
                Ok(()) => {
                    if let Err(e) = self.session.store_offsets(&positions) {
                        tracing::debug!(error = %e, "storing delivered offsets failed");
                    }
                }
                // The fetcher went away (client disconnected): keep the records for the next.
                Err(Ok(Fetched::Records(back))) => {
                    self.buffered_bytes += bytes;
                    for r in back.into_iter().rev() {
                        self.buffer.push_front(r);
                    }
                }
                Err(_) => {}
            }
        }
        self.maybe_resume().await;
    }

    fn expire_waiters(&mut self) {
        let now = Instant::now();
        let mut keep = VecDeque::new();
        for w in self.waiters.drain(..) {
            if w.deadline <= now {
                let _ = w.reply.send(Ok(Fetched::Records(Vec::new())));
            } else {
                keep.push_back(w);
            }
        }
        self.waiters = keep;
    }
}

/// The next offset to read per partition after these records.
fn next_positions(records: &[ConsumedRecord]) -> Vec<TopicPartitionOffset> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in records {
        let e = next.entry((r.topic.clone(), r.partition)).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    next.into_iter()
        .map(|((topic, partition), offset)| TopicPartitionOffset {
            topic,
            partition,
            offset,
        })
        .collect()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::panic)]
mod tests;
