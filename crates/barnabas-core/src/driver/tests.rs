//! The driver's promises, against a scripted in-memory consumer on a paused clock.
//!
//! Why not a real broker here: these tests pin down what the actor decides — which records a
//! fetch gets, which offsets count as consumed, when partitions are paused, resumed and
//! rewound — at exact instants (the one-second pause, a half-empty buffer), and run in
//! milliseconds so a mutation run can afford them per mutant. The same driver against real
//! Kafka is covered end to end by `tests/http_consumers.rs`, `tests/kafka_adapter.rs`, the
//! MQTT subscription and AMQP receiver tests.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::{sleep, timeout, Instant};

use super::*;
use crate::{ErrorKind, Header};

const TOPIC: &str = "t";

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new(TOPIC, partition)
}

fn record(partition: i32, offset: i64, value_bytes: usize) -> ConsumedRecord {
    ConsumedRecord {
        topic: TOPIC.into(),
        partition,
        offset,
        timestamp: None,
        key: None,
        value: Some(Bytes::from(vec![b'x'; value_bytes])),
        headers: Vec::new(),
    }
}

/// What the scripted consumer holds and what the driver did to it.
#[derive(Default)]
struct State {
    log: BTreeMap<TopicPartition, Vec<ConsumedRecord>>,
    /// Whether `subscribe` assigns every partition of the log at once (no rebalance event).
    assign_on_subscribe: bool,
    assigned: Vec<TopicPartition>,
    positions: BTreeMap<TopicPartition, i64>,
    paused: BTreeSet<TopicPartition>,
    pause_calls: usize,
    resume_calls: usize,
    stored: BTreeMap<TopicPartition, i64>,
    generation: u64,
    seeks: Vec<(TopicPartition, SeekTo)>,
    commits: Vec<CommitRequest>,
    polls: usize,
    poll_error: Option<Error>,
    subscribe_error: Option<Error>,
    closed: bool,
}

/// A consumer over an in-memory log: polls hand out records from each assigned, unpaused
/// partition's position, and an empty poll waits its whole timeout, as librdkafka's does.
struct Scripted(Mutex<State>);

impl Scripted {
    /// `counts[p]` records of `value_bytes` bytes in partition `p`.
    fn new(counts: &[usize], value_bytes: usize) -> Arc<Self> {
        let fake = Self(Mutex::new(State {
            assign_on_subscribe: true,
            ..State::default()
        }));
        for (p, &n) in counts.iter().enumerate() {
            fake.state().log.insert(tp(p as i32), Vec::new());
            fake.append(p as i32, n, value_bytes);
        }
        Arc::new(fake)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, partition: i32, n: usize, value_bytes: usize) {
        let mut s = self.state();
        let log = s.log.entry(tp(partition)).or_default();
        for _ in 0..n {
            let offset = log.len() as i64;
            log.push(record(partition, offset, value_bytes));
        }
    }

    /// A group rebalance: the assignment changes and the generation counter moves on.
    fn rebalance(&self, assigned: Vec<TopicPartition>) {
        let mut s = self.state();
        s.assigned = assigned;
        s.generation += 1;
    }
}

#[async_trait]
impl Consumer for Scripted {
    async fn subscribe(&self, _: Subscription) -> Result<()> {
        let mut s = self.state();
        if let Some(e) = s.subscribe_error.clone() {
            return Err(e);
        }
        if s.assign_on_subscribe {
            s.assigned = s.log.keys().cloned().collect();
        }
        Ok(())
    }

    async fn assign_at(&self, partitions: Vec<(TopicPartition, Option<SeekTo>)>) -> Result<()> {
        let mut s = self.state();
        s.assigned = partitions.iter().map(|(tp, _)| tp.clone()).collect();
        for (tp, to) in partitions {
            if let Some(SeekTo::Offset(o)) = to {
                s.positions.insert(tp, o);
            }
        }
        Ok(())
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.state().assigned.clear();
        Ok(())
    }

    fn subscription(&self) -> Option<Subscription> {
        None
    }

    async fn assignment(&self) -> Result<Vec<TopicPartition>> {
        Ok(self.state().assigned.clone())
    }

