//! Fault injection (issue 11): the broker and the gateway run as separate processes the test
//! kills, stops and restarts while stock-protocol load runs (MQTT QoS 1 through rumqttc, HTTP
//! produce through reqwest). Every scenario asserts that every message a client got a positive
//! answer for is in Kafka afterwards (acked ⊆ stored), and that the gateway recovers by itself.
//! Loads are small (seconds) so the suite stays quick; `docs/reliability.md` has the figures.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../common/mod.rs"]
mod common;

mod broker_errors;
mod harness;

use std::time::Duration;

use common::wait_for_status;
use harness::{
    fd_count, http_load, metric, metric_where, mqtt_load, BrokerProcess, GatewayProcess,
};

/// Scenario 1: the broker is killed (`kill -9`) under load and restarted 5 s later with its
/// storage: acked ⊆ stored, `/ready` is 503 while it is gone and 200 after, publishes Kafka
/// does not acknowledge within `kafka.produce_timeout_ms` (2 s here; the default 30 s would
/// outlast this outage) get negative answers, and the clients carry on through the same
/// gateway.
#[tokio::test(flavor = "multi_thread")]
async fn broker_killed_and_restarted_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(data.path());
    let gateway = GatewayProcess::start_with_config(
        &broker.bootstrap(),
        "[kafka]\nproduce_timeout_ms = 2000\n",
    );
    let mqtt = mqtt_load(gateway.mqtt, "faults-mqtt");
    let http = http_load(gateway.http, "faults-http");
    let amqp = harness::AmqpLoad::start(gateway.amqp, "faults-amqp");
    tokio::time::sleep(Duration::from_secs(3)).await;

    broker.kill();
    let http_addr = gateway.http;
    tokio::task::spawn_blocking(move || {
        wait_for_status(http_addr, "/ready", 503, Duration::from_secs(30))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.restart();
    tokio::task::spawn_blocking(move || {
        wait_for_status(http_addr, "/ready", 200, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let (mqtt_before, http_before) = (mqtt.acked().len(), http.acked().len());
    let amqp_before = amqp.acked().len();
    let (mqtt_refused, http_refused) = (mqtt.refused(), http.refused());
    eprintln!(
        "figures: broker kill: refused while it was gone: MQTT {}, HTTP {}",
        mqtt_refused.len(),
        http_refused.len()
    );
    assert!(
        !mqtt_refused.is_empty() && !http_refused.is_empty(),
        "publishes while the broker was gone got negative answers: MQTT {}, HTTP {}",
        mqtt_refused.len(),
        http_refused.len()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mqtt_acked = mqtt.stop().await;
    let http_acked = http.stop().await;
    let amqp_acked = amqp.stop();
    assert!(
        amqp_acked.len() > amqp_before,
        "the AMQP sender carried on: {amqp_before} → {}",
        amqp_acked.len()
    );
    assert!(
        mqtt_acked.len() > mqtt_before && http_acked.len() > http_before,
        "clients carried on after the broker came back: MQTT {mqtt_before} → {}, HTTP {http_before} → {}",
        mqtt_acked.len(),
        http_acked.len()
    );
    eprintln!(
        "figures: broker kill: MQTT acked {} ({mqtt_before} before the restart), HTTP acked {} ({http_before} before), AMQP accepted {} ({amqp_before} before)",
        mqtt_acked.len(),
        http_acked.len(),
        amqp_acked.len()
    );
    harness::assert_stored(&broker.bootstrap(), "mqtt", &mqtt_acked).await;
    harness::assert_stored(&broker.bootstrap(), "faults-http", &http_acked).await;
    harness::assert_stored(&broker.bootstrap(), "faults-amqp", &amqp_acked).await;
    drop(gateway);
}

/// Scenario 2: the broker is paused (SIGSTOP) for 10 s under load: nothing is acknowledged
/// while it cannot write, the gateway's memory stays bounded, and after SIGCONT the clients
/// carry on with nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread")]
async fn broker_paused_applies_back_pressure_and_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let gateway = GatewayProcess::start(&broker.bootstrap());
    let mqtt = mqtt_load(gateway.mqtt, "faults-pause");
    let http = http_load(gateway.http, "faults-pause-http");
    let amqp = harness::AmqpLoad::start(gateway.amqp, "faults-pause-amqp");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before = harness::rss_kib(gateway.pid());

    broker.signal("STOP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mqtt_paused, http_paused) = (mqtt.acked().len(), http.acked().len());
    let amqp_paused = amqp.acked().len();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (mqtt_late, http_late) = (mqtt.acked().len(), http.acked().len());
    let amqp_late = amqp.acked().len();
    let rss_paused = harness::rss_kib(gateway.pid());
    broker.signal("CONT");
    assert!(
        amqp_late <= amqp_paused + 1,
        "accepted while the broker was paused: AMQP {amqp_paused} → {amqp_late}"
    );
    assert!(
        mqtt_late <= mqtt_paused + 1 && http_late <= http_paused + 1,
        "acknowledged while the broker was paused: MQTT {mqtt_paused} → {mqtt_late}, HTTP {http_paused} → {http_late}"
    );
    assert!(
        rss_paused < rss_before + 64 * 1024,
        "memory grew by {} KiB while the broker was paused",
        rss_paused.saturating_sub(rss_before)
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mqtt_acked = mqtt.stop().await;
    let http_acked = http.stop().await;
    let amqp_acked = amqp.stop();
    eprintln!(
        "figures: broker paused: RSS {rss_before} → {rss_paused} KiB; MQTT acked {} ({mqtt_paused} at the pause), HTTP {} ({http_paused}), AMQP {} ({amqp_paused})",
        mqtt_acked.len(),
        http_acked.len(),
        amqp_acked.len()
    );
    harness::assert_stored(&broker.bootstrap(), "faults-pause-amqp", &amqp_acked).await;
    assert!(
        mqtt_acked.len() > mqtt_late && http_acked.len() > http_late,
        "clients carried on after SIGCONT"
    );
    harness::assert_stored(&broker.bootstrap(), "mqtt", &mqtt_acked).await;
    harness::assert_stored(&broker.bootstrap(), "faults-pause-http", &http_acked).await;
    drop(gateway);
}

/// Scenario 3: SIGTERM under load: the gateway exits 0 after answering what was in flight,
/// and nothing it acknowledged is missing.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_sigterm_under_load_exits_cleanly_and_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let mut gateway = GatewayProcess::start(&broker.bootstrap());
    let mqtt = mqtt_load(gateway.mqtt, "faults-term");
    let http = http_load(gateway.http, "faults-term-http");
    let amqp = harness::AmqpLoad::start(gateway.amqp, "faults-term-amqp");
    tokio::time::sleep(Duration::from_secs(3)).await;
    gateway.process.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = gateway.process.wait_exit(Duration::from_secs(30));
        (status, gateway)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    let mqtt_acked = mqtt.stop().await;
    let http_acked = http.stop().await;
    let amqp_acked = amqp.stop();
    assert!(!mqtt_acked.is_empty() && !http_acked.is_empty() && !amqp_acked.is_empty());
    eprintln!(
        "figures: SIGTERM: MQTT acked {}, HTTP acked {}, AMQP accepted {}",
        mqtt_acked.len(),
        http_acked.len(),
        amqp_acked.len()
    );
    harness::assert_stored(&broker.bootstrap(), "faults-term-amqp", &amqp_acked).await;
    harness::assert_stored(&broker.bootstrap(), "mqtt", &mqtt_acked).await;
    harness::assert_stored(&broker.bootstrap(), "faults-term-http", &http_acked).await;
}

/// Scenario 3, the answers: writes in flight when SIGTERM arrives are answered before the
/// gateway exits. The broker is paused (SIGSTOP) so that 20 MQTT QoS 1 publishes and an HTTP
/// produce are waiting for Kafka; the gateway gets SIGTERM; a second later the broker goes on
/// — every publish gets its PUBACK and the HTTP request its offsets, then the gateway exits 0.
/// A gateway that closed its connections at the signal would leave them unanswered.
#[tokio::test(flavor = "multi_thread")]
async fn writes_in_flight_at_sigterm_are_answered_before_the_gateway_exits() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let mut gateway = GatewayProcess::start(&broker.bootstrap());
    let (client, mut el) = AsyncClient::new(
        MqttOptions::new("term-inflight", "127.0.0.1", gateway.mqtt.port()),
        100,
    );
    client
        .publish("term/inflight", QoS::AtLeastOnce, false, "warm-up")
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("warm-up: {other:?}"),
        }
    }
    let http = reqwest::Client::new();
    let produce = |value: &'static str| {
        http.post(format!("http://{}/topics/term-inflight", gateway.http))
            .header("content-type", "application/vnd.kafka.json.v2+json")
            .body(serde_json::json!({ "records": [{ "value": value }] }).to_string())
            .send()
    };
    assert_eq!(produce("warm-up").await.unwrap().status(), 200);

    broker.signal("STOP");
    let in_flight_http = tokio::spawn(produce("in flight"));
    for n in 0..20 {
        client
            .publish("term/inflight", QoS::AtLeastOnce, false, format!("{n}"))
            .await
            .unwrap();
    }
    let acks = tokio::spawn(async move {
        let mut acks = 0;
        while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(60), el.poll()).await {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                acks += 1;
            }
        }
        acks
    });
    // All 20 read by the gateway (1 warm-up + 20), so they are in flight at the signal.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(gateway.http, "barnabas_mqtt_publishes_total").await != Some(21.0) {
        assert!(std::time::Instant::now() < deadline, "publishes not read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.process.signal("TERM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.signal("CONT");
    let status =
        tokio::task::spawn_blocking(move || gateway.process.wait_exit(Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        acks.await.unwrap(),
        20,
        "every publish in flight at SIGTERM got its PUBACK"
    );
    let answer = in_flight_http.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(
        body["offsets"][0]["offset"].is_i64(),
        "the HTTP produce in flight at SIGTERM got its offset: {body}"
    );
}

/// Scenario 4: `kill -9` of a gateway running its embedded broker with `--data-dir`: after a
/// restart on the same directory every acknowledged message is there.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_with_embedded_broker_killed_keeps_everything_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let mut gateway = GatewayProcess::start_embedded(data.path());
    let mqtt = mqtt_load(gateway.mqtt, "faults-kill");
    let http = http_load(gateway.http, "faults-kill-http");
    let amqp = harness::AmqpLoad::start(gateway.amqp, "faults-kill-amqp");
    tokio::time::sleep(Duration::from_secs(4)).await;
    gateway.process.signal("KILL");
    let _ = gateway.process.wait_exit(Duration::from_secs(10));
    let mqtt_acked = mqtt.stop().await;
    let http_acked = http.stop().await;
    let amqp_acked = amqp.stop();
    assert!(!mqtt_acked.is_empty() && !http_acked.is_empty());
    eprintln!(
        "figures: gateway kill -9: MQTT acked {}, HTTP acked {}",
        mqtt_acked.len(),
        http_acked.len()
    );
    let again = GatewayProcess::start_embedded_on(data.path(), gateway.kafka.clone());
    harness::assert_stored(&again.kafka, "mqtt", &mqtt_acked).await;
    harness::assert_stored(&again.kafka, "faults-kill-http", &http_acked).await;
    eprintln!(
        "figures: gateway kill -9: AMQP accepted {}",
        amqp_acked.len()
    );
    assert!(!amqp_acked.is_empty());
    harness::assert_stored(&again.kafka, "faults-kill-amqp", &amqp_acked).await;
}

