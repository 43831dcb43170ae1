//! `e2e-latency`: each protocol publishes at a fixed rate; each publish's time to its
//! acknowledgement, and to a subscriber of the same protocol, goes into an HdrHistogram.
//! The direct producer (and a direct Kafka consumer) run the same pattern beside them, so
//! "added latency" is a difference measured in the same run.
//!
//! Every payload starts with the send time (ns since the bench started) and a sequence
//! number, so a receiver needs no shared state with the sender.

use std::{
    collections::VecDeque,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use barnabas_core::{Backend, Record};
use fe2o3_amqp::{
    types::{
        messaging::{Body, Message, Outcome},
        primitives::{Binary, Value},
    },
    Receiver, Sender,
};
use hdrhistogram::Histogram;
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    ClientConfig, Message as _, Offset, TopicPartitionList,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

use crate::{amqp::AmqpSession, results::Latency, Target};

/// Marks warm-up messages (sent until a receiver sees one; not measured).
const WARM_UP: u64 = u64::MAX;

/// How long a receiver waits for the rest after the last publish.
const DRAIN: Duration = Duration::from_secs(15);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A payload of `size` bytes (at least 16) carrying its send time and sequence number.
fn stamped(seq: u64, size: usize) -> Vec<u8> {
    let now = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut p = Vec::with_capacity(size.max(16));
    p.extend_from_slice(&now.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(size.max(16), b'x');
    p
}

/// (age since it was stamped, sequence number) of a stamped payload.
fn age(payload: &[u8]) -> Option<(Duration, u64)> {
    let sent = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    let now = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
    Some((Duration::from_nanos(now.saturating_sub(sent)), seq))
}

/// Microsecond histogram from 1 µs to 100 s, 3 significant digits.
pub(crate) fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 100_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, h.high());
    let _ = h.record(us);
}

/// Waits until message `i` of a paced run is due.
async fn pace(start: Instant, i: usize, rate: u64) {
    let due = start + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
    tokio::time::sleep_until(due.into()).await;
}

/// What a receiver collected.
type Received = Arc<Mutex<Histogram<u64>>>;

/// Keeps sending warm-up messages with `send` until `received` holds one, so a receiver's
/// start position is settled before timing starts.
async fn warm_up<F, Fut>(seen: &Arc<AtomicBool>, mut send: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let started = Instant::now();
    while !seen.load(Ordering::SeqCst) {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(anyhow!("receiver saw nothing in 60 s of warm-up"));
        }
        send().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Records a received payload: warm-ups raise `seen`, the rest go into the histogram.
fn on_received(payload: &[u8], seen: &AtomicBool, hist: &Received) -> bool {
    match age(payload) {
        Some((_, WARM_UP)) => {
            seen.store(true, Ordering::SeqCst);
            false
        }
        Some((d, _)) => {
            if let Ok(mut h) = hist.lock() {
                record(&mut h, d);
            }
            true
        }
        None => false,
    }
}

/// The (ack, receive) latencies of one pass; the receive histogram is empty in a pass
/// without a receiver.
type Pass = (Histogram<u64>, Histogram<u64>);

/// The protocols, in the order `e2e-latency` measures them.
const PROTOCOLS: [&str; 4] = ["direct", "mqtt-qos1", "amqp", "http"];

/// Runs every protocol at `rate` msgs/s for `count` messages each, twice: once with no
/// receiver (the `ack` rows), once with one (the `receive` rows; only with `receivers`, as a
/// broker that keeps nothing has nothing to deliver). The passes are apart because a
/// consumer fetching from a partition slows produces to it on the embedded broker (tansu
/// 0.6, see docs/benchmarks.md): one pass would measure that, not the gateway.
pub async fn run(
    t: &Target,
    rate: u64,
    count: usize,
    size: usize,
    receivers: bool,
) -> Result<Vec<Latency>> {
    let mut rows = Vec::new();
    let mut direct_p99 = None;
    for protocol in PROTOCOLS {
        if protocol == "mqtt-qos1" && receivers {
            rows.extend(mixed_load(t, rate, count, size).await);
        }
        for receive in [false, true] {
            if receive && (protocol == "http" || !receivers) {
                continue;
            }
            eprintln!(
                "  e2e-latency: {protocol} {}",
                if receive { "receive" } else { "ack" }
            );
            let pass = pass(t, protocol, rate, count, size, receive);
            // A pass that cannot finish is reported and left out; the others still run.
            let (ack, recv) = match within_limit(rate, count, pass).await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("  e2e-latency: {protocol} pass failed: {e:#}");
                    continue;
                }
            };
            if receive {
                rows.push(row(protocol, "receive", rate, &recv, None));
            } else {
                if protocol == "direct" {
                    direct_p99 = Some(ms(ack.value_at_quantile(0.99)));
                }
                let base = if protocol == "direct" {
                    None
                } else {
                    direct_p99
                };
                rows.push(row(protocol, "ack", rate, &ack, base));
            }
        }
    }
    Ok(rows)
}