    async fn poll(&self, max_records: usize, wait: Duration) -> Result<Vec<ConsumedRecord>> {
        let records = {
            let mut s = self.state();
            s.polls += 1;
            if let Some(e) = s.poll_error.clone() {
                return Err(e);
            }
            let mut out = Vec::new();
            for tp in s.assigned.clone() {
                if s.paused.contains(&tp) {
                    continue;
                }
                let from = s.positions.get(&tp).copied().unwrap_or(0);
                let log = s.log.get(&tp).cloned().unwrap_or_default();
                for r in log.into_iter().filter(|r| r.offset >= from) {
                    if out.len() == max_records {
                        break;
                    }
                    s.positions.insert(tp.clone(), r.offset + 1);
                    out.push(r);
                }
            }
            out
        };
        if records.is_empty() {
            sleep(wait).await;
        }
        Ok(records)
    }

    async fn commit(&self, request: CommitRequest) -> Result<()> {
        self.state().commits.push(request);
        Ok(())
    }

    async fn committed(&self) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        Ok(Vec::new())
    }

    async fn committed_offsets(
        &self,
        _: Vec<TopicPartition>,
    ) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        Ok(Vec::new())
    }

    async fn seek(&self, positions: Vec<(TopicPartition, SeekTo)>) -> Result<()> {
        let mut s = self.state();
        for (tp, to) in positions {
            let offset = match to {
                SeekTo::Offset(o) => o,
                SeekTo::Beginning => 0,
                SeekTo::End => s.log.get(&tp).map_or(0, |l| l.len() as i64),
            };
            s.positions.insert(tp.clone(), offset);
            s.seeks.push((tp, to));
        }
        Ok(())
    }

    async fn positions(&self) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        Ok(Vec::new())
    }

    fn store_offsets(&self, offsets: &[TopicPartitionOffset]) -> Result<()> {
        let mut s = self.state();
        for o in offsets {
            s.stored
                .insert(TopicPartition::new(&o.topic, o.partition), o.offset);
        }
        Ok(())
    }

    async fn pause(&self, partitions: Vec<TopicPartition>) -> Result<()> {
        let mut s = self.state();
        s.pause_calls += 1;
        s.paused.extend(partitions);
        Ok(())
    }

    async fn resume(&self, partitions: Vec<TopicPartition>) -> Result<()> {
        let mut s = self.state();
        s.resume_calls += 1;
        for tp in partitions {
            s.paused.remove(&tp);
        }
        Ok(())
    }

    fn rebalance_generation(&self) -> u64 {
        self.state().generation
    }

    async fn close(&self) -> Result<()> {
        self.state().closed = true;
        Ok(())
    }
}

fn limits(max_records: usize, max_bytes: usize, poll_batch: usize) -> DriverLimits {
    DriverLimits {
        max_records,
        max_bytes,
        poll_batch,
    }
}

async fn subscribed(fake: &Arc<Scripted>, limits: DriverLimits) -> ConsumerDriver {
    let driver = ConsumerDriver::spawn(fake.clone(), limits);
    let topics = Subscription::Topics(vec![TOPIC.into()]);
    driver.subscribe(topics).await.expect("subscribe");
    driver
}

/// (partition, offset) of each record fetched; panics on `TooLarge`.
fn offsets(fetched: Fetched) -> Vec<(i32, i64)> {
    match fetched {
        Fetched::Records(rs) => rs.iter().map(|r| (r.partition, r.offset)).collect(),
        Fetched::TooLarge { size } => panic!("expected records, got TooLarge({size})"),
    }
}

async fn fetch(driver: &ConsumerDriver, max: usize, max_bytes: Option<usize>) -> Vec<(i32, i64)> {
    offsets(
        driver
            .fetch(max, max_bytes, Duration::from_secs(5))
            .await
            .expect("fetch"),
    )
}

fn range(partition: i32, offsets: std::ops::Range<i64>) -> Vec<(i32, i64)> {
    offsets.map(|o| (partition, o)).collect()
}

/// Lets the actor run up to `at` after `start` on the paused clock.
async fn until(start: Instant, at: Duration) {
    tokio::time::sleep_until(start + at).await;
}