/// Scenario 6: a storm of connects and disconnects, clients that never send CONNECT and
/// half-open connections: the gateway stays up and every file descriptor and connection it
/// held returns (the handshake deadline closes the silent ones).
#[tokio::test(flavor = "multi_thread")]
async fn connection_storms_leave_no_descriptor_or_connection_behind() {
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let gateway = GatewayProcess::start(&broker.bootstrap());
    // Warm up (first publish creates the producer's connections), then take the baseline.
    let warm = mqtt_load(gateway.mqtt, "faults-warm");
    tokio::time::sleep(Duration::from_secs(2)).await;
    warm.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = fd_count(gateway.pid());

    // CI runs 2 000 connects (reduced load); BARNABAS_FAULTS_STORM=5000 is issue 11's burst.
    let connects: usize = std::env::var("BARNABAS_FAULTS_STORM")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let storm = harness::storm(gateway.mqtt, connects, 200).await;
    assert_eq!(
        storm.connacks, connects,
        "every well-behaved client got its CONNACK"
    );
    // The silent ones hold a descriptor until the 5 s CONNECT deadline closes them (they
    // were opened last: give the gateway a moment to accept them all).
    let mut peak = fd_count(gateway.pid());
    for _ in 0..30 {
        if peak >= baseline + 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(fd_count(gateway.pid()));
    }
    assert!(
        peak >= baseline + 150,
        "silent connections held: {baseline} → {peak}"
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = fd_count(gateway.pid());
    eprintln!("figures: storm: descriptors {baseline} before, {peak} at the peak, {after} after");
    assert!(
        after <= baseline + 5,
        "descriptors back to the baseline: {baseline} before, {peak} at the peak, {after} after"
    );
    assert_eq!(
        metric(gateway.http, "barnabas_mqtt_connections").await,
        Some(0.0)
    );
    // Still serving.
    let after_storm = mqtt_load(gateway.mqtt, "faults-after");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!after_storm.stop().await.is_empty());
}

