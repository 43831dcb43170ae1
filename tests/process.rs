//! The `barnabas` binary as users run it: readiness, probes, signals, the embedded broker used
//! by a stock Kafka client (confluent-kafka), and data kept across restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use barnabas::embedded::{EmbeddedKafka, Storage};
use barnabas_core::{ConsumerConfig, OffsetReset, Subscription};
use common::{free_addr, free_port, http_get, poll_n, run_python, wait_for_status, Gateway};

const START: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

/// Starts `barnabas` with an embedded broker on a free port; returns (process, http, kafka)
/// once it is ready.
fn start_embedded(extra: &[&str]) -> (Gateway, std::net::SocketAddr, String) {
    let (mut gw, http, kafka) = spawn_embedded(extra);
    gw.wait_for_line("barnabas ready", START);
    (gw, http, kafka)
}

/// [`start_embedded`] without waiting for it to be ready.
fn spawn_embedded(extra: &[&str]) -> (Gateway, std::net::SocketAddr, String) {
    let http = free_addr();
    let kafka = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        format!("--embedded-kafka={kafka}"),
        "--http-listen".into(),
        http.to_string(),
        "--mqtt-listen".into(),
        "off".into(),
        "--amqp-listen".into(),
        "off".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (Gateway::spawn(&refs, &[]), http, kafka)
}

/// The TCP ports process `pid` listens on: its socket inodes (`/proc/PID/fd`) looked up
/// among the listening sockets of `/proc/net/tcp` and `tcp6`.
fn listening_ports(pid: u32) -> std::collections::BTreeSet<u16> {
    let inodes: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = std::collections::BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address rem_address st … inode (the 10th field); 0A = LISTEN.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// Also README.md §Configuration's `"off"`: with MQTT and AMQP off, the process listens on
/// exactly two ports, HTTP's and the embedded broker's.
#[test]
fn ready_line_probes_and_sigterm_exit_zero() {
    let (mut gw, http, kafka) = start_embedded(&[]);
    let kafka_port: u16 = kafka.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        listening_ports(gw.child.id()),
        [http.port(), kafka_port].into_iter().collect(),
        "only HTTP and the embedded broker listen"
    );
    assert_eq!(http_get(http, "/ready").0, 200);
    assert_eq!(http_get(http, "/healthy").0, 200);
    let (status, body) = http_get(http, "/");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["bridge_version"], env!("CARGO_PKG_VERSION"));

    gw.signal("TERM");
    let status = gw.wait_exit(STOP);
    assert_eq!(status.code(), Some(0), "{}", gw.stderr().join("\n"));
    assert!(gw.stderr().iter().any(|l| l.contains("barnabas stopped")));
    assert!(!gw.stderr().iter().any(|l| l.contains("panicked")));
}

/// A clean stop is quiet (issue 21): with MQTT, HTTP and AMQP serving and a record written,
/// SIGTERM drains the front ends, closes the Kafka clients and only then stops the embedded
/// broker, so no client logs the broker's absence. Before the stop order was fixed, every stop
/// logged `ERROR … AllBrokersDown` (twice).
#[test]
fn a_clean_stop_logs_no_error_and_no_warning() {
    let mqtt = free_addr();
    let amqp = free_addr();
    let (http, kafka) = (free_addr(), format!("127.0.0.1:{}", free_port()));
    let mut gw = Gateway::spawn(
        &[
            &format!("--embedded-kafka={kafka}"),
            "--http-listen",
            &http.to_string(),
            "--mqtt-listen",
            &mqtt.to_string(),
            "--amqp-listen",
            &amqp.to_string(),
        ],
        &[],
    );
    gw.wait_for_line("barnabas ready", START);
    let out = common::mosquitto(
        "mosquitto_pub",
        mqtt,
        &["-t", "devices/d1/telemetry", "-q", "1", "-m", "hi"],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    // A subscriber (a Kafka consumer inside the gateway) is connected while the stop begins.
    let mut sub = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &mqtt.port().to_string()])
        .args(["-t", "devices/#", "-q", "1", "-i", "quiet-sub"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !http_get(http, "/metrics")
        .1
        .contains("barnabas_mqtt_subscriptions 1")
    {
        assert!(std::time::Instant::now() < deadline, "no subscription");
        std::thread::sleep(Duration::from_millis(100));
    }
    gw.signal("TERM");
    let status = gw.wait_exit(STOP);
    let _ = sub.kill();
    let _ = sub.wait();
    let log = gw.stderr();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("barnabas stopped")));
    let loud = common::loud_lines(&log);
    assert!(loud.is_empty(), "a clean stop logged:\n{loud:#?}");
}

