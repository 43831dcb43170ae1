//! Shared test harness: a real embedded broker per test, the real binary as a process, a raw
//! HTTP GET, and the Python stock clients. No mocks: everything talks the real protocols.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use barnabas_core::{ConsumedRecord, Consumer, ConsumerConfig, OffsetReset, Subscription};

/// An MQTT client's event loop, rumqttc 3.1.1 or 5: its next event, as the PUBLISH it
/// carries if it is one.
#[allow(async_fn_in_trait)]
pub trait Deliveries {
    type Publish;
    async fn next_event(&mut self) -> Result<Option<Self::Publish>, String>;
}

impl Deliveries for rumqttc::EventLoop {
    type Publish = rumqttc::Publish;
    async fn next_event(&mut self) -> Result<Option<rumqttc::Publish>, String> {
        use rumqttc::{Event, Packet};
        match self.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => Ok(Some(p)),
            other => other.map(|_| None).map_err(|e| format!("{e:?}")),
        }
    }
}

impl Deliveries for rumqttc::v5::EventLoop {
    type Publish = rumqttc::v5::mqttbytes::v5::Publish;
    async fn next_event(&mut self) -> Result<Option<Self::Publish>, String> {
        use rumqttc::v5::{mqttbytes::v5::Packet, Event};
        match self.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => Ok(Some(p)),
            other => other.map(|_| None).map_err(|e| format!("{e:?}")),
        }
    }
}

/// The next PUBLISH an MQTT client (3.1.1 or 5) receives within `within`, driving its event
/// loop; `None` if none came. Panics on a connection error.
pub async fn next_publish<E: Deliveries>(el: &mut E, within: Duration) -> Option<E::Publish> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, el.next_event()).await {
            Err(_) => return None,
            Ok(Ok(Some(p))) => return Some(p),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => panic!("connection error: {e}"),
        }
    }
}

/// A port nothing listens on right now (bound then released; good enough on loopback).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The workspace root (tests read helper scripts from it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs a mosquitto client (`mosquitto_pub`/`mosquitto_sub`) against `addr` with `args`.
pub fn mosquitto(tool: &str, addr: SocketAddr, args: &[&str]) -> std::process::Output {
    std::process::Command::new(tool)
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} (Debian package mosquitto-clients)"))
}

/// [`mosquitto`] off the async runtime's threads (a `'static` future: it can be spawned).
pub fn mosquitto_async(
    tool: &'static str,
    addr: SocketAddr,
    args: &[&str],
) -> impl std::future::Future<Output = std::process::Output> + 'static {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            mosquitto(tool, addr, &args)
        })
        .await
        .unwrap()
    }
}

#[cfg(feature = "embedded-kafka")]
pub mod apache;
pub mod gateway;
pub mod raw_mqtt;

#[cfg(feature = "embedded-kafka")]
pub mod broker {
    use barnabas::embedded::{EmbeddedKafka, Storage};
    use barnabas_kafka::KafkaConfig;

    use super::{apache::ApacheKafka, free_addr};

    /// A test's own broker: the embedded tansu one, or Apache Kafka when the run asks for it
    /// (`BARNABAS_TEST_KAFKA=apache`).
    pub enum TestBroker {
        Embedded(EmbeddedKafka),
        Apache(ApacheKafka),
    }

    impl TestBroker {
        pub fn bootstrap(&self) -> String {
            match self {
                TestBroker::Embedded(b) => b.bootstrap(),
                TestBroker::Apache(b) => b.bootstrap.clone(),
            }
        }

        pub async fn stop(self) {
            match self {
                TestBroker::Embedded(b) => b.stop().await,
                TestBroker::Apache(b) => drop(b),
            }
        }
    }

    /// Starts a fresh broker: embedded tansu (temporary SQLite storage) on a free port, or
    /// Apache Kafka under `BARNABAS_TEST_KAFKA=apache`.
    pub async fn start() -> TestBroker {
        if super::apache::selected() {
            TestBroker::Apache(ApacheKafka::start())
        } else {
            TestBroker::Embedded(start_with(Storage::Temporary).await)
        }
    }