/// Scenario 5: slow consumers of every protocol while 20 MB of records arrive for them — an
/// MQTT subscriber and an SSE client that stop reading, an AMQP receiver that grants no
/// credit: the gateway's memory stays bounded (delivery windows and paused partitions leave
/// the rest in Kafka) and another client's round trip stays quick.
///
/// Broken to: an SSE stream fed by a task of its own into an unbounded channel (a gateway that
/// buffers for its slow client): the stream took all 2 001 records (414 with the pulled
/// stream) and the test failed on that; the memory bound alone did not see it (+42 MB of the
/// 64 MiB allowed).
#[tokio::test(flavor = "multi_thread")]
async fn consumers_that_stop_reading_do_not_grow_memory_or_slow_others() {
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let gateway = GatewayProcess::start_with_config(
        &broker.bootstrap(),
        "[[mqtt.mapping]]\npattern = \"slow/{x}\"\nkafka_topic = \"slow\"\nkey = \"{x}\"\n\
         [[mqtt.mapping]]\npattern = \"probe/{x}\"\nkafka_topic = \"probe\"\nkey = \"{x}\"\n",
    );
    // The stalled subscriber: CONNECT, SUBSCRIBE slow/# at QoS 1, then never reads again.
    // The topic exists before the readers attach (a read never creates one).
    harness::produce_bulk(&broker.bootstrap(), "slow", 1, 10).await;
    let stalled = harness::stalled_subscriber(gateway.mqtt, "slow/#");
    let stalled_sse = harness::stalled_sse(gateway.http, "slow");
    let mut idle_receiver = harness::IdleReceiver::start(gateway.amqp, "slow/group.id/idle", 2_001);
    // The probe client, subscribed to its own topic.
    let mut probe = harness::Prober::connect(gateway.mqtt, "probe/p").await;
    let before_rtt = probe.round_trip().await;
    let rss_before = harness::rss_kib(gateway.pid());

    // 20 MB for the stalled subscriber, written straight to Kafka.
    harness::produce_bulk(&broker.bootstrap(), "slow", 2_000, 10_000).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during_rtt = probe.round_trip().await;
    let rss_after = harness::rss_kib(gateway.pid());
    eprintln!(
        "figures: stalled MQTT, SSE and AMQP consumers: RSS {rss_before} KiB → {rss_after} KiB after 20 MB for it; probe round trip {before_rtt:?} before, {during_rtt:?} during"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "gateway memory grew by {} KiB for clients that do not read",
        rss_after.saturating_sub(rss_before)
    );
    assert!(
        during_rtt < Duration::from_secs(5),
        "another client slowed down: {during_rtt:?}"
    );
    // It was sent data (its socket buffer holds it, unread): the gateway did try.
    let mut buf = vec![0u8; 1 << 20];
    stalled.set_nonblocking(true).unwrap();
    let waiting = stalled.peek(&mut buf).unwrap_or(0);
    assert!(
        waiting > 100_000,
        "only {waiting} bytes reached the stalled subscriber"
    );
    stalled_sse.set_nonblocking(true).unwrap();
    let waiting = stalled_sse.peek(&mut buf).unwrap_or(0);
    assert!(
        waiting > 100_000,
        "only {waiting} bytes reached the stalled SSE client"
    );
    // The SSE stream took from its consumer only what the connection accepted (the sockets'
    // buffers, a few MB of 10 kB records), not the 2 000 records waiting for it: a stream
    // that read ahead for its client would have taken them all within the 5 s.
    let sse_taken = metric_where(
        gateway.http,
        "barnabas_records_delivered_total",
        "protocol=\"sse\"",
    )
    .await
    .unwrap_or(0.0);
    eprintln!("figures: the stalled SSE stream took {sse_taken} records of 2 001");
    assert!(
        sse_taken > 0.0 && sse_taken < 1_000.0,
        "the stalled SSE stream took {sse_taken} records from Kafka"
    );
    assert!(
        idle_receiver.is_waiting(),
        "the AMQP receiver without credit was refused or dropped"
    );
    // The stalled clients read again: each gets everything (kept in Kafka, not lost while
    // they did not read): 2 000 keys over MQTT, offsets 0..=2000 over SSE and AMQP.
    let mqtt_topics = tokio::task::spawn_blocking(move || {
        harness::drain_mqtt(&stalled, 2_000, Duration::from_secs(180))
    });
    let sse_events = tokio::task::spawn_blocking(move || {
        harness::drain_sse(&stalled_sse, "0:2000", Duration::from_secs(180))
    });
    let amqp = idle_receiver.read().await;
    assert_eq!(amqp["received"], 2_001, "{amqp}");
    assert_eq!(
        mqtt_topics.await.unwrap(),
        2_000,
        "MQTT topics slow/k0..k1999"
    );
    assert!(sse_events.await.unwrap() >= 2_001);
}