#[test]
fn sigint_also_exits_zero() {
    let (mut gw, _, _) = start_embedded(&[]);
    gw.signal("INT");
    assert_eq!(gw.wait_exit(STOP).code(), Some(0));
}

#[test]
fn json_log_format_writes_json_lines() {
    let (mut gw, _, _) = start_embedded(&["--log-format", "json"]);
    let line = gw.wait_for_line("barnabas ready", START);
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["message"], "barnabas ready");
    assert_eq!(v["level"], "INFO");
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(STOP).code(), Some(0));
}

#[test]
fn without_kafka_config_the_embedded_broker_starts_on_9092() {
    let http = free_addr();
    let mut gw = Gateway::spawn(
        &["--mqtt-listen", "off", "--amqp-listen", "off"],
        &[("BARNABAS_HTTP__LISTEN", &http.to_string())],
    );
    let line = gw.wait_for_line("embedded Kafka broker started", START);
    assert!(line.contains("127.0.0.1:9092"), "{line}");
    gw.wait_for_line("barnabas ready", START);
    assert_eq!(http_get(http, "/ready").0, 200);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(STOP).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_kafka_coming_and_going() {
    let http = free_addr();
    let kafka_addr = free_addr();
    let mut gw = Gateway::spawn(
        &[
            "--kafka-bootstrap",
            &kafka_addr.to_string(),
            "--http-listen",
            &http.to_string(),
            "--mqtt-listen",
            "off",
            "--amqp-listen",
            "off",
        ],
        &[],
    );
    // Nothing listens on the Kafka address: alive, not ready, no ready line.
    wait_for_status(http, "/healthy", 200, START);
    assert_eq!(http_get(http, "/ready").0, 503);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(http_get(http, "/ready").0, 503);
    assert!(!gw.stderr().iter().any(|l| l.contains("barnabas ready")));

    // Kafka appears: ready line, 204.
    let broker = EmbeddedKafka::start(kafka_addr, None, Storage::Temporary)
        .await
        .unwrap();
    gw.wait_for_line("barnabas ready", START);
    wait_for_status(http, "/ready", 200, START);

    // Kafka goes away again: 503, still alive.
    broker.stop().await;
    wait_for_status(http, "/ready", 503, START);
    assert_eq!(http_get(http, "/healthy").0, 200);

    gw.signal("TERM");
    assert_eq!(gw.wait_exit(STOP).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stock_kafka_client_uses_the_embedded_broker() {
    let (mut gw, _, kafka) = start_embedded(&[]);

    let acks: serde_json::Value = serde_json::from_str(&run_python(
        "kafka_client.py",
        &["produce", &kafka, "stock", "25"],
    ))
    .unwrap();
    let offsets: Vec<i64> = acks
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, (0..25).collect::<Vec<_>>());

    let got: serde_json::Value = serde_json::from_str(&run_python(
        "kafka_client.py",
        &["consume", &kafka, "stock", "py-group", "25"],
    ))
    .unwrap();
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 25);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r["key"], format!("k{i}"));
        assert_eq!(r["value"], format!("v{i}"));
        assert_eq!(r["headers"]["seq"], i.to_string());
        assert_eq!(r["offset"], i as i64);
    }
    // The group committed: a second run of the same group gets nothing more.
    let again: serde_json::Value = serde_json::from_str(&run_python(
        "kafka_client.py",
        &["consume", &kafka, "stock", "py-group", "0"],
    ))
    .unwrap();
    assert_eq!(again.as_array().unwrap().len(), 0);

    // And the gateway's own Kafka adapter reads what the stock client wrote.
    let backend = barnabas_kafka::connect(&barnabas_kafka::KafkaConfig {
        bootstrap_servers: kafka.clone(),
        ..Default::default()
    })
    .unwrap();
    let c = backend
        .consumers
        .create(ConsumerConfig {
            group_id: "rust-side".into(),
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        })
        .await
        .unwrap();
    c.subscribe(Subscription::Topics(vec!["stock".into()]))
        .await
        .unwrap();
    let records = poll_n(c.as_ref(), 25, START).await;
    assert_eq!(records.len(), 25);
    assert_eq!(
        records[3].header("seq").map(|b| b.as_ref()),
        Some(&b"3"[..])
    );
    assert_eq!(backend.admin.watermarks("stock", 0).await.unwrap().high, 25);

    gw.signal("TERM");
    assert_eq!(gw.wait_exit(STOP).code(), Some(0));
}