    pub async fn start_with(storage: Storage) -> EmbeddedKafka {
        let mut last = None;
        for _ in 0..5 {
            match EmbeddedKafka::start(free_addr(), None, storage.clone()).await {
                Ok(b) => return b,
                Err(e) => last = Some(e),
            }
        }
        panic!("embedded broker did not start: {last:?}");
    }

    /// A broker on which every client must log in with SASL: PLAIN (tansu accepts any
    /// password) or SCRAM-SHA-256/512 against stored credentials.
    pub async fn start_sasl() -> EmbeddedKafka {
        let mut last = None;
        for _ in 0..5 {
            match EmbeddedKafka::start_with_sasl(free_addr(), None, Storage::Temporary, true).await
            {
                Ok(b) => return b,
                Err(e) => last = Some(e),
            }
        }
        panic!("embedded broker did not start: {last:?}");
    }

    /// Gateway Kafka settings for a test broker.
    pub fn kafka_config(broker: &TestBroker) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: broker.bootstrap(),
            default_replication_factor: 1,
            ..KafkaConfig::default()
        }
    }
}

/// Polls until `n` records arrived or `within` passed; returns what arrived.
pub async fn poll_n(session: &dyn Consumer, n: usize, within: Duration) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let batch = session
            .poll(n - out.len(), Duration::from_millis(500))
            .await
            .expect("poll");
        out.extend(batch);
    }
    out
}

/// A consumer of `topic` from its beginning, in a fresh group of its own.
pub async fn consumer_of(gw: &gateway::TestGateway, topic: &str) -> std::sync::Arc<dyn Consumer> {
    let c = gw
        .gateway
        .backend()
        .consumers
        .create(ConsumerConfig {
            group_id: format!("check-{topic}-{}", uuid_ish()),
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        })
        .await
        .unwrap();
    c.subscribe(Subscription::Topics(vec![topic.into()]))
        .await
        .unwrap();
    c
}

/// Reads `n` records of `topic` from the beginning with a fresh group (or what arrived in 60 s).
pub async fn read_topic(gw: &gateway::TestGateway, topic: &str, n: usize) -> Vec<ConsumedRecord> {
    let c = consumer_of(gw, topic).await;
    let got = poll_n(c.as_ref(), n, Duration::from_secs(60)).await;
    c.close().await.unwrap();
    got
}

/// Polls `session` until `done` holds for what arrived (each record with the time it came),
/// or panics after `within` naming what did arrive.
pub async fn poll_until(
    session: &dyn Consumer,
    within: Duration,
    done: impl Fn(&[(ConsumedRecord, Instant)]) -> bool,
) -> Vec<(ConsumedRecord, Instant)> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while !done(&out) {
        let got: Vec<_> = out
            .iter()
            .map(|(r, _): &(ConsumedRecord, Instant)| (r.key.clone(), r.value.clone()))
            .collect();
        assert!(Instant::now() < deadline, "within {within:?} only {got:?}");
        let batch = session
            .poll(100, Duration::from_millis(200))
            .await
            .expect("poll");
        let now = Instant::now();
        out.extend(batch.into_iter().map(|r| (r, now)));
    }
    out
}

/// An embedded broker in a `barnabas` process of its own (the front ends off but HTTP, for
/// its readiness), so that a test can pause it with SIGSTOP; its bootstrap address.
pub fn broker_process() -> (Gateway, String) {
    let (kafka, http) = (free_addr(), free_addr());
    let broker = Gateway::spawn(
        &[
            "run",
            &format!("--embedded-kafka={kafka}"),
            "--http-listen",
            &http.to_string(),
            "--mqtt-listen",
            "off",
            "--amqp-listen",
            "off",
        ],
        &[],
    );
    wait_for_status(http, "/ready", 200, Duration::from_secs(60));
    (broker, kafka.to_string())
}

