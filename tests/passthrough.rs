//! Identity passthrough (`kafka.identity = "passthrough"`, issue 10): each client's writes
//! reach Kafka logged in as the client. The embedded broker here requires SASL and verifies
//! SCRAM-SHA-256 logins against credentials stored in it (tansu checks SCRAM passwords; it
//! accepts any PLAIN password and has no authorizer, so Kafka ACLs themselves cannot be shown
//! here — that a login is the client's own is what the broker verifies).
//!
//! Stored in Kafka (SCRAM-SHA-256, as AlterUserScramCredentials stores them): `barnabas` (the
//! gateway's own login) and `device-1` with the same password as in the gateway's users file. `reader` can log in to the gateway but has no Kafka
//! credential: were its writes made as the gateway they would succeed; passed through they
//! must fail.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;

use barnabas::config::Config;
use common::{gateway, mosquitto_async, read_topic};
use serde_json::Value;

const JSON: &str = "content-type: application/vnd.kafka.json.v2+json";
const V2: &str = "content-type: application/vnd.kafka.v2+json";
const ACCEPT_JSON: &str = "accept: application/vnd.kafka.json.v2+json";

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn passthrough(dir: &std::path::Path, bootstrap: String) -> impl FnOnce(&mut Config) {
    let users = common::write_test_users(dir);
    move |c: &mut Config| {
        common::configure_passthrough(c, &users);
        c.kafka.bootstrap_servers = bootstrap;
        c.kafka.produce_timeout_ms = 4_000;
    }
}

