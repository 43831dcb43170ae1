//! The gateway in front of Apache Kafka 4.4 (KRaft, one combined broker + controller, started
//! by `scripts/kafka/run` from jars Maven Central serves), not the embedded tansu broker:
//! the first of issue 23's real-broker checks. MQTT in (mosquitto_pub, v5 user property) and
//! out (mosquitto_sub), HTTP in (curl), read back with a stock Kafka client (confluent-kafka);
//! the gateway's state topics are created compacted; a clean stop is quiet.
//!
//! Needs Java 17+ and Maven (the classpath is fetched once per machine into
//! target/apache-kafka/libs); without them the test fails saying so.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{process::Command, time::Duration};

use common::{apache::ApacheKafka, free_addr, mosquitto, run_python, text, Gateway};

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").arg("-s").args(args).output().unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mqtt_and_http_through_the_gateway_into_apache_kafka_and_back() {
    let kafka = ApacheKafka::start();
    let (http, mqtt) = (free_addr(), free_addr());
    let mut gw = Gateway::spawn(
        &[
            "--kafka-bootstrap",
            &kafka.bootstrap,
            "--http-listen",
            &http.to_string(),
            "--mqtt-listen",
            &mqtt.to_string(),
            "--amqp-listen",
            "off",
        ],
        &[],
    );
    gw.wait_for_line("barnabas ready", Duration::from_secs(60));

    // A subscriber first: it receives only what is published after its SUBACK.
    let sub = std::thread::spawn(move || {
        mosquitto(
            "mosquitto_sub",
            mqtt,
            &[
                "-V",
                "5",
                "-t",
                "devices/+/telemetry",
                "-q",
                "1",
                "-C",
                "1",
                "-W",
                "60",
                "-F",
                "%t %p",
            ],
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let out = mosquitto(
        "mosquitto_pub",
        mqtt,
        &[
            "-V",
            "5",
            "-t",
            "devices/d1/telemetry",
            "-q",
            "1",
            "-m",
            r#"{"temp":21.5}"#,
            "-D",
            "publish",
            "user-property",
            "trace",
            "t-1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let received = sub.join().unwrap();
    assert!(received.status.success(), "{}", text(&received));
    assert_eq!(
        String::from_utf8_lossy(&received.stdout).trim(),
        r#"devices/d1/telemetry {"temp":21.5}"#
    );

    let answer = curl(&[
        "-X",
        "POST",
        &format!("http://{http}/topics/mqtt"),
        "-H",
        "content-type: application/vnd.kafka.json.v2+json",
        "-d",
        r#"{"records":[{"key":"k2","value":{"n":2}}]}"#,
    ]);
    assert!(answer.contains(r#""offset":1"#), "{answer}");

    let got: serde_json::Value = serde_json::from_str(&run_python(
        "kafka_client.py",
        &["consume", &kafka.bootstrap, "mqtt", "check", "2"],
    ))
    .unwrap();
    assert_eq!(got[0]["key"], "devices/d1/telemetry");
    assert_eq!(got[0]["value"], r#"{"temp":21.5}"#);
    assert_eq!(got[0]["headers"]["trace"], "t-1");
    assert_eq!(
        got[0]["headers"]["barnabas.mqtt.topic"],
        "devices/d1/telemetry"
    );
    assert_eq!(
        got[1]["key"], r#""k2""#,
        "the json format writes the key as JSON"
    );
    assert_eq!(got[1]["value"], r#"{"n":2}"#);

    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(30));
    let log = gw.stderr();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    // From the stop on (a fresh broker may make the producer's first PID request wait).
    let stop = log
        .iter()
        .position(|l| l.contains("stopping:"))
        .unwrap_or(0);
    let loud = common::loud_lines(&log[stop..]);
    assert!(loud.is_empty(), "{loud:#?}");
}

/// Issue 22's idempotence control, on a broker that checks producer sequence numbers
/// (librdkafka's mock cluster checks them only for transactional producers, and the
/// NOT_ENOUGH_REPLICAS case of tests/faults/broker_errors.rs is refused before the append, so
/// neither can tell). The broker is frozen (SIGSTOP) while a produce request is in flight: the
/// gateway's producer gives the request up after `socket.timeout.ms` (1 s here), reconnects
/// and sends it again; once the broker runs it reads both copies. With the gateway's
/// idempotent producer each record is stored once; the same fault with
/// `enable.idempotence = false` stores them twice — it is idempotence that keeps them single.
#[test]
fn a_produce_retried_after_a_frozen_broker_is_stored_once_only_by_the_idempotent_producer() {
    let kafka = ApacheKafka::start();
    let freeze = |frozen: bool| kafka.signal(if frozen { "STOP" } else { "CONT" });
    let copies = |topic: &str, idempotent: bool| {
        common::copies_after_a_frozen_broker(&kafka.bootstrap, &freeze, topic, idempotent)
    };
    let idempotent = copies("frozen-idempotent", true);
    assert!(
        idempotent.values().all(|&n| n == 1),
        "the idempotent producer's retry is not stored again: {idempotent:?}"
    );
    let plain = copies("frozen-plain", false);
    assert!(
        plain.values().any(|&n| n > 1),
        "without idempotence the same fault stores records twice (the control): {plain:?}"
    );
    eprintln!("figures: copies of each record, idempotent {idempotent:?}, not {plain:?}");
}

/// Issue 23: the gateway's compacted state topics really compact on Apache Kafka (tansu has no
/// log cleaner worth trusting), and the state restores from what is left. 4 MQTT topics get
/// 600 retained publishes each (2 KB, QoS 1: 4.8 MB into `barnabas.mqtt.retained`, keyed by
/// MQTT topic); the broker rolls 1 MiB segments and its cleaner runs every second, so the
/// topic must shrink to the active segment plus one record per key. A gateway started
/// afterwards gives a new subscriber the last retained message of each topic.
#[tokio::test(flavor = "multi_thread")]
async fn the_retained_state_topic_compacts_and_restores_from_what_is_left() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let kafka = ApacheKafka::start();
    let start_gateway = |mqtt: std::net::SocketAddr| {
        let mut gw = Gateway::spawn(
            &[
                "--kafka-bootstrap",
                &kafka.bootstrap,
                "--http-listen",
                &free_addr().to_string(),
                "--mqtt-listen",
                &mqtt.to_string(),
                "--amqp-listen",
                "off",
            ],
            &[],
        );
        gw.wait_for_line("barnabas ready", Duration::from_secs(60));
        gw
    };
    let mqtt = free_addr();
    let mut gw = start_gateway(mqtt);
    let (topics, updates) = (4, 600);
    let payload = |t: usize, n: usize| format!("{t}:{n}:{}", "x".repeat(2_000));
    let mut options = MqttOptions::new("compactor", "127.0.0.1", mqtt.port());
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut el) = AsyncClient::new(options, 100);
    let publisher = tokio::spawn(async move {
        for n in 0..updates {
            for t in 0..topics {
                client
                    .publish(
                        format!("retained/{t}"),
                        QoS::AtLeastOnce,
                        true,
                        payload(t, n),
                    )
                    .await
                    .unwrap();
            }
        }
        client
    });
    let mut acked = 0;
    while acked < topics * updates {
        match tokio::time::timeout(Duration::from_secs(60), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            other => panic!("publishing retained messages: {other:?} after {acked} acks"),
        }
    }
    drop(publisher.await.unwrap());

    // Compacted: at most the active segment (< 1 MiB, about 480 of these records) and one
    // record per key remain of the 2 400 written.
    let written = topics * updates;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let left = loop {
        let values: Vec<serde_json::Value> = serde_json::from_str(
            &common::python_async(
                "kafka_client.py",
                &["values", &kafka.bootstrap, "barnabas.mqtt.retained"],
            )
            .await,
        )
        .unwrap();
        if values.len() <= written / 3 {
            break values.len();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "barnabas.mqtt.retained still holds {} of {written} records after 120 s",
            values.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    eprintln!("figures: barnabas.mqtt.retained compacted from {written} records to {left}");

    // A new gateway restores the retained messages from the compacted topic.
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(30));
    let mqtt = free_addr();
    let mut gw = start_gateway(mqtt);
    let (sub, mut sub_el) =
        AsyncClient::new(MqttOptions::new("late", "127.0.0.1", mqtt.port()), 100);
    sub.subscribe("retained/+", QoS::AtLeastOnce).await.unwrap();
    let mut last = std::collections::BTreeMap::new();
    while last.len() < topics {
        match tokio::time::timeout(Duration::from_secs(30), sub_el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                assert!(p.retain, "a retained message comes with the retain flag");
                last.insert(
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                );
            }
            Ok(Ok(_)) => {}
            other => panic!("waiting for retained messages: {other:?}, got {last:?}"),
        }
    }
    for t in 0..topics {
        assert_eq!(
            last[&format!("retained/{t}")],
            payload(t, updates - 1),
            "the last retained message of retained/{t}"
        );
    }
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(30));
}

/// Issue 23: KIP-848's consumer group protocol as a pass-through option
/// (`[kafka.properties] "group.protocol" = "consumer"`). Two HTTP consumer instances of one
/// group share a 2-partition topic between them (each gets records, together all 20, none
/// twice), and an MQTT shared subscription — a group member too — receives what is
/// published after it joined. Before the fix, every HTTP instance failed to be created
/// (librdkafka refuses the instances' classic `session.timeout.ms` under this protocol).
#[tokio::test(flavor = "multi_thread")]
async fn the_kip_848_group_protocol_passes_through_to_every_group_member() {
    use common::gateway::{self, JSON, V2};
    use serde_json::json;
    let kafka = ApacheKafka::start();
    let gw = gateway::start_on(Some(kafka.bootstrap.clone()), |c| {
        c.kafka
            .properties
            .insert("group.protocol".into(), "consumer".into());
    })
    .await;
    let created = gw
        .post_json(
            "/admin/topics",
            V2,
            &json!({ "topic_name": "k848", "partitions_count": 2 }),
        )
        .await;
    assert!(created.status.is_success(), "{}", created.text);

    let mut members = Vec::new();
    for name in ["m1", "m2"] {
        let instance = gw
            .consumer(
                "g848",
                json!({ "name": name, "format": "json", "auto.offset.reset": "earliest" }),
            )
            .await;
        let a = gw
            .post_json(
                &format!("{instance}/subscription"),
                V2,
                &json!({ "topics": ["k848"] }),
            )
            .await;
        assert_eq!(a.status, 204, "{}", a.text);
        members.push(instance);
    }
    // The broker assigns one partition to each member (KIP-848 reconciles incrementally).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut counts = Vec::new();
        for instance in &members {
            let a = gw.get(&format!("{instance}/subscription"), None).await;
            assert_eq!(a.status, 200, "{}", a.text);
            counts.push(a.json["partitions"].as_array().map_or(0, |topics| {
                topics
                    .iter()
                    .filter_map(|t| t["k848"].as_array().map(Vec::len))
                    .sum::<usize>()
            }));
        }
        if counts == [1, 1] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broker never gave each member one partition: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let records: Vec<_> = (0..20)
        .map(|i| json!({ "partition": i % 2, "value": format!("r{i}") }))
        .collect();
    let a = gw
        .post_json("/topics/k848", JSON, &json!({ "records": records }))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);

    // Both members poll until the 20 records are in.
    let mut got: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while got.iter().map(Vec::len).sum::<usize>() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the group read only {got:?}"
        );
        for (m, instance) in members.iter().enumerate() {
            let a = gw
                .get(&format!("{instance}/records?timeout=1000"), Some(JSON))
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
            for r in a.json.as_array().unwrap() {
                got[m].push(r["value"].as_str().unwrap().to_owned());
            }
        }
    }
    let mut all: Vec<String> = got.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 20, "every record once: {got:?}");
    assert!(
        got.iter().all(|g| !g.is_empty()),
        "the two members share the partitions: {got:?}"
    );

    // An MQTT shared subscription is a member of its group under the same protocol.
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mqtt = gw.gateway.mqtt_addr().unwrap();
    let (sub, mut el) =
        AsyncClient::new(MqttOptions::new("k848-sub", "127.0.0.1", mqtt.port()), 10);
    sub.subscribe("$share/k848/jobs/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (publ, mut pub_el) =
        AsyncClient::new(MqttOptions::new("k848-pub", "127.0.0.1", mqtt.port()), 10);
    tokio::spawn(async move { while pub_el.poll().await.is_ok() {} });
    // A new shared group starts at the end of the log once assigned: publish until one arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    'received: loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the shared subscription never received a job"
        );
        publ.publish("jobs/1", QoS::AtLeastOnce, false, "job")
            .await
            .unwrap();
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(ev)) = tokio::time::timeout_at(until, el.poll()).await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                assert_eq!(&p.payload[..], b"job");
                break 'received;
            }
        }
    }
    gw.stop().await;
}

