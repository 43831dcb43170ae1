//! The fault-injection harness: broker and gateway processes, client load that records what
//! was acknowledged, and the Kafka-side check.

use std::{
    collections::BTreeSet,
    io::Write,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use barnabas_core::{ConsumerConfig, OffsetReset, Subscription};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::common::{
    apache::{self, ApacheKafka},
    free_addr, wait_for_status, Gateway,
};

/// The broker the fault scenarios break: an embedded broker in a process of its own
/// (`barnabas run --embedded-kafka --data-dir`, front ends off except HTTP for its readiness),
/// or under `BARNABAS_TEST_KAFKA=apache` an Apache Kafka broker (issue 23) — killed, paused and
/// restarted on the same ports and log directories the same way.
pub enum BrokerProcess {
    Embedded {
        process: Option<Gateway>,
        kafka: SocketAddr,
        http: SocketAddr,
        data: PathBuf,
    },
    Apache(ApacheKafka),
}

impl BrokerProcess {
    pub fn start(data: &Path) -> BrokerProcess {
        if apache::selected() {
            return BrokerProcess::Apache(ApacheKafka::start());
        }
        let mut b = BrokerProcess::Embedded {
            process: None,
            kafka: free_addr(),
            http: free_addr(),
            data: data.to_owned(),
        };
        b.restart();
        b
    }

    pub fn bootstrap(&self) -> String {
        match self {
            BrokerProcess::Embedded { kafka, .. } => kafka.to_string(),
            BrokerProcess::Apache(a) => a.bootstrap.clone(),
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        match self {
            BrokerProcess::Embedded { process, .. } => {
                if let Some(mut p) = process.take() {
                    p.signal("KILL");
                    let _ = p.wait_exit(Duration::from_secs(10));
                }
            }
            BrokerProcess::Apache(a) => a.kill(),
        }
    }

    /// Sends a signal (`STOP`, `CONT`, …).
    pub fn signal(&self, sig: &str) {
        match self {
            BrokerProcess::Embedded {
                process: Some(p), ..
            } => p.signal(sig),
            BrokerProcess::Embedded { process: None, .. } => {}
            BrokerProcess::Apache(a) => a.signal(sig),
        }
    }

    /// Starts it again on the same address and storage.
    pub fn restart(&mut self) {
        match self {
            BrokerProcess::Embedded {
                process,
                kafka,
                http,
                data,
            } => {
                let started = Gateway::spawn(
                    &[
                        "run",
                        &format!("--embedded-kafka={kafka}"),
                        "--data-dir",
                        data.to_str().unwrap(),
                        "--http-listen",
                        &http.to_string(),
                        "--mqtt-listen",
                        "off",
                        "--amqp-listen",
                        "off",
                    ],
                    &[],
                );
                wait_for_status(*http, "/ready", 200, Duration::from_secs(60));
                *process = Some(started);
            }
            BrokerProcess::Apache(a) => a.restart(),
        }
    }
}

/// A gateway process.
pub struct GatewayProcess {
    pub process: Gateway,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    pub amqp: SocketAddr,
    /// The Kafka it uses (its own embedded broker for `start_embedded`).
    pub kafka: String,
}

impl GatewayProcess {
    /// Against an external broker.
    pub fn start(bootstrap: &str) -> GatewayProcess {
        Self::spawn(&["--kafka-bootstrap", bootstrap], bootstrap.to_owned())
    }

    /// With its own embedded broker keeping its data in `data`.
    pub fn start_embedded(data: &Path) -> GatewayProcess {
        Self::start_embedded_on(data, free_addr().to_string())
    }

    /// The same, with the broker on `kafka` (to restart on the same address).
    pub fn start_embedded_on(data: &Path, kafka: String) -> GatewayProcess {
        Self::spawn(
            &[
                &format!("--embedded-kafka={kafka}"),
                "--data-dir",
                data.to_str().unwrap(),
            ],
            kafka,
        )
    }

    /// Against an external broker, with extra config (TOML) from a file.
    pub fn start_with_config(bootstrap: &str, toml: &str) -> GatewayProcess {
        let path =
            std::env::temp_dir().join(format!("barnabas-faults-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, toml).unwrap();
        Self::spawn(
            &[
                "--kafka-bootstrap",
                bootstrap,
                "--config",
                path.to_str().unwrap(),
            ],
            bootstrap.to_owned(),
        )
    }

    fn spawn(kafka_args: &[&str], kafka: String) -> GatewayProcess {
        let (http, mqtt, amqp) = (free_addr(), free_addr(), free_addr());
        let mut args = vec![
            "run",
            "--http-listen",
            &http.to_string(),
            "--mqtt-listen",
            &mqtt.to_string(),
            "--amqp-listen",
            &amqp.to_string(),
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(kafka_args.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Gateway::spawn(
            &args,
            &[("BARNABAS_KAFKA__DEFAULT_REPLICATION_FACTOR", "1")],
        );
        wait_for_status(http, "/ready", 200, Duration::from_secs(60));
        GatewayProcess {
            process,
            http,
            mqtt,
            amqp,
            kafka,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

/// Client load running in the background, recording every message acknowledged positively
/// and every one answered negatively.
pub struct Load {
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// What was acknowledged so far.
    pub fn acked(&self) -> Vec<String> {
        self.acked.lock().unwrap().clone()
    }

    /// What was answered negatively so far: MQTT 3.1.1 the connection closed without a
    /// PUBACK; HTTP a per-record error or an error status.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }

    /// Stops the load; what was acknowledged.
    pub async fn stop(self) -> Vec<String> {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(35), self.task).await;
        self.acked.lock().unwrap().clone()
    }
}

/// MQTT 3.1.1 QoS 1 publishes `{prefix}-{n}` one after the other (each waits for its PUBACK
/// or the connection's end), with a new connection after an error.
pub fn mqtt_load(addr: SocketAddr, prefix: &str) -> Load {
    let (acked, refused) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let stop = CancellationToken::new();
    let (record, token, prefix) = (acked.clone(), stop.clone(), prefix.to_owned());
    let record_refused = refused.clone();
    let task = tokio::spawn(async move {
        let mut n = 0u64;
        'connections: while !token.is_cancelled() {
            let mut opts = MqttOptions::new(
                format!("{prefix}-client"),
                addr.ip().to_string(),
                addr.port(),
            );
            opts.set_keep_alive(Duration::from_secs(30));
            let (client, mut el) = AsyncClient::new(opts, 10);
            while !token.is_cancelled() {
                let payload = format!("{prefix}-{n}");
                n += 1;
                if client
                    .publish(
                        format!("{prefix}/load"),
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .await
                    .is_err()
                {
                    continue 'connections;
                }
                // Until its PUBACK, or an error: a closed connection is 3.1.1's refusal, no
                // answer within 30 s none at all (neither counts as acknowledged).
                let answer = loop {
                    match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
                        Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break Some(true),
                        Ok(Ok(_)) => continue,
                        Ok(Err(_)) => break Some(false),
                        Err(_) => break None,
                    }
                };
                match answer {
                    Some(true) => record.lock().unwrap().push(payload),
                    refusal => {
                        if refusal.is_some() {
                            record_refused.lock().unwrap().push(payload);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'connections;
                    }
                }
            }
        }
    });
    Load {
        acked,
        refused,
        stop,
        task,
    }
}

/// HTTP produce of one record `{prefix}-{n}` per request to `topic`, one after the other;
/// a 200 is an acknowledgement.
pub fn http_load(addr: SocketAddr, topic: &str) -> Load {
    let (acked, refused) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let stop = CancellationToken::new();
    let (record, token, topic) = (acked.clone(), stop.clone(), topic.to_owned());
    let record_refused = refused.clone();
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()
            .unwrap();
        let mut n = 0u64;
        while !token.is_cancelled() {
            let value = format!("{topic}-{n}");
            n += 1;
            let answer = client
                .post(format!("http://{addr}/topics/{topic}"))
                .header("content-type", "application/vnd.kafka.json.v2+json")
                .body(serde_json::json!({ "records": [{ "value": value }] }).to_string())
                .send()
                .await;
            match answer {
                Ok(a) if a.status() == 200 => {
                    // Per-record errors come back with 200 too: only an offset is an ack.
                    let body: serde_json::Value = a.json().await.unwrap_or_default();
                    if body["offsets"][0]["offset"].is_i64() {
                        record.lock().unwrap().push(value);
                    } else if body["offsets"][0]["error_code"].is_i64() {
                        record_refused.lock().unwrap().push(value);
                    }
                }
                Ok(_) => {
                    record_refused.lock().unwrap().push(value);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    Load {
        acked,
        refused,
        stop,
        task,
    }
}

/// Every value in `topic` (read from the beginning until 5 s pass without a new record).
pub async fn read_all(bootstrap: &str, topic: &str) -> BTreeSet<String> {
    let backend = barnabas_kafka::connect(&barnabas_kafka::KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        ..Default::default()
    })
    .unwrap();
    let consumer = backend
        .consumers
        .create(ConsumerConfig {
            group_id: format!("faults-check-{}", uuid::Uuid::new_v4()),
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        })
        .await
        .unwrap();
    consumer
        .subscribe(Subscription::Topics(vec![topic.to_owned()]))
        .await
        .unwrap();
    let mut out = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(5) {
        let batch = consumer
            .poll(1000, Duration::from_millis(500))
            .await
            .unwrap_or_default();
        if !batch.is_empty() {
            quiet_since = Instant::now();
        }
        for r in batch {
            if let Some(v) = r.value {
                let text = String::from_utf8_lossy(&v).trim_matches('"').to_owned();
                out.insert(text);
            }
        }
    }
    let _ = consumer.close().await;
    out
}

/// Every acknowledged message is stored.
pub async fn assert_stored(bootstrap: &str, topic: &str, acked: &[String]) {
    let stored = read_all(bootstrap, topic).await;
    let missing: Vec<&String> = acked.iter().filter(|a| !stored.contains(*a)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing from {topic} ({} stored): {:?}",
        missing.len(),
        acked.len(),
        stored.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A metric's value from `/metrics`.
pub async fn metric(http: SocketAddr, name: &str) -> Option<f64> {
    metric_where(http, name, "").await
}

/// The value of the sample of metric `name` whose labels include `label` (`key="value"`).
pub async fn metric_where(http: SocketAddr, name: &str, label: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// What a storm did.
pub struct Storm {
    pub connacks: usize,
}

/// A raw MQTT 3.1.1 CONNECT: clean session, keep-alive `keep_alive_secs`, client id
/// `client_id` (short: one byte of remaining length).
pub fn connect_packet(client_id: &str, keep_alive_secs: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 2];
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, u8::try_from(body.len()).unwrap()];
    packet.extend(body);
    packet
}

/// `clients` MQTT connects (CONNECT, CONNACK, close) in parallel batches, then `silent`
/// connections that never send anything and are left open.
pub async fn storm(addr: SocketAddr, clients: usize, silent: usize) -> Storm {
    let mut connacks = 0;
    for batch in 0..clients.div_ceil(100) {
        let handles: Vec<_> = (0..100.min(clients - batch * 100))
            .map(|i| {
                tokio::task::spawn_blocking(move || {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        return false;
                    };
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let packet = connect_packet(&format!("storm-{batch}-{i}"), 30);
                    if s.write_all(&packet).is_err() {
                        return false;
                    }
                    let mut ack = [0u8; 4];
                    let ok = std::io::Read::read_exact(&mut s, &mut ack).is_ok()
                        && ack[0] == 0x20
                        && ack[3] == 0;
                    // Half of them leave without DISCONNECT (abrupt close).
                    if i % 2 == 0 {
                        let _ = s.write_all(&[0xE0, 0]);
                    }
                    ok
                })
            })
            .collect();
        for h in handles {
            if h.await.unwrap_or(false) {
                connacks += 1;
            }
        }
    }
    // Opened last, so they are still within the CONNECT deadline when the caller looks
    // however long the storm took; they stay open (the gateway must close them).
    let silent_conns: Vec<TcpStream> = (0..silent)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(silent_conns);
    });
    Storm { connacks }
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `count` records of `size` bytes into `topic`, straight to Kafka.
pub async fn produce_bulk(bootstrap: &str, topic: &str, count: usize, size: usize) {
    let backend = barnabas_kafka::connect(&barnabas_kafka::KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        default_replication_factor: 1,
        ..Default::default()
    })
    .unwrap();
    backend
        .admin
        .create_topic(topic, Some(1), Some(1))
        .await
        .ok();
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let records = chunk
            .iter()
            .map(|i| barnabas_core::Record {
                topic: topic.to_owned(),
                partition: None,
                key: Some(bytes::Bytes::from(format!("k{i}"))),
                value: Some(payload.clone()),
                headers: Vec::new(),
                timestamp: None,
            })
            .collect();
        for r in backend
            .publisher
            .publish(barnabas_core::Identity::Gateway, records)
            .await
        {
            r.unwrap();
        }
    }
}

/// A raw MQTT 3.1.1 client that subscribes at QoS 1 and then never reads its socket.
pub fn stalled_subscriber(addr: SocketAddr, filter: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&connect_packet("stalled", 60)).unwrap();
    let mut sub = vec![0, 1, 0, filter.len() as u8];
    sub.extend_from_slice(filter.as_bytes());
    sub.push(1);
    let mut packet = vec![0x82, sub.len() as u8];
    packet.extend(sub);
    s.write_all(&packet).unwrap();
    // CONNACK (4 bytes) and SUBACK (5) are read by nobody either: the socket just fills up.
    // The subscription is in place once both are there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 9];
    while s.peek(&mut buf).unwrap() < buf.len() {
        assert!(Instant::now() < deadline, "no CONNACK and SUBACK");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        (buf[0], buf[4]),
        (0x20, 0x90),
        "CONNACK then SUBACK: {buf:?}"
    );
    s
}

/// A client that publishes to its own topic and times the delivery back to itself.
pub struct Prober {
    client: AsyncClient,
    events: tokio::sync::mpsc::UnboundedReceiver<String>,
    topic: String,
    n: u64,
}

impl Prober {
    pub async fn connect(addr: SocketAddr, topic: &str) -> Prober {
        let mut opts = MqttOptions::new("prober", addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(opts, 10);
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = ev {
                    let _ = tx.send(String::from_utf8_lossy(&p.payload).into_owned());
                }
            }
        });
        client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let mut p = Prober {
            client,
            events,
            topic: topic.to_owned(),
            n: 0,
        };
        // The subscription is live once a probe comes back.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "probe subscription never delivered"
            );
            if p.try_round_trip(Duration::from_secs(3)).await.is_some() {
                return p;
            }
        }
    }

    async fn try_round_trip(&mut self, within: Duration) -> Option<Duration> {
        self.n += 1;
        let tag = format!("probe-{}", self.n);
        let started = Instant::now();
        self.client
            .publish(&self.topic, QoS::AtLeastOnce, false, tag.clone())
            .await
            .ok()?;
        let deadline = started + within;
        while let Ok(Some(got)) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.events.recv(),
        )
        .await
        {
            if got == tag {
                return Some(started.elapsed());
            }
        }
        None
    }

    /// Publish → delivery time of one probe (30 s at most).
    pub async fn round_trip(&mut self) -> Duration {
        self.try_round_trip(Duration::from_secs(30))
            .await
            .unwrap_or(Duration::from_secs(30))
    }
}

/// An SSE client of `/topics/{topic}/events` (from the beginning) that never reads after the
/// request.
pub fn stalled_sse(http: SocketAddr, topic: &str) -> TcpStream {
    let mut s = TcpStream::connect(http).unwrap();
    write!(
        s,
        "GET /topics/{topic}/events?from=earliest HTTP/1.1\r\nHost: {http}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    s
}

/// A python3-qpid-proton receiver attached to `source` with no credit until
/// [`IdleReceiver::read`] lets it take `count` messages.
pub struct IdleReceiver(std::process::Child);

impl IdleReceiver {
    pub fn start(amqp: SocketAddr, source: &str, count: usize) -> IdleReceiver {
        let child = std::process::Command::new(crate::common::system_python())
            .arg(crate::common::workspace_root().join("tests/python/amqp_proton.py"))
            .args([
                "idle",
                &format!("amqp://{amqp}"),
                source,
                &count.to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        IdleReceiver(child)
    }

    /// Whether the receiver is still attached and waiting (its process has not ended).
    pub fn is_waiting(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Grants credit at last and waits (≤ 3 min) for the `count` messages; what it printed.
    pub async fn read(mut self) -> serde_json::Value {
        self.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(180),
            tokio::task::spawn_blocking(move || self.0.wait_with_output().unwrap()),
        )
        .await
        .expect("the AMQP receiver got its messages within 3 min")
        .unwrap();
        assert!(out.status.success(), "{}", crate::common::text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Reads a raw MQTT 3.1.1 connection (one that stopped reading) until PUBLISHes on `want`
/// distinct topics arrived, acknowledging each QoS 1 one; the distinct topics it saw.
pub fn drain_mqtt(s: &TcpStream, want: usize, within: Duration) -> usize {
    use std::io::Read;
    let deadline = Instant::now() + within;
    s.set_nonblocking(false).unwrap();
    let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
    let mut writer = s.try_clone().unwrap();
    let mut topics = BTreeSet::new();
    while topics.len() < want && Instant::now() < deadline {
        s.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        let mut first = [0u8; 1];
        if reader.read_exact(&mut first).is_err() {
            break;
        }
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let mut b = [0u8; 1];
            reader.read_exact(&mut b).unwrap();
            len |= usize::from(b[0] & 0x7f) << shift;
            shift += 7;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        if first[0] >> 4 != 3 {
            continue; // CONNACK, SUBACK
        }
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        topics.insert(body[2..2 + topic_len].to_vec());
        if (first[0] >> 1) & 3 == 1 {
            let id = &body[2 + topic_len..4 + topic_len];
            writer.write_all(&[0x40, 2, id[0], id[1]]).unwrap();
        }
    }
    topics.len()
}

/// Reads an SSE response (chunked HTTP/1.1) from a client that stopped reading, until the
/// event with id `last_id` arrived; the number of events read.
pub fn drain_sse(s: &TcpStream, last_id: &str, within: Duration) -> usize {
    use std::io::{BufRead, Read};
    let deadline = Instant::now() + within;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    // The response head.
    while reader.read_line(&mut line).unwrap() > 2 {
        line.clear();
    }
    let (mut events, mut partial) = (0, Vec::new());
    let want = format!("id: {last_id}");
    while Instant::now() < deadline {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        partial.extend_from_slice(&chunk[..size]);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let event_line: Vec<u8> = partial.drain(..=end).collect();
            if event_line.starts_with(b"id: ") {
                events += 1;
                if event_line.trim_ascii_end() == want.as_bytes() {
                    return events;
                }
            }
        }
    }
    panic!("the SSE stream ended or stalled after {events} events, before id {last_id}");
}

/// AMQP load from python3-qpid-proton (`amqp_proton.py load`): one transfer at a time to
/// `address`, each printed once accepted.
pub struct AmqpLoad {
    child: std::process::Child,
    acked: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// A test that fails before [`AmqpLoad::stop`] does not leave its sender running (it would
/// load the machine for the tests after it).
impl Drop for AmqpLoad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AmqpLoad {
    pub fn start(amqp: SocketAddr, address: &str) -> AmqpLoad {
        let mut child = std::process::Command::new(crate::common::system_python())
            .arg(crate::common::workspace_root().join("tests/python/amqp_proton.py"))
            .args(["load", &format!("amqp://{amqp}"), address, address])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let sink = acked.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        AmqpLoad {
            child,
            acked,
            reader: Some(reader),
        }
    }

    pub fn acked(&self) -> Vec<String> {
        self.acked.lock().unwrap().clone()
    }

    /// Kills the sender; what was accepted.
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}