#[test]
fn data_dir_keeps_acknowledged_records_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();

    let (mut gw, _, kafka) = start_embedded(&["--data-dir", &data]);
    let acks: serde_json::Value = serde_json::from_str(&run_python(
        "kafka_client.py",
        &["produce", &kafka, "kept", "10"],
    ))
    .unwrap();
    assert_eq!(acks.as_array().unwrap().len(), 10);
    gw.signal("KILL");
    gw.wait_exit(STOP);
    assert!(dir.path().join("tansu.db").exists());

    // Restart on the same directory (a new port): everything acknowledged is there.
    let (mut gw, _, kafka) = start_embedded(&["--data-dir", &data]);
    let got: serde_json::Value = serde_json::from_str(&run_python(
        "kafka_client.py",
        &["consume", &kafka, "kept", "after-restart", "10"],
    ))
    .unwrap();
    let values: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, (0..10).map(|i| format!("v{i}")).collect::<Vec<_>>());
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(STOP).code(), Some(0));
}

#[test]
fn without_data_dir_nothing_is_kept() {
    let (mut gw, _, kafka) = start_embedded(&[]);
    let line = gw
        .stderr()
        .into_iter()
        .find(|l| l.contains("embedded Kafka broker started"))
        .unwrap();
    assert!(line.contains("kept=false"), "{line}");
    let data = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("data="))
        .map(std::path::PathBuf::from)
        .unwrap();
    run_python("kafka_client.py", &["produce", &kafka, "gone", "3"]);
    assert!(data.exists(), "the temporary log is at {}", data.display());
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(STOP).code(), Some(0));
    assert!(!data.exists(), "temporary data removed at exit");
    assert!(!data.parent().unwrap().exists());

    let (mut gw, _, kafka) = start_embedded(&[]);
    let got: serde_json::Value = serde_json::from_str(&run_python(
        "kafka_client.py",
        &["consume", &kafka, "gone", "g", "0"],
    ))
    .unwrap();
    assert_eq!(got.as_array().unwrap().len(), 0);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(STOP).code(), Some(0));
}

/// docs/embedded-kafka.md §Storage: a data directory whose path the embedded broker cannot
/// address (a space, a `#`) is refused at start — the process exits non-zero and says why —
/// instead of the broker writing its log somewhere else.
#[test]
fn a_data_dir_the_embedded_broker_cannot_address_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    for name in ["with space", "hash#tag"] {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (mut gw, _, _) = spawn_embedded(&["--data-dir", dir.to_str().unwrap()]);
        let status = gw.wait_exit(START);
        let log = gw.stderr().join("\n");
        assert!(!status.success(), "{name}: started anyway:\n{log}");
        assert!(
            log.contains("cannot address") && log.contains(name),
            "{name}: the refusal names the path and why:\n{log}"
        );
        assert!(
            std::fs::read_dir(&dir).unwrap().next().is_none(),
            "{name}: nothing written into the refused directory"
        );
    }
}
