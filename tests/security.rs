//! Authentication and ACLs (issue 10, first part), with the stock clients: curl for HTTP
//! Basic and Bearer, mosquitto_pub/mosquitto_sub (MQTT 3.1.1 and 5) for CONNECT credentials.
//! The users file is made with `barnabas hash-password`; the gateway has its embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;

use barnabas::config::{AclConfig, Config, MqttMapping};
use bytes::Bytes;
use common::{
    gateway, mosquitto,
    raw_mqtt::{all, connack, suback},
    read_topic, text,
};

/// Users `device-1` (password `s3cret`, bearer token `token-1`) and `reader` (`reader-pw`);
/// device-1 may write `telemetry`, read `commands` and use groups `ops-*`; reader may read
/// `telemetry` and use any group. MQTT `devices/{d}/telemetry` → `telemetry`,
/// `devices/{d}/secrets` → `secrets`.
fn secured(dir: &std::path::Path) -> impl FnOnce(&mut Config) {
    let users = common::write_test_users(dir);
    move |c: &mut Config| {
        c.auth.mode = "users".into();
        c.auth.users_file = users.display().to_string();
        c.acl = vec![
            AclConfig {
                principal: "device-1".into(),
                allow: vec![
                    "write:telemetry".into(),
                    "read:commands".into(),
                    "group:ops-*".into(),
                ],
            },
            AclConfig {
                principal: "reader".into(),
                allow: vec!["read:telemetry".into(), "group:*".into()],
            },
        ];
        c.mqtt.mapping = vec![
            MqttMapping {
                pattern: "devices/{device}/telemetry".into(),
                kafka_topic: "telemetry".into(),
                key: Some("{device}".into()),
            },
            MqttMapping {
                pattern: "devices/{device}/secrets".into(),
                kafka_topic: "secrets".into(),
                key: Some("{device}".into()),
            },
        ];
    }
}

/// curl; returns (status, headers and body as one text).
/// Asserts that each of `wanted` is a line of the Prometheus text `metrics`.
fn assert_metric_lines(metrics: &str, wanted: &[&str]) {
    for line in wanted {
        assert!(metrics.lines().any(|l| l == *line), "{line} in:\n{metrics}");
    }
}

fn curl(args: &[&str]) -> (u16, String) {
    common::curl_status(args)
}

const JSON: &str = "content-type: application/vnd.kafka.json.v2+json";
const V2: &str = "content-type: application/vnd.kafka.v2+json";