/// The SASL broker with the gateway's and device-1's SCRAM credentials stored, and a
/// passthrough gateway on it (`tweak` applied last).
async fn broker_and_gateway(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut Config),
) -> (barnabas::embedded::EmbeddedKafka, gateway::TestGateway) {
    if std::env::var_os("RUST_LOG").is_some() {
        barnabas::logging::init(barnabas::cli::LogFormat::Text);
    }
    let broker = common::broker::start_sasl().await;
    let bootstrap = broker.bootstrap();
    broker
        .add_scram_user("barnabas", "gateway-pw")
        .await
        .unwrap();
    broker.add_scram_user("device-1", "s3cret").await.unwrap();
    let configure = passthrough(dir, bootstrap.clone());
    let gw = gateway::start_on(Some(bootstrap), |c| {
        configure(c);
        tweak(c);
    })
    .await;
    (broker, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_protocol_writes_as_its_client_and_kafka_verifies_the_login() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, gw) = broker_and_gateway(dir.path(), |_| {}).await;
    let url = |path: &str| format!("{}{path}", gw.base);
    let produce = |login: Vec<String>, value: &'static str| {
        let url = url("/topics/passthrough");
        async move {
            tokio::task::spawn_blocking(move || {
                let body = format!(r#"{{"records":[{{"value":"{value}"}}]}}"#);
                let mut args: Vec<&str> = vec!["-X", "POST", "-H", JSON, "--data", &body];
                args.extend(login.iter().map(String::as_str));
                args.push(&url);
                curl(&args)
            })
            .await
            .unwrap()
        }
    };

    // HTTP Basic as device-1: its own Kafka login, written.
    let (status, body) = produce(vec!["-u".into(), "device-1:s3cret".into()], "http").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["offsets"][0]["offset"].is_i64(), "{body}");

    // reader logs in to the gateway, but Kafka does not know it: no offset, an error.
    let (status, body) = produce(vec!["-u".into(), "reader:reader-pw".into()], "not-written").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["offsets"][0]["offset"].is_null(), "{body}");
    assert!(v["offsets"][0]["error_code"].is_u64(), "{body}");

    // A bearer token carries no password to log in to Kafka with: 403, nothing written.
    let (status, body) = produce(
        vec!["-H".into(), "authorization: Bearer token-1".into()],
        "token",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["offsets"][0]["error_code"], 403, "{body}");

    // MQTT (mosquitto_pub) and AMQP (python3-qpid-proton, SASL PLAIN) as device-1.
    let mqtt = gw.gateway.mqtt_addr().unwrap();
    const AS_DEVICE: [&str; 6] = ["-u", "device-1", "-P", "s3cret", "-q", "1"];
    let device_publishes = |message: &str| {
        let mut args = AS_DEVICE.to_vec();
        args.extend(["-t", "devices/device-1/telemetry", "-m", message]);
        mosquitto_async("mosquitto_pub", mqtt, &args)
    };
    let out = device_publishes("mqtt").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let amqp = gw.gateway.amqp_addr().unwrap();
    let out = common::system_python_async(
        "amqp_proton.py",
        &[
            "send",
            &format!("amqp://device-1:s3cret@{amqp}"),
            "passthrough",
            "1",
        ],
    )
    .await;
    assert!(out.contains(r#""accepted": 1"#), "{out}");

    // What device-1 wrote is in Kafka; reader's and the token's writes are not.
    let got = read_topic(&gw, "passthrough", 2).await;
    let values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(values.len(), 2, "{values:?}");
    assert!(values.iter().any(|v| v.contains("http")), "{values:?}");
    assert!(values.iter().any(|v| v.contains("proton")), "{values:?}");
    let high = gw
        .gateway
        .backend()
        .admin
        .watermarks("passthrough", 0)
        .await
        .unwrap()
        .high;
    assert_eq!(
        high, 2,
        "only device-1's two writes are in the topic: {values:?}"
    );
    assert_eq!(read_topic(&gw, "mqtt", 1).await.len(), 1);

    // Reads pass through too. An HTTP consumer of device-1 reads what is there.
    let http = |login: &'static [&'static str],
                method: &'static str,
                path: String,
                body: Option<&'static str>| {
        let url = url(&path);
        async move {
            tokio::task::spawn_blocking(move || {
                let mut args: Vec<&str> = vec!["-X", method];
                args.extend_from_slice(login);
                match body {
                    Some(b) => args.extend(["-H", V2, "--data", b]),
                    None => args.extend(["-H", ACCEPT_JSON]),
                }
                args.push(&url);
                curl(&args)
            })
            .await
            .unwrap()
        }
    };
    const DEVICE: &[&str] = &["-u", "device-1:s3cret"];
    const READER: &[&str] = &["-u", "reader:reader-pw"];
    const TOKEN: &[&str] = &["-H", "authorization: Bearer token-1"];
    let new_consumer = r#"{"name":"c","format":"json","auto.offset.reset":"earliest"}"#;
    let subscribe = r#"{"topics":["passthrough"]}"#;
    for (login, group) in [(DEVICE, "pt-device"), (READER, "pt-reader")] {
        let (status, body) = http(
            login,
            "POST",
            format!("/consumers/{group}"),
            Some(new_consumer),
        )
        .await;
        assert_eq!(status, 200, "{group}: {body}");
        let path = format!("/consumers/{group}/instances/c/subscription");
        let (status, body) = http(login, "POST", path, Some(subscribe)).await;
        assert_eq!(status, 204, "{group}: {body}");
    }
    let records = |group: &'static str, login: &'static [&'static str]| {
        http(
            login,
            "GET",
            format!("/consumers/{group}/instances/c/records?timeout=1000"),
            None,
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let got = loop {
        let (status, body) = records("pt-device", DEVICE).await;
        assert_eq!(status, 200, "device-1 reads as itself: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v.as_array().is_some_and(|a| a.len() >= 2) {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "device-1 read: {body}"
        );
    };
    assert!(got.to_string().contains("http"), "{got}");
    // reader: Kafka refuses its consumer's login; its poll says so (403), and reads nothing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let (status, body) = records("pt-reader", READER).await;
        if status == 403 {
            assert!(body.contains("Kafka refused the login"), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.trim(), "[]", "reader read as someone else: {body}");
        assert!(
            std::time::Instant::now() < deadline,
            "reader's refusal never came: {body}"
        );
    }
    // A bearer token has no Kafka login to read with either: 403 at creation.
    let (status, body) = http(
        TOKEN,
        "POST",
        "/consumers/pt-token".into(),
        Some(new_consumer),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // MQTT: device-1 subscribes (mosquitto_sub) and receives what it publishes next.
    let mut args = AS_DEVICE.to_vec();
    args.extend([
        "-i",
        "pt-sub",
        "-t",
        "devices/device-1/telemetry",
        "-C",
        "1",
        "-W",
        "30",
    ]);
    let sub = tokio::spawn(mosquitto_async("mosquitto_sub", mqtt, &args));
    gw.wait_for_metric("barnabas_mqtt_subscriptions 1", "mosquitto_sub subscribed")
        .await;
    let out = device_publishes("read-back").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sub.await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "read-back",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // reader's subscription is granted (Kafka is asked only when reading), then Kafka refuses
    // its consumer's login: an MQTT 5 client gets DISCONNECT 0x87 "not authorized" (135,
    // as mosquitto_sub -d prints it).
    let started = std::time::Instant::now();
    let out = mosquitto_async(
        "mosquitto_sub",
        mqtt,
        &[
            "-V",
            "mqttv5",
            "-u",
            "reader",
            "-P",
            "reader-pw",
            "-q",
            "1",
            "-i",
            "pt-reader",
            "-d",
            "-t",
            "devices/reader/telemetry",
            "-C",
            "1",
            "-W",
            "30",
        ],
    )
    .await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // (mosquitto_sub's exit status after a DISCONNECT varies; what it received does not.)
    assert!(said.contains("Received DISCONNECT (135)"), "{said}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "disconnected, not timed out: {said}"
    );

    // AMQP: a python3-qpid-proton receiver as device-1 reads the topic.
    let out = common::system_python_async(
        "amqp_proton.py",
        &[
            "receive",
            &format!("amqp://device-1:s3cret@{amqp}"),
            "passthrough/group.id/pt-amqp",
            "2",
            "2",
            "30",
        ],
    )
    .await;
    assert!(out.contains("http") && out.contains("proton"), "{out}");
    // reader's receiver link is attached, then closed with amqp:unauthorized-access once
    // Kafka refused its consumer's login.
    let out = common::system_python_async(
        "amqp_proton.py",
        &[
            "try",
            &format!("amqp://reader:reader-pw@{amqp}"),
            "receive",
            "passthrough/group.id/pt-amqp-reader",
        ],
    )
    .await;
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], false, "{out}");
    assert!(
        v["error"].as_str().unwrap().contains("unauthorized-access"),
        "{out}"
    );
    gw.stop().await;
    broker.stop().await;
}