/// The broker under mixed load: the direct producer at the same rate while
/// [`MIXED_GROUPS`] consumer groups (subscribed, so their coordinator is busy too) fetch the
/// topic. Its two rows, or none when the pass fails (which is reported).
async fn mixed_load(t: &Target, rate: u64, count: usize, size: usize) -> Vec<Latency> {
    eprintln!("  e2e-latency: direct ack with {MIXED_GROUPS} groups fetching");
    let pass = direct(t, rate, count, size, MIXED_GROUPS);
    match within_limit(rate, count, pass).await {
        Ok((ack, recv)) => {
            let ack_kind = format!("ack, {MIXED_GROUPS} groups fetching");
            let recv_kind = format!("receive, {MIXED_GROUPS} groups");
            vec![
                row("direct", &ack_kind, rate, &ack, None),
                row("direct", &recv_kind, rate, &recv, None),
            ]
        }
        Err(e) => {
            eprintln!("  e2e-latency: direct with {MIXED_GROUPS} groups failed: {e:#}");
            Vec::new()
        }
    }
}

/// One pass of `protocol`, with a receiver of the same protocol or without (HTTP has
/// none: its consumers are measured by `http-long-poll`).
async fn pass(
    t: &Target,
    protocol: &str,
    rate: u64,
    count: usize,
    size: usize,
    receive: bool,
) -> Result<Pass> {
    match protocol {
        "direct" => direct(t, rate, count, size, usize::from(receive)).await,
        "mqtt-qos1" => mqtt(t, rate, count, size, receive).await,
        "amqp" => amqp(t, rate, count, size, receive).await,
        _ => http(t, rate, count, size)
            .await
            .and_then(|h| Ok((h, histogram()?))),
    }
}

