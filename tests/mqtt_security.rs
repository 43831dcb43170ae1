//! MQTT findings of the second security review (issue 20), each reproduced with a stock client
//! (mosquitto_pub/mosquitto_sub, or a raw socket where the client must misbehave on purpose):
//! client-supplied `barnabas.*` user properties, a SUBSCRIBE repeating one filter 70 000 times,
//! retained messages and read ACLs, client ids bound to their principal, bounded per-client
//! state, QoS 2 de-duplication across a reconnect, and wills at shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use barnabas::config::{AclConfig, Config, MqttMapping};
use common::{
    free_addr, free_port, gateway, mosquitto, mosquitto_async,
    raw_mqtt::{all, connack, connect_v311, packet, read_packet, string, suback},
    text, Gateway,
};

fn addr(gw: &gateway::TestGateway) -> SocketAddr {
    gw.gateway.mqtt_addr().unwrap()
}

/// Users alice, bob and carol (password = name + `-pw`); ACLs: alice reads and writes
/// everything and may use any group, bob reads only `commands.bob`, carol writes every
/// `commands.*` topic and reads `commands.carol`. MQTT `devices/{device}/commands` →
/// `commands.{device}`.
fn three_users(dir: &std::path::Path) -> impl FnOnce(&mut Config) {
    let users = dir.join("users.toml");
    let mut text = String::new();
    for name in ["alice", "bob", "carol"] {
        text.push_str(&format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = \"{}\"\n\n",
            common::hash_password(&format!("{name}-pw"))
        ));
    }
    std::fs::write(&users, text).unwrap();
    move |c: &mut Config| {
        c.auth.mode = "users".into();
        c.auth.users_file = users.display().to_string();
        c.acl = vec![
            AclConfig {
                principal: "alice".into(),
                allow: vec!["read:*".into(), "write:*".into(), "group:*".into()],
            },
            AclConfig {
                principal: "bob".into(),
                allow: vec!["read:commands.bob".into(), "group:*".into()],
            },
            AclConfig {
                principal: "carol".into(),
                allow: vec![
                    "write:commands.*".into(),
                    "read:commands.carol".into(),
                    "group:*".into(),
                ],
            },
        ];
        c.mqtt.mapping = vec![MqttMapping {
            pattern: "devices/{device}/commands".into(),
            kafka_topic: "commands.{device}".into(),
            key: Some("{device}".into()),
        }];
        c.mqtt.topic_refresh_ms = barnabas::config::Millis(300);
    }
}

fn login(user: &str) -> [String; 4] {
    ["-u".into(), user.into(), "-P".into(), format!("{user}-pw")]
}

fn with(base: &[&str], extra: &[String]) -> Vec<String> {
    base.iter()
        .map(|a| (*a).to_owned())
        .chain(extra.iter().cloned())
        .collect()
}

/// [`mosquitto`] with owned arguments.
fn mq(tool: &str, addr: SocketAddr, args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    mosquitto(tool, addr, &refs)
}

/// [`mosquitto_async`] with owned arguments.
fn mq_async(
    tool: &'static str,
    addr: SocketAddr,
    args: &[String],
) -> impl std::future::Future<Output = std::process::Output> + 'static {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    mosquitto_async(tool, addr, &refs)
}

// ---------------------------------------------------------------------------------------
// 1. Client-supplied `barnabas.*` user properties; unchecked expiry arithmetic.