/// Issue 23: a broker whose `message.max.bytes` (20 000 here) is below the gateway's own limit
/// (`limits.max_message_bytes`, 1 MiB by default) refuses a 50 KB record; each protocol
/// answers that clearly — HTTP a per-record 413 saying Kafka refused it as too large, MQTT v5 a
/// PUBACK with a failure reason code, AMQP `rejected` with `amqp:link:message-size-exceeded` —
/// and the gateway goes on writing smaller records. With
/// the broker's limit also in `[kafka.properties] "message.max.bytes"`, librdkafka refuses
/// the large record itself and a small one in the same request is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_above_the_brokers_message_max_bytes_gets_a_clear_answer_per_protocol() {
    use common::gateway::{self, JSON};
    use rumqttc::v5::{
        mqttbytes::{v5::PubAckReason, QoS},
        AsyncClient, MqttOptions,
    };
    use serde_json::json;
    let kafka = ApacheKafka::start_with(&["message.max.bytes=20000"]);
    let big = "x".repeat(50_000);
    let produce = |gw: &gateway::TestGateway, values: Vec<&str>| {
        let body =
            json!({ "records": values.iter().map(|v| json!({ "value": v })).collect::<Vec<_>>() });
        let gw_url = gw.url("/topics/sizes");
        let client = gw.client.clone();
        async move {
            let resp = client
                .post(gw_url)
                .header("content-type", JSON)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let answer: serde_json::Value = resp.json().await.unwrap();
            answer["offsets"].as_array().cloned().unwrap_or_default()
        }
    };

    let gw = gateway::start_on(Some(kafka.bootstrap.clone()), |c| {
        c.amqp.listen = "127.0.0.1:0".into();
    })
    .await;
    let offsets = produce(&gw, vec![&big]).await;
    eprintln!("figures: HTTP answer for 50 KB: {offsets:?}");
    assert_eq!(offsets[0]["error_code"], 413, "{offsets:?}");
    assert!(
        offsets[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Kafka refused the record as too large")),
        "the message says what happened: {offsets:?}"
    );
    let offsets = produce(&gw, vec!["small"]).await;
    assert!(
        offsets[0]["offset"].is_i64(),
        "smaller records still go: {offsets:?}"
    );

    let mqtt = gw.gateway.mqtt_addr().unwrap();
    let mut options = MqttOptions::new("sizes", "127.0.0.1", mqtt.port());
    options.set_max_packet_size(Some(1024 * 1024));
    let (client, mut el) = AsyncClient::new(options, 10);
    client
        .publish("sizes/big", QoS::AtLeastOnce, false, big.clone())
        .await
        .unwrap();
    let reason = puback_reason(&mut el).await;
    eprintln!("figures: MQTT v5 PUBACK reason for 50 KB: {reason:?}");
    assert_ne!(
        reason,
        PubAckReason::Success,
        "a refused write is not a success"
    );

    let amqp = format!("amqp://{}", gw.gateway.amqp_addr().unwrap());
    let large = [("AMQP_BODY_BYTES", "50000")];
    let a = common::proton_try_async(&amqp, "send", "sizes", &large).await;
    eprintln!("figures: AMQP outcome for 50 KB: {a:?}");
    assert!(
        !a.ok
            && a.outcome.as_deref() == Some("rejected")
            && a.condition.as_deref() == Some("amqp:link:message-size-exceeded"),
        "{a:?}"
    );
    let a = common::proton_try_async(&amqp, "send", "sizes", &[]).await;
    assert!(a.ok, "smaller transfers still go: {a:?}");
    gw.stop().await;

    // The broker's limit told to the gateway's producer too: the large record is refused
    // before it is sent, and does not take the small one in its batch down with it.
    let gw = gateway::start_on(Some(kafka.bootstrap.clone()), |c| {
        c.kafka
            .properties
            .insert("message.max.bytes".into(), "20000".into());
    })
    .await;
    let offsets = produce(&gw, vec![&big, "small"]).await;
    eprintln!("figures: HTTP answer with message.max.bytes set: {offsets:?}");
    assert_eq!(offsets[0]["error_code"], 413, "{offsets:?}");
    assert!(
        offsets[1]["offset"].is_i64(),
        "the small record is written: {offsets:?}"
    );
    gw.stop().await;
}