/// `pass`, failed when it runs past [`pass_limit`].
async fn within_limit(
    rate: u64,
    count: usize,
    pass: impl Future<Output = Result<Pass>>,
) -> Result<Pass> {
    tokio::time::timeout(pass_limit(rate, count), pass)
        .await
        .unwrap_or_else(|_| Err(anyhow!("did not finish in time (acks stalled)")))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(crate) fn row(
    protocol: &str,
    kind: &str,
    rate: u64,
    h: &Histogram<u64>,
    direct_p99: Option<f64>,
) -> Latency {
    let p99 = ms(h.value_at_quantile(0.99));
    let mut cdf = Vec::new();
    for q in [
        0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
    ] {
        cdf.push((q, ms(h.value_at_quantile(q))));
    }
    Latency {
        protocol: protocol.to_owned(),
        kind: kind.to_owned(),
        rate,
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: p99,
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        p99_added_ms: direct_p99.map(|d| p99 - d),
        cdf,
    }
}

/// Collects the latencies of spawned sends.
async fn collect(sends: Vec<JoinHandle<Option<Duration>>>) -> Result<Histogram<u64>> {
    let mut h = histogram()?;
    for s in sends {
        if let Some(d) = s.await.map_err(|e| anyhow!("{e}"))? {
            record(&mut h, d);
        }
    }
    Ok(h)
}

/// Sends `count` messages paced at `rate` msgs/s: `send(i)` starts message `i` and returns
/// the task that yields its latency (`None`: it failed). Returns those latencies.
async fn paced(
    rate: u64,
    count: usize,
    mut send: impl AsyncFnMut(u64) -> Result<JoinHandle<Option<Duration>>>,
) -> Result<Histogram<u64>> {
    let start = Instant::now();
    let mut sends = Vec::with_capacity(count);
    for i in 0..count {
        pace(start, i, rate).await;
        sends.push(send(i as u64).await?);
    }
    collect(sends).await
}

/// Waits until `hist` holds `want` samples or [`DRAIN`] passes, then returns it.
async fn drained(hist: &Received, want: usize) -> Result<Histogram<u64>> {
    let deadline = Instant::now() + DRAIN;
    loop {
        let have = hist.lock().map(|h| h.len()).unwrap_or(0);
        if have >= want as u64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hist.lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow!("histogram lock"))
}

/// What a receiver got (waiting for all `count`), or an empty histogram without one.
async fn receiver_result(
    received: &Received,
    count: usize,
    reader: Option<JoinHandle<()>>,
) -> Result<Histogram<u64>> {
    match reader {
        Some(reader) => {
            let h = drained(received, count).await?;
            reader.abort();
            Ok(h)
        }
        None => histogram(),
    }
}

/// A name no other pass of this run uses (client ids, topics, groups).
fn unique(prefix: &str) -> String {
    static PASS: AtomicU64 = AtomicU64::new(0);
    let n = PASS.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// How long one pass may take: its publishing time, a minute of warm-up, the receiver's
/// drain and a minute of slack. A pass whose acks stall (the embedded broker before issue 27)
/// is reported as failed instead of holding up the run.
fn pass_limit(rate: u64, count: usize) -> Duration {
    Duration::from_secs(count as u64 / rate.max(1) + 120) + DRAIN
}

/// Consumer groups of the mixed-load pass.
const MIXED_GROUPS: usize = 3;

/// The direct producer's pass: `groups` = 0 (ack only), 1 (one consumer assigned the
/// partitions) or more (that many consumer groups subscribed, each receiving every record).
async fn direct(t: &Target, rate: u64, count: usize, size: usize, groups: usize) -> Result<Pass> {
    let kafka = barnabas_kafka::connect(&barnabas_kafka::KafkaConfig {
        bootstrap_servers: t.kafka.clone(),
        ..barnabas_kafka::KafkaConfig::default()
    })
    .map_err(|e| anyhow!("kafka client: {e}"))?;
    let topic = unique("bench-latency-direct");
    let publish = |seq: u64| {
        let publisher = kafka.publisher.clone();
        let record = Record::new(topic.clone(), stamped(seq, size));
        async move {
            publisher
                .publish_one(barnabas_core::Identity::Gateway, record)
                .await
        }
    };
    publish(WARM_UP).await.map_err(|e| anyhow!("{e}"))?;
    let seen = Arc::new(AtomicBool::new(false));
    let received: Received = Arc::new(Mutex::new(histogram()?));
    let reader = if groups > 0 {
        let reader = direct_readers(t, &kafka, &topic, groups, &seen, &received).await?;
        warm_up(&seen, || async {
            publish(WARM_UP)
                .await
                .map(|_| ())
                .map_err(|e| anyhow!("{e}"))
        })
        .await?;
        Some(reader)
    } else {
        None
    };
    let ack = paced(rate, count, async |i| {
        let fut = publish(i);
        Ok(tokio::spawn(async move {
            let t0 = Instant::now();
            fut.await.ok().map(|_| t0.elapsed())
        }))
    })
    .await?;
    let recv = receiver_result(&received, count * groups.max(1), reader).await?;
    Ok((ack, recv))
}

/// `groups` readers of `topic`, each in a consumer group of its own: one assigned the
/// partitions, or more subscribed (so the group coordinator works too). `seen` rises once
/// every group has read a warm-up record. Returns one handle for them all: aborting it
/// aborts every reader.
async fn direct_readers(
    t: &Target,
    kafka: &Backend,
    topic: &str,
    groups: usize,
    seen: &Arc<AtomicBool>,
    received: &Received,
) -> Result<JoinHandle<()>> {
    let md = kafka
        .admin
        .topic_metadata(topic)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut readers = Vec::new();
    // Groups that have seen a warm-up record (all of them: `seen`).
    let seen_by = Arc::new(AtomicUsize::new(0));
    for _ in 0..groups {
        let consumer = latency_consumer(t)?;
        if groups == 1 {
            let mut tpl = TopicPartitionList::new();
            for p in &md.partitions {
                tpl.add_partition_offset(topic, p.partition, Offset::End)
                    .map_err(|e| anyhow!("{e}"))?;
            }
            consumer.assign(&tpl).context("assign")?;
        } else {
            consumer.subscribe(&[topic]).context("subscribe")?;
        }
        let (seen, seen_by, received) = (seen.clone(), seen_by.clone(), received.clone());
        readers.push(tokio::spawn(read_group(
            consumer, groups, seen, seen_by, received,
        )));
    }
    Ok(tokio::spawn(abort_all_when_dropped(readers)))
}

/// A Kafka consumer in a group of its own, starting at the latest offset, whose fetches
/// the broker answers within 10 ms (librdkafka's default wait, 500 ms, would hold records
/// back and show in every receive latency).
fn latency_consumer(t: &Target) -> Result<StreamConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", &t.kafka)
        .set("group.id", unique("bench-latency"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("Kafka consumer")
}

/// One group's reader: records each measured record in `received`; the group counts in
/// `seen_by` at its first warm-up, and the last of the `groups` to do so raises `seen`.
async fn read_group(
    consumer: StreamConsumer,
    groups: usize,
    seen: Arc<AtomicBool>,
    seen_by: Arc<AtomicUsize>,
    received: Received,
) {
    let mine = AtomicBool::new(false);
    let mut counted = false;
    while let Ok(m) = consumer.recv().await {
        on_received(m.payload().unwrap_or_default(), &mine, &received);
        if !counted && mine.load(Ordering::SeqCst) {
            counted = true;
            let n = seen_by.fetch_add(1, Ordering::SeqCst) + 1;
            if n == groups {
                seen.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Never ends; when its task is aborted, so are `readers`.
async fn abort_all_when_dropped(readers: Vec<JoinHandle<()>>) {
    struct AbortAll(Vec<JoinHandle<()>>);
    impl Drop for AbortAll {
        fn drop(&mut self) {
            for r in &self.0 {
                r.abort();
            }
        }
    }
    let readers = AbortAll(readers);
    std::future::pending::<()>().await;
    drop(readers);
}

/// Sends not yet acknowledged, oldest first: whether each is measured, and when it was sent.
type Sent = Arc<Mutex<VecDeque<(bool, Instant)>>>;

/// QoS 1 publishes, timed to their PUBACK, and with `receive` to a QoS 1 subscriber.
async fn mqtt(t: &Target, rate: u64, count: usize, size: usize, receive: bool) -> Result<Pass> {
    let topic = format!("bench/latency/{}", std::process::id());
    let no_recv = !receive;
    let seen = Arc::new(AtomicBool::new(no_recv));
    let received: Received = Arc::new(Mutex::new(histogram()?));
    // The subscriber (none in the ack pass: see `run`).
    let reader = if receive {
        Some(mqtt_subscriber(t, &topic, &seen, &received).await?)
    } else {
        None
    };
    // The publisher: acks come back in publish order, so each PUBACK is the oldest send.
    let (publ, mut pub_loop) = mqtt_client(t, &unique("bench-lat-pub"));
    let sent: Sent = Arc::default();
    let acked = Arc::new(Mutex::new(histogram()?));
    // Connected before timing starts.
    until_packet(&mut pub_loop, "publisher", |p| {
        matches!(p, Packet::ConnAck(_))
    })
    .await?;
    let acker = tokio::spawn(time_pubacks(pub_loop, sent.clone(), acked.clone()));
    let send = |seq: u64, measured: bool| {
        let (publ, sent, topic) = (publ.clone(), sent.clone(), topic.clone());
        async move {
            if let Ok(mut s) = sent.lock() {
                s.push_back((measured, Instant::now()));
            }
            publ.publish(topic, QoS::AtLeastOnce, false, stamped(seq, size))
                .await
                .map_err(|e| anyhow!("{e}"))
        }
    };
    warm_up(&seen, || send(WARM_UP, false)).await?;
    let start = Instant::now();
    for i in 0..count {
        pace(start, i, rate).await;
        send(i as u64, true).await?;
    }
    let ack = drained(&acked, count).await?;
    let recv = receiver_result(&received, count, reader).await?;
    acker.abort();
    Ok((ack, recv))
}

/// An MQTT client of the gateway, not yet connected (its event loop connects when polled).
fn mqtt_client(t: &Target, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, t.mqtt.ip().to_string(), t.mqtt.port());
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(u16::MAX);
    let (client, mut events) = AsyncClient::new(options, 1024);
    // CONNACK may be slow right after heavy load (the default allows 5 s).
    events.network_options.set_connection_timeout(30);
    (client, events)
}

/// Polls `events` until a packet that is `wanted` arrives, so the client is ready before
/// timing starts; a connection error fails, named after `who`.
async fn until_packet(
    events: &mut EventLoop,
    who: &str,
    wanted: fn(&Packet) -> bool,
) -> Result<()> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(packet)) if wanted(&packet) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(anyhow!("{who}: {e:?}")),
        }
    }
}

/// A QoS 1 subscriber to `topic`, subscribed (SUBACK) before it returns, recording what it
/// receives.
async fn mqtt_subscriber(
    t: &Target,
    topic: &str,
    seen: &Arc<AtomicBool>,
    received: &Received,
) -> Result<JoinHandle<()>> {
    let (sub, mut sub_loop) = mqtt_client(t, &unique("bench-lat-sub"));
    sub.subscribe(topic, QoS::AtLeastOnce)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    until_packet(&mut sub_loop, "subscriber", |p| {
        matches!(p, Packet::SubAck(_))
    })
    .await?;
    let (seen_by_reader, received) = (seen.clone(), received.clone());
    Ok(tokio::spawn(async move {
        let _keep = sub;
        while let Ok(ev) = sub_loop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                on_received(&p.payload, &seen_by_reader, &received);
            }
        }
    }))
}

