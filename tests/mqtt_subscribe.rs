//! Kafka → MQTT: subscriptions with real clients (rumqttc 3.1.1 and 5, mosquitto_sub, paho
//! over TCP and WebSocket) against the gateway and its embedded broker. Records are written
//! with a Kafka producer (the adapter's) or by MQTT publishers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use barnabas::config::MqttMapping;
use barnabas_core::{Header, Record};
use common::{
    gateway::{self, TestGateway},
    next_publish,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

fn mapped(c: &mut barnabas::config::Config) {
    c.mqtt.mapping = vec![
        MqttMapping {
            pattern: "devices/{device}/commands".into(),
            kafka_topic: "commands".into(),
            key: Some("{device}".into()),
        },
        MqttMapping {
            pattern: "jobs/{id}".into(),
            kafka_topic: "jobs".into(),
            key: Some("{id}".into()),
        },
    ];
    c.mqtt.topic_refresh_ms = 300;
}

fn addr(gw: &TestGateway) -> SocketAddr {
    gw.gateway.mqtt_addr().unwrap()
}

fn options(gw: &TestGateway, id: &str) -> MqttOptions {
    let a = addr(gw);
    let mut opts = MqttOptions::new(id, a.ip().to_string(), a.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// Drives an event loop until SUBACK; returns its return codes.
async fn suback(el: &mut EventLoop) -> Vec<rumqttc::SubscribeReasonCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), el.poll())
            .await
            .expect("SUBACK in time")
            .unwrap()
        {
            Event::Incoming(Packet::SubAck(s)) => return s.return_codes,
            _ => continue,
        }
    }
}