#[tokio::test(flavor = "multi_thread")]
async fn http_clients_authenticate_with_basic_or_bearer_and_acls_apply() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(secured(dir.path())).await;
    let url = |path: &str| format!("{}{path}", gw.base);
    let record = r#"{"records":[{"value":{"temp":21}}]}"#;
    let produce = |extra: &[&str], topic: &str| {
        let mut args = vec!["-X", "POST", "-H", JSON, "--data", record];
        args.extend_from_slice(extra);
        let target = url(&format!("/topics/{topic}"));
        let mut all: Vec<&str> = args.clone();
        all.push(&target);
        curl(&all)
    };

    // No credentials, a wrong password, an unknown token: 401 JSON with a challenge.
    for extra in [
        &[][..],
        &["-u", "device-1:wrong"][..],
        &["-H", "Authorization: Bearer nope"][..],
    ] {
        let (status, text) = produce(extra, "telemetry");
        assert_eq!(status, 401, "{extra:?}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{text}"
        );
        assert!(text.contains("\"error_code\":401"), "{text}");
    }
    // Probes and the scraper need none.
    assert_eq!(curl(&[&url("/healthy")]).0, 200);
    assert_eq!(curl(&[&url("/ready")]).0, 200);
    let (_, metrics) = curl(&[&url("/metrics")]);
    // Failed logins counted by reason: the request without credentials, the wrong password
    // and the unknown token.
    assert_metric_lines(
        &metrics,
        &[
            r#"barnabas_auth_failures_total{protocol="http",reason="no_credentials"} 1"#,
            r#"barnabas_auth_failures_total{protocol="http",reason="bad_credentials"} 2"#,
        ],
    );

    // Right password or token: written; a topic the ACL does not grant: 403.
    let (status, text) = produce(&["-u", "device-1:s3cret"], "telemetry");
    assert_eq!(status, 200, "{text}");
    let (status, text) = produce(&["-H", "Authorization: Bearer token-1"], "telemetry");
    assert_eq!(status, 200, "{text}");
    let (status, text) = produce(&["-u", "device-1:s3cret"], "secrets");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("\"error_code\":403"), "{text}");

    // Groups and reads: device-1 may not use group `audit`, reader may, and reads telemetry
    // but not commands.
    let create = r#"{"name":"r1","format":"json","auto.offset.reset":"earliest"}"#;
    let (status, _) = curl(&[
        "-u",
        "device-1:s3cret",
        "-X",
        "POST",
        "-H",
        V2,
        "--data",
        create,
        &url("/consumers/audit"),
    ]);
    assert_eq!(status, 403);
    let (status, text) = curl(&[
        "-u",
        "reader:reader-pw",
        "-X",
        "POST",
        "-H",
        V2,
        "--data",
        create,
        &url("/consumers/audit"),
    ]);
    assert_eq!(status, 200, "{text}");
    let instance = url("/consumers/audit/instances/r1");
    let (status, _) = curl(&[
        "-u",
        "reader:reader-pw",
        "-X",
        "POST",
        "-H",
        V2,
        "--data",
        r#"{"topics":["commands"]}"#,
        &format!("{instance}/subscription"),
    ]);
    assert_eq!(status, 403);
    // device-1 cannot poll reader's instance (its group is not granted to device-1).
    let (status, _) = curl(&[
        "-u",
        "device-1:s3cret",
        "-H",
        "accept: application/vnd.kafka.json.v2+json",
        &format!("{instance}/records"),
    ]);
    assert_eq!(status, 403);
    let (status, text) = curl(&[
        "-u",
        "reader:reader-pw",
        "-X",
        "POST",
        "-H",
        V2,
        "--data",
        r#"{"topics":["telemetry"]}"#,
        &format!("{instance}/subscription"),
    ]);
    assert_eq!(status, 204, "{text}");
    let mut got = 0;
    for _ in 0..30 {
        let (status, text) = curl(&[
            "-u",
            "reader:reader-pw",
            "-H",
            "accept: application/vnd.kafka.json.v2+json",
            &format!("{instance}/records?timeout=1000"),
        ]);
        assert_eq!(status, 200, "{text}");
        got += text.matches("\"temp\":21").count();
        if got >= 2 {
            break;
        }
    }
    assert_eq!(got, 2, "the two authorised writes, read back by reader");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_clients_log_in_with_connect_credentials_and_acls_apply() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(secured(dir.path())).await;
    let addr = gw.gateway.mqtt_addr().unwrap();
    let publish = |version: &str, creds: &[&str], topic: &str, message: &str| {
        let mut args = vec!["-V", version, "-q", "1", "-t", topic, "-m", message];
        args.extend_from_slice(creds);
        mosquitto("mosquitto_pub", addr, &args)
    };

    // Refused logins, in both versions, each client's own CONNACK: no credentials "not
    // authorized" (3.1.1 code 5, v5 0x87), a wrong password "bad user name or password" (4,
    // v5 0x86).
    for (version, none_code, wrong_code) in [("mqttv311", 5, 4), ("mqttv5", 0x87, 0x86)] {
        let none = publish(version, &["-d"], "devices/device-1/telemetry", "x");
        assert!(
            !none.status.success(),
            "{version} without credentials: {}",
            text(&none)
        );
        assert_eq!(connack(&all(&none)), Some(none_code), "{}", text(&none));
        let wrong = publish(
            version,
            &["-u", "device-1", "-P", "wrong", "-d"],
            "devices/device-1/telemetry",
            "x",
        );
        assert!(
            !wrong.status.success(),
            "{version} wrong password: {}",
            text(&wrong)
        );
        assert_eq!(connack(&all(&wrong)), Some(wrong_code), "{}", text(&wrong));
    }
    let metrics = gw.get("/metrics", None).await.text;
    assert_metric_lines(
        &metrics,
        &[
            r#"barnabas_auth_failures_total{protocol="mqtt",reason="no_credentials"} 2"#,
            r#"barnabas_auth_failures_total{protocol="mqtt",reason="bad_credentials"} 2"#,
        ],
    );

    // Right credentials: written, in both versions.
    let creds = ["-u", "device-1", "-P", "s3cret"];
    for (version, message) in [("mqttv311", "v3-ok"), ("mqttv5", "v5-ok")] {
        let ok = publish(version, &creds, "devices/device-1/telemetry", message);
        assert!(ok.status.success(), "{version}: {}", text(&ok));
    }
    // A topic the ACL does not grant: v5 gets PUBACK 0x87, v3 is disconnected unacknowledged.
    let v5 = publish(
        "mqttv5",
        &[&creds[..], &["-d"]].concat(),
        "devices/device-1/secrets",
        "no",
    );
    assert!(
        all(&v5).contains("received PUBACK (Mid: 1, RC:135)"),
        "v5 denied publish: {}",
        text(&v5)
    );
    let v3 = publish("mqttv311", &creds, "devices/device-1/secrets", "no");
    assert!(
        !v3.status.success(),
        "v3 denied publish acknowledged: {}",
        text(&v3)
    );

    // Subscriptions: reader may read telemetry (SUBACK 1, the QoS asked), not secrets
    // (SUBACK 0x87); each mosquitto_sub logs in (CONNACK 0) and exits after its SUBACK.
    let subscribe = |filter: &str, id: &str| {
        mosquitto(
            "mosquitto_sub",
            addr,
            &[
                "-V",
                "mqttv5",
                "-t",
                filter,
                "-q",
                "1",
                "-i",
                id,
                "-c",
                "-x",
                "600",
                "-u",
                "reader",
                "-P",
                "reader-pw",
                "-d",
                "-E",
            ],
        )
    };
    let denied = subscribe("devices/+/secrets", "reader-denied");
    assert_eq!(connack(&all(&denied)), Some(0), "{}", text(&denied));
    assert_eq!(suback(&all(&denied)), [0x87], "{}", text(&denied));
    let allowed = subscribe("devices/+/telemetry", "reader-sub");
    assert!(allowed.status.success(), "{}", text(&allowed));
    assert_eq!(connack(&all(&allowed)), Some(0), "{}", text(&allowed));
    assert_eq!(suback(&all(&allowed)), [1], "{}", text(&allowed));

    // Exactly the two authorised publishes are in Kafka; nothing reached `secrets`.
    let got = read_topic(&gw, "telemetry", 2).await;
    let values: Vec<Bytes> = got.iter().filter_map(|r| r.value.clone()).collect();
    assert_eq!(values, vec![Bytes::from("v3-ok"), Bytes::from("v5-ok")]);
    let topics = gw.gateway.backend().admin.list_topics().await.unwrap();
    if topics.iter().any(|t| t == "secrets") {
        let w = gw
            .gateway
            .backend()
            .admin
            .watermarks("secrets", 0)
            .await
            .unwrap();
        assert_eq!(w.high, 0, "a denied publish was written");
    }
    gw.stop().await;
}

