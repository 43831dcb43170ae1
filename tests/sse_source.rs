//! SSE sources end to end: a fake Casper node serving the recorded streams
//! (`examples/casper/data/*.sse`, via examples/casper/fake_node.rs, honouring `start_from`, dropping each stream halfway once)
//! → the gateway → three topics; every event exactly once, keyed by its type, also across a
//! gateway restart in mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

mod common;

#[path = "../examples/casper/fake_node.rs"]
mod fake_node;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use barnabas::config::SseSource;
use common::{gateway, read_topic};
use fake_node::Recorded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn fake_node(pace: Duration) -> (SocketAddr, std::collections::HashMap<String, Recorded>) {
    let (app, streams) = fake_node::router(
        &common::workspace_root().join("examples/casper/data"),
        fake_node::Behaviour {
            pace,
            drop_halfway_once: true,
            malformed_deploy: true,
            replay_overlap: 0,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, streams)
}

fn sources(node: SocketAddr, which: &[&str]) -> Vec<SseSource> {
    which
        .iter()
        .map(|s| SseSource {
            url: format!("http://{node}/events/{s}"),
            topic: format!("casper.{s}"),
            key: "event_type".into(),
            idle_timeout_ms: barnabas::config::DEFAULT_SSE_IDLE_TIMEOUT_MS,
        })
        .collect()
}

async fn written(gw: &gateway::TestGateway, topic: &str) -> i64 {
    let admin = &gw.gateway.backend().admin;
    let Ok(md) = admin.topic_metadata(topic).await else {
        return 0;
    };
    let mut n = 0;
    for p in md.partitions {
        let w = admin.watermarks(topic, p.partition).await.unwrap();
        n += w.high - w.low;
    }
    n
}

async fn wait_for(gw: &gateway::TestGateway, topic: &str, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = written(gw, topic).await;
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {got} of {n} events written"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every recorded event exactly once, keyed by its type, with its headers.
async fn check_exactly_once(gw: &gateway::TestGateway, stream: &str, rec: &Recorded, url: &str) {
    let topic = format!("casper.{stream}");
    let got = read_topic(gw, &topic, rec.events.len()).await;
    // Nothing beyond them either.
    assert_eq!(
        written(gw, &topic).await,
        rec.events.len() as i64,
        "{topic}: duplicates"
    );
    let mut by_id: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &got {
        let id: u64 = std::str::from_utf8(r.header("sse.id").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        *by_id.entry(id).or_default() += 1;
        let value: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let event_type = value.as_object().unwrap().keys().next().unwrap().clone();
        assert_eq!(
            r.key.as_deref(),
            Some(event_type.as_bytes()),
            "key = event type"
        );
        assert_eq!(r.header("sse.url").map(|u| &u[..]), Some(url.as_bytes()));
        assert_eq!(
            r.header("casper.api_version").map(|u| &u[..]),
            Some(b"1.4.8".as_slice())
        );
    }
    let expected: BTreeMap<u64, usize> = rec.events.iter().map(|(_, id)| (*id, 1)).collect();
    assert_eq!(by_id, expected, "{topic}: every event exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn casper_streams_land_exactly_once_across_a_dropped_connection() {
    let (node, recs) = fake_node(Duration::from_millis(1)).await;
    let gw = gateway::start(|c| c.sources.sse = sources(node, &["main", "deploys", "sigs"])).await;
    for (stream, n) in [("main", 97), ("deploys", 53), ("sigs", 480)] {
        assert_eq!(recs[stream].events.len(), n);
        wait_for(
            &gw,
            &format!("casper.{stream}"),
            n as i64,
            Duration::from_secs(120),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for stream in ["main", "deploys", "sigs"] {
        let url = format!("http://{node}/events/{stream}");
        check_exactly_once(&gw, stream, &recs[stream], &url).await;
    }
    let metrics = gw.get("/metrics", None).await.text;
    let deploys = format!("http://{node}/events/deploys");
    let malformed = format!("barnabas_sse_source_malformed_total{{url=\"{deploys}\"}} 1");
    assert!(
        metrics.contains(&malformed),
        "{malformed} not in:\n{metrics}"
    );
    // Each stream was dropped halfway once: one reconnect per URL; every event written is
    // counted for its URL.
    for (stream, n) in [("main", 97), ("deploys", 53), ("sigs", 480)] {
        let url = format!("http://{node}/events/{stream}");
        for line in [
            format!("barnabas_sse_source_reconnects_total{{url=\"{url}\"}} 1"),
            format!("barnabas_sse_source_events_total{{url=\"{url}\"}} {n}"),
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "{line} not in:\n{metrics}"
            );
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_restart_mid_stream_neither_loses_nor_repeats_events() {
    use barnabas::embedded::{EmbeddedKafka, Storage};
    let broker = EmbeddedKafka::start(common::free_addr(), None, Storage::Temporary)
        .await
        .unwrap();
    let (node, recs) = fake_node(Duration::from_millis(10)).await;
    let configure = |c: &mut barnabas::config::Config| c.sources.sse = sources(node, &["sigs"]);
    let gw = gateway::start_on(Some(broker.bootstrap()), configure).await;
    wait_for(&gw, "casper.sigs", 60, Duration::from_secs(60)).await;
    gw.stop().await;
    let gw = gateway::start_on(Some(broker.bootstrap()), configure).await;
    wait_for(&gw, "casper.sigs", 480, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let url = format!("http://{node}/events/sigs");
    check_exactly_once(&gw, "sigs", &recs["sigs"], &url).await;
    gw.stop().await;
    broker.stop().await;
}

/// When a connection came, and the `start_from` it asked for.
type Connections = std::sync::Arc<std::sync::Mutex<Vec<(Instant, Option<u64>)>>>;

/// A scripted SSE node: every connection is noted (when, and its `start_from`) and handed to
/// the script with its index.
struct ScriptedNode {
    addr: SocketAddr,
    seen: Connections,
}

impl ScriptedNode {
    async fn start<F, Fut>(script: F) -> ScriptedNode
    where
        F: Fn(usize, Option<u64>, tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Connections::default();
        let noted = seen.clone();
        tokio::spawn(async move {
            let script = std::sync::Arc::new(script);
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (script, noted) = (script.clone(), noted.clone());
                tokio::spawn(async move {
                    // The request head; its target's `start_from`.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let start_from = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|target| target.split_once("start_from="))
                        .and_then(|(_, v)| v.split('&').next()?.parse().ok());
                    let index = {
                        let mut seen = noted.lock().unwrap();
                        seen.push((Instant::now(), start_from));
                        seen.len() - 1
                    };
                    (script.as_ref())(index, start_from, stream).await;
                });
            }
        });
        ScriptedNode { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/events/main", self.addr)
    }

    fn seen(&self) -> Vec<(Instant, Option<u64>)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` connections came; panics with `what` otherwise.
    async fn wait_for_connections(&self, n: usize, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while self.seen().len() < n {
            assert!(Instant::now() < deadline, "{what}: {:?}", self.seen());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts an event stream: the 200 answer's head.
async fn stream_head(s: &mut tokio::net::TcpStream) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let _ = s.write_all(head.as_bytes()).await;
}

/// One SSE event `id` (a Casper-like `BlockAdded`), with `event: <event_type>` if given.
fn sse_event(id: u64, event_type: Option<&str>) -> String {
    let named = event_type.map_or_else(String::new, |t| format!("event: {t}\n"));
    format!("{named}data: {{\"BlockAdded\":{{\"height\":{id}}}}}\nid: {id}\n\n")
}

/// The source of `topic` reading `url`, reconnecting after `idle_timeout_ms` of silence.
fn source(url: String, topic: &str, idle_timeout_ms: u64) -> SseSource {
    SseSource {
        url,
        topic: topic.into(),
        key: "event_type".into(),
        idle_timeout_ms: barnabas::config::Millis(idle_timeout_ms),
    }
}

/// The `sse.id`s in `topic` (what arrived within 60 s of `n`), in offset order.
async fn ids(gw: &gateway::TestGateway, topic: &str, n: usize) -> Vec<u64> {
    read_topic(gw, topic, n)
        .await
        .iter()
        .map(|r| {
            std::str::from_utf8(r.header("sse.id").unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// A stream that goes silent (connection open, not even a comment) is reconnected after the
/// source's `idle_timeout_ms` (120 s by default, 1 s here) and resumed after the last id;
/// events that name their type (`event: BlockAdded`) carry it as the `sse.event` header, the
/// others have none.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_stream_is_reconnected_and_named_event_types_become_headers() {
    let node = ScriptedNode::start(|_, start_from, mut s| async move {
        let from = start_from.unwrap_or(1);
        stream_head(&mut s).await;
        // The first connection: 1..=5, named; the next ones: the rest up to 10, unnamed.
        let last = if from == 1 { 5 } else { 10 };
        for id in from..=last {
            let named = (id <= 5).then_some("BlockAdded");
            if s.write_all(sse_event(id, named).as_bytes()).await.is_err() {
                return;
            }
        }
        // Then silence, the connection held open.
        let _ = s.read(&mut [0u8; 1]).await;
    })
    .await;
    let url = node.url();
    let gw = gateway::start(|c| c.sources.sse = vec![source(url, "silent", 1_000)]).await;
    wait_for(&gw, "silent", 10, Duration::from_secs(60)).await;
    let seen = node.seen();
    assert_eq!(
        seen.get(1).map(|s| s.1),
        Some(Some(6)),
        "the silent stream was reconnected from the id after the last written: {seen:?}"
    );
    let silent_for = seen[1].0 - seen[0].0;
    assert!(
        silent_for >= Duration::from_millis(900),
        "reconnected only after the idle time-out: {silent_for:?}"
    );
    let got = read_topic(&gw, "silent", 10).await;
    assert_eq!(got.len(), 10);
    for r in &got {
        let id: u64 = std::str::from_utf8(r.header("sse.id").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let event = r.header("sse.event").map(|e| e.to_vec());
        if id <= 5 {
            assert_eq!(
                event.as_deref(),
                Some(b"BlockAdded".as_slice()),
                "event {id} named its type"
            );
        } else {
            assert_eq!(event, None, "event {id} named no type");
        }
    }
    gw.stop().await;
}

/// Reconnects back off: 0.5 s after the first refused connection, then doubling (1 s, 2 s,
/// 4 s …, at most 30 s). A node that answers 503 four times is asked again after at least
/// those pauses; then its events are written.
#[tokio::test(flavor = "multi_thread")]
async fn reconnects_back_off_from_half_a_second_doubling() {
    let node = ScriptedNode::start(|index, start_from, mut s| async move {
        if index < 4 {
            let refusal = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = s.write_all(refusal.as_bytes()).await;
            return;
        }
        stream_head(&mut s).await;
        for id in start_from.unwrap_or(1)..=3 {
            if s.write_all(sse_event(id, None).as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = s.read(&mut [0u8; 1]).await;
    })
    .await;
    let url = node.url();
    let gw = gateway::start(|c| c.sources.sse = vec![source(url, "backoff", 120_000)]).await;
    wait_for(&gw, "backoff", 3, Duration::from_secs(60)).await;
    let seen = node.seen();
    assert!(seen.len() >= 5, "{seen:?}");
    let gaps: Vec<Duration> = seen.windows(2).take(4).map(|w| w[1].0 - w[0].0).collect();
    for (gap, backoff_ms) in gaps.iter().zip([500u64, 1_000, 2_000, 4_000]) {
        // A lower bound only: a loaded machine may take longer to reconnect, never shorter.
        assert!(
            *gap >= Duration::from_millis(backoff_ms * 9 / 10),
            "a reconnect waits at least {backoff_ms} ms: gaps {gaps:?}"
        );
    }
    assert_eq!(ids(&gw, "backoff", 3).await, [1, 2, 3]);
    gw.stop().await;
}

/// Kafka refuses a write (librdkafka's mock cluster answers every produce with
/// NOT_ENOUGH_REPLICAS, past `kafka.produce_timeout_ms`): the source does not skip the event
/// but breaks off, reads the last id Kafka holds and reconnects with `start_from` after it;
/// once Kafka takes writes again, every event is there exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_kafka_refuses_is_resumed_from_the_last_stored_id() {
    use rdkafka::{
        mocking::MockCluster,
        types::{RDKafkaApiKey, RDKafkaRespErr},
    };
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("refused", 1, 1).unwrap();
    // Event 6 of the first connection waits for the test to let it go.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let node = {
        let gate = gate.clone();
        ScriptedNode::start(move |index, start_from, mut s| {
            let gate = gate.clone();
            async move {
                stream_head(&mut s).await;
                for id in start_from.unwrap_or(1)..=10 {
                    if index == 0 && id == 6 {
                        gate.notified().await;
                    }
                    if s.write_all(sse_event(id, None).as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = s.read(&mut [0u8; 1]).await;
            }
        })
        .await
    };
    let url = node.url();
    let gw = gateway::start_on(Some(mock.bootstrap_servers()), |c| {
        c.kafka.produce_timeout_ms = 3_000;
        c.sources.sse = vec![source(url, "refused", 120_000)];
    })
    .await;
    wait_for(&gw, "refused", 5, Duration::from_secs(60)).await;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 10_000],
    );
    gate.notify_one();
    node.wait_for_connections(
        2,
        Duration::from_secs(30),
        "the source reconnects after Kafka refused event 6",
    )
    .await;
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    wait_for(&gw, "refused", 10, Duration::from_secs(60)).await;
    let seen = node.seen();
    assert_eq!(
        seen[1].1,
        Some(6),
        "resumed after the last id Kafka holds (5): {seen:?}"
    );
    assert!(
        seen[1..].iter().all(|s| s.1 == Some(6)),
        "every resume starts after the last stored id: {seen:?}"
    );
    assert_eq!(ids(&gw, "refused", 10).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(written(&gw, "refused").await, 10, "nothing written twice");
    gw.stop().await;
}

/// An `https://` source is refused at start-up (no TLS client built in yet): exit 2 with one
/// line naming the key.
#[test]
fn an_https_source_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("barnabas.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"{}\"\n[mqtt]\nlisten = \"off\"\n[[sources.sse]]\n\
             url = \"https://127.0.0.1:9/events/main\"\ntopic = \"casper.main\"\n",
            common::free_addr()
        ),
    )
    .unwrap();
    let mut gateway = common::Gateway::run_config(&config);
    let status = gateway.wait_exit(Duration::from_secs(30));
    let log = gateway.stderr().join("\n");
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("sources.sse[0].url") && log.contains("https://127.0.0.1:9/events/main"),
        "{log}"
    );
}

/// Without `idle_timeout_ms` a source reconnects a stream silent for 120 s: `check-config`
/// prints the effective value.
#[test]
fn an_sse_source_reconnects_a_stream_silent_for_120_s_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("barnabas.toml");
    std::fs::write(
        &config,
        "[[sources.sse]]\nurl = \"http://127.0.0.1:9/events/main\"\ntopic = \"casper.main\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_barnabas"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let said = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("idle_timeout_ms = 120000"), "{said}");
}

/// The stream's `retry:` sets the pause before the next reconnect, capped at 30 s: a node
/// that says `retry: 2500` and ends the stream is asked again after at least 2.5 s (not the
/// 0.5 s the source starts from); one that says `retry: 60000`, after 30 s, not 60 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_s_retry_sets_the_reconnect_pause_up_to_30_s() {
    let node = ScriptedNode::start(|index, _, mut s| async move {
        stream_head(&mut s).await;
        let (id, retry) = match index {
            0 => (1, "retry: 2500\n\n"),
            1 => (2, "retry: 60000\n\n"),
            _ => (3, ""),
        };
        let _ = s.write_all(sse_event(id, None).as_bytes()).await;
        let _ = s.write_all(retry.as_bytes()).await;
        if index >= 2 {
            let _ = s.read(&mut [0u8; 1]).await; // the last one stays open
        }
    })
    .await;
    let url = node.url();
    let gw = gateway::start(|c| c.sources.sse = vec![source(url, "retried", 120_000)]).await;
    node.wait_for_connections(3, Duration::from_secs(50), "three connections")
        .await;
    let seen = node.seen();
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        gaps[0] >= Duration::from_millis(2_400),
        "retry: 2500 is the pause: {gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_secs(29) && gaps[1] < Duration::from_secs(45),
        "retry: 60000 is capped at 30 s: {gaps:?}"
    );
    wait_for(&gw, "retried", 3, Duration::from_secs(30)).await;
    assert_eq!(ids(&gw, "retried", 3).await, [1, 2, 3]);
    gw.stop().await;
}

/// docs/sse-sources.md: the resume position lives in Kafka, so a gateway killed (`kill -9`)
/// in mid-stream loses nothing, and the ids a node replays from before the position asked
/// for (here 20, as a node whose buffer does not line up would) are skipped: every event
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_mid_stream_and_a_node_replaying_too_much_lose_and_repeat_nothing() {
    use barnabas::embedded::{EmbeddedKafka, Storage};
    let broker = EmbeddedKafka::start(common::free_addr(), None, Storage::Temporary)
        .await
        .unwrap();
    let (app, recs) = fake_node::router(
        &common::workspace_root().join("examples/casper/data"),
        fake_node::Behaviour {
            pace: Duration::from_millis(10),
            drop_halfway_once: false,
            malformed_deploy: false,
            replay_overlap: 20,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{node}/events/sigs");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("barnabas.toml");
    std::fs::write(
        &config,
        format!(
            "[[sources.sse]]\nurl = \"{url}\"\ntopic = \"casper.sigs\"\nkey = \"event_type\"\n"
        ),
    )
    .unwrap();
    let bootstrap = broker.bootstrap();
    let source = || {
        let http = common::free_addr().to_string();
        let args = [
            "run",
            "--config",
            config.to_str().unwrap(),
            "--kafka-bootstrap",
            &bootstrap,
            "--http-listen",
            &http,
            "--mqtt-listen",
            "off",
            "--amqp-listen",
            "off",
        ];
        common::Gateway::spawn(
            &args,
            &[("BARNABAS_KAFKA__DEFAULT_REPLICATION_FACTOR", "1")],
        )
    };
    // An in-process gateway without sources, to look at the topic.
    let reader = gateway::start_on(Some(broker.bootstrap()), |_| {}).await;
    let mut first = source();
    wait_for(&reader, "casper.sigs", 60, Duration::from_secs(60)).await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10));
    let stopped_at = written(&reader, "casper.sigs").await;
    assert!(
        stopped_at < 480,
        "killed in mid-stream, not after it: {stopped_at}"
    );
    let mut second = source();
    wait_for(&reader, "casper.sigs", 480, Duration::from_secs(120)).await;
    check_exactly_once(&reader, "sigs", &recs["sigs"], &url).await;
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(30)).success());
    reader.stop().await;
    broker.stop().await;
}

/// A source whose key rule is a JSON pointer (`key = "/BlockAdded/block_hash"`) keys each
/// record by the value at that pointer in the event's data: a string as it is, any other
/// JSON value as its JSON text; an event without a value there is written without a key.
#[tokio::test(flavor = "multi_thread")]
async fn a_json_pointer_key_rule_keys_each_record_by_the_value_at_the_pointer() {
    let node = ScriptedNode::start(|_, start_from, mut s| async move {
        stream_head(&mut s).await;
        let events = [
            r#"{"BlockAdded":{"block_hash":"h-1","height":1}}"#,
            r#"{"BlockAdded":{"block_hash":"h-2","height":2}}"#,
            r#"{"BlockAdded":{"block_hash":42,"height":3}}"#,
            r#"{"BlockAdded":{"height":4}}"#,
        ];
        for (id, data) in (1u64..).zip(events) {
            if id < start_from.unwrap_or(1) {
                continue;
            }
            let event = format!("data: {data}\nid: {id}\n\n");
            if s.write_all(event.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = s.read(&mut [0u8; 1]).await;
    })
    .await;
    let url = node.url();
    let gw = gateway::start(|c| {
        c.sources.sse = vec![SseSource {
            key: "/BlockAdded/block_hash".into(),
            ..source(url, "pointer", 120_000)
        }];
    })
    .await;
    wait_for(&gw, "pointer", 4, Duration::from_secs(60)).await;
    let got = read_topic(&gw, "pointer", 4).await;
    let keys: Vec<(u64, Option<String>)> = got
        .iter()
        .map(|r| {
            let id = std::str::from_utf8(r.header("sse.id").unwrap())
                .unwrap()
                .parse()
                .unwrap();
            let key = r
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            (id, key)
        })
        .collect();
    assert_eq!(
        keys,
        [
            (1, Some("h-1".to_owned())),
            (2, Some("h-2".to_owned())),
            (3, Some("42".to_owned())),
            (4, None),
        ],
        "the key of each event is the value at /BlockAdded/block_hash"
    );
    gw.stop().await;
}

/// Events are written one at a time, each acknowledged before the next, so the topic never
/// has a gap: event 6 is too large for Kafka (`message.max.bytes` = 2000) on the node's
/// first two connections. The source does not go on to event 7 but breaks off and resumes at
/// 6; once the node sends a 6 Kafka takes (third connection), 6..=10 follow. A consumer
/// reading the topic as it fills sees, at offset n, the event with id n + 1 — at every
/// moment, not only at the end.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_event_is_not_skipped_and_the_topic_holds_the_ids_in_order_without_a_gap() {
    let node = ScriptedNode::start(|index, start_from, mut s| async move {
        stream_head(&mut s).await;
        for id in start_from.unwrap_or(1)..=10 {
            let event = if id == 6 && index < 2 {
                let pad = "x".repeat(5_000);
                format!(
                    "data: {{\"BlockAdded\":{{\"height\":{id},\"pad\":\"{pad}\"}}}}\nid: {id}\n\n"
                )
            } else {
                sse_event(id, None)
            };
            if s.write_all(event.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = s.read(&mut [0u8; 1]).await;
    })
    .await;
    let url = node.url();
    let gw = gateway::start(|c| {
        c.kafka
            .properties
            .insert("message.max.bytes".into(), "2000".into());
        c.sources.sse = vec![source(url, "ordered", 120_000)];
    })
    .await;
    let consumer = common::consumer_of(&gw, "ordered").await;
    let got = common::poll_until(consumer.as_ref(), Duration::from_secs(90), |got| {
        for (n, (r, _)) in got.iter().enumerate() {
            let id: u64 = std::str::from_utf8(r.header("sse.id").unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                (r.partition, r.offset, id),
                (0, n as i64, n as u64 + 1),
                "offset {n} holds event {}: a gap or a write out of order",
                n + 1
            );
        }
        got.len() >= 10
    })
    .await;
    consumer.close().await.unwrap();
    assert_eq!(got.len(), 10);
    let seen: Vec<Option<u64>> = node.seen().iter().map(|s| s.1).collect();
    assert_eq!(
        seen,
        [None, Some(6), Some(6)],
        "the source resumed at the refused event 6 until Kafka took it"
    );
    assert_eq!(written(&gw, "ordered").await, 10, "nothing written twice");
    gw.stop().await;
}
