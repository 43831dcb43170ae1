//! The load of each scenario.

use std::{collections::VecDeque, time::Instant};

use anyhow::{anyhow, bail, Context, Result};
use barnabas_core::{Backend, Record};
use barnabas_mqtt::convert;
use fe2o3_amqp::{
    types::{
        messaging::{Message, Outcome},
        primitives::Binary,
    },
    Sender,
};
use futures::{stream::FuturesUnordered, StreamExt};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::{amqp::AmqpSession, Target};

/// Load settings shared by the throughput scenarios.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Messages per scenario.
    pub count: usize,
    /// Payload bytes.
    pub size: usize,
    /// MQTT and HTTP client connections.
    pub conns: usize,
    /// Unacknowledged QoS 1/2 publishes per MQTT connection, and unsettled AMQP transfers.
    pub inflight: usize,
}

/// Runs one throughput scenario against the gateway (`mosquitto` = the MQTT address of a
/// local mosquitto for the `mosquitto-*` scenarios, `strimzi` = the HTTP address of a Strimzi
/// Kafka Bridge on the same Kafka for the `strimzi-*` ones). Returns (messages, seconds).
pub async fn run(
    name: &str,
    t: &Target,
    baselines: &Baselines,
    load: Load,
) -> Result<(usize, f64)> {
    let (mosquitto, strimzi) = (baselines.mosquitto, baselines.strimzi);
    let kafka = barnabas_kafka::connect(&barnabas_kafka::KafkaConfig {
        bootstrap_servers: t.kafka.clone(),
        ..barnabas_kafka::KafkaConfig::default()
    })
    .map_err(|e| anyhow!("kafka client: {e}"))?;
    let payload = vec![b'x'; load.size];
    let mosq = || mosquitto.context("mosquitto not started");
    let bridge = || strimzi.context("no Strimzi bridge given (--strimzi)");
    // The bridge creates no topics (and Apache Kafka's auto-create is usually off): its topics
    // exist before the clock starts. The gateway creates its own, as it does for clients.
    if let Some(per_request) = name.strip_prefix("strimzi-http-produce-") {
        let topic = format!("bench-strimzi-{per_request}");
        kafka
            .admin
            .create_topic(&topic, Some(1), Some(1))
            .await
            .map_err(|e| anyhow!("creating {topic}: {e}"))?;
    }
    // The consumers' scenarios read one topic the direct producer filled first.
    if name.ends_with("http-consume") {
        fill(&kafka, CONSUMED, load.count, &payload).await?;
    }
    if name == "direct-java" {
        let libs = baselines
            .kafka_libs
            .as_deref()
            .context("direct-java needs --kafka-libs")?;
        return java_producer(libs, &t.kafka, &kafka, load).await;
    }
    if let Some(base) = consumer_base(name, t, strimzi) {
        return crate::http_consume::drain(&base?, CONSUMED, load.count).await;
    }
    let direct_records: Option<MakeRecord> = match name {
        "direct" => Some(bare),
        "direct-mqtt-records" => Some(like_mqtt),
        _ => None,
    };
    if let Some(make) = direct_records {
        warm_up(&kafka, DIRECT_TOPIC, &payload, make).await?;
        let started = Instant::now();
        let messages = direct(&kafka, DIRECT_TOPIC, load.count, &payload, make).await?;
        return Ok((messages, started.elapsed().as_secs_f64()));
    }
    let started = Instant::now();
    let messages = match name {
        "mqtt-qos0" => mqtt(t.mqtt, Some(&kafka), QoS::AtMostOnce, &payload, load).await?,
        "mqtt-qos1" => mqtt(t.mqtt, Some(&kafka), QoS::AtLeastOnce, &payload, load).await?,
        "mqtt-qos2" => mqtt(t.mqtt, Some(&kafka), QoS::ExactlyOnce, &payload, load).await?,
        "mosquitto-qos0" => mqtt(mosq()?, None, QoS::AtMostOnce, &payload, load).await?,
        "mosquitto-qos1" => mqtt(mosq()?, None, QoS::AtLeastOnce, &payload, load).await?,
        "http-produce-1" => http(gateway_topic(t, 1), 1, load).await?,
        "http-produce-100" => http(gateway_topic(t, 100), 100, load).await?,
        "strimzi-http-produce-1" => http(strimzi_topic(bridge()?, 1), 1, load).await?,
        "strimzi-http-produce-100" => http(strimzi_topic(bridge()?, 100), 100, load).await?,
        "amqp-send" => amqp(t, load.count, &payload, load.inflight).await?,
        other => bail!("unknown scenario {other}"),
    };
    Ok((messages, started.elapsed().as_secs_f64()))
}