/// Issue 22's idempotence control, for any broker a test can freeze: starts a gateway on
/// `bootstrap` (producer `socket.timeout.ms` 1 s; `enable.idempotence = false` unless
/// `idempotent`), sends 10 records to `topic` partition 0 in one HTTP request while `freeze(true)`
/// holds the broker for 4 s (the request in flight times out and is sent again on a new
/// connection), then `freeze(false)`. Every record must be acknowledged; returns how often
/// each is stored.
pub fn copies_after_a_frozen_broker(
    bootstrap: &str,
    freeze: &dyn Fn(bool),
    topic: &str,
    idempotent: bool,
) -> std::collections::BTreeMap<String, usize> {
    let dir = tempfile::tempdir().unwrap();
    let http = free_addr();
    let config = dir.path().join("barnabas.toml");
    let idempotence = if idempotent {
        ""
    } else {
        "\"enable.idempotence\" = \"false\"\n"
    };
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\nproduce_timeout_ms = 60000\n\
             [kafka.properties]\n\"socket.timeout.ms\" = \"1000\"\n{idempotence}\
             [http]\nlisten = \"{http}\"\n[mqtt]\nlisten = \"off\"\n[amqp]\nlisten = \"off\"\n"
        ),
    )
    .unwrap();
    let mut gw = Gateway::spawn(&["run", "--config", config.to_str().unwrap()], &[]);
    gw.wait_for_line("barnabas ready", Duration::from_secs(60));
    let url = format!("http://{http}/topics/{topic}");
    // The topic and the producer's id exist before the fault.
    produce_acknowledged(&url, &["warm".to_owned()]);
    let late: Vec<String> = (0..10).map(|i| format!("late-{i}")).collect();
    freeze(true);
    let sender = std::thread::spawn({
        let (url, late) = (url.clone(), late.clone());
        move || produce_acknowledged(&url, &late)
    });
    // Frozen long enough for the request in flight to time out and be sent again.
    std::thread::sleep(Duration::from_secs(4));
    freeze(false);
    sender.join().unwrap();
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(30));

    let values: Vec<String> = serde_json::from_str(&run_python(
        "kafka_client.py",
        &["values", bootstrap, topic],
    ))
    .unwrap();
    let mut copies = std::collections::BTreeMap::new();
    // The json format stores each value as JSON text: "late-0" with its quotes.
    for v in values
        .iter()
        .filter_map(|v| serde_json::from_str::<String>(v).ok())
    {
        if late.contains(&v) {
            *copies.entry(v).or_insert(0) += 1;
        }
    }
    assert_eq!(copies.len(), late.len(), "every record stored: {values:?}");
    copies
}

/// Produces `values` to partition 0 in one HTTP request (json format); each must be
/// acknowledged with an offset.
pub fn produce_acknowledged(url: &str, values: &[String]) {
    let records: Vec<_> = values
        .iter()
        .map(|v| serde_json::json!({ "partition": 0, "value": v }))
        .collect();
    let body = serde_json::json!({ "records": records }).to_string();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "90", "-X", "POST", url])
        .args([
            "-H",
            "content-type: application/vnd.kafka.json.v2+json",
            "-d",
            &body,
        ])
        .output()
        .expect("curl");
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let offsets = answer["offsets"].as_array().cloned().unwrap_or_default();
    assert!(
        offsets.len() == values.len() && offsets.iter().all(|o| o["offset"].is_i64()),
        "every record acknowledged: {answer}"
    );
}