/// The publisher's event loop: each PUBACK answers the oldest send in `sent`, whose time
/// to it goes into `acked` when that send is measured.
async fn time_pubacks(mut events: EventLoop, sent: Sent, acked: Received) {
    loop {
        let ev = match events.poll().await {
            Ok(ev) => ev,
            Err(e) => {
                eprintln!("  mqtt publisher connection failed: {e:?}");
                break;
            }
        };
        if let Event::Incoming(Packet::PubAck(_)) = ev {
            let front = sent.lock().ok().and_then(|mut s| s.pop_front());
            if let (Some((true, t0)), Ok(mut h)) = (front, acked.lock()) {
                record(&mut h, t0.elapsed());
            }
        }
    }
}

/// Transfers sent unsettled, timed to their `accepted`, and with `receive` to a receiver
/// in a consumer group of its own.
async fn amqp(t: &Target, rate: u64, count: usize, size: usize, receive: bool) -> Result<Pass> {
    let topic = unique("bench-latency-amqp");
    let mut link = AmqpSession::open(t.amqp, unique("bench-lat-amqp")).await?;
    let mut sender = Sender::attach(&mut link.session, "lat-send", topic.as_str())
        .await
        .context("AMQP sender")?;
    let message = |seq: u64| {
        Message::builder()
            .data(Binary::from(stamped(seq, size)))
            .build()
    };
    // The topic exists once the first message is accepted.
    let first = sender
        .send_batchable(message(WARM_UP))
        .await
        .context("AMQP send")?;
    first.await.map_err(|e| anyhow!("{e:?}"))?;
    let seen = Arc::new(AtomicBool::new(false));
    let received: Received = Arc::new(Mutex::new(histogram()?));
    let reader = if receive {
        let reader = amqp_receiver(t, &topic, &seen, &received).await?;
        // The new group starts at the earliest offset: the first warm-up is already there,
        // so nothing more needs sending while the receiver joins.
        warm_up(&seen, || async { Ok(()) }).await?;
        Some(reader)
    } else {
        None
    };
    let ack = paced(rate, count, async |i| {
        let t0 = Instant::now();
        let fut = sender
            .send_batchable(message(i))
            .await
            .context("AMQP send")?;
        Ok(tokio::spawn(async move {
            matches!(fut.await, Ok(Outcome::Accepted(_))).then(|| t0.elapsed())
        }))
    })
    .await?;
    let recv = receiver_result(&received, count, reader).await?;
    let _ = sender.close().await;
    link.close().await;
    Ok((ack, recv))
}