/// Drives the event loop briefly so queued acks are written.
async fn flush(el: &mut EventLoop) {
    let until = Instant::now() + Duration::from_millis(500);
    while let Ok(Ok(_)) = tokio::time::timeout_at(until.into(), el.poll()).await {}
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_gets_kafka_records_on_the_reverse_mapped_topic_until_unsubscribed() {
    let gw = gateway::start(mapped).await;
    // The topic exists before the subscription (a read never creates one).
    common::produce(&gw, "commands", "d0", "before").await;
    let (sub, mut sub_el) = AsyncClient::new(options(&gw, "sub-1"), 10);
    sub.subscribe("devices/+/commands", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        suback(&mut sub_el).await,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // A record written by a Kafka producer: the MQTT topic comes from the rule read backwards.
    common::produce(&gw, "commands", "d7", "open").await;
    let p = next_publish(&mut sub_el, Duration::from_secs(30))
        .await
        .expect("the record is delivered");
    assert_eq!(p.topic, "devices/d7/commands");
    assert_eq!(&p.payload[..], b"open");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert!(!p.retain);

    // A publish from another MQTT client: its QoS 0 caps the delivery's QoS.
    let (publ, mut pub_el) = AsyncClient::new(options(&gw, "pub-1"), 10);
    publ.publish("devices/d8/commands", QoS::AtMostOnce, false, "close")
        .await
        .unwrap();
    tokio::spawn(async move { while pub_el.poll().await.is_ok() {} });
    let p = next_publish(&mut sub_el, Duration::from_secs(30))
        .await
        .expect("the MQTT publish is delivered");
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("devices/d8/commands", &b"close"[..], QoS::AtMostOnce)
    );

    // The record written before the subscription is not delivered, and after UNSUBSCRIBE
    // nothing is.
    sub.unsubscribe("devices/+/commands").await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), sub_el.poll())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Incoming(Packet::UnsubAck(_)) => break,
            Event::Incoming(Packet::Publish(p)) => panic!("unexpected delivery {p:?}"),
            _ => {}
        }
    }
    common::produce(&gw, "commands", "d7", "after").await;
    assert!(next_publish(&mut sub_el, Duration::from_secs(2))
        .await
        .is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn default_topic_records_go_back_to_their_mqtt_topic_and_retained_ones_wait_for_subscribers()
{
    let gw = gateway::start(mapped).await;
    let (publ, mut pub_el) = AsyncClient::new(options(&gw, "plant-pub"), 10);
    publ.publish("plant/hall/temp", QoS::AtLeastOnce, true, "21.5")
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = pub_el.poll().await.unwrap() {
            break;
        }
    }
    // A later subscriber gets the retained message at once, flagged retained.
    let (sub, mut sub_el) = AsyncClient::new(options(&gw, "plant-sub"), 10);
    sub.subscribe("plant/#", QoS::AtLeastOnce).await.unwrap();
    suback(&mut sub_el).await;
    let p = next_publish(&mut sub_el, Duration::from_secs(10))
        .await
        .expect("retained message");
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("plant/hall/temp", &b"21.5"[..], true)
    );
    // A live publish to the default topic comes back on its own MQTT topic, not retained.
    publ.publish("plant/hall/humidity", QoS::AtLeastOnce, false, "40")
        .await
        .unwrap();
    tokio::spawn(async move { while pub_el.poll().await.is_ok() {} });
    let p = next_publish(&mut sub_el, Duration::from_secs(30))
        .await
        .expect("live delivery");
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("plant/hall/humidity", &b"40"[..], false)
    );
    // An empty retained publish clears it: a new subscriber gets nothing.
    publ.publish("plant/hall/temp", QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    // It is also delivered, as a normal message, to the existing subscriber.
    let p = next_publish(&mut sub_el, Duration::from_secs(30))
        .await
        .expect("the clearing publish");
    assert!(p.payload.is_empty());
    let (late, mut late_el) = AsyncClient::new(options(&gw, "plant-late"), 10);
    late.subscribe("plant/hall/temp", QoS::AtLeastOnce)
        .await
        .unwrap();
    suback(&mut late_el).await;
    assert!(next_publish(&mut late_el, Duration::from_secs(2))
        .await
        .is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unacknowledged_qos1_delivery_is_redelivered_to_a_persistent_session() {
    let gw = gateway::start(mapped).await;
    common::produce(&gw, "commands", "x", "topic exists").await;
    let persistent = |gw: &TestGateway| {
        let mut o = options(gw, "keeper");
        o.set_clean_session(false);
        o.set_manual_acks(true);
        AsyncClient::new(o, 10)
    };
    let (c, mut el) = persistent(&gw);
    c.subscribe("devices/+/commands", QoS::AtLeastOnce)
        .await
        .unwrap();
    suback(&mut el).await;
    for v in ["one", "two", "three"] {
        common::produce(&gw, "commands", "k1", v).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            next_publish(&mut el, Duration::from_secs(30))
                .await
                .expect("delivery"),
        );
    }
    let payloads: Vec<&[u8]> = got.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, [b"one".as_slice(), b"two", b"three"]);
    // Acknowledge only the first, then vanish.
    c.ack(&got[0]).await.unwrap();
    // Drive the loop so the PUBACK is written before the connection goes.
    flush(&mut el).await;
    drop(c);
    drop(el);
    // Written while the client is away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    common::produce(&gw, "commands", "k1", "four").await;

    // Back with the same session: no new SUBSCRIBE, the unacknowledged and the queued arrive.
    let (c, mut el) = persistent(&gw);
    let session_present = loop {
        if let Event::Incoming(Packet::ConnAck(a)) =
            tokio::time::timeout(Duration::from_secs(30), el.poll())
                .await
                .unwrap()
                .unwrap()
        {
            break a.session_present;
        }
    };
    assert!(session_present, "the session was kept");
    let mut again = Vec::new();
    for _ in 0..3 {
        let p = next_publish(&mut el, Duration::from_secs(30))
            .await
            .expect("redelivery");
        c.ack(&p).await.unwrap();
        again.push(p);
    }
    let payloads: Vec<&[u8]> = again.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, [b"two".as_slice(), b"three", b"four"]);
    flush(&mut el).await;
    drop(c);
    drop(el);

    // Everything was acknowledged: a third connection gets nothing again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_c, mut el) = persistent(&gw);
    let extra = next_publish(&mut el, Duration::from_secs(3)).await;
    assert!(extra.is_none(), "{extra:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_subscription_splits_the_records_between_its_members() {
    let gw = gateway::start(mapped).await;
    gw.gateway
        .backend()
        .admin
        .create_topic("jobs", Some(2), None)
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, String)>();
    let mut clients = Vec::new();
    for member in 0..2 {
        let (c, mut el) = AsyncClient::new(options(&gw, &format!("worker-{member}")), 10);
        c.subscribe("$share/workers/jobs/+", QoS::AtLeastOnce)
            .await
            .unwrap();
        assert_eq!(
            suback(&mut el).await,
            [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = ev {
                    let _ = tx.send((member, String::from_utf8_lossy(&p.payload).into_owned()));
                }
            }
        });
        clients.push(c);
    }
    common::assert_two_members_split(&gw, "jobs", &mut rx).await;
    gw.stop().await;
}