/// One AMQP attempt with python3-qpid-proton: (succeeded, error text).
async fn proton(url: &str, what: &str, address: &str) -> (bool, String) {
    common::proton_attempt(url, what, address).await
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_clients_log_in_with_sasl_plain_and_acls_apply() {
    let dir = tempfile::tempdir().unwrap();
    let secure = secured(dir.path());
    let gw = gateway::start(|c| {
        secure(c);
        c.amqp.listen = "127.0.0.1:0".into();
    })
    .await;
    let addr = gw.gateway.amqp_addr().unwrap();
    let url = |creds: &str| format!("amqp://{creds}{addr}");

    // ANONYMOUS is not offered (credentials required): a client without a user name finds no
    // mechanism it can use; a wrong password is SASL outcome `auth`. Either way proton
    // reports the transport closed with amqp:unauthorized-access, and nothing is sent.
    let (nobody, wrong) = (
        common::proton_try_async(&url(""), "send", "telemetry", &[]).await,
        common::proton_try_async(&url("device-1:wrong@"), "send", "telemetry", &[]).await,
    );
    for a in [&nobody, &wrong] {
        assert!(
            !a.ok && a.kind == "ConnectionException",
            "the login is refused: {a:?}"
        );
        assert_eq!(
            a.condition.as_deref(),
            Some("amqp:unauthorized-access"),
            "{a:?}"
        );
    }
    assert_eq!(
        wrong.sasl_outcome.as_deref(),
        Some("auth"),
        "a wrong password: {wrong:?}"
    );
    let metrics = gw.get("/metrics", None).await.text;
    assert_metric_lines(
        &metrics,
        &[r#"barnabas_auth_failures_total{protocol="amqp",reason="bad_credentials"} 1"#],
    );
    // SASL PLAIN with the right password: a producer link on a granted topic works, one on
    // a topic the ACL does not grant is refused with amqp:unauthorized-access.
    let device = url("device-1:s3cret@");
    let attempt = |url: String, what: &'static str, address: &'static str| async move {
        common::proton_try_async(&url, what, address, &[]).await
    };
    let a = attempt(device.clone(), "send", "telemetry").await;
    assert!(a.ok && a.outcome.as_deref() == Some("accepted"), "{a:?}");
    let a = attempt(device.clone(), "send", "secrets").await;
    assert!(
        !a.ok
            && a.kind == "LinkDetached"
            && a.condition.as_deref() == Some("amqp:unauthorized-access"),
        "{a:?}"
    );
    // Receivers: reader may read telemetry in its group; device-1 may not read telemetry.
    let a = attempt(device, "receive", "telemetry/group.id/ops-1").await;
    assert!(
        !a.ok
            && a.kind == "LinkDetached"
            && a.condition.as_deref() == Some("amqp:unauthorized-access"),
        "{a:?}"
    );
    let a = attempt(
        url("reader:reader-pw@"),
        "receive",
        "telemetry/group.id/audit",
    )
    .await;
    assert!(a.ok, "reader receives the message device-1 sent: {a:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_slow_publishers_and_cap_subscriptions_and_consumers() {
    let gw = gateway::start(|c| {
        c.limits.publish_rate = 10;
        c.limits.max_subscriptions = 2;
        c.limits.max_consumers_per_principal = 2;
        c.amqp.listen = "127.0.0.1:0".into();
    })
    .await;
    let url = |path: &str| format!("{}{path}", gw.base);

    // HTTP: ten records fit the second's bucket; then one-record requests are refused with
    // 429 + Retry-After as soon as the bucket is empty — at most one more record for every
    // 100 ms that passed since the burst began (the bucket refills while a request waits for
    // Kafka: a fresh topic's first write to Apache Kafka can take longer than 100 ms) — and
    // fit again a moment later. The topic exists first: creating it inside the first request
    // would give the bucket time to refill.
    gw.gateway
        .backend()
        .admin
        .create_topic("rated", None, None)
        .await
        .unwrap();
    let post = |body: &str| {
        curl(&[
            "-X",
            "POST",
            "-H",
            JSON,
            "--data",
            body,
            &url("/topics/rated"),
        ])
    };
    let burst_began = std::time::Instant::now();
    let ten: Vec<String> = (0..10).map(|i| format!(r#"{{"value":{i}}}"#)).collect();
    let (status, text) = post(&format!(r#"{{"records":[{}]}}"#, ten.join(",")));
    assert_eq!(status, 200, "{text}");
    let one = r#"{"records":[{"value":"more"}]}"#;
    let mut refilled = 0;
    let text = loop {
        let (status, text) = post(one);
        if status == 429 {
            break text;
        }
        assert_eq!(status, 200, "{text}");
        refilled += 1;
        let allowed = burst_began.elapsed().as_secs_f64() * 10.0 + 1.0;
        assert!(
            f64::from(refilled) <= allowed,
            "{refilled} records beyond the burst of 10 accepted at 10/s within {:?}",
            burst_began.elapsed()
        );
    };
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, text) = post(one);
    assert_eq!(status, 200, "{text}");

    // HTTP consumers: two per principal on this replica, the third is 429.
    for (i, want) in [(1, 200), (2, 200), (3, 429)] {
        let create = format!(r#"{{"name":"c{i}","format":"json"}}"#);
        let (status, text) = curl(&[
            "-X",
            "POST",
            "-H",
            V2,
            "--data",
            &create,
            &url("/consumers/capped"),
        ]);
        assert_eq!(status, want, "consumer {i}: {text}");
    }

    // MQTT: 30 QoS 1 publishes at 10/s take at least two seconds (the first ten are the
    // burst), and all of them are acknowledged and written.
    let addr = gw.gateway.mqtt_addr().unwrap();
    let mut opts = rumqttc::MqttOptions::new("rated", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(std::time::Duration::from_secs(30));
    opts.set_inflight(100);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 100);
    let started_publishing = std::time::Instant::now();
    for i in 0..30 {
        client
            .publish(
                "rated/mqtt",
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("m{i}"),
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    let mut granted = Vec::new();
    client
        .subscribe_many([
            rumqttc::SubscribeFilter::new("a/#".into(), rumqttc::QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new("b/#".into(), rumqttc::QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new("c/#".into(), rumqttc::QoS::AtLeastOnce),
        ])
        .await
        .unwrap();
    while acked < 30 || granted.is_empty() {
        match tokio::time::timeout(std::time::Duration::from_secs(30), el.poll())
            .await
            .expect("MQTT progress")
            .expect("MQTT connection")
        {
            rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => acked += 1,
            rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) => granted = s.return_codes,
            _ => {}
        }
    }
    let took = started_publishing.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1800),
        "30 publishes at 10/s acknowledged in {took:?}"
    );
    assert_eq!(
        granted,
        vec![
            rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce),
            rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce),
            rumqttc::SubscribeReasonCode::Failure,
        ],
        "the third filter is over limits.max_subscriptions"
    );
    assert_eq!(read_topic(&gw, "mqtt", 30).await.len(), 30);

    // AMQP: a python3-qpid-proton sender, 30 messages settled one by one at 10/s: the first
    // ten are the burst, the rest wait for their tokens (the gateway settles them later, and
    // grants no more than a second's worth of credit); all are accepted and written.
    let amqp = gw.gateway.amqp_addr().unwrap();
    gw.gateway
        .backend()
        .admin
        .create_topic("rated-amqp", None, None)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let out = common::system_python_async(
        "amqp_proton.py",
        &["send", &format!("amqp://{amqp}"), "rated-amqp", "30"],
    )
    .await;
    let took = started.elapsed();
    assert!(out.contains(r#""accepted": 30"#), "{out}");
    assert!(
        took >= std::time::Duration::from_millis(1800),
        "30 AMQP transfers at 10/s accepted in {took:?}"
    );
    assert_eq!(read_topic(&gw, "rated-amqp", 30).await.len(), 30);
    let metrics = reqwest::get(url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let throttled = metrics
        .lines()
        .find(|l| l.starts_with("barnabas_amqp_throttled_transfers_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    // The duration above proves the rate; how many transfers had to wait for a token depends
    // on the sender's own pace (one at a time, each after its settlement: on a loaded machine
    // it is slower than 10/s for stretches, and 12 of 20 waited in one CI-like run), so the
    // metric is checked for counting at all.
    assert!(
        throttled >= 1,
        "transfers held back: {throttled}\n{metrics}"
    );
    gw.stop().await;
}

/// Handshake deadline of the HTTP listener: a client that connects and sends nothing, and one
/// that trickles a header byte by byte (slowloris), are disconnected once
/// `http.header_read_timeout_ms` has passed, while everyone else is served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn http_clients_that_do_not_finish_their_headers_are_disconnected() {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let gw =
        gateway::start(|c| c.http.header_read_timeout_ms = barnabas::config::Millis(1_000)).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut trickling = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let header =
        b"GET /ready HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    trickling.write_all(&header[..10]).await.unwrap();
    let (trickle_read, mut trickle_write) = trickling.into_split();
    let trickler = tokio::spawn(async move {
        for b in &header[10..] {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickle_write.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    // Others are served while those two hang on.
    assert_eq!(gw.get("/ready", None).await.status, 200);
    for (name, mut read) in [
        (
            "silent",
            Box::new(silent) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        ),
        (
            "trickling",
            Box::new(trickle_read) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        ),
    ] {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("the {name} connection is still open after 10 s"))
            .ok();
        assert!(
            !String::from_utf8_lossy(&answer).contains(" 200 "),
            "the {name} client was not served: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed at the deadline: {took:?}"
    );
    trickler.abort();
    // A client that sends its request in time is answered as usual. On a new connection: the
    // pooled one of the first request has been idle past the same deadline, so the gateway
    // closes it, and a request sent on it just then would meet a closed connection.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ready = fresh.get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    gw.stop().await;
}

/// `limits.max_connections` (per listener) reached and recovered: a third MQTT client gets
/// CONNACK "server unavailable" (v3.1.1) / "server busy" (v5) from mosquitto_pub's point of
/// view, a third HTTP client 503 JSON with `Retry-After`, a third AMQP client (qpid-proton)
/// `amqp:resource-limit-exceeded`; once connections close, all serve again.
#[tokio::test(flavor = "multi_thread")]
async fn max_connections_answers_server_busy_and_recovers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let gw = gateway::start(|c| {
        c.limits.max_connections = 2;
        c.amqp.listen = "127.0.0.1:0".into();
    })
    .await;
    let mqtt = gw.gateway.mqtt_addr().unwrap();
    let http = gw.base.trim_start_matches("http://").to_owned();

    // Two MQTT connections with their CONNACK, held open.
    let mut held = Vec::new();
    for id in ["held-1", "held-2"] {
        let mut s = tokio::net::TcpStream::connect(mqtt).await.unwrap();
        let mut connect = vec![
            0x10,
            12 + id.len() as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
            2,
            0,
            60,
        ];
        connect.extend([0, id.len() as u8]);
        connect.extend(id.as_bytes());
        s.write_all(&connect).await.unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "{id} accepted");
        held.push(s);
    }
    let publish = |version: &'static str| async move {
        tokio::task::spawn_blocking(move || {
            let args = ["-V", version, "-q", "1", "-t", "busy/test", "-m", "x"];
            mosquitto("mosquitto_pub", mqtt, &args)
        })
        .await
        .unwrap()
    };
    for (version, reason) in [("mqttv311", "unavailable"), ("mqttv5", "busy")] {
        let out = publish(version).await;
        assert!(!out.status.success(), "{version}: {}", text(&out));
        assert!(
            text(&out).to_ascii_lowercase().contains(reason),
            "{version} told why: {}",
            text(&out)
        );
    }

    // Two AMQP connections held (python3-qpid-proton receivers without credit); a third
    // client's open is followed by close with amqp:resource-limit-exceeded.
    let amqp = gw.gateway.amqp_addr().unwrap();
    let mut idle: Vec<std::process::Child> = (0..2)
        .map(|_| {
            Command::new(common::system_python())
                .arg(common::workspace_root().join("tests/python/amqp_proton.py"))
                .args([
                    "idle",
                    &format!("amqp://{amqp}"),
                    "busy-amqp/group.id/idle",
                    "30",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let amqp_url = format!("amqp://{amqp}");
    // Only once both receivers hold their slots: an earlier attempt would take one of them.
    gw.wait_for_metric("barnabas_amqp_connections 2", "the two receivers connected")
        .await;
    let (ok, refused) = proton(&amqp_url, "send", "busy-amqp").await;
    assert!(
        !ok && refused.contains("resource-limit-exceeded"),
        "{refused}"
    );
    for mut c in idle.drain(..) {
        let _ = c.kill();
        let _ = c.wait();
    }
    // Once the gateway has seen both go, a client is served again.
    gw.wait_for_metric(
        "barnabas_amqp_connections 0",
        "the receivers' connections closed",
    )
    .await;
    let (ok, error) = proton(&amqp_url, "send", "busy-amqp").await;
    assert!(ok, "AMQP served again once slots freed: {error}");

    // Two HTTP connections held; the third is answered 503.
    let held_http = [
        tokio::net::TcpStream::connect(&http).await.unwrap(),
        tokio::net::TcpStream::connect(&http).await.unwrap(),
    ];
    let (status, answer) = curl(&[&format!("http://{http}/ready")]);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains(r#""error_code":503"#), "{answer}");

    // One of each closes: both listeners serve again once the gateway has freed the slot
    // (polled, bounded: until then a client is told "busy", never anything else).
    drop(held.pop());
    drop(held_http);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut busy_again = 0;
    loop {
        let out = publish("mqttv5").await;
        if out.status.success() {
            break;
        }
        busy_again += 1;
        assert!(
            text(&out).to_ascii_lowercase().contains("busy")
                && std::time::Instant::now() < deadline,
            "after a slot freed: {}",
            text(&out)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, answer) = curl(&[&format!("http://{http}/ready")]);
        if status == 200 {
            break;
        }
        assert!(
            status == 503 && std::time::Instant::now() < deadline,
            "HTTP served again once a slot freed: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = gw.metrics().await;
    let refused = format!("barnabas_mqtt_refused_busy_total {}", 2 + busy_again);
    assert!(
        metrics.lines().any(|l| l == refused),
        "{refused}: {metrics}"
    );
    gw.stop().await;
}

/// docs/security.md §Limits: "The HTTP listener speaks HTTP/1.1 only". curl (built with HTTP/2,
/// checked first) gets `HTTP/1.1 200` over HTTP/1.1; asked for HTTP/2 with prior knowledge it
/// gets no HTTP/2 answer and fails; offering the h2c upgrade it gets a plain `HTTP/1.1 200`, no
/// `101 Switching Protocols`; and the HTTP/2 connection preface with a SETTINGS frame, sent on
/// a bare TCP connection, gets no SETTINGS frame back (the connection is closed unanswered).
///
/// Broken to: not run against a build with HTTP/2 (hyper and axum are built without their
/// `http2` features, so there is nothing to switch on without a crate edit). By reasoning: a
/// listener serving HTTP/1 and 2 (axum::serve with `http2`, hyper-util's auto builder) answers
/// the prior-knowledge request with `HTTP/2 200` and the preface with a SETTINGS frame (type
/// 4), which the second and fourth checks refuse.
#[test]
fn the_http_listener_speaks_http_1_1_only() {
    use std::io::{Read, Write};

    let version = Command::new("curl").arg("-V").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("HTTP2"),
        "this curl cannot speak HTTP/2, so it proves nothing: {}",
        text(&version)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gw = rt.block_on(gateway::start(|_| {}));
    let url = gw.url("/healthy");

    let (status, answer) = curl(&["--http1.1", &url]);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let h2 = Command::new("curl")
        .args([
            "-s",
            "-i",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        !h2.status.success() && !String::from_utf8_lossy(&h2.stdout).contains("HTTP/2"),
        "HTTP/2 with prior knowledge was answered: {}",
        text(&h2)
    );

    let (status, answer) = curl(&["--http2", &url]);
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.starts_with("HTTP/1.1 200") && !answer.contains("101"),
        "the h2c upgrade was taken: {answer}"
    );

    let addr = gw.gateway.http_addr().unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // The client preface, then an empty SETTINGS frame (length 0, type 4, flags 0, stream 0).
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut back = Vec::new();
    let _ = tcp.read_to_end(&mut back);
    assert!(
        !(back.len() >= 9 && back[3] == 0x04),
        "a SETTINGS frame came back: {back:?}"
    );
    assert!(
        back.is_empty() || back.starts_with(b"HTTP/1.1"),
        "not an HTTP/1.1 answer: {:?}",
        String::from_utf8_lossy(&back)
    );
    rt.block_on(gw.stop());
}

/// docs/security.md §Limits: "At most 64 busy answers at once, each within 2 s (handshake
/// included) …; beyond that, closed at once". HTTP with `max_connections` = 1, its slot held
/// by a silent connection: 100 more connections at once, none of which closes; the first 64
/// get the 503 answer (the gateway then waits for the client to close, at most 2 s), the other
/// 36 are closed at once without a byte. 3 s after the burst, with those 64 clients still
/// connected, a new connection gets its 503 again: the 2 s deadline gave their slots back.
/// The bound is in the accept loop every listener shares (`barnabas_core::listener`).
///
/// Broken to: with more slots than 64, more than 64 answers (the count is asserted exactly);
/// without the 2 s bound the 64 slots stay taken by clients that never close and the last
/// connections get nothing (tried until 10 s after the burst). Seen failing with a single
/// last connection opened 1 s after the burst instead of 3 s (still within the deadline:
/// closed at once, no answer); the retries exist because under the full Apache Kafka pass the
/// burst was accepted late enough that a single try at 3 s failed twice.
#[test]
fn busy_answers_are_at_most_64_at_once_each_within_2_s() {
    use std::{
        io::Read,
        net::TcpStream,
        time::{Duration, Instant},
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    let gw = rt.block_on(gateway::start(|c| c.limits.max_connections = 1));
    let addr = gw.gateway.http_addr().unwrap();
    let holder = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // What one connection got: its bytes, and how long after `since` it was closed.
    let outcome = |c: &mut TcpStream, since: Instant| {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got); // a reset counts as closed, as an EOF does
        (String::from_utf8_lossy(&got).into_owned(), since.elapsed())
    };
    let burst = Instant::now();
    let mut flood: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let outcomes: Vec<(String, Duration)> = flood.iter_mut().map(|c| outcome(c, burst)).collect();
    let answered = outcomes
        .iter()
        .filter(|(got, _)| got.starts_with("HTTP/1.1 503"))
        .count();
    let silent: Vec<&(String, Duration)> =
        outcomes.iter().filter(|(got, _)| got.is_empty()).collect();
    assert_eq!(answered, 64, "busy answers at once: {outcomes:?}");
    assert_eq!(
        silent.len(),
        36,
        "the rest closed without an answer: {outcomes:?}"
    );
    assert!(
        silent
            .iter()
            .all(|(_, after)| *after < Duration::from_secs(1)),
        "closed at once: {silent:?}"
    );

    // The 64 clients are still connected (`flood` is alive); their answers' deadline frees the
    // slots. A new connection from 3 s after the burst on gets its 503 again — tried until
    // 10 s after it (on a loaded machine the gateway may accept the burst late, so its 2 s
    // run late too); without the deadline the slots stay taken and no try is answered.
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(burst.elapsed()));
    let got = loop {
        let mut late = TcpStream::connect(addr).unwrap();
        let (got, _) = outcome(&mut late, Instant::now());
        if got.starts_with("HTTP/1.1 503") || burst.elapsed() > Duration::from_secs(10) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        got.starts_with("HTTP/1.1 503"),
        "a busy answer once the 2 s deadline passed: {got:?}"
    );
    drop(flood);
    drop(holder);
    rt.block_on(gw.stop());
}

/// docs/security.md §Principals: "An unknown user is checked against a real hash too, so a
/// refusal takes as long whether or not the user exists", and "a verified user/password pair
/// is remembered … so HTTP Basic … costs one verification per 5 minutes per client, not one per
/// request". HTTP Basic logins, each followed by the argon2 verifications it ran
/// (`barnabas_password_checks_total`): the first right login runs one; the same pair again is
/// remembered and runs none; a wrong password right after it runs one and is refused; a user
/// that does not exist runs one too (against the decoy hash, a real argon2 hash, so it costs
/// what a known user's refusal costs). Each round is unknown, wrong, right, so the right login
/// clears the failed-login slow-down of the address before the next (two failures are never
/// slowed). Counted, not timed: a timing comparison of the same (it was one) failed on a
/// loaded CI machine.
///
/// Broken to: without the decoy an unknown user runs no check and fails the first assertion
/// of the round; without the cache the remembered login runs one and fails the last.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_users_cost_a_real_hash_and_verified_passwords_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let users = common::write_test_users(dir.path());
    let gw = gateway::start(|c| {
        c.auth.mode = "users".into();
        c.auth.users_file = users.display().to_string();
    })
    .await;
    let url = gw.url("/topics");
    let checks = || async {
        let metrics = gw.metrics().await;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("barnabas_password_checks_total "))
            .unwrap_or_else(|| panic!("no barnabas_password_checks_total: {metrics}"));
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    // The status of one login and the argon2 checks it ran.
    let login = |user: &'static str, password: &'static str| {
        let request = gw.client.get(&url).basic_auth(user, Some(password));
        async move {
            let before = checks().await;
            let status = request.send().await.unwrap().status().as_u16();
            (status, checks().await - before)
        }
    };
    assert_eq!(
        login("device-1", "s3cret").await,
        (200, 1),
        "the first right login is checked"
    );
    for round in 0..3 {
        assert_eq!(
            login("nobody", "s3cret").await,
            (401, 1),
            "an unknown user (round {round})"
        );
        assert_eq!(
            login("device-1", "wrong").await,
            (401, 1),
            "a wrong password after a remembered right one (round {round})"
        );
        assert_eq!(
            login("device-1", "s3cret").await,
            (200, 0),
            "remembered (round {round})"
        );
    }
    gw.stop().await;
}

/// docs/security.md §Principals: argon2id runs off the event loop. The users file holds a
/// hash made with its cost raised to t = 100 (about a second of CPU per check here), and
/// the in-process gateway runs on one worker thread. As many logins as the gateway checks
/// at once start together — none is remembered yet, so each runs a check — and meanwhile
/// `/healthy` is asked again and again: it must keep answering while the checks run (at
/// least 10 times before the last login is answered; 1 261–2 436 here), and each login
/// must have been checked (`barnabas_password_checks_total`) and let in.
///
/// Broken to: the check run in place of `spawn_blocking` in `authenticate_off_loop` — the
/// worker thread is then busy hashing and `/healthy` answered 1–3 times (seen failing).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn password_checks_run_off_the_event_loop() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let dir = tempfile::tempdir().unwrap();
    let params = argon2::Params::new(19 * 1024, 100, 1, None).unwrap();
    let costly = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(
            b"slow-pw",
            &SaltString::encode_b64(b"barnabas-salt").unwrap(),
        )
        .unwrap()
        .to_string();
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"slow\"\npassword_hash = \"{costly}\"\n"),
    )
    .unwrap();
    let logins_at_once = barnabas_core::auth::default_password_checks();
    let gw = gateway::start(|c| {
        c.auth.mode = "users".into();
        c.auth.users_file = users.display().to_string();
    })
    .await;
    let login_url = gw.url("/topics");
    let logins = futures::future::join_all((0..logins_at_once).map(|_| {
        let request = gw
            .client
            .get(&login_url)
            .basic_auth("slow", Some("slow-pw"));
        async move { request.send().await.unwrap().status().as_u16() }
    }));
    tokio::pin!(logins);
    let mut answered_meanwhile = 0;
    let statuses = loop {
        tokio::select! {
            statuses = &mut logins => break statuses,
            health = gw.client.get(gw.url("/healthy")).send() => {
                assert_eq!(health.unwrap().status().as_u16(), 200);
                answered_meanwhile += 1;
            }
        }
    };
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every login let in after its check: {statuses:?}"
    );
    assert!(
        answered_meanwhile >= 10,
        "/healthy answered {answered_meanwhile} times while {logins_at_once} password checks ran"
    );
    let metrics = gw.metrics().await;
    let checks = metrics
        .lines()
        .find_map(|l| l.strip_prefix("barnabas_password_checks_total "))
        .unwrap_or_else(|| panic!("no barnabas_password_checks_total: {metrics}"));
    assert_eq!(checks, logins_at_once.to_string(), "each login checked");
    gw.stop().await;
}

/// docs/security.md §Principals: failed logins from one address are slowed — the first two
/// answered at once, the third after 250 ms, the fourth after 500 ms — and a success clears
/// them. Wrong bearer tokens (no password hash to pay for) over HTTP from 127.0.0.1; the
/// delays are lower bounds, and the failure after the success is compared with the second
/// (1 s) it would have waited without the reset.
#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_from_one_address_are_slowed_and_a_success_clears_them() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(secured(dir.path())).await;
    let login = |token: &'static str| {
        let request = gw.client.get(gw.url("/topics")).bearer_auth(token).send();
        async move {
            let started = std::time::Instant::now();
            let status = request.await.unwrap().status().as_u16();
            (status, started.elapsed())
        }
    };
    let mut waits = Vec::new();
    for _ in 0..4 {
        let (status, took) = login("wrong-token").await;
        assert_eq!(status, 401);
        waits.push(took);
    }
    eprintln!("figures: four failed logins answered after {waits:?}");
    assert!(
        waits[2] >= std::time::Duration::from_millis(250),
        "the third failure waits 250 ms: {waits:?}"
    );
    assert!(
        waits[3] >= std::time::Duration::from_millis(500),
        "the fourth waits 500 ms: {waits:?}"
    );
    assert_eq!(
        login("token-1").await.0,
        200,
        "the right token still gets in"
    );
    let (status, after_success) = login("wrong-token").await;
    assert_eq!(status, 401);
    assert!(
        after_success < std::time::Duration::from_secs(1),
        "a success cleared the failures (the fifth would wait 1 s): {after_success:?}"
    );
    gw.stop().await;
}