/// A receiver of `topic` in a new consumer group, on a connection of its own, recording
/// and accepting what it receives.
async fn amqp_receiver(
    t: &Target,
    topic: &str,
    seen: &Arc<AtomicBool>,
    received: &Received,
) -> Result<JoinHandle<()>> {
    let mut link = AmqpSession::open(t.amqp, unique("bench-lat-amqp-recv")).await?;
    let mut receiver = Receiver::builder()
        .name("lat-recv")
        .source(format!("{topic}/group.id/{}", unique("bench-lat")))
        .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Auto(1000))
        .attach(&mut link.session)
        .await
        .context("AMQP receiver")?;
    let (seen_by_reader, received) = (seen.clone(), received.clone());
    Ok(tokio::spawn(async move {
        while let Ok(d) = receiver.recv::<Body<Value>>().await {
            if let Body::Data(b) = &d.message().body {
                if let Some(first) = b.first() {
                    on_received(&first.0, &seen_by_reader, &received);
                }
            }
            if receiver.accept(&d).await.is_err() {
                break;
            }
        }
        let _ = receiver.close().await;
        link.close().await;
    }))
}

/// One record per POST; requests overlap as the rate needs (up to 512 at once).
async fn http(t: &Target, rate: u64, count: usize, size: usize) -> Result<Histogram<u64>> {
    let url = format!("http://{}/topics/{}", t.http, unique("bench-latency-http"));
    let client = reqwest::Client::new();
    let post = |seq: u64| {
        use base64::Engine as _;
        let value = base64::engine::general_purpose::STANDARD.encode(stamped(seq, size));
        client
            .post(&url)
            .header("content-type", "application/vnd.kafka.binary.v2+json")
            .body(serde_json::json!({ "records": [{ "value": value }] }).to_string())
            .send()
    };
    let first = post(WARM_UP).await?;
    if !first.status().is_success() {
        return Err(anyhow!("HTTP {}", first.status()));
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(512));
    paced(rate, count, async |i| {
        let permit = limit.clone().acquire_owned().await?;
        let t0 = Instant::now();
        let fut = post(i);
        Ok(tokio::spawn(async move {
            let ok = fut.await.map(|r| r.status().is_success()).unwrap_or(false);
            drop(permit);
            ok.then(|| t0.elapsed())
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_its_sequence_and_a_small_age() {
        let p = stamped(42, 100);
        assert_eq!(p.len(), 100);
        let (d, seq) = age(&p).unwrap_or((Duration::MAX, 0));
        assert_eq!(seq, 42);
        assert!(d < Duration::from_secs(5), "{d:?}");
        assert_eq!(age(&p[..10]), None);
    }
}