/// CONNECT → CONNACK waits for no Kafka round trip (issue 26: a reconnect storm was paced by
/// one Kafka write per CONNECT): with the broker paused, an MQTT 3.1.1 clean-session CONNECT
/// is still accepted at once. Before, the CONNACK waited for the sessions topic's catch-up
/// (3 s) and for the ownership write (5 s), so it came 8 s late. A resumed session still reads
/// what the other replicas wrote, and waits (bounded) for Kafka as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_session_is_accepted_while_kafka_is_paused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let gateway = GatewayProcess::start(&broker.bootstrap());
    let mqtt = gateway.mqtt;
    let connack = |client_id: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(mqtt).await.unwrap();
        s.write_all(&harness::connect_packet(client_id, 60))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut ack = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut ack))
            .await
            .expect("no CONNACK in 20 s")
            .unwrap();
        (ack, started.elapsed(), s)
    };
    let (warm, _, _warm) = connack("warm-client").await;
    assert_eq!(warm, [0x20, 2, 0, 0]);

    broker.signal("STOP");
    let (ack, took, _held) = connack("while-paused").await;
    broker.signal("CONT");
    assert_eq!(
        ack,
        [0x20, 2, 0, 0],
        "CONNACK refused while Kafka was paused"
    );
    assert!(
        took < Duration::from_secs(2),
        "the CONNACK waited for Kafka: {took:?}"
    );
}

