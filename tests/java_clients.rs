//! Java clients as third interop voices (issue 23), beside the Rust and Python ones: each stock
//! client runs as a user runs it, in a JVM of its own, through a small driver of tests/java
//! (`scripts/java-clients/run`, jars fetched once from Maven Central): Apache Qpid JMS and the
//! Vert.x AMQP client send and receive through the AMQP listener, the HiveMQ client (MQTT 5
//! and 3.1.1) and Eclipse Paho's mqttv3 publish at QoS 0, 1 and 2 and subscribe through the
//! MQTT listener, and the Apache Kafka Java consumer reads what each protocol wrote (keys,
//! values, partitions and headers as docs/mqtt.md, docs/amqp.md and docs/http.md promise).
//! Each client brings its own codec, flow control and defaults, so these catch what a client
//! written beside the gateway would not. Every test runs on the embedded broker and on Apache
//! Kafka (`BARNABAS_TEST_KAFKA=apache`).
//!
//! The Kafka consumer is kafka-clients 4.4.0, whose ApiVersions v5 the embedded broker answers
//! with UNSUPPORTED_VERSION (vendor/README.md, tansu-broker fix 2; the last test checks that on
//! the wire).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use barnabas::config::{Config, MqttMapping};
use base64::Engine;
use common::{gateway, gateway::TestGateway};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// How long a driver may take to print a line or to finish (a JVM start included).
const WITHIN: Duration = Duration::from_secs(90);
/// The drivers' own deadline, in ms (they exit 2 after it, whatever they wait for).
const DRIVER_TIMEOUT_MS: &str = "75000";