/// What `group` has committed on `topic`'s `partition` (the next offset it will read), as
/// Kafka says now.
pub async fn committed_offset(
    gw: &gateway::TestGateway,
    group: &str,
    (topic, partition): (&str, i32),
) -> Option<i64> {
    // A consumer of the group that never subscribes does not join it: it only asks.
    let asker = gw
        .gateway
        .backend()
        .consumers
        .create(ConsumerConfig {
            group_id: group.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let tp = barnabas_core::TopicPartition::new(topic, partition);
    let seen = asker.committed_offsets(vec![tp]).await.unwrap();
    asker.close().await.unwrap();
    seen.first().and_then(|(_, offset)| *offset)
}

/// Waits until `group`'s committed offset on (`topic`, `partition`) satisfies `done`, asking
/// Kafka every 100 ms; returns it, or panics with what it last saw after `within`.
pub async fn wait_for_commit_where(
    gw: &gateway::TestGateway,
    group: &str,
    tp: (&str, i32),
    done: impl Fn(i64) -> bool,
    within: Duration,
) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let at = committed_offset(gw, group, tp).await;
        if let Some(at) = at.filter(|&at| done(at)) {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} committed {at:?} on {tp:?}, not what was awaited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `group` has committed exactly `want` on (`topic`, `partition`).
pub async fn wait_for_commit(
    gw: &gateway::TestGateway,
    group: &str,
    tp: (&str, i32),
    want: i64,
    within: Duration,
) {
    wait_for_commit_where(gw, group, tp, |at| at == want, within).await;
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Writes `records` with the gateway's own producer (a Kafka client) and checks that Kafka
/// acknowledged every one.
pub async fn produce_all(gw: &gateway::TestGateway, records: Vec<barnabas_core::Record>) {
    let written = gw
        .gateway
        .backend()
        .publisher
        .publish(barnabas_core::Identity::Gateway, records)
        .await;
    for delivered in written {
        delivered.expect("Kafka acknowledged the record");
    }
}

/// Writes one keyed record with the gateway's own producer (a Kafka client) and waits for
/// Kafka's ack.
pub async fn produce(gw: &gateway::TestGateway, topic: &str, key: &str, value: &str) {
    gw.gateway
        .backend()
        .publisher
        .publish_one(
            barnabas_core::Identity::Gateway,
            barnabas_core::Record::new(topic, value.to_owned()).with_key(key.to_owned()),
        )
        .await
        .unwrap();
}

/// Two members of one consumer group (MQTT shared subscription, AMQP receivers) report what
/// they receive on `rx` as (member, value). Writes probe records to `topic` until both
/// members got one (the group settled), then 40 jobs, and asserts every job arrived exactly
/// once and both members took part.
pub async fn assert_two_members_split(
    gw: &gateway::TestGateway,
    topic: &str,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, String)>,
) {
    use std::collections::BTreeMap;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut probed = [false, false];
    let mut n = 0;
    while !(probed[0] && probed[1]) {
        assert!(Instant::now() < deadline, "both members never got records");
        for k in 0..8 {
            produce(gw, topic, &format!("probe-{k}"), &format!("probe-{n}")).await;
            n += 1;
        }
        let until = Instant::now() + Duration::from_millis(500);
        while let Ok(Some((m, _))) = tokio::time::timeout_at(until.into(), rx.recv()).await {
            probed[m] = true;
        }
    }
    // Let in-flight probes drain.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while rx.try_recv().is_ok() {}
    for i in 0..40 {
        produce(gw, topic, &format!("job-{i}"), &format!("job-{i}")).await;
    }
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 40 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (m, v) = tokio::time::timeout(left, rx.recv())
            .await
            .expect("all jobs delivered")
            .unwrap();
        seen.entry(v).or_default().push(m);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok((m, v)) = rx.try_recv() {
        seen.entry(v).or_default().push(m);
    }
    let twice: Vec<_> = seen.iter().filter(|(_, ms)| ms.len() > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let per_member = [0, 1].map(|m| seen.values().filter(|ms| ms[0] == m).count());
    assert!(
        per_member[0] > 0 && per_member[1] > 0,
        "the load is split: {per_member:?}"
    );
}

/// A `barnabas` process with its stderr collected line by line.
pub struct Gateway {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The thread collecting stderr; joined once the process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_barnabas"));
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn barnabas");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[barnabas] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Gateway {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// `barnabas run --config CONFIG` with an embedded broker on a free port.
    pub fn run_config(config: &std::path::Path) -> Gateway {
        let kafka = format!("--embedded-kafka={}", free_addr());
        let config = config.to_str().expect("a UTF-8 path");
        Gateway::spawn(&["run", "--config", config, &kafka], &[])
    }

    pub fn stderr(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `needle`; panics with the log otherwise.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.stderr().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "barnabas exited ({status}) before printing {needle:?}:\n{}",
                    self.stderr().join("\n")
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no {needle:?} within {within:?}:\n{}",
                    self.stderr().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit (bounded); then every line it wrote is in [`Self::stderr`].
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its stderr is closed: the reader ends once it has taken the last line.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "barnabas did not exit within {within:?}:\n{}",
                    self.stderr().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A gateway process against `bootstrap` with HTTP and MQTT on free ports (AMQP off), once
/// ready: one replica of a scale-out test. Returns (process, HTTP address, MQTT address).
pub fn replica_process(bootstrap: &str) -> (Gateway, SocketAddr, SocketAddr) {
    replica_process_with(bootstrap, &[])
}

/// [`replica_process`] with more environment (`BARNABAS_*` settings).
pub fn replica_process_with(
    bootstrap: &str,
    env: &[(&str, &str)],
) -> (Gateway, SocketAddr, SocketAddr) {
    let (http, mqtt) = (free_addr(), free_addr());
    let process = Gateway::spawn(
        &[
            "run",
            "--kafka-bootstrap",
            bootstrap,
            "--http-listen",
            &http.to_string(),
            "--mqtt-listen",
            &mqtt.to_string(),
            "--amqp-listen",
            "off",
        ],
        &[&[("BARNABAS_KAFKA__DEFAULT_REPLICATION_FACTOR", "1")], env].concat(),
    );
    wait_for_status(http, "/ready", 200, Duration::from_secs(30));
    (process, http, mqtt)
}

/// Polls `GET path` until it answers `want` (bounded).
pub fn wait_for_status(addr: SocketAddr, path: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = 0;
    while Instant::now() < deadline {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            drop(s);
            last = http_get(addr, path).0;
            if last == want {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET {path} never answered {want} within {within:?} (last {last})");
}

/// Polls `GET /metrics` on `addr` until it has this exact sample line (bounded), e.g.
/// `barnabas_mqtt_subscriptions 1`; `what` names the awaited state in the failure.
pub fn wait_for_metric_line(addr: SocketAddr, line: &str, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (_, metrics) = http_get(addr, "/metrics");
        if metrics.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no '{line}' within {within:?}:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Python interpreter of the test venv (made by ./scripts/test), with confluent-kafka.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BARNABAS_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python test venv at {}: run ./scripts/test (it creates it with the stock clients)",
        venv.display()
    );
    venv
}

/// Runs one of tests/python/*.py with the venv's Python; returns stdout, panics with stderr
/// on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    run_script(python(), script, args)
}

/// Runs one of tests/python/*.py with Debian's Python 3, which has the Debian package
/// python3-qpid-proton (PyPI has no wheel of it); `BARNABAS_TEST_SYSTEM_PYTHON` overrides.
pub fn run_system_python(script: &str, args: &[&str]) -> String {
    run_script(system_python(), script, args)
}

/// Debian's Python, which has python3-qpid-proton.
pub fn system_python() -> PathBuf {
    std::env::var_os("BARNABAS_TEST_SYSTEM_PYTHON")
        .map_or_else(|| PathBuf::from("/usr/bin/python3"), PathBuf::from)
}

/// [`run_python`] on the blocking pool, for async tests.
pub async fn python_async(script: &'static str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        run_python(script, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("python task")
}

/// [`run_system_python`] on the blocking pool, for async tests.
pub async fn system_python_async(script: &'static str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        run_system_python(script, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("python task")
}

fn run_script(python: PathBuf, script: &str, args: &[&str]) -> String {
    let path = workspace_root().join("tests/python").join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `barnabas hash-password` with `password` on stdin; its last stdout line.
pub fn hash_password(password: &str) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_barnabas"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// A finished command's exit status and output, for assertion messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}; stdout {}; stderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `dir/users.toml` with the two test users: `device-1` (password `s3cret`, bearer
/// token `token-1`) and `reader` (`reader-pw`); returns its path.
pub fn write_test_users(dir: &std::path::Path) -> PathBuf {
    let users = dir.join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"device-1\"\npassword_hash = \"{}\"\ntokens_sha256 = [\"{}\"]\n\n\
             [[user]]\nname = \"reader\"\npassword_hash = \"{}\"\n",
            hash_password("s3cret"),
            barnabas_core::auth::sha256_hex(b"token-1"),
            hash_password("reader-pw"),
        ),
    )
    .unwrap();
    users
}

/// A gateway under identity passthrough: clients log in against `users`, reach Kafka as
/// themselves, and the gateway's own login is `barnabas` / `gateway-pw` over SASL/SCRAM-SHA-256
/// (the broker must store those credentials); AMQP listens too.
pub fn configure_passthrough(c: &mut barnabas::config::Config, users: &std::path::Path) {
    c.auth.mode = "users".into();
    c.auth.users_file = users.display().to_string();
    c.amqp.listen = "127.0.0.1:0".into();
    c.kafka.identity = "passthrough".into();
    for (k, v) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", "barnabas"),
        ("sasl.password", "gateway-pw"),
    ] {
        c.kafka.properties.insert(k.into(), v.into());
    }
}

/// curl with `-s -i --max-time 30` and `args`; returns (HTTP status, headers and body as one
/// text).
pub fn curl_status(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// What one `amqp_proton.py try` saw.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ProtonAnswer {
    /// The send was accepted / a message was received.
    pub ok: bool,
    /// The exception, as text (empty when `ok`).
    pub error: String,
    /// The exception's class: `ConnectionException`, `LinkDetached`, `Refused`, `Timeout`, …
    pub kind: String,
    /// The AMQP error condition of the closed link or connection, or of the transport (a
    /// refused login), e.g. `amqp:unauthorized-access`.
    pub condition: Option<String>,
    /// A send's delivery outcome: `accepted`, `rejected`, `released`, `modified`.
    pub outcome: Option<String>,
    /// The SASL outcome when the connection failed: `ok`, `auth`, `sys`, `sys-perm`,
    /// `sys-temp`.
    pub sasl_outcome: Option<String>,
}

/// One AMQP attempt with python3-qpid-proton (`amqp_proton.py try URL send|receive ADDRESS`)
/// with `env` (AMQP_CA, AMQP_CERT/AMQP_KEY, AMQP_MECHS, AMQP_NO_SASL); panics if the script
/// itself fails (only proton's refusals are answers).
pub fn proton_try(url: &str, what: &str, address: &str, env: &[(&str, &str)]) -> ProtonAnswer {
    let out = Command::new(system_python())
        .arg(workspace_root().join("tests/python/amqp_proton.py"))
        .args(["try", url, what, address])
        .envs(env.iter().copied())
        .output()
        .expect("run python3");
    assert!(out.status.success(), "amqp_proton.py try: {}", text(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("amqp_proton.py try: {e}: {}", text(&out)))
}

/// [`proton_try`] on the blocking pool, for async tests.
pub async fn proton_try_async(
    url: &str,
    what: &str,
    address: &str,
    env: &[(&str, &str)],
) -> ProtonAnswer {
    let owned: Vec<String> = [url, what, address].map(str::to_owned).to_vec();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        proton_try(&owned[0], &owned[1], &owned[2], &env)
    })
    .await
    .expect("python task")
}

/// One AMQP attempt with python3-qpid-proton (`amqp_proton.py try`): (succeeded, error text).
pub async fn proton_attempt(url: &str, what: &str, address: &str) -> (bool, String) {
    let a = proton_try_async(url, what, address, &[]).await;
    (a.ok, a.error)
}

/// The ERROR and WARN lines of a text-format log (a clean stop has none).
pub fn loud_lines(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect()
}