/// Passthrough refusals over MQTT (docs/security.md §Identity passthrough), each exact per
/// client: an anonymous client (no password, so no Kafka identity) gets v5 PUBACK 0x87 and a
/// 3.1.1 connection closed without PUBACK, and SUBACK failure 0x80 (both versions); `reader`, whom
/// Kafka does not know, gets a negative v5 PUBACK and nothing is written (as the gateway it
/// would be), and as a 3.1.1 subscriber is granted its SUBACK, then disconnected once Kafka
/// refused its consumer's login. device-1's publish, made between them, is the only record.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_refusals_under_passthrough_are_exact_per_client() {
    use common::raw_mqtt::{all, connack, connect_v311, read_packet, suback, subscribe};
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (broker, gw) = broker_and_gateway(dir.path(), |c| c.auth.allow_anonymous = true).await;
    let mqtt = gw.gateway.mqtt_addr().unwrap();
    let publish = |version: &'static str, login: &'static [&'static str], message: &'static str| {
        let mut args = vec![
            "-V",
            version,
            "-q",
            "1",
            "-d",
            "-t",
            "devices/d/telemetry",
            "-m",
            message,
        ];
        args.extend_from_slice(login);
        mosquitto_async("mosquitto_pub", mqtt, &args)
    };
    const READER: &[&str] = &["-u", "reader", "-P", "reader-pw"];
    const DEVICE: &[&str] = &["-u", "device-1", "-P", "s3cret"];

    let out = publish("mqttv5", &[], "anonymous-v5").await;
    assert_eq!(connack(&all(&out)), Some(0), "{}", all(&out));
    assert!(
        all(&out).contains("received PUBACK (Mid: 1, RC:135)"),
        "{}",
        all(&out)
    );
    let out = publish("mqttv311", &[], "anonymous-v3").await;
    assert_eq!(connack(&all(&out)), Some(0), "{}", all(&out));
    assert!(!out.status.success(), "{}", all(&out));
    assert!(!all(&out).contains("received PUBACK"), "{}", all(&out));
    let out = publish("mqttv5", DEVICE, "device").await;
    assert!(
        all(&out).contains("received PUBACK (Mid: 1, RC:0)"),
        "{}",
        all(&out)
    );
    let out = publish("mqttv5", READER, "reader-v5").await;
    let said = all(&out);
    let rc = said
        .split("received PUBACK (Mid: 1, RC:")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|rc| rc.parse::<u8>().ok());
    assert!(rc.is_some_and(|rc| rc >= 0x80), "negative PUBACK: {said}");
    for version in ["mqttv5", "mqttv311"] {
        let out = mosquitto_async(
            "mosquitto_sub",
            mqtt,
            &[
                "-V",
                version,
                "-t",
                "devices/d/telemetry",
                "-q",
                "1",
                "-d",
                "-E",
            ],
        )
        .await;
        // The SUBACK failure code (0x80 in both versions: the Kafka consumer was refused).
        assert_eq!(suback(&all(&out)), [0x80], "{version}: {}", all(&out));
    }
    // Only device-1's record was written.
    let got = read_topic(&gw, "mqtt", 1).await;
    assert_eq!(got[0].value.as_deref(), Some(b"device".as_slice()));
    let high = gw
        .gateway
        .backend()
        .admin
        .watermarks("mqtt", 0)
        .await
        .unwrap()
        .high;
    assert_eq!(high, 1, "only device-1's publish is in Kafka");

    // reader, MQTT 3.1.1 (raw: mosquitto_sub would reconnect): SUBACK granted, then closed.
    let mut s = common::raw_mqtt::connected(
        mqtt,
        &connect_v311("pt-reader-v3", true, Some(("reader", "reader-pw"))),
    );
    s.write_all(&subscribe("devices/d/telemetry", 1, false))
        .unwrap();
    assert_eq!(
        read_packet(&mut s),
        Some((0x90, vec![0, 1, 1])),
        "SUBACK granted"
    );
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let closed = s.read(&mut [0u8; 1]);
    assert!(
        matches!(closed, Ok(0)),
        "a 3.1.1 subscriber whose Kafka login is refused is disconnected: {closed:?}"
    );
    gw.stop().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------