/// Before: the property shadowed the gateway's expiry header, every subscriber of the Kafka
/// topic panicked (`overflow when adding duration to instant`) and never received anything
/// after it. After: the property is dropped on the way in, the record is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_barnabas_property_is_dropped_and_crashes_no_subscriber() {
    let gw = gateway::start(|_| {}).await;
    let a = addr(&gw);
    let sub = tokio::spawn(mosquitto_async(
        "mosquitto_sub",
        a,
        &[
            "-V", "5", "-i", "b1", "-c", "-x", "3600", "-q", "1", "-t", "any/#", "-v", "-C", "2",
            "-W", "30",
        ],
    ));
    gw.wait_for_metric("barnabas_mqtt_subscriptions 1", "b1 subscribed")
        .await;
    let out = mosquitto(
        "mosquitto_pub",
        a,
        &[
            "-V",
            "5",
            "-q",
            "1",
            "-t",
            "any/x",
            "-m",
            "boom",
            "-D",
            "publish",
            "user-property",
            "barnabas.mqtt.message_expiry",
            "18446744073709551615",
            "-D",
            "publish",
            "user-property",
            "unit",
            "celsius",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = mosquitto(
        "mosquitto_pub",
        a,
        &["-V", "5", "-q", "1", "-t", "any/y", "-m", "fine"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let got = sub.await.unwrap();
    let lines = String::from_utf8_lossy(&got.stdout).into_owned();
    assert_eq!(lines, "any/x boom\nany/y fine\n", "{}", text(&got));

    // The record in Kafka has the client's own property, not the forged one.
    let records = common::read_topic(&gw, "mqtt", 1).await;
    let headers = &records[0].headers;
    assert!(headers.iter().any(|h| h.key == "unit"), "{headers:?}");
    assert!(
        !headers
            .iter()
            .any(|h| h.key == "barnabas.mqtt.message_expiry"),
        "{headers:?}"
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. One SUBSCRIBE repeating `#` 70 000 times, a retained message, no PUBACK.

/// A raw 3.1.1 connection that got CONNACK 0; `session_present` returned.
fn raw_connect(addr: SocketAddr, client_id: &str, clean: bool) -> (TcpStream, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&connect_v311(client_id, clean, None)).unwrap();
    let (kind, body) = read_packet(&mut s).expect("CONNACK");
    assert_eq!((kind, body[1]), (0x20, 0), "CONNACK accepted");
    (s, body[0] & 1 == 1)
}

/// CPU seconds (user + system) the process `pid` used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Before: 65 535 retained deliveries went out, then the packet-id search looped without an
/// await and one core stayed busy after the client had gone. After: the filters are one
/// subscription, one retained delivery is sent, and the gateway is idle once the client left.
#[test]
fn a_subscribe_repeating_one_filter_70000_times_leaves_no_core_spinning() {
    let http = free_addr();
    let mqtt = free_addr();
    let kafka = format!("127.0.0.1:{}", free_port());
    let args = [
        format!("--embedded-kafka={kafka}"),
        "--http-listen".into(),
        http.to_string(),
        "--mqtt-listen".into(),
        mqtt.to_string(),
        "--amqp-listen".into(),
        "off".into(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gw = Gateway::spawn(&refs, &[]);
    gw.wait_for_line("barnabas ready", Duration::from_secs(60));
    let out = mosquitto(
        "mosquitto_pub",
        mqtt,
        &["-q", "1", "-r", "-t", "kept/1", "-m", "retained"],
    );
    // What the idle (debug-built) gateway and its embedded broker use anyway.
    let pid = gw.child.id();
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(4));
    let idle = cpu_seconds(pid) - before;
    assert!(out.status.success(), "{}", text(&out));

    let (mut s, _) = raw_connect(mqtt, "spinner", true);
    let mut body = 1u16.to_be_bytes().to_vec();
    for _ in 0..70_000 {
        string("#", &mut body);
        body.push(1);
    }
    s.write_all(&packet(0x82, &body)).unwrap();
    let (kind, codes) = read_packet(&mut s).expect("SUBACK");
    assert_eq!(kind, 0x90);
    let codes = &codes[2..];
    // Read whatever comes for a while and never acknowledge it.
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut publishes = 0usize;
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        match read_packet(&mut s) {
            Some((k, _)) if k >> 4 == 3 => publishes += 1,
            Some(_) => {}
            None => break,
        }
    }
    drop(s);
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_seconds(pid) - before;
    // A spinning worker adds a whole core (4 s in 4 s).
    assert!(
        used < idle + 1.5,
        "gateway used {used:.2} s of CPU in 4 s after the client left, {idle:.2} s when idle \
         ({publishes} publishes sent)"
    );
    // The documented SUBACK: one code per filter as sent, each granted QoS 1.
    assert_eq!(codes.len(), 70_000);
    assert!(codes.iter().all(|c| *c == 1), "every repeat granted");
    assert_eq!(
        publishes, 1,
        "one retained delivery for one distinct filter"
    );
    let (_, metrics) = common::http_get(http, "/metrics");
    assert!(
        metrics.contains("barnabas_mqtt_connections 0"),
        "session gone: {metrics}"
    );
    assert!(!gw.stderr().iter().any(|l| l.contains("panicked")));
}

// ---------------------------------------------------------------------------------------
// 3. Retained messages and read ACLs.

/// Before: bob, granted only `read:commands.bob`, received carol's retained command through
/// `devices/+/commands`. After: only the retained message of a topic he may read.
#[tokio::test(flavor = "multi_thread")]
async fn retained_messages_go_only_to_subscribers_that_may_read_their_topic() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(three_users(dir.path())).await;
    let a = addr(&gw);
    for (device, payload) in [("bob", "for-bob"), ("carol", "for-carol")] {
        let topic = format!("devices/{device}/commands");
        let l = login("carol");
        let args = with(
            &["-V", "5", "-q", "1", "-r", "-t", &topic, "-m", payload],
            &l,
        );
        let out = mq("mosquitto_pub", a, &args);
        assert!(out.status.success(), "{}", text(&out));
    }
    let l = login("bob");
    let args = with(
        &[
            "-V",
            "5",
            "-q",
            "1",
            "-t",
            "devices/+/commands",
            "-v",
            "-W",
            "4",
        ],
        &l,
    );
    let out = mq("mosquitto_sub", a, &args);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(got, "devices/bob/commands for-bob\n", "{}", text(&out));
    gw.stop().await;
}

/// Read ACLs on subscriptions (docs/security.md §Authorization): a 3.1.1 SUBSCRIBE to a
/// topic the mapping names and bob may not read gets SUBACK 0x80; through the template rule
/// (`devices/+/commands` → `commands.{device}`) he is granted, and `commands.carol` is left
/// out: of carol's command and his own, written in that order, he receives only his own
/// (nothing more comes within 2 s of it).
#[tokio::test(flavor = "multi_thread")]
async fn a_v311_subscribe_to_an_unreadable_topic_is_refused_and_a_template_leaves_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(three_users(dir.path())).await;
    let a = addr(&gw);
    let publish = |device: &str, payload: &str| {
        let topic = format!("devices/{device}/commands");
        let args = with(
            &["-V", "5", "-q", "1", "-t", &topic, "-m", payload],
            &login("alice"),
        );
        let out = mq("mosquitto_pub", a, &args);
        assert!(out.status.success(), "{}", text(&out));
    };
    // Both Kafka topics exist before bob subscribes.
    publish("carol", "warm");
    publish("bob", "warm");
    let bob = login("bob");
    let out = mq(
        "mosquitto_sub",
        a,
        &with(
            &[
                "-V",
                "311",
                "-q",
                "1",
                "-t",
                "devices/carol/commands",
                "-d",
                "-E",
            ],
            &bob,
        ),
    );
    assert_eq!(suback(&all(&out)), [0x80], "{}", all(&out));
    let mut opts = rumqttc::MqttOptions::new("bob-sub", a.ip().to_string(), a.port());
    opts.set_credentials("bob", "bob-pw");
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    client
        .subscribe("devices/+/commands", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) = el.poll().await.unwrap() {
            assert_eq!(
                s.return_codes,
                [rumqttc::SubscribeReasonCode::Success(
                    rumqttc::QoS::AtLeastOnce
                )]
            );
            break;
        }
    }
    publish("carol", "for-carol");
    publish("bob", "for-bob");
    let mut got = Vec::new();
    while let Some(p) = common::next_publish(&mut el, Duration::from_secs(2)).await {
        got.push(format!(
            "{} {}",
            p.topic,
            String::from_utf8_lossy(&p.payload)
        ));
    }
    assert_eq!(got, ["devices/bob/commands for-bob"]);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. Client ids bound to their principal.

/// Before: bob, connecting with alice's persistent client id, took her session and received
/// her queued message. After: CONNACK 0x87 (v5) / 5 (3.1.1), and the session stays hers.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_id_belongs_to_the_principal_that_holds_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(three_users(dir.path())).await;
    let a = addr(&gw);
    let alice = login("alice");
    let bob = login("bob");
    let session = [
        "-V", "5", "-i", "dev-1", "-c", "-x", "3600", "-q", "1", "-t", "a/#",
    ];
    let out = mq(
        "mosquitto_sub",
        a,
        &with(&[&session[..], &["-E"]].concat(), &alice),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = mq(
        "mosquitto_pub",
        a,
        &with(&["-V", "5", "-q", "1", "-t", "a/x", "-m", "queued"], &alice),
    );
    assert!(out.status.success(), "{}", text(&out));

    // bob, v5 and 3.1.1, with alice's stored session's client id.
    let v5 = mq(
        "mosquitto_sub",
        a,
        &with(
            &[&session[..], &["-d", "-v", "-C", "1", "-W", "3"]].concat(),
            &bob,
        ),
    );
    assert_eq!(connack(&all(&v5)), Some(0x87), "{}", all(&v5));
    assert!(!all(&v5).contains("queued"));
    let v3 = mq(
        "mosquitto_sub",
        a,
        &with(
            &[
                "-V", "311", "-i", "dev-1", "-c", "-q", "1", "-t", "a/#", "-d", "-C", "1", "-W",
                "3",
            ],
            &bob,
        ),
    );
    assert_eq!(connack(&all(&v3)), Some(5), "{}", all(&v3));

    // alice's live connection is not taken over by bob either.
    let live = tokio::spawn(mq_async(
        "mosquitto_sub",
        a,
        &with(
            &[&session[..], &["-v", "-C", "2", "-W", "30"]].concat(),
            &alice,
        ),
    ));
    gw.wait_for_metric("barnabas_mqtt_connections 1", "alice back")
        .await;
    let v5 = mq(
        "mosquitto_sub",
        a,
        &with(
            &[&session[..], &["-d", "-C", "1", "-W", "3"]].concat(),
            &bob,
        ),
    );
    assert_eq!(connack(&all(&v5)), Some(0x87), "{}", all(&v5));
    let out = mq(
        "mosquitto_pub",
        a,
        &with(&["-V", "5", "-q", "1", "-t", "a/y", "-m", "live"], &alice),
    );
    assert!(out.status.success(), "{}", text(&out));
    let got = live.await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "a/x queued\na/y live\n",
        "{}",
        text(&got)
    );
    gw.stop().await;
}

/// The value of a gauge or counter line on `/metrics`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
}