/// A driver of tests/java running as a child process: its stdout lines as they come, its
/// stderr kept for the failure message (and echoed, for the test's captured output).
struct Driver {
    name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Driver {
    fn spawn(driver: &str, args: &[&str]) -> Driver {
        let run = common::workspace_root().join("scripts/java-clients/run");
        let mut child = Command::new(&run)
            .arg(driver)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", run.display()));
        let name = format!("{driver} {}", args.first().copied().unwrap_or_default());
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, log, tag) = (child.stderr.take().unwrap(), stderr.clone(), name.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Driver {
            name,
            child,
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn parse(&self, line: &str) -> Value {
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{} printed {line:?}, not JSON: {e}", self.name))
    }

    /// The next line the driver prints, within [`WITHIN`].
    async fn next(&mut self) -> Value {
        match tokio::time::timeout(WITHIN, self.lines.recv()).await {
            Ok(Some(line)) => self.parse(&line),
            Ok(None) => {
                let status = self.child.wait().unwrap();
                panic!(
                    "{} ended ({status}) before its next line; stderr:\n{}",
                    self.name,
                    self.stderr()
                )
            }
            Err(_) => panic!(
                "{}: no line within {WITHIN:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
        }
    }

    /// Waits (at most [`WITHIN`]) for the driver to exit, which must be a success; returns the
    /// lines it printed that [`Driver::next`] did not take.
    async fn finish(mut self) -> Vec<Value> {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{} failed ({status}); stderr:\n{}",
                    self.name,
                    self.stderr()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {WITHIN:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut out = Vec::new();
        // The reader ends at the end of stdout, which the exit closed.
        while let Some(line) = tokio::time::timeout(Duration::from_secs(10), self.lines.recv())
            .await
            .expect("stdout closes when the driver exits")
        {
            out.push(self.parse(&line));
        }
        out
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A test that failed half-way leaves no JVM behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `head` followed by the triples (QOS TOPIC PAYLOAD, or KEY PARTITION PAYLOAD) a driver takes.
fn with_triples<'a>(head: &[&'a str], triples: &[[&'a str; 3]]) -> Vec<&'a str> {
    let mut args = head.to_vec();
    args.extend(triples.iter().flatten());
    args
}

/// Runs a driver to its end; the lines it printed.
async fn run(driver: &str, args: &[&str]) -> Vec<Value> {
    Driver::spawn(driver, args).finish().await
}

fn with_amqp(c: &mut Config) {
    c.amqp.listen = "127.0.0.1:0".into();
}

fn amqp_url(gw: &TestGateway) -> String {
    format!("amqp://{}", gw.gateway.amqp_addr().unwrap())
}

fn amqp_host_port(gw: &TestGateway) -> (String, String) {
    let a = gw.gateway.amqp_addr().unwrap();
    (a.ip().to_string(), a.port().to_string())
}

fn mqtt_host_port(gw: &TestGateway) -> (String, String) {
    let a = gw.gateway.mqtt_addr().unwrap();
    (a.ip().to_string(), a.port().to_string())
}

fn paho_url(gw: &TestGateway) -> String {
    format!("tcp://{}", gw.gateway.mqtt_addr().unwrap())
}

async fn topic_with_partitions(gw: &TestGateway, topic: &str, partitions: i32) {
    gw.gateway
        .backend()
        .admin
        .create_topic(topic, Some(partitions), None)
        .await
        .unwrap();
}

/// The record (or message) among `got` whose `field` is `value`; exactly one must be.
fn the<'a>(got: &'a [Value], field: &str, value: &str) -> &'a Value {
    let found: Vec<_> = got.iter().filter(|v| v[field] == value).collect();
    assert_eq!(found.len(), 1, "one {field} = {value:?} in {got:#?}");
    found[0]
}

/// The values of `field` in `got`, sorted.
fn sorted(got: &[Value], field: &str) -> Vec<String> {
    let mut out: Vec<String> = got
        .iter()
        .map(|v| v[field].as_str().unwrap_or_default().to_owned())
        .collect();
    out.sort();
    out
}

/// What the Kafka Java consumer reads from `topic` (from its beginning): exactly `n` records,
/// the end offsets proving nothing else is there.
async fn kafka_read(gw: &TestGateway, topic: &str, n: usize) -> Vec<Value> {
    let mut got = run(
        "KafkaConsumerDriver.java",
        &[&gw.kafka, topic, &n.to_string(), DRIVER_TIMEOUT_MS],
    )
    .await;
    let ends = got.pop().expect("the end offsets line");
    let total: u64 = ends["end_offsets"]
        .as_object()
        .unwrap_or_else(|| panic!("last line {ends}"))
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(got.len(), n, "{topic}: {got:#?}");
    assert_eq!(total, n as u64, "{topic} holds only these records: {ends}");
    got
}

/// A Kafka record's headers as `(name, value)` pairs, in order.
fn headers(record: &Value) -> Vec<(String, String)> {
    record["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap_or("<null>").to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Qpid JMS sends persistent TextMessages (each waits for `accepted`) to a queue named after
/// the Kafka topic, and a JMS consumer on `T/group.id/G` receives every one, once, in order:
/// the value as the body (one data section: a BytesMessage), the message id and correlation
/// id the sender had (the `amqp.*` headers become the standard properties again), and the
/// JMS properties as text (headers are text).
#[tokio::test(flavor = "multi_thread")]
async fn qpid_jms_sends_and_a_jms_consumer_receives_every_message_with_its_ids_and_properties() {
    let gw = gateway::start(with_amqp).await;
    let url = amqp_url(&gw);
    let bodies = ["order-0", "order-1", "order-2", "order-3", "order-4"];
    let mut args = vec!["send", &url, "jms-orders"];
    args.extend(bodies);
    let sent = run("QpidJmsDriver.java", &args).await;
    assert_eq!(sorted(&sent, "sent"), bodies, "{sent:#?}");

    let got = run(
        "QpidJmsDriver.java",
        &[
            "receive",
            &url,
            "jms-orders/group.id/jms",
            "5",
            DRIVER_TIMEOUT_MS,
        ],
    )
    .await;
    assert_eq!(got.len(), 5, "each message once: {got:#?}");
    for (n, (m, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(m["body"], bodies[n], "in order: {got:#?}");
        assert_eq!(m["type"], "bytes", "a data section body: {m}");
        assert_eq!(m["message_id"], s["message_id"], "{m}");
        assert_eq!(m["correlation_id"], format!("corr-{n}"), "{m}");
        assert_eq!(m["properties"]["n"], n.to_string(), "{m}");
        assert_eq!(m["properties"]["client"], "qpid-jms", "{m}");
    }
    gw.stop().await;
}

/// The Vert.x AMQP client sends amqp-value strings with a Kafka key and partition in the
/// message annotations, properties and application properties (each waits for `accepted`);
/// a Vert.x receiver gets each once with the Kafka annotations (topic, partition, offset, key)
/// and the properties and application properties it was sent with.
#[tokio::test(flavor = "multi_thread")]
async fn vertx_amqp_sends_with_key_and_partition_and_a_vertx_receiver_gets_the_kafka_annotations() {
    let gw = gateway::start(with_amqp).await;
    topic_with_partitions(&gw, "vx-orders", 3).await;
    let (host, port) = amqp_host_port(&gw);
    let sent = run(
        "VertxAmqpDriver.java",
        &with_triples(
            &["send", &host, &port, "vx-orders"],
            &[
                ["alpha", "2", "v0"],
                ["beta", "0", "v1"],
                ["-", "1", "v2"],
                ["alpha", "-", "v3"],
            ],
        ),
    )
    .await;
    assert_eq!(sorted(&sent, "sent"), ["v0", "v1", "v2", "v3"], "{sent:#?}");

    let got = run(
        "VertxAmqpDriver.java",
        &[
            "receive",
            &host,
            &port,
            "vx-orders/group.id/vx",
            "4",
            DRIVER_TIMEOUT_MS,
        ],
    )
    .await;
    assert_eq!(got.len(), 4, "each message once: {got:#?}");
    for (n, (body, key, partition)) in [
        ("v0", json!("alpha"), Some(2)),
        ("v1", json!("beta"), Some(0)),
        ("v2", Value::Null, Some(1)),
        ("v3", json!("alpha"), None),
    ]
    .into_iter()
    .enumerate()
    {
        let m = the(&got, "body", body);
        assert_eq!(m["topic"], "vx-orders", "{m}");
        assert_eq!(m["key"], key, "{m}");
        if let Some(p) = partition {
            assert_eq!(m["partition"], p, "{m}");
        }
        assert!(m["offset"].is_u64(), "{m}");
        assert_eq!(m["message_id"], format!("vertx-{n}"), "{m}");
        assert_eq!(m["correlation_id"], format!("corr-{n}"), "{m}");
        assert_eq!(m["subject"], "greeting", "{m}");
        assert_eq!(m["content_type"], "text/plain", "{m}");
        assert_eq!(
            m["properties"],
            json!({"n": n.to_string(), "client": "vertx"}),
            "{m}"
        );
    }
    gw.stop().await;
}

/// A HiveMQ MQTT 5 subscriber (granted QoS 2) gets a HiveMQ MQTT 5 publisher's QoS 0, 1 and 2
/// publishes each once at the QoS it was published with, with exactly the user properties
/// the publisher sent, in order (docs/mqtt.md: nothing more).
#[tokio::test(flavor = "multi_thread")]
async fn hivemq_mqtt5_publishes_at_qos_0_1_2_and_a_hivemq_subscriber_gets_each_with_its_user_properties(
) {
    let gw = gateway::start(|_| {}).await;
    let (host, port) = mqtt_host_port(&gw);
    let mut sub = Driver::spawn(
        "HiveMqDriver.java",
        &[
            "subscribe",
            &host,
            &port,
            "5",
            "hive5-sub",
            "java/hive5/#",
            "2",
            "3",
            DRIVER_TIMEOUT_MS,
        ],
    );
    assert_eq!(sub.next().await["granted"], 2);
    let published = run(
        "HiveMqDriver.java",
        &with_triples(
            &["publish", &host, &port, "5", "hive5-pub"],
            &[
                ["0", "java/hive5/q0", "zero"],
                ["1", "java/hive5/q1", "one"],
                ["2", "java/hive5/q2", "two"],
            ],
        ),
    )
    .await;
    assert_eq!(published.len(), 3, "{published:#?}");
    let got = sub.finish().await;
    assert_eq!(got.len(), 3, "each publish once: {got:#?}");
    for (n, (topic, payload)) in [
        ("java/hive5/q0", "zero"),
        ("java/hive5/q1", "one"),
        ("java/hive5/q2", "two"),
    ]
    .into_iter()
    .enumerate()
    {
        let m = the(&got, "payload", payload);
        assert_eq!(m["topic"], topic, "{m}");
        assert_eq!(m["qos"], n, "min(granted 2, published {n}): {m}");
        assert_eq!(m["retained"], false, "{m}");
        assert_eq!(
            m["user_properties"],
            json!([["n", n.to_string()], ["client", "hivemq"]]),
            "{m}"
        );
    }
    gw.stop().await;
}

/// HiveMQ over MQTT 3.1.1: a subscriber granted QoS 1 gets the QoS 0, 1 and 2 publishes of a
/// 3.1.1 publisher each once, at min(granted, published): 0, 1 and 1.
#[tokio::test(flavor = "multi_thread")]
async fn hivemq_mqtt311_publishes_at_qos_0_1_2_and_a_subscriber_granted_qos_1_gets_each_at_min_qos()
{
    let gw = gateway::start(|_| {}).await;
    let (host, port) = mqtt_host_port(&gw);
    let mut sub = Driver::spawn(
        "HiveMqDriver.java",
        &[
            "subscribe",
            &host,
            &port,
            "3",
            "hive3-sub",
            "java/hive3/+",
            "1",
            "3",
            DRIVER_TIMEOUT_MS,
        ],
    );
    assert_eq!(sub.next().await["granted"], 1);
    let published = run(
        "HiveMqDriver.java",
        &with_triples(
            &["publish", &host, &port, "3", "hive3-pub"],
            &[
                ["0", "java/hive3/q0", "zero"],
                ["1", "java/hive3/q1", "one"],
                ["2", "java/hive3/q2", "two"],
            ],
        ),
    )
    .await;
    assert_eq!(published.len(), 3, "{published:#?}");
    let got = sub.finish().await;
    assert_eq!(got.len(), 3, "each publish once: {got:#?}");
    for (topic, payload, qos) in [
        ("java/hive3/q0", "zero", 0),
        ("java/hive3/q1", "one", 1),
        ("java/hive3/q2", "two", 1),
    ] {
        let m = the(&got, "payload", payload);
        assert_eq!(m["topic"], topic, "{m}");
        assert_eq!(m["qos"], qos, "{m}");
    }
    gw.stop().await;
}

/// Eclipse Paho's mqttv3 publishes at QoS 0, 1 and 2 (QoS 1 and 2 wait for their handshake);
/// a Paho subscriber (granted 2) gets each once at its QoS, and a HiveMQ MQTT 5 subscriber on
/// the same filter gets them too, with no user properties: a 3.1.1 publish has none, and the
/// gateway's own `barnabas.mqtt.*` headers are not passed on.
#[tokio::test(flavor = "multi_thread")]
async fn paho_publishes_at_qos_0_1_2_and_paho_and_hivemq5_subscribers_get_each_at_its_qos() {
    let gw = gateway::start(|_| {}).await;
    let url = paho_url(&gw);
    let (host, port) = mqtt_host_port(&gw);
    let mut paho = Driver::spawn(
        "PahoDriver.java",
        &[
            "subscribe",
            &url,
            "paho-sub",
            "java/paho/#",
            "2",
            "3",
            DRIVER_TIMEOUT_MS,
        ],
    );
    let mut hive = Driver::spawn(
        "HiveMqDriver.java",
        &[
            "subscribe",
            &host,
            &port,
            "5",
            "paho-watcher",
            "java/paho/#",
            "2",
            "3",
            DRIVER_TIMEOUT_MS,
        ],
    );
    assert_eq!(paho.next().await["granted"], 2);
    assert_eq!(hive.next().await["granted"], 2);
    let published = run(
        "PahoDriver.java",
        &with_triples(
            &["publish", &url, "paho-pub"],
            &[
                ["0", "java/paho/q0", "zero"],
                ["1", "java/paho/q1", "one"],
                ["2", "java/paho/q2", "two"],
            ],
        ),
    )
    .await;
    assert_eq!(published.len(), 3, "{published:#?}");
    let (by_paho, by_hive) = (paho.finish().await, hive.finish().await);
    for got in [&by_paho, &by_hive] {
        assert_eq!(got.len(), 3, "each publish once: {got:#?}");
        for (qos, (topic, payload)) in [
            ("java/paho/q0", "zero"),
            ("java/paho/q1", "one"),
            ("java/paho/q2", "two"),
        ]
        .into_iter()
        .enumerate()
        {
            let m = the(got, "payload", payload);
            assert_eq!(m["topic"], topic, "{m}");
            assert_eq!(m["qos"], qos, "{m}");
            assert_eq!(m["retained"], false, "{m}");
        }
    }
    for m in &by_hive {
        assert_eq!(m["user_properties"], json!([]), "{m}");
    }
    for m in &by_paho {
        assert_eq!(m["duplicate"], false, "{m}");
    }
    gw.stop().await;
}

/// The Kafka Java consumer reads what MQTT clients wrote through a mapping rule
/// (`devices/{device}/telemetry` → `telemetry`, key `{device}`): the payload as value, the
/// device as key (one key, one partition), the gateway's headers `barnabas.mqtt.topic`,
/// `.qos`, `.client_id`, and an MQTT 5 publisher's user properties after them, in order.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_java_consumer_reads_mqtt_publishes_with_the_mapped_key_and_headers() {
    let gw = gateway::start(|c| {
        c.mqtt.mapping = vec![MqttMapping {
            pattern: "devices/{device}/telemetry".into(),
            kafka_topic: "telemetry".into(),
            key: Some("{device}".into()),
        }];
        c.kafka.default_partitions = 3;
    })
    .await;
    let (host, port) = mqtt_host_port(&gw);
    run(
        "PahoDriver.java",
        &with_triples(
            &["publish", &paho_url(&gw), "paho-dev"],
            &[
                ["0", "devices/d1/telemetry", "t1"],
                ["1", "devices/d2/telemetry", "t2"],
                ["2", "devices/d1/telemetry", "t3"],
            ],
        ),
    )
    .await;
    run(
        "HiveMqDriver.java",
        &with_triples(
            &["publish", &host, &port, "5", "hive-dev"],
            &[["1", "devices/d3/telemetry", "t4"]],
        ),
    )
    .await;
    let got = kafka_read(&gw, "telemetry", 4).await;
    for (value, key, qos, client) in [
        ("t1", "d1", "0", "paho-dev"),
        ("t2", "d2", "1", "paho-dev"),
        ("t3", "d1", "2", "paho-dev"),
        ("t4", "d3", "1", "hive-dev"),
    ] {
        let r = the(&got, "value", value);
        assert_eq!(r["key"], key, "{r}");
        let mut want = pairs(&[
            ("barnabas.mqtt.topic", &format!("devices/{key}/telemetry")),
            ("barnabas.mqtt.qos", qos),
            ("barnabas.mqtt.client_id", client),
        ]);
        if client == "hive-dev" {
            want.extend(pairs(&[("n", "0"), ("client", "hivemq")]));
        }
        assert_eq!(headers(r), want, "{r}");
    }
    assert_eq!(
        the(&got, "value", "t1")["partition"],
        the(&got, "value", "t3")["partition"],
        "one key, one partition: {got:#?}"
    );
    gw.stop().await;
}

/// The Kafka Java consumer reads what AMQP clients wrote: Vert.x transfers keyed and
/// partitioned by message annotation, Qpid JMS messages sent to `T/partitions/1` (no key);
/// the headers are the application properties (as text) and the `amqp.*` properties.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_java_consumer_reads_amqp_transfers_with_key_partition_and_headers() {
    let gw = gateway::start(with_amqp).await;
    topic_with_partitions(&gw, "amqp-in", 3).await;
    let (host, port) = amqp_host_port(&gw);
    run(
        "VertxAmqpDriver.java",
        &with_triples(
            &["send", &host, &port, "amqp-in"],
            &[["alpha", "2", "x0"], ["beta", "-", "x1"]],
        ),
    )
    .await;
    let jms = run(
        "QpidJmsDriver.java",
        &["send", &amqp_url(&gw), "amqp-in/partitions/1", "j0", "j1"],
    )
    .await;
    let got = kafka_read(&gw, "amqp-in", 4).await;
    for (n, value, key) in [(0, "x0", "alpha"), (1, "x1", "beta")] {
        let r = the(&got, "value", value);
        assert_eq!(r["key"], key, "{r}");
        assert_eq!(
            headers(r),
            pairs(&[
                ("amqp.message-id", &format!("vertx-{n}")),
                ("amqp.correlation-id", &format!("corr-{n}")),
                ("amqp.content-type", "text/plain"),
                ("amqp.subject", "greeting"),
                ("amqp.to", "amqp-in"),
                ("n", &n.to_string()),
                ("client", "vertx"),
            ]),
            "{r}"
        );
    }
    assert_eq!(the(&got, "value", "x0")["partition"], 2, "{got:#?}");
    for (n, value) in ["j0", "j1"].into_iter().enumerate() {
        let r = the(&got, "value", value);
        assert_eq!(r["partition"], 1, "the address' partition: {r}");
        assert_eq!(r["key"], Value::Null, "{r}");
        let h = headers(r);
        let id = jms[n]["message_id"].as_str().unwrap();
        for want in pairs(&[
            ("amqp.message-id", id),
            ("amqp.correlation-id", &format!("corr-{n}")),
            ("n", &n.to_string()),
            ("client", "qpid-jms"),
        ]) {
            assert!(h.contains(&want), "{want:?} in {r}");
        }
    }
    // Offsets within a partition follow the send order.
    assert!(
        the(&got, "value", "j0")["offset"].as_u64() < the(&got, "value", "j1")["offset"].as_u64(),
        "{got:#?}"
    );
    gw.stop().await;
}

/// The Kafka Java consumer reads what `POST /topics/T` wrote: binary records with key,
/// explicit partition and headers exactly as sent (no header of the gateway's), and a
/// json-format record stored as its JSON text (the key with its quotes).
#[tokio::test(flavor = "multi_thread")]
async fn kafka_java_consumer_reads_http_records_with_key_partition_and_headers() {
    let gw = gateway::start(|_| {}).await;
    topic_with_partitions(&gw, "http-in", 3).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let a = gw
        .post_json(
            "/topics/http-in",
            gateway::BINARY,
            &json!({"records": [
                {"key": b64("h1"), "value": b64("first"), "partition": 2,
                 "headers": [{"key": "trace", "value": b64("t-1")}, {"key": "origin", "value": b64("http")}]},
                {"key": b64("h2"), "value": b64("second"), "partition": 0},
            ]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["offsets"][0]["partition"], 2, "{}", a.text);
    let a = gw
        .post_json(
            "/topics/http-in",
            gateway::JSON,
            &json!({"records": [{"key": "j", "value": {"n": [1, 2]}, "partition": 1}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let got = kafka_read(&gw, "http-in", 3).await;
    let first = the(&got, "value", "first");
    assert_eq!(first["key"], "h1", "{first}");
    assert_eq!(first["partition"], 2, "{first}");
    assert_eq!(
        headers(first),
        pairs(&[("trace", "t-1"), ("origin", "http")]),
        "{first}"
    );
    let second = the(&got, "value", "second");
    assert_eq!(second["key"], "h2", "{second}");
    assert_eq!(second["partition"], 0, "{second}");
    assert_eq!(second["headers"], json!([]), "{second}");
    let j = the(&got, "value", r#"{"n":[1,2]}"#);
    assert_eq!(j["key"], r#""j""#, "{j}");
    assert_eq!(j["partition"], 1, "{j}");
    assert_eq!(j["headers"], json!([]), "{j}");
    gw.stop().await;
}

/// What kafka-clients 4.4 (the Kafka consumer above) needs of a broker, on the wire: an
/// ApiVersions request of a version the broker does not know (4.4 sends v5, with a cluster id
/// and node id; the embedded broker knows v0-4) is answered, as KIP-511 says, by an
/// ApiVersionsResponse v0 with UNSUPPORTED_VERSION (35) and the ApiVersions versions it does
/// know, and the connection stays open for the client's retry at the highest of them. (The
/// embedded broker used to read such a request as v4, fail and close the connection, and the
/// client reconnected for ever.)
#[tokio::test(flavor = "multi_thread")]
async fn kafka_broker_answers_an_api_versions_request_of_an_unknown_version_and_keeps_the_connection(
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One ApiVersions request (client id "barnabas-test"; from v5 on with `cluster` and node
    /// 1 as kafka-clients 4.4 sends to a known node, or neither), its answer after the size.
    async fn api_versions(
        conn: &mut tokio::net::TcpStream,
        version: i16,
        correlation_id: i32,
        cluster: Option<&str>,
    ) -> Vec<u8> {
        let mut frame = vec![0, 0, 0, 0];
        frame.extend(18i16.to_be_bytes());
        frame.extend(version.to_be_bytes());
        frame.extend(correlation_id.to_be_bytes());
        frame.extend(13i16.to_be_bytes());
        frame.extend(b"barnabas-test");
        if version >= 3 {
            frame.push(0); // request header v2: no tagged fields
            for s in ["barnabas-test", "0.1.0"] {
                frame.push(u8::try_from(s.len() + 1).unwrap()); // compact string
                frame.extend(s.as_bytes());
            }
            if version >= 5 {
                // ClusterId (compact nullable string) and NodeId (KIP-1242).
                match cluster {
                    Some(id) => {
                        frame.push(u8::try_from(id.len() + 1).unwrap());
                        frame.extend(id.as_bytes());
                        frame.extend(1i32.to_be_bytes());
                    }
                    None => {
                        frame.push(0);
                        frame.extend((-1i32).to_be_bytes());
                    }
                }
            }
            frame.push(0); // no tagged fields
        }
        let size = i32::try_from(frame.len() - 4).unwrap();
        frame[..4].copy_from_slice(&size.to_be_bytes());
        conn.write_all(&frame).await.unwrap();
        let mut size = [0u8; 4];
        tokio::time::timeout(WITHIN, conn.read_exact(&mut size))
            .await
            .expect("an answer in time")
            .unwrap_or_else(|e| panic!("ApiVersions v{version}: no answer, {e}"));
        let mut answer = vec![0u8; usize::try_from(i32::from_be_bytes(size)).unwrap()];
        conn.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[..4], correlation_id.to_be_bytes(), "correlation id");
        answer[4..].to_vec()
    }
    let i16_at = |b: &[u8], at: usize| i16::from_be_bytes([b[at], b[at + 1]]);

    let gw = gateway::start(|_| {}).await;
    let mut conn = tokio::net::TcpStream::connect(&gw.kafka).await.unwrap();

    // v0 (every broker knows it): error code, then [api_key min max] with an INT32 count.
    let v0 = api_versions(&mut conn, 0, 1, None).await;
    assert_eq!(i16_at(&v0, 0), 0, "error code");
    let count = usize::try_from(i32::from_be_bytes(v0[2..6].try_into().unwrap())).unwrap();
    let max = (0..count)
        .map(|i| 6 + 6 * i)
        .find(|&at| i16_at(&v0, at) == 18)
        .map(|at| i16_at(&v0, at + 4))
        .expect("ApiVersions among the broker's APIs");
    assert!(max >= 3, "ApiVersions max v{max}");

    // One version more: UNSUPPORTED_VERSION in a v0 answer, naming ApiVersions' own range.
    let newer = api_versions(&mut conn, max + 1, 2, Some("some-cluster")).await;
    assert_eq!(i16_at(&newer, 0), 35, "UNSUPPORTED_VERSION: {newer:?}");
    let count = i32::from_be_bytes(newer[2..6].try_into().unwrap());
    assert!(count >= 1, "{newer:?}");
    let ours = (0..usize::try_from(count).unwrap())
        .map(|i| 6 + 6 * i)
        .find(|&at| i16_at(&newer, at) == 18)
        .unwrap_or_else(|| panic!("ApiVersions' range in {newer:?}"));
    assert_eq!(
        (i16_at(&newer, ours + 2), i16_at(&newer, ours + 4)),
        (0, max)
    );

    // The same connection, at the version it named: answered (error code 0).
    let retried = api_versions(&mut conn, max, 3, None).await;
    assert_eq!(i16_at(&retried, 0), 0, "v{max}: {retried:?}");
    gw.stop().await;
}