// AMQP, SSE and configuration cases of identity passthrough (issue 22). The MQTT cases are
// above and in their own tests.

/// A broker that requires SASL, with the SCRAM credentials of `barnabas` (the gateway) and
/// `device-1` stored.
async fn sasl_broker() -> barnabas::embedded::EmbeddedKafka {
    let broker = common::broker::start_sasl().await;
    broker
        .add_scram_user("barnabas", "gateway-pw")
        .await
        .unwrap();
    broker.add_scram_user("device-1", "s3cret").await.unwrap();
    broker
}

/// A principal without a password (anonymous over AMQP, a bearer token over HTTP) has no Kafka
/// identity: its AMQP write is settled `rejected` with `amqp:unauthorized-access`, its AMQP
/// receiver link is closed with `amqp:unauthorized-access`, its SSE stream is 403 — never
/// made as the gateway (whose login Kafka would take). device-1, logging in with a password,
/// does each of them.
#[tokio::test(flavor = "multi_thread")]
async fn clients_without_a_password_are_refused_amqp_and_sse_under_passthrough() {
    let broker = sasl_broker().await;
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let configure = passthrough(dir.path(), bootstrap.clone());
    let gw = gateway::start_on(Some(bootstrap), |c| {
        configure(c);
        c.auth.allow_anonymous = true;
    })
    .await;
    let amqp = gw.gateway.amqp_addr().unwrap();
    let anonymous = format!("amqp://{amqp}");
    let device = format!("amqp://device-1:s3cret@{amqp}");
    const ANONYMOUS: &[(&str, &str)] = &[("AMQP_MECHS", "ANONYMOUS")];

    let a = common::proton_try_async(&device, "send", "pt-amqp", &[]).await;
    assert!(a.ok && a.outcome.as_deref() == Some("accepted"), "{a:?}");
    let a = common::proton_try_async(&anonymous, "send", "pt-amqp", ANONYMOUS).await;
    assert!(
        !a.ok
            && a.outcome.as_deref() == Some("rejected")
            && a.condition.as_deref() == Some("amqp:unauthorized-access"),
        "an anonymous write under passthrough: {a:?}"
    );
    let a = common::proton_try_async(&device, "receive", "pt-amqp/group.id/pt-dev", &[]).await;
    assert!(a.ok, "device-1 reads as itself: {a:?}");
    let a = common::proton_try_async(&anonymous, "receive", "pt-amqp/group.id/pt-anon", ANONYMOUS)
        .await;
    assert!(
        !a.ok
            && a.kind == "LinkDetached"
            && a.condition.as_deref() == Some("amqp:unauthorized-access"),
        "an anonymous read under passthrough: {a:?}"
    );
    let high = gw
        .gateway
        .backend()
        .admin
        .watermarks("pt-amqp", 0)
        .await
        .unwrap()
        .high;
    assert_eq!(high, 1, "only device-1's write is in the topic");

    // SSE: device-1 (Basic) streams; a bearer token has no password: 403.
    let events = format!("{}/topics/pt-amqp/events?from=earliest", gw.base);
    for (login, want) in [
        (["-u", "device-1:s3cret"], 200),
        (["-H", "authorization: Bearer token-1"], 403),
    ] {
        let (status, answer) = tokio::task::spawn_blocking({
            let events = events.clone();
            move || {
                common::curl_status(&[
                    login[0],
                    login[1],
                    "--max-time",
                    "3",
                    "-H",
                    "accept: text/event-stream",
                    &events,
                ])
            }
        })
        .await
        .unwrap();
        assert_eq!(status, want, "SSE as {login:?}: {answer}");
        if want == 200 {
            assert!(
                answer.contains("data:"),
                "device-1 read the record: {answer}"
            );
        }
    }
    gw.stop().await;
    broker.stop().await;
}