/// A v5 subscriber to `devices/+/commands` (subscription id 7) gets one record written with
/// headers `trace` and `span` (in that order) and a UTF-8 payload format header; returns the
/// PUBLISH once its QoS 2 exchange completed.
async fn v5_delivery(
    tweak: impl FnOnce(&mut barnabas::config::Config),
) -> rumqttc::v5::mqttbytes::v5::Publish {
    use rumqttc::v5::{
        mqttbytes::{
            v5::{Packet, SubscribeProperties},
            QoS,
        },
        AsyncClient, Event, MqttOptions,
    };
    let gw = gateway::start(|c| {
        mapped(c);
        tweak(c);
    })
    .await;
    common::produce(&gw, "commands", "x", "topic exists").await;
    let a = addr(&gw);
    let (c, mut el) =
        AsyncClient::new(MqttOptions::new("v5-sub", a.ip().to_string(), a.port()), 10);
    c.subscribe_with_properties(
        "devices/+/commands",
        QoS::ExactlyOnce,
        SubscribeProperties {
            id: Some(7),
            user_properties: Vec::new(),
        },
    )
    .await
    .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.unwrap() {
            break;
        }
    }
    let mut record = Record::new("commands", "reboot").with_key("d3");
    record.headers.push(Header::new("trace", "abc-123"));
    record.headers.push(Header::new("span", "s-1"));
    record
        .headers
        .push(Header::new("barnabas.mqtt.payload_format", "1"));
    gw.gateway
        .backend()
        .publisher
        .publish_one(record)
        .await
        .unwrap();
    let p = loop {
        if let Event::Incoming(Packet::Publish(p)) =
            tokio::time::timeout(Duration::from_secs(30), el.poll())
                .await
                .unwrap()
                .unwrap()
        {
            break p;
        }
    };
    assert_eq!(&p.topic[..], b"devices/d3/commands");
    assert_eq!(
        p.qos,
        QoS::ExactlyOnce,
        "a Kafka record is as durable as QoS 2"
    );
    // The QoS 2 exchange completes: rumqttc sends PUBCOMP after the gateway's PUBREL.
    loop {
        if let Event::Outgoing(rumqttc::Outgoing::PubComp(_)) =
            tokio::time::timeout(Duration::from_secs(30), el.poll())
                .await
                .unwrap()
                .unwrap()
        {
            break;
        }
    }
    gw.stop().await;
    p
}

/// MQTT 5.0 [MQTT-3.3.2-17/18]: the user properties as published, in order, and nothing more
/// (before `mqtt.kafka_metadata` existed, five `barnabas.kafka.*` ones followed them);
/// the payload format indicator arrives [MQTT-3.3.2-4].
#[tokio::test(flavor = "multi_thread")]
async fn mqtt5_subscribers_get_headers_as_user_properties_and_their_subscription_id() {
    let p = v5_delivery(|_| {}).await;
    let props = p.properties.expect("v5 properties");
    assert_eq!(props.subscription_identifiers, [7]);
    assert_eq!(
        props.user_properties,
        [
            ("trace".to_owned(), "abc-123".to_owned()),
            ("span".to_owned(), "s-1".to_owned())
        ]
    );
    assert_eq!(props.payload_format_indicator, Some(1));
}

