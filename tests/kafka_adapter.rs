//! The Kafka adapter against a real broker (embedded tansu, one per test, random port).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{collections::BTreeSet, time::Duration};

use barnabas_core::{
    CommitRequest, ConsumerConfig, Error, Header, OffsetReset, Record, SeekTo, Subscription,
    TopicPartition, TopicPartitionOffset,
};
use bytes::Bytes;
use common::{broker, poll_n};

const WAIT: Duration = Duration::from_secs(60);

fn group(name: &str) -> ConsumerConfig {
    ConsumerConfig {
        group_id: name.into(),
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_consume_round_trip_keeps_keys_headers_and_timestamps() {
    let kafka = broker::start().await;
    let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();

    let records: Vec<Record> = (0..20)
        .map(|i| {
            Record::new("roundtrip", format!("value-{i}"))
                .with_key(format!("key-{}", i % 3))
                .with_header("barnabas.mqtt.topic", format!("devices/{i}/telemetry"))
                .with_header("trace", "abc")
        })
        .map(|mut r| {
            r.timestamp = Some(1_700_000_000_000);
            r
        })
        .collect();
    let mut with_null_header = Record::new("roundtrip", "last").with_key("key-x");
    with_null_header.headers.push(Header {
        key: "empty".into(),
        value: None,
    });
    let mut all = records.clone();
    all.push(with_null_header);

    let acks = backend
        .publisher
        .publish(barnabas_core::Identity::Gateway, all.clone())
        .await;
    assert_eq!(acks.len(), 21);
    let offsets: Vec<i64> = acks.iter().map(|a| a.as_ref().unwrap().offset).collect();
    assert_eq!(
        offsets,
        (0..21).collect::<Vec<_>>(),
        "one partition: offsets in order"
    );

    let consumer = backend.consumers.create(group("rt")).await.unwrap();
    consumer
        .subscribe(Subscription::Topics(vec!["roundtrip".into()]))
        .await
        .unwrap();
    let got = poll_n(consumer.as_ref(), 21, WAIT).await;
    assert_eq!(got.len(), 21);
    for (sent, read) in all.iter().zip(&got) {
        assert_eq!(read.topic, "roundtrip");
        assert_eq!(read.key, sent.key);
        assert_eq!(read.value, sent.value);
        assert_eq!(read.headers, sent.headers);
    }
    assert_eq!(got[0].timestamp, Some(1_700_000_000_000));
    assert_eq!(
        got[5].header("barnabas.mqtt.topic"),
        Some(&Bytes::from("devices/5/telemetry"))
    );
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_separate_writes_to_a_new_topic_all_succeed() {
    // Each write checks (and creates) its topic; a burst must cost one lookup, not one per
    // write (which timed out against the broker and lost QoS 0 publishes).
    let kafka = broker::start().await;
    let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();
    let writes = (0..1000).map(|i| {
        let publisher = backend.publisher.clone();
        async move {
            publisher
                .publish_one(
                    barnabas_core::Identity::Gateway,
                    Record::new("burst", format!("v{i}")),
                )
                .await
        }
    });
    let results = futures::future::join_all(writes).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tombstones_and_explicit_partitions_are_written_as_asked() {
    let kafka = broker::start().await;
    let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();
    backend
        .admin
        .create_topic("parts", Some(3), None)
        .await
        .unwrap();

    let mut tombstone = Record::default().with_key("gone").with_partition(2);
    tombstone.topic = "parts".into();
    let acks = backend
        .publisher
        .publish(
            barnabas_core::Identity::Gateway,
            vec![Record::new("parts", "p1").with_partition(1), tombstone],
        )
        .await;
    assert_eq!(acks[0].as_ref().unwrap().partition, 1);
    assert_eq!(acks[1].as_ref().unwrap().partition, 2);

    let consumer = backend.consumers.create(group("parts")).await.unwrap();
    consumer
        .assign(vec![TopicPartition::new("parts", 2)])
        .await
        .unwrap();
    let got = poll_n(consumer.as_ref(), 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, None, "a tombstone stays a null value");
    assert_eq!(got[0].key, Some(Bytes::from("gone")));
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_are_where_a_new_session_of_the_group_resumes() {
    let kafka = broker::start().await;
    let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();
    let batch: Vec<Record> = (0..10)
        .map(|i| Record::new("resume", format!("{i}")))
        .collect();
    assert!(backend
        .publisher
        .publish(barnabas_core::Identity::Gateway, batch)
        .await
        .iter()
        .all(Result::is_ok));

    // Session 1 reads everything but commits only the first five.
    let s1 = backend.consumers.create(group("g-resume")).await.unwrap();
    s1.subscribe(Subscription::Topics(vec!["resume".into()]))
        .await
        .unwrap();
    let got = poll_n(s1.as_ref(), 10, WAIT).await;
    assert_eq!(got.len(), 10);
    s1.commit(CommitRequest::Offsets(vec![TopicPartitionOffset {
        topic: "resume".into(),
        partition: 0,
        offset: got[4].offset + 1,
    }]))
    .await
    .unwrap();
    let committed = s1.committed().await.unwrap();
    assert_eq!(committed, vec![(TopicPartition::new("resume", 0), Some(5))]);
    s1.close().await.unwrap();
    drop(s1);

    // Session 2 of the same group starts exactly after the commit, then commits all it read.
    let s2 = backend.consumers.create(group("g-resume")).await.unwrap();
    s2.subscribe(Subscription::Topics(vec!["resume".into()]))
        .await
        .unwrap();
    let got = poll_n(s2.as_ref(), 5, WAIT).await;
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![5, 6, 7, 8, 9]);
    assert!(s2
        .poll(10, Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
    s2.commit(CommitRequest::AllConsumed).await.unwrap();
    assert_eq!(
        s2.positions().await.unwrap(),
        vec![(TopicPartition::new("resume", 0), Some(10))]
    );
    s2.close().await.unwrap();
    drop(s2);

    // Session 3 sees only what was produced after session 2's commit.
    assert!(backend
        .publisher
        .publish_one(
            barnabas_core::Identity::Gateway,
            Record::new("resume", "10")
        )
        .await
        .is_ok());
    let s3 = backend.consumers.create(group("g-resume")).await.unwrap();
    s3.subscribe(Subscription::Topics(vec!["resume".into()]))
        .await
        .unwrap();
    let got = poll_n(s3.as_ref(), 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].offset, 10);
    assert_eq!(got[0].value, Some(Bytes::from("10")));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sessions_in_one_group_split_the_partitions() {
    let kafka = broker::start().await;
    let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();
    backend
        .admin
        .create_topic("split", Some(2), None)
        .await
        .unwrap();

    let a = backend.consumers.create(group("g-split")).await.unwrap();
    let b = backend.consumers.create(group("g-split")).await.unwrap();
    a.subscribe(Subscription::Topics(vec!["split".into()]))
        .await
        .unwrap();
    b.subscribe(Subscription::Topics(vec!["split".into()]))
        .await
        .unwrap();

    // Both members must keep polling for the rebalance to complete.
    let deadline = std::time::Instant::now() + WAIT;
    let (pa, pb) = loop {
        let (ra, rb) = tokio::join!(
            a.poll(10, Duration::from_millis(200)),
            b.poll(10, Duration::from_millis(200))
        );
        assert!(
            ra.unwrap().is_empty() && rb.unwrap().is_empty(),
            "nothing produced yet"
        );
        let (pa, pb) = (a.assignment().await.unwrap(), b.assignment().await.unwrap());
        if pa.len() == 1 && pb.len() == 1 {
            break (pa, pb);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no split: {pa:?} / {pb:?}"
        );
    };
    let all: BTreeSet<_> = pa.iter().chain(&pb).cloned().collect();
    assert_eq!(
        all,
        BTreeSet::from([
            TopicPartition::new("split", 0),
            TopicPartition::new("split", 1)
        ])
    );

    let records: Vec<Record> = (0..20)
        .map(|i| Record::new("split", format!("{i}")).with_partition(i % 2))
        .collect();
    assert!(backend
        .publisher
        .publish(barnabas_core::Identity::Gateway, records)
        .await
        .iter()
        .all(Result::is_ok));
    let (got_a, got_b) = tokio::join!(poll_n(a.as_ref(), 10, WAIT), poll_n(b.as_ref(), 10, WAIT));
    assert_eq!((got_a.len(), got_b.len()), (10, 10));
    assert!(got_a.iter().all(|r| r.partition == pa[0].partition));
    assert!(got_b.iter().all(|r| r.partition == pb[0].partition));
}

#[tokio::test(flavor = "multi_thread")]
async fn watermarks_are_correct_after_batched_produces() {
    let kafka = broker::start().await;
    let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();

    // 50 records pipelined in one call land in one or few batches (linger 5 ms).
    let batch = |n: usize| {
        (0..n)
            .map(|i| Record::new("marks", format!("{i}")))
            .collect::<Vec<_>>()
    };
    assert!(backend
        .publisher
        .publish(barnabas_core::Identity::Gateway, batch(50))
        .await
        .iter()
        .all(Result::is_ok));
    let w = backend.admin.watermarks("marks", 0).await.unwrap();
    assert_eq!((w.low, w.high), (0, 50));
    assert!(backend
        .publisher
        .publish(barnabas_core::Identity::Gateway, batch(50))
        .await
        .iter()
        .all(Result::is_ok));
    assert_eq!(
        backend.admin.watermarks("marks", 0).await.unwrap().high,
        100
    );

    // Keyed records over three partitions: each high watermark is its partition's count.
    backend
        .admin
        .create_topic("marks3", Some(3), None)
        .await
        .unwrap();
    let keyed: Vec<Record> = (0..1000)
        .map(|i| Record::new("marks3", "x").with_key(format!("device-{i}")))
        .collect();
    let acks = backend
        .publisher
        .publish(barnabas_core::Identity::Gateway, keyed)
        .await;
    let mut per_partition = [0i64; 3];
    for ack in &acks {
        per_partition[ack.as_ref().unwrap().partition as usize] += 1;
    }
    let mut total = 0;
    for p in 0..3 {
        let w = backend.admin.watermarks("marks3", p).await.unwrap();
        assert_eq!(w.low, 0);
        assert_eq!(w.high, per_partition[p as usize], "partition {p}");
        total += w.high;
    }
    assert_eq!(total, 1000);
    assert!(
        per_partition.iter().all(|&n| n > 0),
        "keys spread: {per_partition:?}"
    );
    assert!(matches!(
        backend.admin.watermarks("marks3", 7).await,
        Err(Error::UnknownPartition { partition: 7, .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_create_missing_topics_with_the_default_partitions() {
    let kafka = broker::start().await;
    let mut config = broker::kafka_config(&kafka);
    config.default_partitions = 3;
    let backend = barnabas_kafka::connect(&config).unwrap();

    assert!(!backend
        .admin
        .list_topics()
        .await
        .unwrap()
        .contains(&"fresh".to_string()));
    let ack = backend
        .publisher
        .publish_one(
            barnabas_core::Identity::Gateway,
            Record::new("fresh", "hello"),
        )
        .await
        .unwrap();
    assert_eq!(ack.offset, 0);
    assert!(backend
        .admin
        .list_topics()
        .await
        .unwrap()
        .contains(&"fresh".to_string()));
    let md = backend.admin.topic_metadata("fresh").await.unwrap();
    assert_eq!(md.partitions.len(), 3);
    assert_eq!(
        md.partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );

    // A partition beyond the topic's is a clear error, not a produce that hangs.
    let err = backend
        .publisher
        .publish_one(
            barnabas_core::Identity::Gateway,
            Record::new("fresh", "x").with_partition(5),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::UnknownPartition {
            topic: "fresh".into(),
            partition: 5
        }
    );
    // So is a name Kafka cannot hold.
    let err = backend
        .publisher
        .publish_one(
            barnabas_core::Identity::Gateway,
            Record::new("devices/1", "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTopic { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auto_create_off_a_write_to_a_missing_topic_is_unknown_topic() {
    let kafka = broker::start().await;
    let mut config = broker::kafka_config(&kafka);
    config.auto_create_topics = false;
    let backend = barnabas_kafka::connect(&config).unwrap();

    let started = std::time::Instant::now();
    let results = backend
        .publisher
        .publish(
            barnabas_core::Identity::Gateway,
            vec![Record::new("absent", "a"), Record::new("absent", "b")],
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered promptly"
    );
    for r in results {
        assert_eq!(r.unwrap_err(), Error::UnknownTopic("absent".into()));
    }
    assert!(!backend
        .admin
        .list_topics()
        .await
        .unwrap()
        .contains(&"absent".to_string()));
    assert_eq!(
        backend.admin.topic_metadata("absent").await.unwrap_err(),
        Error::UnknownTopic("absent".into())
    );

    // An existing topic still works.
    backend
        .admin
        .create_topic("present", None, None)
        .await
        .unwrap();
    assert!(backend
        .publisher
        .publish_one(
            barnabas_core::Identity::Gateway,
            Record::new("present", "ok")
        )
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn seek_and_positions_move_the_read_position() {
    let kafka = broker::start().await;
    let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();
    let batch: Vec<Record> = (0..10)
        .map(|i| Record::new("seek", format!("{i}")))
        .collect();
    assert!(backend
        .publisher
        .publish(barnabas_core::Identity::Gateway, batch)
        .await
        .iter()
        .all(Result::is_ok));

    let c = backend.consumers.create(group("g-seek")).await.unwrap();
    let tp = TopicPartition::new("seek", 0);
    c.assign(vec![tp.clone()]).await.unwrap();
    assert_eq!(poll_n(c.as_ref(), 10, WAIT).await.len(), 10);
    assert_eq!(c.positions().await.unwrap(), vec![(tp.clone(), Some(10))]);

    c.seek(vec![(tp.clone(), SeekTo::Offset(7))]).await.unwrap();
    let got = poll_n(c.as_ref(), 3, WAIT).await;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );

    c.seek(vec![(tp.clone(), SeekTo::Beginning)]).await.unwrap();
    assert_eq!(poll_n(c.as_ref(), 1, WAIT).await[0].offset, 0);

    c.seek(vec![(tp.clone(), SeekTo::End)]).await.unwrap();
    assert!(c
        .poll(10, Duration::from_millis(700))
        .await
        .unwrap()
        .is_empty());
    assert!(backend
        .publisher
        .publish_one(barnabas_core::Identity::Gateway, Record::new("seek", "new"))
        .await
        .is_ok());
    assert_eq!(poll_n(c.as_ref(), 1, WAIT).await[0].offset, 10);

    // Seeking a partition this consumer does not hold is a state error, not a hang.
    let err = c
        .seek(vec![(TopicPartition::new("seek", 3), SeekTo::Beginning)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::IllegalState(_) | Error::UnknownPartition { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pattern_subscription_reads_matching_topics_only() {
    let kafka = broker::start().await;
    let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();
    for t in ["casper.main", "casper.sigs", "other"] {
        assert!(backend
            .publisher
            .publish_one(barnabas_core::Identity::Gateway, Record::new(t, t))
            .await
            .is_ok());
    }
    let c = backend.consumers.create(group("g-pattern")).await.unwrap();
    c.subscribe(Subscription::Pattern("casper\\..*".into()))
        .await
        .unwrap();
    assert_eq!(
        c.subscription(),
        Some(Subscription::Pattern("casper\\..*".into()))
    );
    let got = poll_n(c.as_ref(), 2, WAIT).await;
    let topics: BTreeSet<_> = got.iter().map(|r| r.topic.clone()).collect();
    assert_eq!(
        topics,
        BTreeSet::from(["casper.main".to_string(), "casper.sigs".to_string()])
    );
    assert!(
        c.poll(10, Duration::from_millis(700))
            .await
            .unwrap()
            .is_empty(),
        "'other' not read"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_to_a_missing_topic_waits_for_it_without_creating_it() {
    let kafka = broker::start().await;
    let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();
    let c = backend.consumers.create(group("g-later")).await.unwrap();
    c.subscribe(Subscription::Topics(vec!["later".into()]))
        .await
        .unwrap();
    assert!(c.poll(10, Duration::from_secs(1)).await.unwrap().is_empty());
    assert!(
        !backend
            .admin
            .list_topics()
            .await
            .unwrap()
            .contains(&"later".to_string()),
        "reading never creates"
    );

    assert!(backend
        .publisher
        .publish_one(
            barnabas_core::Identity::Gateway,
            Record::new("later", "arrived")
        )
        .await
        .is_ok());
    let got = poll_n(c.as_ref(), 1, WAIT).await;
    assert_eq!(got.len(), 1, "the topic is picked up when it appears");
    assert_eq!(got[0].value, Some(Bytes::from("arrived")));
}

/// What the two driver tests share: 500 records on `topic`, and a driver with a read-ahead of
/// 20 records (polls of 5) over a consumer of `group` subscribed to it, its pauses counted.
struct SmallDriver {
    _kafka: broker::TestBroker,
    driver: barnabas_core::ConsumerDriver,
    session: std::sync::Arc<dyn barnabas_core::Consumer>,
    counted: std::sync::Arc<CountsPauses>,
}

impl SmallDriver {
    async fn over_500_records(topic: &str, group_id: &str) -> SmallDriver {
        use barnabas_core::{ConsumerDriver, DriverLimits};

        let kafka = broker::start().await;
        let backend = barnabas_kafka::connect(&broker::kafka_config(&kafka)).unwrap();
        let records: Vec<Record> = (0..500)
            .map(|i| Record::new(topic, format!("{i}")))
            .collect();
        assert!(backend
            .publisher
            .publish(barnabas_core::Identity::Gateway, records)
            .await
            .iter()
            .all(Result::is_ok));
        let session = backend
            .consumers
            .create(ConsumerConfig {
                explicit_offset_store: true,
                ..group(group_id)
            })
            .await
            .unwrap();
        let limits = DriverLimits {
            max_records: 20,
            max_bytes: 1 << 20,
            poll_batch: 5,
        };
        let counted = std::sync::Arc::new(CountsPauses::new(session.clone()));
        let driver = ConsumerDriver::spawn(counted.clone(), limits);
        driver
            .subscribe(Subscription::Topics(vec![topic.into()]))
            .await
            .unwrap();
        SmallDriver {
            _kafka: kafka,
            driver,
            session,
            counted,
        }
    }

    /// Fetches `batch` records at a time until all 500 came (bounded); their offsets.
    async fn fetch_all(&self, batch: usize) -> Vec<i64> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        while got.len() < 500 {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} records",
                got.len()
            );
            match self
                .driver
                .fetch(batch, None, Duration::from_secs(1))
                .await
                .unwrap()
            {
                barnabas_core::Fetched::Records(b) => got.extend(b.into_iter().map(|r| r.offset)),
                barnabas_core::Fetched::TooLarge { .. } => panic!("no byte limit was set"),
            }
        }
        got
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_driver_reads_ahead_only_up_to_its_bound_and_loses_nothing() {
    let t = SmallDriver::over_500_records("bp", "g-bp").await;

    // Nobody fetches: the driver fills its buffer, pauses, and stops advancing.
    let mut position = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        position = t
            .session
            .positions()
            .await
            .unwrap()
            .first()
            .and_then(|(_, p)| *p)
            .unwrap_or(0);
    }
    assert!(position > 0, "the driver read ahead");
    assert!(
        position <= 30,
        "read-ahead stopped at its bound, position {position}"
    );
    assert!(
        t.counted.pauses() >= 1,
        "a client that does not read is paused"
    );

    // Fetching drains the buffer and resumes reading: all 500, in order, once.
    assert_eq!(t.fetch_all(50).await, (0..500).collect::<Vec<i64>>());
    // What was handed out is what "commit all consumed" commits.
    t.driver.commit(CommitRequest::AllConsumed).await.unwrap();
    assert_eq!(
        t.session.committed().await.unwrap(),
        vec![(TopicPartition::new("bp", 0), Some(500))]
    );
    t.driver.close().await.unwrap();
}

/// A client that keeps fetching never gets its partitions paused: pausing makes librdkafka
/// drop its prefetched records and wait for the fetch in flight (up to 500 ms) before it
/// fetches again, so a driver that paused whenever its small buffer filled stalled a reading
/// HTTP consumer every 500 records (2 000 records/s where Strimzi's bridge read 120 000).
/// Broken to pause at once when full (as before): 10 pauses here, and 6 s instead of 1 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_keeps_reading_is_never_paused_and_gets_everything_once() {
    let t = SmallDriver::over_500_records("steady", "g-steady").await;
    assert_eq!(t.fetch_all(10).await, (0..500).collect::<Vec<i64>>());
    assert_eq!(t.counted.pauses(), 0, "a reading client was paused");
    t.driver.close().await.unwrap();
}

/// A consumer session that counts the driver's pauses and otherwise is the one it wraps.
struct CountsPauses {
    inner: std::sync::Arc<dyn barnabas_core::Consumer>,
    pauses: std::sync::atomic::AtomicUsize,
}

impl CountsPauses {
    fn new(inner: std::sync::Arc<dyn barnabas_core::Consumer>) -> Self {
        Self {
            inner,
            pauses: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn pauses(&self) -> usize {
        self.pauses.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl barnabas_core::Consumer for CountsPauses {
    async fn subscribe(&self, s: Subscription) -> barnabas_core::Result<()> {
        self.inner.subscribe(s).await
    }
    async fn assign_at(
        &self,
        ps: Vec<(TopicPartition, Option<barnabas_core::SeekTo>)>,
    ) -> barnabas_core::Result<()> {
        self.inner.assign_at(ps).await
    }
    async fn unsubscribe(&self) -> barnabas_core::Result<()> {
        self.inner.unsubscribe().await
    }
    fn subscription(&self) -> Option<Subscription> {
        self.inner.subscription()
    }
    async fn assignment(&self) -> barnabas_core::Result<Vec<TopicPartition>> {
        self.inner.assignment().await
    }
    async fn poll(
        &self,
        max: usize,
        timeout: Duration,
    ) -> barnabas_core::Result<Vec<barnabas_core::ConsumedRecord>> {
        self.inner.poll(max, timeout).await
    }
    async fn commit(&self, r: CommitRequest) -> barnabas_core::Result<()> {
        self.inner.commit(r).await
    }
    async fn committed(&self) -> barnabas_core::Result<Vec<(TopicPartition, Option<i64>)>> {
        self.inner.committed().await
    }
    async fn committed_offsets(
        &self,
        ps: Vec<TopicPartition>,
    ) -> barnabas_core::Result<Vec<(TopicPartition, Option<i64>)>> {
        self.inner.committed_offsets(ps).await
    }
    async fn seek(
        &self,
        ps: Vec<(TopicPartition, barnabas_core::SeekTo)>,
    ) -> barnabas_core::Result<()> {
        self.inner.seek(ps).await
    }
    async fn positions(&self) -> barnabas_core::Result<Vec<(TopicPartition, Option<i64>)>> {
        self.inner.positions().await
    }
    fn store_offsets(
        &self,
        o: &[barnabas_core::TopicPartitionOffset],
    ) -> barnabas_core::Result<()> {
        self.inner.store_offsets(o)
    }
    async fn pause(&self, ps: Vec<TopicPartition>) -> barnabas_core::Result<()> {
        self.pauses
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.pause(ps).await
    }
    async fn resume(&self, ps: Vec<TopicPartition>) -> barnabas_core::Result<()> {
        self.inner.resume(ps).await
    }
    fn rebalance_generation(&self) -> u64 {
        self.inner.rebalance_generation()
    }
    async fn close(&self) -> barnabas_core::Result<()> {
        self.inner.close().await
    }
}

/// A TCP relay to a broker, on threads of its own (outliving any runtime), that can be made
/// to swallow everything: connections stay open, nothing passes either way — a broker that
/// hangs, which a client only notices at its request timeouts.
struct BlackHoleRelay {
    addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BlackHoleRelay {
    fn start(broker: std::net::SocketAddr, addr: std::net::SocketAddr) -> Self {
        use std::{
            io::{Read, Write},
            net::{TcpListener, TcpStream},
            sync::{atomic::AtomicBool, atomic::Ordering, Arc},
        };
        let frozen = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind(addr).unwrap();
        let flag = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(broker) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while flag.load(Ordering::SeqCst) {
                                // Swallowed: hold both ends open, pass nothing.
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A consumer whose broker hangs is closed while a poll still holds its client, and then the
/// runtime shuts down, dropping that poll. Leaving the group then waits for requests nobody
/// answers (librdkafka's close has no deadline of its own), yet the runtime — the gateway
/// process, or a test — must end at once: the close runs on a thread of its own, whoever lets
/// go of the client last. (Closed on the thread that dropped the poll, the runtime's shutdown
/// waited for the close's request timeouts: this test failed.)
#[test]
fn a_runtime_ends_while_a_consumer_of_a_hanging_broker_is_still_closing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let relay_addr = common::free_addr();
    let relay = rt.block_on(async {
        // Clients reach the broker only through the relay (it is what the broker advertises).
        let broker_addr = common::free_addr();
        let relay = BlackHoleRelay::start(broker_addr, relay_addr);
        let kafka = barnabas::embedded::EmbeddedKafka::start(
            broker_addr,
            Some(relay_addr.to_string()),
            barnabas::embedded::Storage::Temporary,
        )
        .await
        .unwrap();
        let config = barnabas_kafka::KafkaConfig {
            bootstrap_servers: relay.addr.to_string(),
            default_replication_factor: 1,
            ..barnabas_kafka::KafkaConfig::default()
        };
        let backend = barnabas_kafka::connect(&config).unwrap();
        assert!(backend
            .publisher
            .publish_one(
                barnabas_core::Identity::Gateway,
                Record::new("hanging", "one")
            )
            .await
            .is_ok());
        let consumer = backend.consumers.create(group("g-hang")).await.unwrap();
        consumer
            .subscribe(Subscription::Topics(vec!["hanging".into()]))
            .await
            .unwrap();
        assert_eq!(
            poll_n(consumer.as_ref(), 1, WAIT).await.len(),
            1,
            "joined and read"
        );

        // A long poll in flight holds the client; then the broker hangs.
        let polling = consumer.clone();
        tokio::spawn(async move {
            let _ = polling.poll(10, Duration::from_secs(3600)).await;
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        relay.freeze();
        // Returns at once: the client is still held by the poll.
        consumer.close().await.unwrap();
        // The broker itself stays up (the relay swallows), until this test's process ends.
        std::mem::forget(kafka);
        relay
    });
    let (ended, ended_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(rt);
        let _ = ended.send(());
    });
    assert!(
        ended_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the runtime did not end: a consumer's close held it"
    );
    drop(relay);
}