/// Issue 23: identity passthrough against Kafka's own authorizer. Apache Kafka requires
/// SASL/SCRAM logins and authorizes with `StandardAuthorizer`; `device-1` may write and read
/// topic `open` (and read as group `g-open`) but has no ACL on topic `closed`. Through a
/// passthrough gateway, logged in as device-1: HTTP produce to `open` gets its offset, to
/// `closed` a per-record 403; an HTTP consumer subscribed to `closed` gets 403 on its poll
/// while one subscribed to `open` reads; an MQTT v5 publish mapped to `closed` gets PUBACK
/// 0x87 (not authorized) and one mapped to `open` succeeds, a subscription to `closed` is
/// refused as not authorized; AMQP transfers to `closed` are `rejected` with
/// `amqp:unauthorized-access`, a receiver of `closed` is closed with it, and `open` works
/// both ways. Nothing reaches `closed`.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_clients_get_exactly_what_kafka_acls_grant_them() {
    use barnabas::config::MqttMapping;
    use common::gateway::{self, JSON, V2};
    use rumqttc::v5::{
        mqttbytes::{
            v5::{Packet, PubAckReason},
            QoS,
        },
        AsyncClient, Event, MqttOptions,
    };
    use serde_json::json;
    let kafka = ApacheKafka::start_sasl(
        &[
            ("admin", "admin-pw"),
            ("barnabas", "gateway-pw"),
            ("device-1", "s3cret"),
        ],
        &["admin", "barnabas"],
    );
    let allow = |resource: &str, name: &str, ops: &str, topics: &[&str]| {
        let mut args = vec![
            "allow",
            &kafka.bootstrap,
            "admin",
            "admin-pw",
            "User:device-1",
            resource,
            name,
            ops,
        ];
        args.extend_from_slice(topics);
        run_python("kafka_client.py", &args);
    };
    allow("topic", "open", "write,describe,read", &["open", "closed"]);
    allow("group", "g-open", "read", &[]);
    // AMQP receivers read as a group of their own: the HTTP instances of g-open stay members
    // until the end and would share the one partition of `open` with them.
    allow("group", "g-amqp", "read", &[]);

    let dir = tempfile::tempdir().unwrap();
    let users = common::write_test_users(dir.path());
    let gw = gateway::start_on(Some(kafka.bootstrap.clone()), |c| {
        common::configure_passthrough(c, &users);
        c.kafka.auto_create_topics = false;
        c.mqtt.mapping = ["open", "closed"]
            .into_iter()
            .map(|t| MqttMapping {
                pattern: format!("{t}/{{rest*}}"),
                kafka_topic: t.into(),
                key: None,
            })
            .collect();
    })
    .await;
    let as_device = |req: reqwest::RequestBuilder| req.basic_auth("device-1", Some("s3cret"));

    // HTTP writes.
    let produce = |topic: &str| {
        as_device(gw.client.post(gw.url(&format!("/topics/{topic}"))))
            .header("content-type", JSON)
            .body(json!({ "records": [{ "value": format!("to-{topic}") }] }).to_string())
            .send()
    };
    let answer: serde_json::Value = produce("open").await.unwrap().json().await.unwrap();
    assert!(answer["offsets"][0]["offset"].is_i64(), "{answer}");
    let answer: serde_json::Value = produce("closed").await.unwrap().json().await.unwrap();
    assert_eq!(answer["offsets"][0]["error_code"], 403, "{answer}");

    // HTTP reads: a consumer of `closed` is refused at its poll, one of `open` reads.
    let mut polled = Vec::new();
    for (name, topic) in [("reads-closed", "closed"), ("reads-open", "open")] {
        let created = as_device(gw.client.post(gw.url("/consumers/g-open")))
            .header("content-type", V2)
            .body(
                json!({ "name": name, "format": "json", "auto.offset.reset": "earliest" })
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200);
        let instance = format!("/consumers/g-open/instances/{name}");
        let subscribed = as_device(gw.client.post(gw.url(&format!("{instance}/subscription"))))
            .header("content-type", V2)
            .body(json!({ "topics": [topic] }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(subscribed.status(), 204);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let outcome = loop {
            let resp = as_device(
                gw.client
                    .get(gw.url(&format!("{instance}/records?timeout=1000"))),
            )
            .header("accept", JSON)
            .send()
            .await
            .unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            if status != 200 || body.as_array().is_some_and(|a| !a.is_empty()) {
                break (status, body);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{topic}: nothing and no refusal"
            );
        };
        polled.push(outcome);
    }
    eprintln!("figures: HTTP polls as device-1: {polled:?}");
    assert_eq!(
        polled[0].0, 403,
        "reading `closed` is refused: {:?}",
        polled[0]
    );
    assert_eq!(
        (polled[1].0, polled[1].1[0]["value"].as_str()),
        (200, Some("to-open")),
        "reading `open` is allowed"
    );

    // MQTT v5 writes as device-1.
    let mqtt = gw.gateway.mqtt_addr().unwrap();
    let mut options = MqttOptions::new("device-1", "127.0.0.1", mqtt.port());
    options.set_credentials("device-1", "s3cret");
    let (client, mut el) = AsyncClient::new(options, 10);
    let mut reasons = Vec::new();
    for topic in ["closed/m", "open/m"] {
        client
            .publish(topic, QoS::AtLeastOnce, false, "mqtt")
            .await
            .unwrap();
        reasons.push(puback_reason(&mut el).await);
    }
    assert_eq!(
        reasons,
        [PubAckReason::NotAuthorized, PubAckReason::Success],
        "MQTT: closed refused (0x87), open written"
    );

    // MQTT v5 reads: a subscription to `closed` is refused once Kafka is asked (DISCONNECT
    // 0x87 after the SUBACK, or a failed SUBACK).
    let mut options = MqttOptions::new("device-1-sub", "127.0.0.1", mqtt.port());
    options.set_credentials("device-1", "s3cret");
    let (sub, mut sub_el) = AsyncClient::new(options, 10);
    sub.subscribe("closed/#", QoS::AtLeastOnce).await.unwrap();
    let refusal = loop {
        match tokio::time::timeout(Duration::from_secs(60), sub_el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                let code = format!("{:?}", ack.return_codes);
                if !code.contains("Success") {
                    break format!("SUBACK {code}");
                }
            }
            Ok(Ok(Event::Incoming(Packet::Disconnect(d)))) => {
                break format!("DISCONNECT {:?}", d.reason_code)
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => panic!("a delivery from closed: {p:?}"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break format!("closed: {e:?}"),
            Err(_) => panic!("no refusal within 60 s"),
        }
    };
    eprintln!("figures: MQTT v5 subscription to closed: {refusal}");
    assert!(
        refusal.contains("NotAuthorized"),
        "refused as not authorized: {refusal}"
    );

    // AMQP writes and reads as device-1.
    let amqp = gw.gateway.amqp_addr().unwrap();
    let device = format!("amqp://device-1:s3cret@{amqp}");
    let a = common::proton_try_async(&device, "send", "closed", &[]).await;
    assert!(
        !a.ok
            && a.outcome.as_deref() == Some("rejected")
            && a.condition.as_deref() == Some("amqp:unauthorized-access"),
        "AMQP write to closed: {a:?}"
    );
    let a = common::proton_try_async(&device, "send", "open", &[]).await;
    assert!(
        a.ok && a.outcome.as_deref() == Some("accepted"),
        "AMQP write to open: {a:?}"
    );
    let a = common::proton_try_async(&device, "receive", "closed/group.id/g-amqp", &[]).await;
    assert!(
        !a.ok && a.condition.as_deref() == Some("amqp:unauthorized-access"),
        "AMQP read of closed: {a:?}"
    );
    let a = common::proton_try_async(&device, "receive", "open/group.id/g-amqp", &[]).await;
    assert!(a.ok, "AMQP read of open: {a:?}");

    // Nothing reached `closed` (read as the admin).
    let values: Vec<String> = serde_json::from_str(&run_python(
        "kafka_client.py",
        &[
            "values-sasl",
            &kafka.bootstrap,
            "admin",
            "admin-pw",
            "closed",
        ],
    ))
    .unwrap();
    assert!(values.is_empty(), "closed holds {values:?}");
    gw.stop().await;
}

/// Issue 23: one of three Apache Kafka brokers killed (kill -9) under load, with replication
/// factor 3, `min.insync.replicas=2` and the gateway's acks=all idempotent producer: every
/// record the gateway acknowledged is in the topic afterwards, read from the two survivors.
/// HTTP clients send batches of 20 records to a 3-partition topic for 20 s; node 1 is killed
/// after 6 s. Records answered with an error during the failover are allowed (and counted);
/// an acknowledged one that is missing is the failure.
#[tokio::test(flavor = "multi_thread")]
async fn one_of_three_brokers_killed_under_load_loses_nothing_acknowledged() {
    use common::{apache::ApacheCluster, gateway};
    use serde_json::json;
    let cluster = ApacheCluster::start(3);
    let gw = gateway::start_on(Some(cluster.bootstrap.clone()), |c| {
        c.kafka.default_replication_factor = 3;
        c.kafka.default_partitions = 3;
        c.kafka.produce_timeout_ms = 30_000;
    })
    .await;
    let url = gw.url("/topics/replicated");
    let started = std::time::Instant::now();
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (client, url) = (gw.client.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), 0usize);
            let mut batch = 0;
            while started.elapsed() < Duration::from_secs(20) {
                let values: Vec<String> = (0..20).map(|i| format!("s{sender}-b{batch}-r{i}")).collect();
                batch += 1;
                let body = json!({ "records": values.iter().map(|v| json!({ "key": v, "value": v })).collect::<Vec<_>>() });
                let Ok(resp) = client
                    .post(&url)
                    .header("content-type", common::gateway::JSON)
                    .body(body.to_string())
                    .send()
                    .await
                else {
                    refused += values.len();
                    continue;
                };
                let answer: serde_json::Value = resp.json().await.unwrap_or_default();
                let offsets = answer["offsets"].as_array().cloned().unwrap_or_default();
                for (v, o) in values.iter().zip(offsets.iter()) {
                    if o["offset"].is_i64() {
                        acked.push(v.clone());
                    } else {
                        refused += 1;
                    }
                }
            }
            (acked, refused)
        }));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.nodes[0].signal("KILL");
    let (mut acked, mut refused) = (Vec::new(), 0);
    for s in senders {
        let (a, r) = s.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    gw.stop().await;
    let survivors = format!(
        "{},{}",
        cluster.nodes[1].bootstrap, cluster.nodes[2].bootstrap
    );
    let values: Vec<String> = serde_json::from_str(
        &common::python_async("kafka_client.py", &["values", &survivors, "replicated"]).await,
    )
    .unwrap();
    let stored: std::collections::HashMap<String, usize> =
        values.iter().fold(Default::default(), |mut m, v| {
            if let Ok(v) = serde_json::from_str::<String>(v) {
                *m.entry(v).or_insert(0) += 1;
            }
            m
        });
    let lost: Vec<&String> = acked.iter().filter(|v| !stored.contains_key(*v)).collect();
    let twice = stored.values().filter(|&&n| n > 1).count();
    eprintln!(
        "figures: 3 brokers, one killed: {} acknowledged, {refused} refused, {} stored, {} lost, {twice} stored twice",
        acked.len(),
        values.len(),
        lost.len()
    );
    assert!(
        acked.len() > 1_000,
        "the load ran: {} acknowledged",
        acked.len()
    );
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}