/// `mqtt.kafka_metadata = true`: the record's place in Kafka follows the published user
/// properties.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_metadata_user_properties_only_when_configured() {
    let p = v5_delivery(|c| c.mqtt.kafka_metadata = true).await;
    let props = p.properties.expect("v5 properties");
    let names: Vec<&str> = props
        .user_properties
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(&names[..2], ["trace", "span"]);
    let user: BTreeMap<_, _> = props.user_properties.iter().cloned().collect();
    assert_eq!(
        user.get("barnabas.kafka.topic").map(String::as_str),
        Some("commands")
    );
    assert_eq!(
        user.get("barnabas.kafka.key").map(String::as_str),
        Some("d3")
    );
    assert!(
        user.contains_key("barnabas.kafka.offset") && user.contains_key("barnabas.kafka.partition")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_sub_receives_kafka_records() {
    let gw = gateway::start(mapped).await;
    common::produce(&gw, "commands", "x", "topic exists").await;
    let a = addr(&gw);
    let child = std::process::Command::new("mosquitto_sub")
        .args(["-h", &a.ip().to_string(), "-p", &a.port().to_string()])
        .args(["-i", "msub", "-q", "1", "-v", "-C", "2", "-W", "60"])
        .args(["-t", "devices/+/commands"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (Debian package mosquitto-clients) is installed");
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    // Records written before its SUBSCRIBE took effect are not for it: keep writing.
    let mut i = 0;
    while !waiting.is_finished() {
        common::produce(&gw, "commands", "d1", &format!("m{i}")).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = waiting.await.unwrap().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in lines {
        assert!(line.starts_with("devices/d1/commands m"), "{line}");
    }
    // Metrics: the deliveries are counted; the subscription goes when the client does.
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = gw.get("/metrics", None).await.text;
        assert!(value(&metrics, r#"barnabas_mqtt_deliveries_total{qos="1"}"#) >= 2.0);
        assert_eq!(
            value(&metrics, "barnabas_mqtt_dropped_deliveries_total"),
            0.0
        );
        if value(&metrics, "barnabas_mqtt_subscriptions") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "subscription gauge never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paho_over_tcp_and_websocket() {
    let gw = gateway::start(|c| {
        mapped(c);
        c.mqtt.ws_listen = "127.0.0.1:0".into();
        c.mqtt.mapping.push(MqttMapping {
            pattern: "sensors/{device}/telemetry".into(),
            kafka_topic: "telemetry".into(),
            key: Some("{device}".into()),
        });
    })
    .await;
    let a = addr(&gw);
    let ws = gw.gateway.mqtt_ws_addr().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        common::run_python(
            "mqtt_paho.py",
            &[
                &a.ip().to_string(),
                &a.port().to_string(),
                &ws.port().to_string(),
            ],
        )
    })
    .await
    .unwrap();
    let results: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(results["v5_puback"], 0, "{results}");
    assert_eq!(results["v311_puback"], true, "{results}");
    assert_eq!(
        results["ws_received"]["topic"], "devices/p2/commands",
        "{results}"
    );
    assert_eq!(
        results["ws_received"]["payload"], "hello over websocket",
        "{results}"
    );
    // The v5 publish with user properties is in Kafka with them as headers.
    let got = common::read_topic(&gw, "telemetry", 2).await;
    let v5 = got
        .iter()
        .find(|r| r.key.as_deref() == Some(b"p5".as_slice()))
        .expect("v5 record");
    assert_eq!(
        v5.header("unit").map(|v| &v[..]),
        Some(b"celsius".as_slice())
    );
    assert!(got
        .iter()
        .any(|r| r.key.as_deref() == Some(b"p3".as_slice())));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt5_topic_aliases_no_local_and_message_expiry() {
    use rumqttc::v5::{
        mqttbytes::{
            v5::{Filter, Packet, PublishProperties, RetainForwardRule},
            QoS,
        },
        AsyncClient, Event, EventLoop, MqttOptions,
    };
    /// Next PUBLISH (topic, payload) within `within`.
    async fn next(el: &mut EventLoop, within: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, el.poll()).await {
                Err(_) => return None,
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    return Some((
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    ))
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("{e:?}"),
            }
        }
    }
    async fn subscribed(el: &mut EventLoop) {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.unwrap() {
                return;
            }
        }
    }
    let gw = gateway::start(mapped).await;
    let a = addr(&gw);
    let client =
        |id: &str| AsyncClient::new(MqttOptions::new(id, a.ip().to_string(), a.port()), 10);
    // The default topic exists before anyone subscribes.
    common::produce(&gw, "mqtt", "warm/up", "x").await;

    let (alice, mut alice_el) = client("alice");
    alice
        .subscribe_many([Filter {
            path: "chat/#".into(),
            qos: QoS::AtLeastOnce,
            nolocal: true,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        }])
        .await
        .unwrap();
    subscribed(&mut alice_el).await;
    // Alice's connection runs on its own; what she receives is counted.
    let (own_tx, mut own_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = alice_el.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let _ = own_tx.send(p.topic);
            }
        }
    });
    let (bob, mut bob_el) = client("bob");
    bob.subscribe("chat/#", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut bob_el).await;

    // Alice publishes with a topic alias: set it, then use it with an empty topic.
    let alias = |a: u16| PublishProperties {
        topic_alias: Some(a),
        ..Default::default()
    };
    alice
        .publish_with_properties("chat/room", QoS::AtLeastOnce, false, "first", alias(1))
        .await
        .unwrap();
    alice
        .publish_with_properties("", QoS::AtLeastOnce, false, "second", alias(1))
        .await
        .unwrap();
    // Retained: one that expires after a second, one that does not.
    let expiring = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    alice
        .publish_with_properties(
            "chat/expiring",
            QoS::AtLeastOnce,
            true,
            "gone soon",
            expiring,
        )
        .await
        .unwrap();
    alice
        .publish("chat/keeps", QoS::AtLeastOnce, true, "stays")
        .await
        .unwrap();

    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            next(&mut bob_el, Duration::from_secs(30))
                .await
                .expect("bob's delivery"),
        );
    }
    assert_eq!(
        got,
        [
            ("chat/room".into(), "first".into()),
            ("chat/room".into(), "second".into()),
            ("chat/expiring".into(), "gone soon".into()),
            ("chat/keeps".into(), "stays".into()),
        ]
    );
    // No Local: Alice gets none of her own publishes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(own_rx.try_recv().is_err(), "Alice got her own publish");

    // After the expiry, a new subscriber gets only the retained message that did not expire.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (carol, mut carol_el) = client("carol");
    carol.subscribe("chat/+", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut carol_el).await;
    assert_eq!(
        next(&mut carol_el, Duration::from_secs(10)).await,
        Some(("chat/keeps".into(), "stays".into()))
    );
    assert_eq!(next(&mut carol_el, Duration::from_secs(2)).await, None);
    gw.stop().await;
}