/// An AMQP transfer reaches Kafka logged in as its client: `reader` logs in to the gateway
/// (SASL PLAIN) but Kafka does not know it, so its transfer is settled `rejected` (Kafka
/// refused the login) and nothing is written, where the gateway's own login (which Kafka
/// takes) would have written it; device-1's transfer after it is `accepted` and is the only
/// record in the topic.
#[tokio::test(flavor = "multi_thread")]
async fn an_amqp_transfer_is_written_as_its_client_and_refused_when_kafka_refuses_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, gw) = broker_and_gateway(dir.path(), |_| {}).await;
    let amqp = gw.gateway.amqp_addr().unwrap();
    let reader = format!("amqp://reader:reader-pw@{amqp}");
    let device = format!("amqp://device-1:s3cret@{amqp}");

    let a = common::proton_try_async(&reader, "send", "pt-as-client", &[]).await;
    assert!(
        !a.ok && a.outcome.as_deref() == Some("rejected") && a.condition.is_some(),
        "reader's transfer, Kafka not knowing reader: {a:?}"
    );
    let a = common::proton_try_async(&device, "send", "pt-as-client", &[]).await;
    assert!(
        a.ok && a.outcome.as_deref() == Some("accepted"),
        "device-1's transfer: {a:?}"
    );
    let high = gw
        .gateway
        .backend()
        .admin
        .watermarks("pt-as-client", 0)
        .await
        .unwrap()
        .high;
    assert_eq!(high, 1, "only device-1's transfer is in the topic");
    gw.stop().await;
    broker.stop().await;
}