/// "Acknowledged only after Kafka acknowledged the write", per protocol and QoS (issue 22):
/// with the broker paused (SIGSTOP, its sockets open, nothing answered), a stock client's
/// publish waits: mosquitto_pub QoS 1 (PUBACK) and QoS 2 (PUBREC), curl's produce (200) and
/// a qpid-proton sender (`accepted`) are all still waiting 4 s later; once the broker resumes
/// every one of them completes and its record is in Kafka. A gateway that answered before the
/// write (the weak tests before this one passed such a gateway) fails the first assertion.
#[tokio::test(flavor = "multi_thread")]
async fn no_client_is_answered_before_kafka_acknowledged_the_write() {
    use std::process::{Command, Stdio};
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let gateway = GatewayProcess::start(&broker.bootstrap());
    let (mqtt, http, amqp) = (gateway.mqtt, gateway.http, gateway.amqp);
    let mqtt_args = |qos: &str, body: &str| -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt.port().to_string(),
            "-V",
            "5",
            "-t",
            "acks/t",
            "-q",
            qos,
            "-m",
            body,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let curl_args = |body: &str| -> Vec<String> {
        [
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("http://{http}/topics/acks"),
            "-H",
            "content-type: application/vnd.kafka.json.v2+json",
            "-d",
            &format!(r#"{{"records":[{{"value":"{body}"}}]}}"#),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let proton = |body: &str| -> Vec<String> {
        let script = common::workspace_root().join("tests/python/amqp_proton.py");
        [
            script.to_str().unwrap(),
            "send",
            &format!("127.0.0.1:{}", amqp.port()),
            "acks",
            "1",
            body,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let spawn = |program: &str, args: Vec<String>| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    };
    let python = common::system_python();
    let python = python.to_str().unwrap();
    // Warm up: the topics exist and every path has written once.
    for (program, args) in [
        ("mosquitto_pub", mqtt_args("1", "warm")),
        ("curl", curl_args("warm")),
        (python, proton("warm")),
    ] {
        let out = spawn(program, args).wait_with_output().unwrap();
        assert!(out.status.success(), "{program}: {}", common::text(&out));
    }

    broker.signal("STOP");
    let mut waiting = vec![
        (
            "MQTT QoS 1 PUBACK",
            spawn("mosquitto_pub", mqtt_args("1", "q1")),
        ),
        (
            "MQTT QoS 2 PUBREC",
            spawn("mosquitto_pub", mqtt_args("2", "q2")),
        ),
        ("HTTP 200", spawn("curl", curl_args("h"))),
        ("AMQP accepted", spawn(python, proton("a"))),
    ];
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (what, child) in &mut waiting {
        let done = child.try_wait().unwrap();
        assert!(
            done.is_none(),
            "{what} came while Kafka was paused ({done:?})"
        );
    }
    broker.signal("CONT");
    for (what, child) in waiting {
        let child = std::sync::Arc::new(std::sync::Mutex::new(Some(child)));
        let out = tokio::task::spawn_blocking(move || {
            let c = child.lock().unwrap().take().unwrap();
            c.wait_with_output().unwrap()
        });
        let out = tokio::time::timeout(Duration::from_secs(40), out)
            .await
            .unwrap_or_else(|_| panic!("{what} never came after Kafka resumed"))
            .unwrap();
        assert!(out.status.success(), "{what}: {}", common::text(&out));
        if what == "HTTP 200" {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
        }
    }
    let mqtt_stored = harness::read_all(&broker.bootstrap(), "mqtt").await;
    let http_stored = harness::read_all(&broker.bootstrap(), "acks").await;
    for body in ["q1", "q2"] {
        assert!(
            mqtt_stored.contains(body),
            "{body} not in Kafka: {mqtt_stored:?}"
        );
    }
    for body in ["h", "a-0"] {
        assert!(
            http_stored.contains(body),
            "{body} not in Kafka: {http_stored:?}"
        );
    }
}

/// docs/amqp.md §Links the client sends on: at most 1 000 transfers per link wait for Kafka —
/// the link credit the gateway grants is renewed only as they settle — so a sender facing a
/// paused broker stops after at most 1 000 transfers; once the broker resumes every one of
/// them is accepted and the sender carries on.
#[tokio::test(flavor = "multi_thread")]
async fn an_amqp_sender_is_held_at_1000_transfers_waiting_for_kafka() {
    let held = held_amqp_sender("held", 1_200, 2).await;
    assert!(
        (1..=1_000).contains(&held),
        "{held} transfers went out while Kafka was paused (at most 1 000 may wait)"
    );
}

/// The same for bytes: about 16 MiB per link wait for Kafka, so a sender of 100 KB messages
/// facing a paused broker is held far below the 1 000 transfers a count alone allows — at
/// the 200 credits fe2o3-amqp grants at attach (20 MB, not sized: docs/amqp.md), after which
/// no more is granted while 16 MiB wait. With a fixed credit of 1 000 all 600 went in.
#[tokio::test(flavor = "multi_thread")]
async fn an_amqp_sender_of_large_messages_is_held_at_16_mib_waiting_for_kafka() {
    let held = held_amqp_sender("held-bytes", 600, 100_000).await;
    eprintln!("figures: 100 KB transfers sent while Kafka was paused: {held}");
    assert!(
        (160..=400).contains(&held),
        "{held} transfers of 100 KB went out while Kafka was paused (the attach's 200 credits)"
    );
}

/// Sends `count` messages of `size` bytes on one link while the broker is paused; returns
/// how many went out before the sender was held (3 s without a transfer), after checking
/// that once the broker resumed every one was accepted and stored.
async fn held_amqp_sender(address: &str, count: usize, size: usize) -> usize {
    use fe2o3_amqp::{types::messaging::Message, Connection, Sender, Session};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let gateway = GatewayProcess::start(&broker.bootstrap());
    let mut conn = Connection::builder()
        .container_id(address)
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Anonymous)
        .open(format!("amqp://{}", gateway.amqp).as_str())
        .await
        .unwrap();
    let mut session = Session::begin(&mut conn).await.unwrap();
    let mut sender = Sender::attach(&mut session, address, address)
        .await
        .unwrap();
    let warm = sender.send(Message::builder().value("warm".to_owned()).build());
    assert!(warm.await.unwrap().is_accepted(), "the topic exists");

    let rss_before = harness::rss_kib(gateway.pid());
    broker.signal("STOP");
    // The sender sends as fast as the gateway lets it; `sent` counts transfers out.
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let sending = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for i in 0..count {
            let value = format!("m{i}:{}", "x".repeat(size));
            let m = Message::builder().value(value).build();
            outcomes.push(sender.send_batchable(m).await.unwrap());
            counter.store(i + 1, Ordering::SeqCst);
        }
        let mut accepted = 0;
        for o in outcomes {
            accepted += usize::from(o.await.unwrap().is_accepted());
        }
        (sender, accepted)
    });
    // Wait until the count stops moving (3 s without a transfer).
    let mut held = usize::MAX;
    while sent.load(Ordering::SeqCst) != held {
        held = sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    eprintln!(
        "figures: {address}: gateway RSS {rss_before} → {} KiB while held",
        harness::rss_kib(gateway.pid())
    );
    broker.signal("CONT");
    let (sender, accepted) = tokio::time::timeout(Duration::from_secs(120), sending)
        .await
        .expect("the sender carried on once Kafka resumed")
        .unwrap();
    assert_eq!(
        accepted, count,
        "every transfer accepted after Kafka resumed"
    );
    let stored = harness::read_all(&broker.bootstrap(), address).await;
    let last = format!("m{}:", count - 1);
    assert!(
        stored.iter().any(|v| v.starts_with("m0:")) && stored.iter().any(|v| v.starts_with(&last)),
        "{} stored",
        stored.len()
    );
    drop(sender);
    drop(session);
    drop(conn);
    held
}

/// Scenario 7's idempotence case on the embedded broker (tansu, in a process of its own so it
/// can be frozen with SIGSTOP): a produce request in flight while the broker is frozen times
/// out and is sent again; the broker reads both. The gateway's idempotent producer has each
/// record stored once; the same fault without idempotence stores them twice (the control that
/// shows the fault would duplicate). The same check on Apache Kafka is in tests/apache_kafka.rs.
#[test]
fn a_produce_retried_after_the_embedded_broker_froze_is_stored_once_only_when_idempotent() {
    let (broker, bootstrap) = common::broker_process();
    let freeze = |frozen: bool| broker.signal(if frozen { "STOP" } else { "CONT" });
    let idempotent =
        common::copies_after_a_frozen_broker(&bootstrap, &freeze, "frozen-idempotent", true);
    assert!(
        idempotent.values().all(|&n| n == 1),
        "the idempotent producer's retry is not stored again: {idempotent:?}"
    );
    let plain = common::copies_after_a_frozen_broker(&bootstrap, &freeze, "frozen-plain", false);
    assert!(
        plain.values().any(|&n| n > 1),
        "without idempotence the same fault stores records twice (the control): {plain:?}"
    );
    eprintln!("figures: copies of each record, idempotent {idempotent:?}, not {plain:?}");
}
