//! Scenario 7: broker-side errors no real broker returns on demand, injected with librdkafka's
//! own mock cluster (`rdkafka::mocking::MockCluster`, which issue 11 allows for exactly this).
//! The gateway runs in-process against the mock cluster's two brokers; HTTP produce is the
//! client, because its answer names each record's fate. Asserted each time: a record with a
//! positive answer is stored exactly once; a record the broker never took gets a clear
//! negative answer (never an offset); the gateway carries on by itself once the fault is gone.

use std::{collections::BTreeMap, time::Duration};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    mocking::MockCluster,
    types::{RDKafkaApiKey, RDKafkaRespErr},
    ClientConfig, Message, Offset, TopicPartitionList,
};
use serde_json::{json, Value};

use crate::common::gateway::{self, TestGateway, JSON};

const TOPIC: &str = "mock-orders";
/// The gateway's delivery deadline (`kafka.produce_timeout_ms`) in this scenario.
const PRODUCE_TIMEOUT_MS: u64 = 3_000;

/// Produces `values` in one request, each to its partition; returns each record's answer.
async fn produce(gw: &TestGateway, records: &[(i32, String)]) -> Vec<Value> {
    let body = json!({
        "records": records
            .iter()
            .map(|(p, v)| json!({ "partition": p, "value": v }))
            .collect::<Vec<_>>()
    });
    let a = gw.post_json(&format!("/topics/{TOPIC}"), JSON, &body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json["offsets"].as_array().unwrap().clone()
}

fn batch(partition: i32, prefix: &str, n: usize) -> Vec<(i32, String)> {
    (0..n)
        .map(|i| (partition, format!("{prefix}-{i}")))
        .collect()
}

/// Every value stored in the topic with how many times it is there.
fn stored(bootstrap: &str) -> BTreeMap<String, usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "mock-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = BTreeMap::new();
    let mut quiet = 0;
    // Read until nothing new arrives for 3 s in a row.
    while quiet < 30 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet = 0;
                // The gateway stores a JSON-format value as its JSON text.
                let v: String = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
                *seen.entry(v).or_insert(0) += 1;
            }
            Some(Err(e)) => panic!("reading the mock cluster: {e}"),
            None => quiet += 1,
        }
    }
    seen
}

/// Values answered with an offset; panics on an answer that is neither offset nor error.
fn split(sent: &[(i32, String)], answers: &[Value]) -> (Vec<String>, Vec<Value>) {
    assert_eq!(sent.len(), answers.len());
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for ((_, v), a) in sent.iter().zip(answers) {
        if a["offset"].is_i64() {
            acked.push(v.clone());
        } else {
            assert!(
                a["error_code"].is_u64() && a["message"].as_str().is_some_and(|m| !m.is_empty()),
                "an answer is an offset or a clear error: {a}"
            );
            refused.push(a.clone());
        }
    }
    (acked, refused)
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_errors_get_negative_answers_and_nothing_acknowledged_is_lost() {
    let mock = MockCluster::new(2).unwrap();
    mock.create_topic(TOPIC, 2, 1).unwrap();
    mock.partition_leader(TOPIC, 0, Some(1)).unwrap();
    mock.partition_leader(TOPIC, 1, Some(2)).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let gw = gateway::start_on(Some(bootstrap.clone()), |c| {
        c.kafka.produce_timeout_ms = PRODUCE_TIMEOUT_MS;
    })
    .await;
    let mut acked = Vec::new();

    // a) NOT_ENOUGH_REPLICAS three times, then accepted: the idempotent producer retries, the
    //    client gets its offsets once the broker took the records, each stored once.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );
    let sent = batch(0, "retried", 20);
    let (ok, refused) = split(&sent, &produce(&gw, &sent).await);
    assert!(
        refused.is_empty(),
        "transient errors are retried: {refused:?}"
    );
    acked.extend(ok);

    // b) NOT_ENOUGH_REPLICAS on every attempt: after the delivery deadline every record is
    //    answered with an error, none with an offset.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 10_000],
    );
    let sent = batch(0, "refused", 10);
    let started = std::time::Instant::now();
    let (ok, refused) = split(&sent, &produce(&gw, &sent).await);
    assert!(
        ok.is_empty(),
        "nothing acknowledged while the broker refuses: {ok:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(PRODUCE_TIMEOUT_MS * 3),
        "the negative answer came within the delivery deadline, not never: {:?}",
        started.elapsed()
    );
    assert!(
        refused.iter().all(|a| a["error_code"] == 503),
        "a broker that does not take the write is 503 (retry later): {refused:?}"
    );
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    let sent = batch(0, "after-refusal", 10);
    let (ok, refused) = split(&sent, &produce(&gw, &sent).await);
    assert!(refused.is_empty(), "recovered by itself: {refused:?}");
    acked.extend(ok);

    // c) Requests to one partition's leader time out (10 s round trip, past the deadline):
    //    that partition's records are refused, the other partition's are acknowledged.
    mock.broker_round_trip_time(2, Duration::from_secs(10))
        .unwrap();
    let mut sent = batch(0, "healthy-partition", 10);
    sent.extend(batch(1, "slow-partition", 10));
    let (ok, refused) = split(&sent, &produce(&gw, &sent).await);
    assert_eq!(
        ok.iter()
            .filter(|v| v.starts_with("healthy-partition"))
            .count(),
        10,
        "the healthy partition is served: {ok:?} / {refused:?}"
    );
    assert!(
        !ok.iter().any(|v| v.starts_with("slow-partition")),
        "nothing acknowledged on the partition whose leader does not answer in time: {ok:?}"
    );
    assert_eq!(refused.len(), 10);
    acked.extend(ok);
    mock.broker_round_trip_time(2, Duration::ZERO).unwrap();
    // The slow requests are still in flight for a while; once they are answered, partition 1
    // takes writes again through the same gateway.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sent = batch(1, "after-slowness", 1);
        let (ok, _) = split(&sent, &produce(&gw, &sent).await);
        if !ok.is_empty() {
            acked.extend(ok);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partition 1 never took writes again"
        );
    }

    // Every acknowledged record is stored exactly once (the idempotent producer's promise).
    let seen = tokio::task::spawn_blocking(move || stored(&bootstrap))
        .await
        .unwrap();
    for v in &acked {
        assert_eq!(
            seen.get(v),
            Some(&1),
            "{v} acknowledged: stored once; stored: {seen:?}"
        );
    }
    assert_eq!(acked.len(), 20 + 10 + 10 + 1);
    // What the broker refused outright is not there; a record whose answer timed out may be
    // (the request reached the broker; the client was told 503, not an offset).
    assert!(
        !seen.keys().any(|v| v.starts_with("refused")),
        "refused records are not stored: {seen:?}"
    );
    gw.stop().await;
}