/// Before: a restored session kept a `$share` subscription whose group its principal was no
/// longer granted. After: restoring checks every stored subscription against the current
/// ACLs and drops what fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_restored_session_keeps_only_what_its_principal_may_still_use() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::broker::start().await;
    let gw = gateway::start_on(Some(broker.bootstrap()), three_users(dir.path())).await;
    let alice = login("alice");
    let session = ["-V", "5", "-i", "keep", "-c", "-x", "3600", "-q", "1"];
    let out = mq(
        "mosquitto_sub",
        addr(&gw),
        &with(
            &[&session[..], &["-t", "$share/g1/s/#", "-E"]].concat(),
            &alice,
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    gw.stop().await;

    // Same users, but alice may no longer use any consumer group.
    let tweak = three_users(dir.path());
    let gw = gateway::start_on(Some(broker.bootstrap()), |c| {
        tweak(c);
        c.acl[0].allow = vec!["read:*".into(), "write:*".into()];
    })
    .await;
    let a = addr(&gw);
    let sub = tokio::spawn(mq_async(
        "mosquitto_sub",
        a,
        &with(
            &[&session[..], &["-t", "other/none", "-v", "-W", "15"]].concat(),
            &alice,
        ),
    ));
    gw.wait_for_metric("barnabas_mqtt_connections 1", "alice back")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let subscriptions = metric(&gw.metrics().await, "barnabas_mqtt_subscriptions");
    while !sub.is_finished() {
        let out = mq(
            "mosquitto_pub",
            a,
            &with(&["-V", "5", "-q", "1", "-t", "s/x", "-m", "shared"], &alice),
        );
        assert!(out.status.success(), "{}", text(&out));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got = sub.await.unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "", "{}", text(&got));
    assert_eq!(
        subscriptions, 1.0,
        "only other/none; the share group dropped"
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. Bounded per-client state.

/// Before: any number of persistent sessions, retained bytes and share-group consumers per
/// connection, and a will payload above `limits.max_message_bytes`. After: each is refused
/// with the documented code.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_retained_bytes_consumers_and_will_payloads_are_bounded() {
    let gw = gateway::start(|c| {
        c.limits.max_message_bytes = 1000;
        c.limits.max_sessions = 2;
        c.limits.max_retained_bytes = 10;
        c.limits.max_consumers_per_connection = 2;
    })
    .await;
    let a = addr(&gw);

    // Will payload over max_message_bytes: v5 CONNACK 0x95; 3.1.1 closed without CONNACK 0.
    let big = "w".repeat(2000);
    // (-W: mosquitto_sub reconnects after a close without CONNACK.)
    let will = [
        "--will-topic",
        "w/x",
        "--will-payload",
        &big,
        "-t",
        "x",
        "-d",
        "-E",
        "-W",
        "3",
    ];
    let out = mosquitto("mosquitto_sub", a, &[&["-V", "5"][..], &will].concat());
    assert_eq!(connack(&all(&out)), Some(0x95), "{}", all(&out));
    let out = mosquitto("mosquitto_sub", a, &[&["-V", "311"][..], &will].concat());
    assert_ne!(connack(&all(&out)), Some(0), "{}", all(&out));
    // One of exactly max_message_bytes is a will like any other (the bound is "above").
    let limit = "w".repeat(1000);
    let will_at_limit = [
        "--will-topic",
        "w/x",
        "--will-payload",
        &limit,
        "-t",
        "x",
        "-d",
        "-E",
    ];
    let out = mosquitto(
        "mosquitto_sub",
        a,
        &[&["-V", "5"][..], &will_at_limit].concat(),
    );
    assert_eq!(connack(&all(&out)), Some(0), "{}", all(&out));

    // Sessions: two persistent ones fit, a third is refused; clean ones and the two known
    // client ids still connect.
    for id in ["s1", "s2"] {
        let out = mosquitto(
            "mosquitto_sub",
            a,
            &[
                "-V", "5", "-i", id, "-c", "-x", "600", "-t", "x", "-d", "-E",
            ],
        );
        assert_eq!(connack(&all(&out)), Some(0), "{}", all(&out));
    }
    let out = mosquitto(
        "mosquitto_sub",
        a,
        &[
            "-V", "5", "-i", "s3", "-c", "-x", "600", "-t", "x", "-d", "-E",
        ],
    );
    assert_eq!(connack(&all(&out)), Some(0x97), "{}", all(&out));
    let out = mosquitto(
        "mosquitto_sub",
        a,
        &["-V", "311", "-i", "s4", "-c", "-t", "x", "-d", "-E"],
    );
    assert_eq!(connack(&all(&out)), Some(3), "{}", all(&out));
    for args in [
        &["-V", "5", "-i", "c1", "-t", "x", "-d", "-E"][..],
        &[
            "-V", "5", "-i", "s1", "-c", "-x", "600", "-t", "x", "-d", "-E",
        ][..],
    ] {
        let out = mosquitto("mosquitto_sub", a, args);
        assert_eq!(connack(&all(&out)), Some(0), "{}", all(&out));
    }

    // Retained bytes: 8 bytes fit, 5 more do not (PUBACK 0x97, nothing retained); replacing
    // the 8 with 10 fits.
    let pub_retained = |topic: &str, payload: &str| {
        let out = mosquitto(
            "mosquitto_pub",
            a,
            &["-V", "5", "-q", "1", "-r", "-t", topic, "-m", payload, "-d"],
        );
        all(&out)
    };
    assert!(pub_retained("r/a", "12345678").contains("RC:0"));
    let refused = pub_retained("r/b", "12345");
    assert!(refused.contains("RC:151"), "{refused}");
    assert!(pub_retained("r/a", "1234567890").contains("RC:0"));
    let out = mosquitto(
        "mosquitto_sub",
        a,
        &["-V", "5", "-t", "r/#", "-v", "-W", "3"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "r/a 1234567890\n",
        "{}",
        text(&out)
    );

    // Kafka consumers per connection: two share groups, the third gets 0x97 (v5) / 0x80.
    let groups = [
        "-t",
        "$share/g1/x",
        "-t",
        "$share/g2/x",
        "-t",
        "$share/g3/x",
        "-t",
        "$share/g1/y",
        "-d",
        "-E",
    ];
    let out = mosquitto("mosquitto_sub", a, &[&["-V", "5"][..], &groups].concat());
    assert_eq!(suback(&all(&out)), vec![0, 0, 0x97, 0], "{}", all(&out));
    let out = mosquitto("mosquitto_sub", a, &[&["-V", "311"][..], &groups].concat());
    assert_eq!(suback(&all(&out)), vec![0, 0, 0x80, 0], "{}", all(&out));
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// 6. QoS 2 de-duplication across a reconnect.

/// A 3.1.1 QoS 2 PUBLISH.
fn publish_qos2(topic: &str, id: u16, payload: &[u8], dup: bool) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic, &mut body);
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x34 | if dup { 0x08 } else { 0 }, &body)
}

/// Before: a QoS 2 PUBLISH resent (DUP) after a reconnect, its PUBREL not yet sent, was
/// written to Kafka a second time. After: the persistent session remembers the packet id.
#[tokio::test(flavor = "multi_thread")]
async fn a_qos2_publish_resent_after_a_reconnect_is_written_once() {
    let gw = gateway::start(|_| {}).await;
    let a = addr(&gw);
    tokio::task::spawn_blocking(move || {
        let (mut s, _) = raw_connect(a, "q2", false);
        s.write_all(&publish_qos2("q/x", 7, b"once", false))
            .unwrap();
        let (kind, body) = read_packet(&mut s).expect("PUBREC");
        assert_eq!((kind, &body[..]), (0x50, &[0u8, 7][..]));
        drop(s);
        std::thread::sleep(Duration::from_millis(500));
        let (mut s, present) = raw_connect(a, "q2", false);
        assert!(present, "session present");
        s.write_all(&publish_qos2("q/x", 7, b"once", true)).unwrap();
        let (kind, _) = read_packet(&mut s).expect("PUBREC again");
        assert_eq!(kind, 0x50);
        s.write_all(&[0x62, 2, 0, 7]).unwrap();
        let (kind, _) = read_packet(&mut s).expect("PUBCOMP");
        assert_eq!(kind, 0x70);
        s.write_all(&[0xe0, 0]).unwrap();
    })
    .await
    .unwrap();
    let out = mosquitto("mosquitto_pub", a, &["-q", "1", "-t", "q/y", "-m", "after"]);
    assert!(out.status.success(), "{}", text(&out));
    let records = common::read_topic(&gw, "mqtt", 2).await;
    let values: Vec<_> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(values, ["once", "after"]);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// 7. Wills at shutdown.

/// Before: a graceful shutdown closed every connection as if by DISCONNECT, and no will was
/// published. After: the will of a client still connected is written before the gateway stops.
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_publishes_the_wills_of_connected_clients() {
    let broker = common::broker::start().await;
    let gw = gateway::start_on(Some(broker.bootstrap()), |_| {}).await;
    let a = addr(&gw);
    let sub = tokio::spawn(mosquitto_async(
        "mosquitto_sub",
        a,
        &[
            "-i",
            "willer",
            "--will-topic",
            "w/gone",
            "--will-payload",
            "bye",
            "--will-qos",
            "1",
            "-t",
            "nothing",
            "-W",
            "30",
        ],
    ));
    gw.wait_for_metric("barnabas_mqtt_connections 1", "willer connected")
        .await;
    gw.stop().await;
    let _ = sub.await;
    let gw = gateway::start_on(Some(broker.bootstrap()), |_| {}).await;
    let records = common::read_topic(&gw, "mqtt", 1).await;
    assert_eq!(records.len(), 1, "the will was written");
    assert_eq!(records[0].value.as_deref(), Some(&b"bye"[..]));
    gw.stop().await;
}

/// A will is published with its client's rights (docs/security.md §Authorization): bob, who
/// may write nothing, leaves a will on `devices/x/commands` (→ `commands.x`) with v5
/// DISCONNECT 0x04 and nothing of his is written; carol, who may write `commands.*`, leaves
/// the same will and it is written (the positive control). Each connection is closed after
/// its will was handled, so alice's marker written then follows any will in the partition.
#[tokio::test(flavor = "multi_thread")]
async fn a_will_is_published_with_its_clients_rights() {
    use common::raw_mqtt::{connect_v5, connected, Will};
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(three_users(dir.path())).await;
    let a = addr(&gw);
    for user in ["bob", "carol"] {
        let password = format!("{user}-pw");
        let will = Will {
            topic: "devices/x/commands",
            payload: &format!("{user}'s will"),
            delay: 0,
        };
        let mut s = connected(
            a,
            &connect_v5(
                &format!("{user}-will"),
                0,
                Some(will),
                Some((user, &password)),
            ),
        );
        s.write_all(&[0xe0, 1, 0x04]).unwrap();
        let closed = s.read(&mut [0u8; 1]);
        assert!(matches!(closed, Ok(0)), "{user}: not closed: {closed:?}");
    }
    common::produce(&gw, "commands.x", "x", "marker").await;
    let c = common::consumer_of(&gw, "commands.x").await;
    let got = common::poll_until(c.as_ref(), Duration::from_secs(30), |got| {
        got.iter()
            .any(|(r, _)| r.value.as_deref() == Some(b"marker"))
    })
    .await;
    let values: Vec<String> = got
        .iter()
        .filter_map(|(r, _)| r.value.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(values, ["carol's will", "marker"]);
    gw.stop().await;
}

/// `limits.max_subscriptions` (docs/security.md §Limits): a filter beyond it gets SUBACK 0x97
/// (v5) / 0x80 (3.1.1); a repeated filter is the same subscription and still gets its code.
#[tokio::test(flavor = "multi_thread")]
async fn filters_beyond_max_subscriptions_get_quota_exceeded() {
    let gw = gateway::start(|c| c.limits.max_subscriptions = 2).await;
    let a = addr(&gw);
    let filters = ["-t", "a", "-t", "b", "-t", "a", "-t", "c", "-d", "-E"];
    let out = mosquitto("mosquitto_sub", a, &[&["-V", "5"][..], &filters].concat());
    assert_eq!(suback(&all(&out)), vec![0, 0, 0, 0x97], "{}", all(&out));
    let out = mosquitto("mosquitto_sub", a, &[&["-V", "311"][..], &filters].concat());
    assert_eq!(suback(&all(&out)), vec![0, 0, 0, 0x80], "{}", all(&out));
    gw.stop().await;
}

/// `auth.mode = "none"` (docs/security.md §Principals): an MQTT user name still names the
/// principal, unchecked, so ACLs can be tried out: `alice` with any password may write what
/// her rule grants (PUBACK 0), a client without a user name (`anonymous`) may not (0x87).
#[tokio::test(flavor = "multi_thread")]
async fn with_auth_mode_none_a_user_name_names_the_principal_unchecked() {
    let gw = gateway::start(|c| {
        c.acl = vec![AclConfig {
            principal: "alice".into(),
            allow: vec!["write:mqtt".into()],
        }];
    })
    .await;
    let a = addr(&gw);
    let publish = |login: &[&str]| {
        let base = ["-V", "5", "-q", "1", "-t", "try/out", "-m", "x", "-d"];
        all(&mosquitto("mosquitto_pub", a, &[&base[..], login].concat()))
    };
    let alice = publish(&["-u", "alice", "-P", "not-checked"]);
    assert!(alice.contains("received PUBACK (Mid: 1, RC:0)"), "{alice}");
    let anonymous = publish(&[]);
    assert!(
        anonymous.contains("received PUBACK (Mid: 1, RC:135)"),
        "{anonymous}"
    );
    gw.stop().await;
}