/// What the scenarios compare against, beside the direct producer: a local mosquitto (its
/// MQTT address, for `mosquitto-*`), a Strimzi Kafka Bridge on the same Kafka (its HTTP
/// address, for `strimzi-*`), Apache Kafka's jars (for `direct-java`).
#[derive(Debug, Clone, Default)]
pub struct Baselines {
    pub mosquitto: Option<std::net::SocketAddr>,
    pub strimzi: Option<std::net::SocketAddr>,
    pub kafka_libs: Option<std::path::PathBuf>,
}

/// The topic the `*http-consume` scenarios read.
const CONSUMED: &str = "bench-consume";

/// The HTTP base URL a `*http-consume` scenario reads through (`None`: not such a scenario).
fn consumer_base(
    name: &str,
    t: &Target,
    strimzi: Option<std::net::SocketAddr>,
) -> Option<Result<String>> {
    match name {
        "http-consume" => Some(Ok(format!("http://{}", t.http))),
        "strimzi-http-consume" => Some(
            strimzi
                .map(|s| format!("http://{s}"))
                .context("no Strimzi bridge given (--strimzi)"),
        ),
        _ => None,
    }
}

/// Makes `topic` hold at least `count` records (bare values, the direct producer's).
async fn fill(kafka: &Backend, topic: &str, count: usize, payload: &[u8]) -> Result<()> {
    let held = usize::try_from(stored(kafka, topic).await?).unwrap_or(0);
    if held < count {
        direct(kafka, topic, count - held, payload, bare).await?;
    }
    Ok(())
}