/// Passthrough logs clients in with SASL: a `security.protocol` other than SASL_PLAINTEXT or
/// SASL_SSL (or none) is a start-up error naming the key; the two SASL ones pass.
#[test]
fn passthrough_without_a_sasl_security_protocol_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    for (protocol, ok) in [
        (None, false),
        (Some("PLAINTEXT"), false),
        (Some("SSL"), false),
        (Some("SASL_SOMETHING"), false),
        (Some("SASL_PLAINTEXT"), true),
        (Some("SASL_SSL"), true),
    ] {
        let config = dir.path().join("barnabas.toml");
        let property = protocol.map_or_else(String::new, |p| {
            format!("[kafka.properties]\n\"security.protocol\" = \"{p}\"\n")
        });
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbootstrap_servers = \"127.0.0.1:9\"\nidentity = \"passthrough\"\n{property}"
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_barnabas"))
            .args(["check-config", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let said = common::text(&out);
        if ok {
            assert_eq!(out.status.code(), Some(0), "{protocol:?}: {said}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{protocol:?}: {said}");
            assert!(said.contains("security.protocol"), "{protocol:?}: {said}");
        }
    }
}

/// A consumer instance adopted by another replica (its owner gone) reads as the client whose
/// request adopted it: two in-process replicas on one SASL broker; device-1 creates two
/// instances on A, A stops; through B, device-1's first request adopts the first instance,
/// which reads the records; then Kafka's credential of device-1 changes, and the second
/// instance, adopted by device-1's request with the old password, gets 403 "Kafka refused the
/// login" and never a record — read as the gateway (whose login Kafka takes) it would have
/// records.
#[tokio::test(flavor = "multi_thread")]
async fn an_adopted_consumer_instance_reads_as_the_client_that_adopted_it() {
    let broker = sasl_broker().await;
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let a = gateway::start_on(
        Some(bootstrap.clone()),
        passthrough(dir.path(), bootstrap.clone()),
    )
    .await;
    let b = gateway::start_on(Some(bootstrap.clone()), passthrough(dir.path(), bootstrap)).await;
    let call = |base: String, method: &'static str, path: String, body: Option<String>| async move {
        tokio::task::spawn_blocking(move || {
            let url = format!("{base}{path}");
            let mut args: Vec<&str> = vec!["-u", "device-1:s3cret", "-X", method];
            match &body {
                Some(b) => args.extend(["-H", V2, "--data", b.as_str()]),
                None => args.extend(["-H", ACCEPT_JSON]),
            }
            args.push(&url);
            curl(&args)
        })
        .await
        .unwrap()
    };
    let record = r#"{"records":[{"value":"one"},{"value":"two"}]}"#.to_owned();
    let (status, body) = tokio::task::spawn_blocking({
        let url = format!("{}/topics/pt-adopt", a.base);
        move || {
            curl(&[
                "-u",
                "device-1:s3cret",
                "-X",
                "POST",
                "-H",
                JSON,
                "--data",
                &record,
                &url,
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    for name in ["first", "second"] {
        let create =
            format!(r#"{{"name":"{name}","format":"json","auto.offset.reset":"earliest"}}"#);
        let (status, body) = call(
            a.base.clone(),
            "POST",
            format!("/consumers/pt-{name}"),
            Some(create),
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
        let path = format!("/consumers/pt-{name}/instances/{name}/subscription");
        let subscribe = r#"{"topics":["pt-adopt"]}"#.to_owned();
        let (status, body) = call(a.base.clone(), "POST", path, Some(subscribe)).await;
        assert_eq!(status, 204, "{name}: {body}");
    }
    a.stop().await;
    let records = |name: &'static str| {
        call(
            b.base.clone(),
            "GET",
            format!("/consumers/pt-{name}/instances/{name}/records?timeout=1000"),
            None,
        )
    };
    // The first instance, adopted by device-1 with the password Kafka knows: it reads.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut read = String::new();
    loop {
        let (status, body) = records("first").await;
        assert!(status == 200 || status == 503, "{status}: {body}");
        read.push_str(&body);
        if read.contains(r#""value":"one""#) && read.contains(r#""value":"two""#) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the adopted instance never read: {status} {body}"
        );
    }
    // Kafka's credential of device-1 changes: the second instance, adopted now by device-1's
    // request with the old password, is refused by Kafka.
    broker
        .add_scram_user("device-1", "changed-in-kafka")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = records("second").await;
        if status == 403 {
            assert!(body.contains("Kafka refused the login"), "{body}");
            break;
        }
        assert!(
            status == 200 || status == 503,
            "the second instance through B: {status} {body}"
        );
        assert!(
            !body.contains(r#""value":"one""#),
            "the adopted instance read as someone other than its adopter: {body}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "Kafka's refusal of device-1's old password never came: {body}"
        );
    }
    b.stop().await;
    broker.stop().await;
}