#[test]
fn a_records_size_counts_key_value_and_header_bytes() {
    let mut r = record(0, 0, 5);
    r.key = Some(Bytes::from_static(b"abc"));
    r.headers = vec![
        Header {
            key: "ab".into(),
            value: Some(Bytes::from_static(b"1234")),
        },
        Header {
            key: "c".into(),
            value: None,
        },
    ];
    assert_eq!(record_size(&r), 3 + 5 + 2 + 4 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_gets_records_in_order_within_its_count_and_byte_limits() {
    let fake = Scripted::new(&[7], 10);
    let driver = subscribed(&fake, DriverLimits::default()).await;
    assert_eq!(fetch(&driver, 2, None).await, range(0, 0..2));
    // Exactly at the byte limit: both records fit.
    assert_eq!(fetch(&driver, 10, Some(20)).await, range(0, 2..4));
    assert_eq!(fetch(&driver, 10, Some(25)).await, range(0, 4..6));
    // The next record alone is larger than the fetch allows: it is reported and kept.
    match driver.fetch(10, Some(5), Duration::from_secs(1)).await {
        Ok(Fetched::TooLarge { size }) => assert_eq!(size, 10),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        fetch(&driver, 0, None).await,
        range(0, 6..7),
        "a count of 0 means 1"
    );
}

#[tokio::test(start_paused = true)]
async fn only_records_handed_over_count_as_consumed() {
    let fake = Scripted::new(&[5, 5], 10);
    let driver = subscribed(&fake, DriverLimits::default()).await;
    assert_eq!(fetch(&driver, 3, None).await, range(0, 0..3));
    // Everything was read ahead; only the three records handed over are stored.
    assert_eq!(fake.state().stored, BTreeMap::from([(tp(0), 3)]));
    let rest = fetch(&driver, 100, None).await;
    assert_eq!(rest, [range(0, 3..5), range(1, 0..5)].concat());
    assert_eq!(
        fake.state().stored,
        BTreeMap::from([(tp(0), 5), (tp(1), 5)])
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_fetch_answers_at_its_own_deadline_and_a_later_one_gets_new_records() {
    let fake = Scripted::new(&[0], 10);
    let driver = subscribed(&fake, DriverLimits::default()).await;
    let start = Instant::now();
    let timed = |wait: u64| {
        let driver = driver.clone();
        tokio::spawn(async move {
            let got = driver.fetch(10, None, Duration::from_secs(wait)).await;
            (got.map(offsets), start.elapsed())
        })
    };
    let (short, long) = (timed(1), timed(3));
    until(start, Duration::from_secs(2)).await;
    fake.append(0, 1, 10);
    let (got, took) = timeout(Duration::from_secs(30), short)
        .await
        .expect("answered")
        .expect("ran");
    assert_eq!(got, Ok(Vec::new()));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "{took:?}"
    );
    let (got, took) = timeout(Duration::from_secs(30), long)
        .await
        .expect("answered")
        .expect("ran");
    assert_eq!(got, Ok(range(0, 0..1)));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        fake.state().paused.is_empty(),
        "a buffer that is not full is never paused"
    );
    assert_eq!(fake.state().pause_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_is_paused_after_a_second_and_resumed_below_half_its_records() {
    let fake = Scripted::new(&[12], 10);
    let driver = subscribed(&fake, limits(10, usize::MAX, 4)).await;
    let start = Instant::now();
    until(start, Duration::from_millis(900)).await;
    let polls = fake.state().polls;
    assert_eq!(
        polls, 3,
        "three polls of 4 fill the buffer of 10, then polling stops"
    );
    assert!(fake.state().paused.is_empty(), "not paused before a second");
    until(start, Duration::from_millis(1100)).await;
    assert_eq!(fake.state().paused, BTreeSet::from([tp(0)]));
    assert!(
        fake.state().polls > polls,
        "paused, it polls on (for the group protocol)"
    );
    assert_eq!(fetch(&driver, 7, None).await.len(), 7);
    assert_eq!(fake.state().resume_calls, 0, "5 of 10 is not below half");
    assert_eq!(fetch(&driver, 1, None).await.len(), 1);
    assert_eq!(fake.state().resume_calls, 1, "4 of 10 is");
    assert!(fake.state().paused.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_counts_bytes_too_and_handing_over_makes_room() {
    let fake = Scripted::new(&[10], 10);
    let driver = subscribed(&fake, limits(1_000, 100, 5)).await;
    let start = Instant::now();
    until(start, Duration::from_millis(1100)).await;
    assert_eq!(fake.state().pause_calls, 1, "100 of 100 bytes is full");
    assert_eq!(fetch(&driver, 5, None).await.len(), 5);
    assert_eq!(
        fake.state().resume_calls,
        0,
        "50 of 100 bytes is not below half"
    );
    assert_eq!(fetch(&driver, 1, None).await.len(), 1);
    assert_eq!(fake.state().resume_calls, 1, "40 of 100 bytes is");
    // 40 bytes still buffered; 60 more make it full again.
    fake.append(0, 6, 10);
    let resumed = Instant::now();
    until(resumed, Duration::from_millis(1500)).await;
    assert_eq!(fake.state().pause_calls, 2, "40 + 60 bytes is full again");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_makes_room_within_the_second_is_never_paused() {
    let fake = Scripted::new(&[12], 10);
    let driver = subscribed(&fake, limits(10, usize::MAX, 4)).await;
    let start = Instant::now();
    until(start, Duration::from_millis(500)).await;
    let polls = fake.state().polls;
    assert_eq!(fetch(&driver, 7, None).await.len(), 7);
    until(start, Duration::from_secs(3)).await;
    assert_eq!(fake.state().pause_calls, 0);
    assert!(
        fake.state().polls > polls,
        "polling went on once there was room"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rebalance_drops_the_read_ahead_and_rewinds_the_partitions_still_assigned() {
    let fake = Scripted::new(&[10, 10], 10);
    let driver = subscribed(&fake, DriverLimits::default()).await;
    assert_eq!(fetch(&driver, 3, None).await, range(0, 0..3));
    fake.rebalance(vec![tp(0)]);
    let start = Instant::now();
    until(start, Duration::from_secs(1)).await;
    assert_eq!(fake.state().seeks, vec![(tp(0), SeekTo::Offset(3))]);
    assert_eq!(fetch(&driver, 100, None).await, range(0, 3..10));
}

#[tokio::test(start_paused = true)]
async fn a_rebalance_resumes_paused_partitions() {
    let fake = Scripted::new(&[12], 10);
    let _driver = subscribed(&fake, limits(10, usize::MAX, 4)).await;
    let start = Instant::now();
    until(start, Duration::from_millis(1100)).await;
    assert_eq!(fake.state().pause_calls, 1);
    // Paused partitions are still polled (for the group protocol): the next poll sees it.
    fake.rebalance(vec![tp(0)]);
    until(start, Duration::from_millis(1500)).await;
    assert_eq!(fake.state().resume_calls, 1);
    assert_eq!(fake.state().seeks, vec![(tp(0), SeekTo::Offset(0))]);
}

#[tokio::test(start_paused = true)]
async fn a_seek_drops_only_that_partitions_read_ahead() {
    let fake = Scripted::new(&[5, 5], 10);
    // 120 bytes: the 100 read ahead fit; counted without the dropped 50 they would not.
    let driver = subscribed(&fake, limits(1_000, 120, 500)).await;
    let start = Instant::now();
    until(start, Duration::from_millis(100)).await;
    driver
        .seek(vec![(tp(0), SeekTo::Offset(1))])
        .await
        .expect("seek");
    until(start, Duration::from_secs(2)).await;
    assert_eq!(
        fake.state().pause_calls,
        0,
        "50 + 40 bytes buffered, not full"
    );
    let mut got = fetch(&driver, 100, None).await;
    got.sort_unstable();
    assert_eq!(got, [range(0, 1..5), range(1, 0..5)].concat());
}

#[tokio::test(start_paused = true)]
async fn a_seek_for_later_waits_for_its_partition_and_is_not_rewound_over() {
    let fake = Scripted::new(&[10], 10);
    fake.state().assign_on_subscribe = false;
    let driver = subscribed(&fake, DriverLimits::default()).await;
    let when = vec![(tp(0), SeekTo::Offset(5))];
    driver
        .seek_when_assigned(when)
        .await
        .expect("seek when assigned");
    assert!(fake.state().seeks.is_empty(), "nothing assigned yet");
    fake.rebalance(vec![tp(0)]);
    assert_eq!(fetch(&driver, 1, None).await, range(0, 5..6));
    assert_eq!(fake.state().seeks, vec![(tp(0), SeekTo::Offset(5))]);
    // Assigned already: at once, and what was read ahead for it is dropped.
    let now = vec![(tp(0), SeekTo::Offset(8))];
    driver
        .seek_when_assigned(now)
        .await
        .expect("seek when assigned");
    assert_eq!(fetch(&driver, 100, None).await, range(0, 8..10));
}

#[tokio::test(start_paused = true)]
async fn assign_reads_the_given_partitions_from_the_given_offsets() {
    let fake = Scripted::new(&[5, 5], 10);
    let driver = ConsumerDriver::spawn(fake.clone(), DriverLimits::default());
    let at = vec![(tp(1), Some(SeekTo::Offset(2)))];
    driver.assign(at).await.expect("assign");
    assert_eq!(fetch(&driver, 100, None).await, range(1, 2..5));
    assert_eq!(driver.assignment().await, Ok(vec![tp(1)]));
}

#[tokio::test(start_paused = true)]
async fn unsubscribing_drops_the_read_ahead_and_stops_polling() {
    let fake = Scripted::new(&[5], 10);
    let driver = subscribed(&fake, DriverLimits::default()).await;
    let start = Instant::now();
    until(start, Duration::from_millis(100)).await;
    driver.unsubscribe().await.expect("unsubscribe");
    let polls = fake.state().polls;
    let got = driver
        .fetch(10, None, Duration::from_secs(1))
        .await
        .map(offsets);
    assert_eq!(got, Ok(Vec::new()));
    assert_eq!(fake.state().polls, polls);
}

#[tokio::test(start_paused = true)]
async fn a_failed_subscribe_does_not_start_polling() {
    let fake = Scripted::new(&[5], 10);
    fake.state().subscribe_error = Some(Error::Unavailable("down".into()));
    let driver = ConsumerDriver::spawn(fake.clone(), DriverLimits::default());
    let topics = Subscription::Topics(vec![TOPIC.into()]);
    assert!(driver.subscribe(topics).await.is_err());
    sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.state().polls, 0);
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_reaches_waiting_fetches_and_a_passing_failure_does_not() {
    let fake = Scripted::new(&[5], 10);
    fake.state().poll_error = Some(Error::Unavailable("broker down".into()));
    let driver = subscribed(&fake, DriverLimits::default()).await;
    let got = driver
        .fetch(10, None, Duration::from_secs(1))
        .await
        .map(offsets);
    assert_eq!(got, Ok(Vec::new()), "an outage is waited out");
    fake.state().poll_error = Some(Error::Unauthorized("denied".into()));
    let start = Instant::now();
    let got = driver.fetch(10, None, Duration::from_secs(10)).await;
    assert_eq!(
        got.map(offsets).map_err(|e| e.kind()),
        Err(ErrorKind::Unauthorized)
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    fake.state().poll_error = None;
    assert_eq!(
        fetch(&driver, 100, None).await,
        range(0, 0..5),
        "and it polls again"
    );
}

#[tokio::test(start_paused = true)]
async fn records_for_a_fetch_whose_client_went_away_go_to_the_next() {
    let fake = Scripted::new(&[0], 10);
    let driver = subscribed(&fake, DriverLimits::default()).await;
    let gone = {
        let driver = driver.clone();
        tokio::spawn(async move { driver.fetch(10, None, Duration::from_secs(10)).await })
    };
    sleep(Duration::from_millis(100)).await;
    gone.abort();
    fake.append(0, 3, 10);
    assert_eq!(fetch(&driver, 10, None).await, range(0, 0..3));
    assert_eq!(fake.state().stored.get(&tp(0)), Some(&3));
}

#[tokio::test(start_paused = true)]
async fn commits_and_closing_reach_the_consumer_and_a_closed_driver_refuses() {
    let fake = Scripted::new(&[1], 10);
    let driver = subscribed(&fake, DriverLimits::default()).await;
    driver
        .commit(CommitRequest::AllConsumed)
        .await
        .expect("commit");
    assert_eq!(fake.state().commits, vec![CommitRequest::AllConsumed]);
    driver.close().await.expect("close");
    assert!(fake.state().closed);
    let after = driver.fetch(1, None, Duration::from_secs(1)).await;
    assert_eq!(
        after.map(offsets).map_err(|e| e.kind()),
        Err(ErrorKind::Conflict)
    );
}