/// The Kafka Java producer's own benchmark (`kafka-producer-perf-test`, the class
/// `org.apache.kafka.tools.ProducerPerformance` from the jars in `libs`) with the gateway's
/// producer settings (acks=all, idempotent, linger 5 ms) to the same broker. The rate is the
/// tool's own figure (the JVM's start is not counted); returns (records, seconds).
async fn java_producer(
    libs: &std::path::Path,
    bootstrap: &str,
    kafka: &Backend,
    load: Load,
) -> Result<(usize, f64)> {
    const TOPIC: &str = "bench-direct-java";
    // The same partitions as the gateway gives `bench-direct` (auto-create may be off).
    if kafka.admin.topic_metadata(TOPIC).await.is_err() {
        kafka
            .admin
            .create_topic(TOPIC, None, None)
            .await
            .map_err(|e| anyhow!("creating {TOPIC}: {e}"))?;
    }
    let mut command = std::process::Command::new("java");
    command
        .args(["-Xmx512m", "-cp", &format!("{}/*", libs.display())])
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", TOPIC, "--throughput", "-1"])
        .args(["--num-records", &load.count.to_string()])
        .args(["--record-size", &load.size.to_string()])
        .arg("--producer-props")
        .arg(format!("bootstrap.servers={bootstrap}"))
        .args(["acks=all", "enable.idempotence=true", "linger.ms=5"]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| anyhow!("{e}"))?
        .context("running java (kafka-producer-perf-test)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "kafka-producer-perf-test: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The last line: "N records sent, R records/sec (…)".
    let rate = stdout
        .lines()
        .rev()
        .find_map(|l| {
            let (_, rest) = l.split_once(" records sent, ")?;
            rest.split_once(" records/sec")?
                .0
                .trim()
                .parse::<f64>()
                .ok()
        })
        .with_context(|| format!("no rate in kafka-producer-perf-test's output:\n{stdout}"))?;
    Ok((load.count, load.count as f64 / rate.max(1e-9)))
}

/// `direct`'s record: a bare value, as a plain Kafka producer writes it.
fn bare(topic: &str, payload: &[u8]) -> Record {
    Record::new(topic, payload.to_vec())
}

/// The record the MQTT front end writes for a QoS 1 publish of the `mqtt-*` scenarios (topic
/// `devices/bench-0/telemetry`, client `bench-0-0`): the MQTT topic as key and the three
/// origin headers: beside `direct`, the broker's (and librdkafka's) price of the key and
/// headers, not the gateway's.
fn like_mqtt(topic: &str, payload: &[u8]) -> Record {
    const MQTT_TOPIC: &str = "devices/bench-0/telemetry";
    let mut record = Record::new(topic, payload.to_vec());
    record.key = Some(bytes::Bytes::from_static(MQTT_TOPIC.as_bytes()));
    record.headers = vec![
        barnabas_core::Header::new(convert::TOPIC_HEADER, MQTT_TOPIC),
        barnabas_core::Header::new(convert::QOS_HEADER, "1"),
        barnabas_core::Header::new(convert::CLIENT_HEADER, "bench-0-0"),
    ];
    record
}

/// Builds one record of a direct scenario for a topic and payload.
type MakeRecord = fn(&str, &[u8]) -> Record;

/// The topic the direct producer scenarios write.
const DIRECT_TOPIC: &str = "bench-direct";

/// One write before the clock starts, as the gateway's long-lived producer is warm when a
/// client's publish arrives. A fresh librdkafka producer first connects, reads metadata and
/// asks for its producer id; when the topic already existed (every direct scenario after the
/// first) its first record waited for that for about a second, which the timed pass counted:
/// `direct-mqtt-records` after `direct` measured 0.4–0.6 of `direct` for that reason alone,
/// and either scenario run second lost half its rate (issue 27).
async fn warm_up(kafka: &Backend, topic: &str, payload: &[u8], make: MakeRecord) -> Result<()> {
    kafka
        .publisher
        .publish_one(barnabas_core::Identity::Gateway, make(topic, payload))
        .await
        .map(|_| ())
        .map_err(|e| anyhow!("direct produce (warm-up): {e}"))
}

/// The baseline: the gateway's own producer settings (acks=all, idempotent, linger 1 ms),
/// straight to the broker, up to 10 000 records in flight; `make` builds each record.
async fn direct(
    kafka: &Backend,
    topic: &str,
    count: usize,
    payload: &[u8],
    make: MakeRecord,
) -> Result<usize> {
    let mut inflight: FuturesUnordered<
        std::pin::Pin<
            Box<
                dyn std::future::Future<Output = barnabas_core::Result<barnabas_core::Delivered>>
                    + Send,
            >,
        >,
    > = FuturesUnordered::new();
    let mut acked = 0;
    for _ in 0..count {
        if inflight.len() >= 10_000 {
            if let Some(r) = inflight.next().await {
                r.map_err(|e| anyhow!("direct produce: {e}"))?;
                acked += 1;
            }
        }
        let publisher = kafka.publisher.clone();
        let record = make(topic, payload);
        inflight.push(Box::pin(async move {
            publisher
                .publish_one(barnabas_core::Identity::Gateway, record)
                .await
        }));
    }
    while let Some(r) = inflight.next().await {
        r.map_err(|e| anyhow!("direct produce: {e}"))?;
        acked += 1;
    }
    Ok(acked)
}

/// Records Kafka holds in `topic` (all partitions).
async fn stored(kafka: &Backend, topic: &str) -> Result<i64> {
    let md = match kafka.admin.topic_metadata(topic).await {
        Ok(md) => md,
        Err(_) => return Ok(0),
    };
    let mut n = 0;
    for p in md.partitions {
        let w = kafka
            .admin
            .watermarks(topic, p.partition)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        n += w.high - w.low;
    }
    Ok(n)
}

/// `load.conns` MQTT connections to `addr`, each publishing its share with up to
/// `load.inflight` unacknowledged. With `kafka` (the gateway), QoS 0 counts what Kafka
/// stored; without (mosquitto), what was sent.
async fn mqtt(
    addr: std::net::SocketAddr,
    kafka: Option<&Backend>,
    qos: QoS,
    payload: &[u8],
    load: Load,
) -> Result<usize> {
    let run = format!("{}", std::process::id());
    let topic_kafka = "mqtt"; // no mapping rules: the default topic
    let before = match kafka {
        Some(k) => stored(k, topic_kafka).await?,
        None => 0,
    };
    let conns = load.conns.max(1);
    let each = load.count / conns;
    let mut tasks = Vec::new();
    for i in 0..conns {
        let mut opts = MqttOptions::new(
            format!("bench-{run}-{i}"),
            addr.ip().to_string(),
            addr.port(),
        );
        opts.set_keep_alive(std::time::Duration::from_secs(60));
        opts.set_inflight(u16::try_from(load.inflight).unwrap_or(u16::MAX));
        let (client, events) = AsyncClient::new(opts, load.inflight.max(128));
        let share = Share {
            topic: format!("devices/bench-{i}/telemetry"),
            qos,
            payload: payload.to_vec(),
            count: each,
        };
        tasks.push(tokio::spawn(publish_share(i, client, events, share)));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.map_err(|e| anyhow!("{e}"))??;
    }
    if let (QoS::AtMostOnce, Some(kafka)) = (qos, kafka) {
        total = stored_since(kafka, topic_kafka, before, total).await?;
    }
    Ok(total)
}

/// What one MQTT connection of a throughput scenario publishes: `count` times `payload` to
/// `topic` at `qos`.
struct Share {
    topic: String,
    qos: QoS,
    payload: Vec<u8>,
    count: usize,
}

/// Connection `i` publishes its `share` and counts the publishes answered (QoS 1/2) or sent
/// (QoS 0), then disconnects.
async fn publish_share(
    i: usize,
    client: AsyncClient,
    mut el: EventLoop,
    share: Share,
) -> Result<usize> {
    let Share {
        topic,
        qos,
        payload,
        count: each,
    } = share;
    let publisher = tokio::spawn(async move {
        for _ in 0..each {
            if client
                .publish(topic.as_str(), qos, false, payload.clone())
                .await
                .is_err()
            {
                break;
            }
        }
        client
    });
    // Until every publish is answered (QoS 1/2) or sent (QoS 0), then a clean
    // DISCONNECT, so the gateway ends the session normally.
    let mut done = 0;
    while done < each {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => done += 1,
            Ok(Event::Incoming(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => done += 1,
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                done += 1
            }
            Ok(_) => {}
            Err(e) => return Err(anyhow!("connection {i}: {e:?}")),
        }
    }
    let client = publisher.await.map_err(|e| anyhow!("{e}"))?;
    client.disconnect().await.map_err(|e| anyhow!("{e}"))?;
    loop {
        match el.poll().await {
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(done)
}

/// Records Kafka added to `topic` since it held `before`, once it holds the `sent` QoS 0
/// publishes (which have no ack) or 60 s have passed.
async fn stored_since(kafka: &Backend, topic: &str, before: i64, sent: usize) -> Result<usize> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let want = before + sent as i64;
    while stored(kafka, topic).await? < want && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(usize::try_from(stored(kafka, topic).await? - before).unwrap_or(0))
}

/// `clients` concurrent HTTP clients POSTing `per_request` records per request (the last
/// request smaller when `count` is not a multiple), `count` records in all.
/// The gateway's HTTP produce URL for the `http-produce-N` scenarios.
fn gateway_topic(t: &Target, per_request: usize) -> String {
    format!("http://{}/topics/bench-http-{per_request}", t.http)
}

/// The Strimzi bridge's URL for the same scenarios (its own topic, created beforehand).
fn strimzi_topic(bridge: std::net::SocketAddr, per_request: usize) -> String {
    format!("http://{bridge}/topics/bench-strimzi-{per_request}")
}

/// HTTP produce to `url` (the gateway's or the Strimzi bridge's: the same API), `per_request`
/// records per request from at least 16 clients; counts the records of successful requests.
async fn http(url: String, per_request: usize, load: Load) -> Result<usize> {
    let (count, size, clients) = (load.count, load.size, load.conns.max(16));
    let value = "x".repeat(size);
    let body_of = |n: usize| {
        let records: Vec<serde_json::Value> = (0..n)
            .map(|_| serde_json::json!({ "value": value }))
            .collect();
        serde_json::json!({ "records": records }).to_string()
    };
    let mut sizes = vec![per_request; count / per_request];
    if count % per_request != 0 {
        sizes.push(count % per_request);
    }
    let clients = clients.max(1);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let bodies: Vec<(usize, String)> = sizes
            .iter()
            .skip(c)
            .step_by(clients)
            .map(|n| (*n, body_of(*n)))
            .collect();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ok = 0;
            for (n, body) in bodies {
                let resp = http
                    .post(&url)
                    .header("content-type", "application/vnd.kafka.json.v2+json")
                    .body(body)
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    return Err(anyhow!("HTTP {}", resp.status()));
                }
                ok += n;
            }
            Ok::<usize, anyhow::Error>(ok)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.map_err(|e| anyhow!("{e}"))??;
    }
    Ok(total)
}

/// One AMQP link sending unsettled, at most `inflight` waiting for `accepted`.
async fn amqp(t: &Target, count: usize, payload: &[u8], inflight: usize) -> Result<usize> {
    let mut link = AmqpSession::open(t.amqp, "barnabas-bench").await?;
    let mut sender = Sender::attach(&mut link.session, "bench", "bench-amqp")
        .await
        .context("AMQP link")?;
    let mut pending = VecDeque::with_capacity(inflight);
    let mut accepted = 0;
    for _ in 0..count {
        if pending.len() >= inflight.max(1) {
            if let Some(fut) = pending.pop_front() {
                if let Ok(Outcome::Accepted(_)) = fut.await {
                    accepted += 1;
                }
            }
        }
        let msg = Message::builder()
            .data(Binary::from(payload.to_vec()))
            .build();
        pending.push_back(sender.send_batchable(msg).await.context("AMQP send")?);
    }
    for fut in pending {
        if let Ok(Outcome::Accepted(_)) = fut.await {
            accepted += 1;
        }
    }
    let _ = sender.close().await;
    link.close().await;
    Ok(accepted)
}