/// The reason code of the next v5 PUBACK on `el` (within 60 s). rumqttc reports a PUBACK with
/// a failure reason code as an error; both come back here as the code.
async fn puback_reason(
    el: &mut rumqttc::v5::EventLoop,
) -> rumqttc::v5::mqttbytes::v5::PubAckReason {
    use rumqttc::v5::{mqttbytes::v5::Packet, ConnectionError, Event, StateError};
    loop {
        match tokio::time::timeout(Duration::from_secs(60), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => return ack.reason,
            Ok(Err(ConnectionError::MqttState(StateError::PubAckFail { reason }))) => {
                return reason
            }
            Ok(Ok(_)) => {}
            other => panic!("waiting for the PUBACK: {other:?}"),
        }
    }
}

/// Issue 22: a retained publish is acknowledged only once both of its records are in Kafka —
/// the data record and the retained copy in `barnabas.mqtt.retained`. The gateway logs in to
/// Kafka (SASL/SCRAM, StandardAuthorizer) as a user that may do everything on every topic and
/// group except write `barnabas.mqtt.retained` (a DENY ACL), so Kafka refuses every retained
/// copy while data records go through. A plain QoS 1 publish is acknowledged; a retained one
/// gets a v5 PUBACK failure although its data record was stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_retained_publish_whose_retained_copy_kafka_refuses_gets_a_negative_puback() {
    use common::gateway;
    use rumqttc::v5::{
        mqttbytes::{v5::PubAckReason, QoS},
        AsyncClient, MqttOptions,
    };
    let kafka = ApacheKafka::start_sasl(&[("admin", "admin-pw"), ("gw", "gw-pw")], &["admin"]);
    let acl = |verb: &str, resource: &str, name: &str, ops: &str| {
        run_python(
            "kafka_client.py",
            &[
                verb,
                &kafka.bootstrap,
                "admin",
                "admin-pw",
                "User:gw",
                resource,
                name,
                ops,
            ],
        );
    };
    acl("allow", "topic", "*", "all");
    acl("allow", "group", "*", "all");
    acl("deny", "topic", "barnabas.mqtt.retained", "write");
    let gw = gateway::start_on(Some(kafka.bootstrap.clone()), |c| {
        for (k, v) in [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "gw"),
            ("sasl.password", "gw-pw"),
        ] {
            c.kafka.properties.insert(k.into(), v.into());
        }
    })
    .await;
    let mqtt = gw.gateway.mqtt_addr().unwrap();
    let (client, mut el) =
        AsyncClient::new(MqttOptions::new("keeper", "127.0.0.1", mqtt.port()), 10);
    client
        .publish("state/plain", QoS::AtLeastOnce, false, "plain")
        .await
        .unwrap();
    assert_eq!(puback_reason(&mut el).await, PubAckReason::Success);
    client
        .publish("state/kept", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    let reason = puback_reason(&mut el).await;
    eprintln!("figures: PUBACK of a retained publish whose retained copy was refused: {reason:?}");
    assert_ne!(
        reason,
        PubAckReason::Success,
        "the retained copy was never stored, so the publish is not acknowledged"
    );
    let values: Vec<serde_json::Value> = serde_json::from_str(
        &common::python_async(
            "kafka_client.py",
            &["values-sasl", &kafka.bootstrap, "admin", "admin-pw", "mqtt"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        values,
        vec![serde_json::json!("plain"), serde_json::json!("kept")],
        "both data records were written: the negative answer is the retained copy's"
    );
    gw.stop().await;
}
