//! Security round 2 (issue 20), the gateway's state and the HTTP and AMQP front ends, each
//! finding reproduced with a stock client: curl, python3-qpid-proton, mosquitto_pub/sub. The
//! gateway runs in-process with its embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use barnabas::config::{AclConfig, Config, MqttMapping};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use common::{gateway, mosquitto, read_topic, text};
use serde_json::json;

const JSON: &str = "content-type: application/vnd.kafka.json.v2+json";
const BINARY: &str = "content-type: application/vnd.kafka.binary.v2+json";
const V2: &str = "content-type: application/vnd.kafka.v2+json";
const ACCEPT_JSON: &str = "accept: application/vnd.kafka.json.v2+json";

/// curl; returns (status, headers and body as one text).
fn curl(args: &[&str]) -> (u16, String) {
    common::curl_status(args)
}

/// [`curl`] off the runtime's threads.
async fn curl_async(args: &[&str]) -> (u16, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || curl(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

/// Users `device-1` (`s3cret`) and `reader` (`reader-pw`) from the users file, with `acl`.
fn users_with(dir: &std::path::Path, acl: Vec<(&str, Vec<&str>)>) -> impl FnOnce(&mut Config) {
    let users = common::write_test_users(dir);
    let acl: Vec<AclConfig> = acl
        .into_iter()
        .map(|(p, allow)| AclConfig {
            principal: p.into(),
            allow: allow.into_iter().map(str::to_owned).collect(),
        })
        .collect();
    move |c: &mut Config| {
        c.auth.mode = "users".into();
        c.auth.users_file = users.display().to_string();
        c.acl = acl;
    }
}

/// One AMQP attempt with python3-qpid-proton: (succeeded, error text).
async fn proton(url: &str, what: &str, address: &str) -> (bool, String) {
    common::proton_attempt(url, what, address).await
}

/// Finding 1: the gateway's state topics (and Kafka's `__*`) are refused to every client
/// through every front end and mapping, even with no ACL at all (everything else allowed).
/// Before: `POST /topics/barnabas.mqtt.sessions` was written (200), which let any client
/// disconnect another MQTT client with a forged session record.
#[tokio::test(flavor = "multi_thread")]
async fn internal_topics_are_refused_to_every_client_whatever_the_acl() {
    let gw = gateway::start(|c| {
        c.amqp.listen = "127.0.0.1:0".into();
        c.mqtt.mapping = vec![MqttMapping {
            pattern: "evil/{x}".into(),
            kafka_topic: "barnabas.mqtt.{x}".into(),
            key: None,
        }];
    })
    .await;
    let url = |path: &str| format!("{}{path}", gw.base);
    let forged = json!({"records":[{
        "key": B64.encode("vic"),
        "value": B64.encode(r#"{"owner":"x","since_ms":99999999999999,"connected":true,"expiry_secs":0,"subscriptions":[]}"#),
    }]})
    .to_string();

    // HTTP produce, metadata, consumers and SSE: 403 JSON.
    for topic in [
        "barnabas.mqtt.sessions",
        "barnabas.http.consumers",
        "__consumer_offsets",
    ] {
        let (status, answer) = curl_async(&[
            "-X",
            "POST",
            "-H",
            BINARY,
            "--data",
            &forged,
            &url(&format!("/topics/{topic}")),
        ])
        .await;
        assert_eq!(status, 403, "produce to {topic}: {answer}");
        assert!(answer.contains("\"error_code\":403"), "{answer}");
    }
    let (status, answer) = curl_async(&[&url("/topics/barnabas.mqtt.sessions")]).await;
    assert_eq!(status, 403, "metadata of an internal topic: {answer}");
    let (_, listing) = curl_async(&[&url("/topics")]).await;
    assert!(!listing.contains("barnabas."), "{listing}");
    let (status, answer) = curl_async(&[
        "-H",
        "accept: text/event-stream",
        &url("/topics/barnabas.mqtt.sessions/events"),
    ])
    .await;
    assert_eq!(status, 403, "SSE of an internal topic: {answer}");
    let (status, answer) = curl_async(&[
        "-X",
        "POST",
        "-H",
        V2,
        "--data",
        "{}",
        &url("/consumers/barnabas.follow.x"),
    ])
    .await;
    assert_eq!(status, 403, "an internal consumer group: {answer}");
    let instance = gw.consumer("spies", json!({"name": "s1"})).await;
    for (path, body) in [
        ("subscription", r#"{"topics":["barnabas.http.consumers"]}"#),
        (
            "assignments",
            r#"{"partitions":[{"topic":"barnabas.mqtt.retained","partition":0}]}"#,
        ),
    ] {
        let (status, answer) = curl_async(&[
            "-X",
            "POST",
            "-H",
            V2,
            "--data",
            body,
            &url(&format!("{instance}/{path}")),
        ])
        .await;
        assert_eq!(status, 403, "{path}: {answer}");
    }

    // AMQP: sender and receiver links refused with amqp:unauthorized-access.
    let amqp = format!("amqp://{}", gw.gateway.amqp_addr().unwrap());
    let (ok, error) = proton(&amqp, "send", "barnabas.mqtt.sessions").await;
    assert!(!ok && error.contains("unauthorized-access"), "{error}");
    let (ok, error) = proton(&amqp, "receive", "barnabas.http.consumers/group.id/g").await;
    assert!(!ok && error.contains("unauthorized-access"), "{error}");

    // MQTT through a mapping that resolves to an internal topic: v5 PUBACK 0x87, v3.1.1
    // closed unacknowledged, SUBACK refused.
    let mqtt = gw.gateway.mqtt_addr().unwrap();
    let v5 = mosquitto(
        "mosquitto_pub",
        mqtt,
        &["-V", "mqttv5", "-q", "1", "-t", "evil/sessions", "-m", "x"],
    );
    assert!(
        text(&v5).to_ascii_lowercase().contains("not authori"),
        "{}",
        text(&v5)
    );
    let v3 = mosquitto(
        "mosquitto_pub",
        mqtt,
        &[
            "-V",
            "mqttv311",
            "-q",
            "1",
            "-t",
            "evil/sessions",
            "-m",
            "x",
        ],
    );
    assert!(!v3.status.success(), "{}", text(&v3));
    let sub = mosquitto(
        "mosquitto_sub",
        mqtt,
        &["-V", "mqttv5", "-t", "evil/retained", "-C", "1", "-W", "3"],
    );
    assert!(
        text(&sub).to_ascii_lowercase().contains("denied"),
        "{}",
        text(&sub)
    );
    gw.stop().await;
}

/// A TCP listener that records whether anyone connected (a forwarding target).
fn trap() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = hit.clone();
    std::thread::spawn(move || {
        for _ in listener.incoming().flatten() {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (addr, hit)
}

/// Finding 1, second part: consumer-instance records are validated before they are applied.
/// The forgeries are written straight to Kafka (as a Kafka client could; clients of the
/// gateway no longer can). Before: an `owner_url` with user info and a path was followed
/// (the real owner's requests forwarded, `Authorization` included), and an adopted record's
/// topics were read without the adopting client's read ACL.
#[tokio::test(flavor = "multi_thread")]
async fn forged_consumer_instance_records_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(users_with(
        dir.path(),
        vec![("reader", vec!["read:telemetry", "group:*"])],
    ))
    .await;
    let url = |path: &str| format!("{}{path}", gw.base);
    let dead = common::free_addr();
    let (trap_addr, trapped) = trap();
    let record = |name: &str, owner_url: &str, topics: &[&str]| {
        json!({
            "group": "audit", "name": name, "format": "json",
            "auto_offset_reset": "earliest", "enable_auto_commit": true,
            "properties": {"plugin.library.paths": "/tmp/evil.so"},
            "mode": {"kind": "topics", "topics": topics},
            "owner": "someone", "owner_url": owner_url, "creator": "reader",
        })
        .to_string()
    };
    common::produce(
        &gw,
        "barnabas.http.consumers",
        r#"["audit","ssrf"]"#,
        &record(
            "ssrf",
            &format!("http://x@{trap_addr}/steal?"),
            &["telemetry"],
        ),
    )
    .await;
    common::produce(
        &gw,
        "barnabas.http.consumers",
        r#"["audit","secrets"]"#,
        &record("secrets", &format!("http://{dead}"), &["secrets"]),
    )
    .await;
    common::produce(
        &gw,
        "barnabas.http.consumers",
        r#"["audit","props"]"#,
        &record("props", &format!("http://{dead}"), &["telemetry"]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Adopted without the record's librdkafka properties (a plugin path here).
    let (status, answer) = curl_async(&[
        "-u",
        "reader:reader-pw",
        "-H",
        ACCEPT_JSON,
        &url("/consumers/audit/instances/props/records"),
    ])
    .await;
    assert_eq!(
        status, 200,
        "adopted with the gateway's own settings: {answer}"
    );
    let (status, answer) = curl_async(&[
        "-u",
        "reader:reader-pw",
        "-H",
        ACCEPT_JSON,
        &url("/consumers/audit/instances/ssrf/records"),
    ])
    .await;
    assert_eq!(
        status, 404,
        "a record with a bad owner_url is ignored: {answer}"
    );
    assert!(
        !trapped.load(std::sync::atomic::Ordering::SeqCst),
        "the request was forwarded to the forged owner_url"
    );
    let (status, answer) = curl_async(&[
        "-u",
        "reader:reader-pw",
        "-H",
        ACCEPT_JSON,
        &url("/consumers/audit/instances/secrets/records"),
    ])
    .await;
    assert_eq!(status, 403, "adoption re-checks the read ACL: {answer}");
    gw.stop().await;
}

/// Finding 2: client-supplied `barnabas.*` headers are dropped on the way in (HTTP record
/// headers, AMQP application-properties); `barnabas.mqtt.topic` from HTTP stays, validated.
/// Before: they were written as sent.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_headers_from_clients_are_dropped() {
    let gw = gateway::start(|c| c.amqp.listen = "127.0.0.1:0".into()).await;
    let url = |path: &str| format!("{}{path}", gw.base);
    let header = |k: &str, v: &str| json!({"key": k, "value": B64.encode(v)});
    let body = json!({"records":[{"value": 1, "headers": [
        header("barnabas.mqtt.message_expiry", "18446744073709551615"),
        header("barnabas.mqtt.topic", "replies/a"),
        header("app", "kept"),
    ]}]})
    .to_string();
    let (status, answer) = curl_async(&[
        "-X",
        "POST",
        "-H",
        JSON,
        "--data",
        &body,
        &url("/topics/hdr-http"),
    ])
    .await;
    assert_eq!(status, 200, "{answer}");
    let got = read_topic(&gw, "hdr-http", 1).await;
    let keys: Vec<&str> = got[0].headers.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(keys, vec!["barnabas.mqtt.topic", "app"], "{got:?}");
    for bad in ["replies/+", "a\u{0}b", ""] {
        let body =
            json!({"records":[{"value": 1, "headers": [header("barnabas.mqtt.topic", bad)]}]})
                .to_string();
        let (status, answer) = curl_async(&[
            "-X",
            "POST",
            "-H",
            JSON,
            "--data",
            &body,
            &url("/topics/hdr-http"),
        ])
        .await;
        assert_eq!(status, 422, "MQTT topic {bad:?}: {answer}");
    }

    let amqp = format!("amqp://{}", gw.gateway.amqp_addr().unwrap());
    let props = r#"{"barnabas.mqtt.qos": "2", "barnabas.mqtt.topic": "x/y", "app": "kept"}"#;
    let out =
        common::system_python_async("amqp_proton.py", &["send_props", &amqp, "hdr-amqp", props])
            .await;
    assert!(out.contains(r#""accepted": 1"#), "{out}");
    let got = read_topic(&gw, "hdr-amqp", 1).await;
    assert!(
        got[0]
            .headers
            .iter()
            .all(|h| !h.key.starts_with("barnabas.")),
        "{:?}",
        got[0].headers
    );
    assert!(got[0].headers.iter().any(|h| h.key == "app"));
    gw.stop().await;
}

/// Finding 3: with ACLs, a `topic_pattern` is accepted only as a literal the ACL grants.
/// Before: `read:public.*` admitted the regex `public.x|secret` (it matched the glob).
#[tokio::test(flavor = "multi_thread")]
async fn topic_patterns_are_not_checked_as_globs() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(users_with(
        dir.path(),
        vec![("reader", vec!["read:public.*", "group:*"])],
    ))
    .await;
    let url = |path: &str| format!("{}{path}", gw.base);
    let (status, answer) = curl_async(&[
        "-u",
        "reader:reader-pw",
        "-X",
        "POST",
        "-H",
        V2,
        "--data",
        r#"{"name":"p1","format":"json"}"#,
        &url("/consumers/pat"),
    ])
    .await;
    assert_eq!(status, 200, "{answer}");
    let subscribe = |pattern: &str| {
        let body = json!({ "topic_pattern": pattern }).to_string();
        let target = url("/consumers/pat/instances/p1/subscription");
        async move {
            curl_async(&[
                "-u",
                "reader:reader-pw",
                "-X",
                "POST",
                "-H",
                V2,
                "--data",
                &body,
                &target,
            ])
            .await
        }
    };
    for regex in [
        "public.x|secret",
        "public.*",
        "(public|secret).x",
        r"public\wx",
    ] {
        let (status, answer) = subscribe(regex).await;
        assert_eq!(status, 403, "{regex}: {answer}");
    }
    for literal in [r"public\.x", r"^public\.x_y-z$"] {
        let (status, answer) = subscribe(literal).await;
        assert_eq!(status, 204, "a literal the ACL grants, {literal}: {answer}");
    }
    gw.stop().await;
}

/// Finding 4: a consumer instance is its creator's, on every replica. Before: any principal
/// granted the group could read from and delete it. Also docs/security.md §Not built yet: a
/// request forwarded to the owner replica carries the client's `Authorization` header, Basic
/// and Bearer (the owner authenticates it again and answers 401 without it).
///
/// Broken to (forwarding): not run without the header (a crate edit). By reasoning: replica b
/// forwards to a, which holds the instance; a's authentication layer runs on the forwarded
/// request, so without the header the creator's 204 and 200 through b would be 401. That b
/// forwarded rather than adopted was seen in the log (`RUST_LOG=barnabas_http=debug`: no
/// "consumer instance adopted" line).
#[tokio::test(flavor = "multi_thread")]
async fn consumer_instances_belong_to_their_creator() {
    let dir = tempfile::tempdir().unwrap();
    let acl = vec![
        ("device-1", vec!["read:telemetry", "group:shared"]),
        ("reader", vec!["read:telemetry", "group:shared"]),
    ];
    let a = gateway::start(users_with(dir.path(), acl.clone())).await;
    let b = gateway::start_on(Some(a.kafka.clone()), users_with(dir.path(), acl)).await;
    let (status, answer) = curl_async(&[
        "-u",
        "device-1:s3cret",
        "-X",
        "POST",
        "-H",
        V2,
        "--data",
        r#"{"name":"mine","format":"json"}"#,
        &format!("{}/consumers/shared", a.base),
    ])
    .await;
    assert_eq!(status, 200, "{answer}");
    let instance = "/consumers/shared/instances/mine";
    for base in [&a.base, &b.base] {
        let (status, answer) = curl_async(&[
            "-u",
            "reader:reader-pw",
            "-H",
            ACCEPT_JSON,
            &format!("{base}{instance}/records"),
        ])
        .await;
        assert_eq!(status, 403, "another principal polls via {base}: {answer}");
        let (status, answer) = curl_async(&[
            "-u",
            "reader:reader-pw",
            "-X",
            "DELETE",
            &format!("{base}{instance}"),
        ])
        .await;
        assert_eq!(
            status, 403,
            "another principal deletes via {base}: {answer}"
        );
    }
    // Its creator still uses it, through either replica.
    for base in [&b.base, &a.base] {
        let (status, answer) = curl_async(&[
            "-u",
            "device-1:s3cret",
            "-X",
            "POST",
            "-H",
            V2,
            "--data",
            r#"{"topics":["telemetry"]}"#,
            &format!("{base}{instance}/subscription"),
        ])
        .await;
        assert_eq!(status, 204, "the creator via {base}: {answer}");
    }
    // Through the replica that does not hold it, with a bearer token too: the forwarded
    // request carries the client's Authorization header, which the owner checks again (without
    // it the owner would answer 401).
    let (status, answer) = curl_async(&[
        "-H",
        "authorization: Bearer token-1",
        "-H",
        ACCEPT_JSON,
        &format!("{}{instance}/records?timeout=100", b.base),
    ])
    .await;
    assert_eq!(status, 200, "the creator's bearer token via b: {answer}");
    b.stop().await;
    a.stop().await;
}

/// Finding 5: Kafka consumers per client are bounded: AMQP receiver links per connection
/// (`limits.max_consumers_per_connection`, default 8), SSE streams count against
/// `limits.max_consumers_per_principal`, and with `auth.mode = "none"` invented Basic user
/// names are all `anonymous`. Before: 9 links and 3 streams of 3 invented users were opened.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_consumers_per_client_are_bounded() {
    let gw = gateway::start(|c| {
        c.amqp.listen = "127.0.0.1:0".into();
        c.limits.max_consumers_per_principal = 2;
        // An SSE answer's status line reaches curl with its first bytes.
        c.http.sse_keep_alive_ms = barnabas::config::Millis(300);
    })
    .await;
    let amqp = format!("amqp://{}", gw.gateway.amqp_addr().unwrap());
    let out = common::system_python_async(
        "amqp_proton.py",
        &["receivers", &amqp, "links/group.id/links", "9"],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("resource-limit-exceeded")),
        "the 9th receiver link: {out}"
    );

    let sse = format!("{}/topics/streamed/events", gw.base);
    let mut held = Vec::new();
    for user in ["u1:x", "u2:x"] {
        let mut child = Command::new("curl")
            .args(["-s", "-i", "-N", "--max-time", "120", "-u", user, &sse])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Held open once its status line arrived.
        let stdout = child.stdout.take().unwrap();
        let (status, reader) = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut line = String::new();
            let mut reader = std::io::BufReader::new(stdout);
            reader.read_line(&mut line).unwrap();
            (line, reader)
        })
        .await
        .unwrap();
        assert!(status.contains("200"), "stream of {user}: {status}");
        held.push((child, reader));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, answer) = curl_async(&["--max-time", "2", "-u", "u3:x", &sse]).await;
        if status == 429 {
            assert!(answer.contains("max_consumers_per_principal"), "{answer}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a third SSE stream under invented user names: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (mut child, _) in held {
        let _ = child.kill();
        let _ = child.wait();
    }
    gw.stop().await;
}

/// Threads of this process (the gateway runs in it).
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Finding 6: concurrent password checks are capped; beyond the cap a login is answered
/// "server busy" (503 with Retry-After) without a thread. Before: 64 parallel wrong logins
/// ran 64 argon2 checks on 64 blocking threads.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_wrong_logins_are_refused_busy_not_queued_on_threads() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(users_with(dir.path(), vec![])).await;
    let base_threads = threads();
    let client = reqwest::Client::new();
    let target = format!("{}/topics", gw.base);
    let sampler = tokio::spawn(async {
        let mut peak = 0;
        for _ in 0..100 {
            peak = peak.max(threads());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    let logins = (0..64).map(|i| {
        let request = client
            .get(&target)
            .basic_auth(format!("user-{i}"), Some("wrong"))
            .send();
        async move {
            let r = request.await.unwrap();
            let retry = r.headers().contains_key("retry-after");
            (r.status().as_u16(), retry)
        }
    });
    let answers = futures::future::join_all(logins).await;
    let peak = sampler.await.unwrap();
    let busy = answers.iter().filter(|(s, _)| *s == 503).count();
    assert!(busy > 0, "no login refused as busy: {answers:?}");
    assert!(answers
        .iter()
        .all(|(s, retry)| *s == 401 || (*s == 503 && *retry)));
    assert!(
        peak < base_threads + 24,
        "threads grew from {base_threads} to {peak} for 64 logins"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"reason="busy""#),
        "busy refusals counted"
    );
    gw.stop().await;
}

/// Finding 7: the HTTP method label comes from a fixed set. Before: each odd method became a
/// series of its own.
#[tokio::test(flavor = "multi_thread")]
async fn odd_http_methods_do_not_grow_the_metrics() {
    let gw = gateway::start(|_| {}).await;
    let target = format!("{}/topics", gw.base);
    let before = gw.metrics().await.len();
    tokio::task::spawn_blocking(move || {
        for i in 0..60 {
            curl(&["-X", &format!("ODDMETHOD{i}"), &target]);
        }
    })
    .await
    .unwrap();
    let after = gw.metrics().await;
    assert!(!after.contains("ODDMETHOD"), "method labels from clients");
    assert!(
        after.len() < before + 2_000,
        "/metrics grew from {before} to {} bytes",
        after.len()
    );
    gw.stop().await;
}

/// Finding 8: topic metadata needs the read ACL, and `GET /topics` lists only readable
/// topics. Before: any authenticated principal saw every topic.
#[tokio::test(flavor = "multi_thread")]
async fn topic_metadata_needs_the_read_acl() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(users_with(
        dir.path(),
        vec![("device-1", vec!["read:commands", "write:*"])],
    ))
    .await;
    let url = |path: &str| format!("{}{path}", gw.base);
    for topic in ["telemetry", "commands"] {
        let (status, answer) = curl_async(&[
            "-u",
            "device-1:s3cret",
            "-X",
            "POST",
            "-H",
            JSON,
            "--data",
            r#"{"records":[{"value":1}]}"#,
            &url(&format!("/topics/{topic}")),
        ])
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, listing) = curl_async(&["-u", "device-1:s3cret", &url("/topics")]).await;
    assert_eq!(status, 200, "{listing}");
    assert!(
        listing.contains("commands") && !listing.contains("telemetry"),
        "{listing}"
    );
    for path in [
        "/topics/telemetry",
        "/topics/telemetry/partitions",
        "/topics/telemetry/partitions/0",
        "/topics/telemetry/partitions/0/offsets",
    ] {
        let (status, answer) = curl_async(&["-u", "device-1:s3cret", &url(path)]).await;
        assert_eq!(status, 403, "{path}: {answer}");
    }
    let (status, answer) = curl_async(&["-u", "device-1:s3cret", &url("/topics/commands")]).await;
    assert_eq!(status, 200, "{answer}");
    gw.stop().await;
}

/// Finding 9 (lows): `POST /admin/topics` has a partition cap (422 above
/// `limits.max_topic_partitions`, default 1000); one produce request larger than the rate
/// bucket's burst is 413 (before: written at once). Before: 200 / 201.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_refused() {
    let gw = gateway::start(|c| c.limits.publish_rate = 5).await;
    let url = |path: &str| format!("{}{path}", gw.base);
    let six: Vec<String> = (0..6).map(|i| format!(r#"{{"value":{i}}}"#)).collect();
    let body = format!(r#"{{"records":[{}]}}"#, six.join(","));
    let (status, answer) = curl_async(&[
        "-X",
        "POST",
        "-H",
        JSON,
        "--data",
        &body,
        &url("/topics/rated"),
    ])
    .await;
    assert_eq!(status, 413, "{answer}");
    let (status, answer) = curl_async(&[
        "-X",
        "POST",
        "-H",
        JSON,
        "--data",
        r#"{"topic_name":"huge","partitions_count":1001}"#,
        &url("/admin/topics"),
    ])
    .await;
    assert_eq!(status, 422, "{answer}");
    gw.stop().await;
}

/// Finding 9 (lows): `[[acl]]` rules under `auth.mode = "none"` are no protection; the
/// binary says so in `check-config` (and logs it at start). Before: silent.
#[test]
fn check_config_warns_about_acls_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("barnabas.toml");
    std::fs::write(
        &file,
        "[auth]\nmode = \"none\"\n[[acl]]\nprincipal = \"device-1\"\nallow = [\"write:telemetry\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_barnabas"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("# warning: [[acl]] rules with auth.mode = \"none\""),
        "{}",
        text(&out)
    );
}

/// Finding 1, MQTT state: a session record no replica could have written (here `since_ms` in
/// the year 5138, written by a Kafka client straight to the state topic) is ignored with a
/// warning, not applied. Before: it took the session over, and live client `vic` got
/// DISCONNECT 0x8E (Session taken over).
#[tokio::test(flavor = "multi_thread")]
async fn forged_session_records_do_not_take_sessions_over() {
    let gw = gateway::start(|_| {}).await;
    let mqtt = gw.gateway.mqtt_addr().unwrap();
    let victim = common::mosquitto_async(
        "mosquitto_sub",
        mqtt,
        &[
            "-V", "mqttv5", "-i", "vic", "-d", "-t", "any/x", "-C", "1", "-W", "6",
        ],
    );
    let victim = tokio::spawn(victim);
    gw.wait_for_metric("barnabas_mqtt_subscriptions 1", "vic subscribed")
        .await;
    common::produce(
        &gw,
        "barnabas.mqtt.sessions",
        "vic",
        r#"{"owner":"x","since_ms":99999999999999,"connected":true,"expiry_secs":0,"subscriptions":[]}"#,
    )
    .await;
    let out = victim.await.unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("Received DISCONNECT"), "{said}");
    gw.stop().await;
}

/// Arithmetic on client input is checked: an SSE `Last-Event-ID` at the largest offset is
/// refused (400), not resumed at offset + 1. Before: the addition overflowed (a panic, 500).
#[tokio::test(flavor = "multi_thread")]
async fn a_last_event_id_at_the_largest_offset_is_refused() {
    let gw = gateway::start(|_| {}).await;
    let (status, answer) = curl_async(&[
        "--max-time",
        "5",
        "-H",
        "Last-Event-ID: 0:9223372036854775807",
        &format!("{}/topics/resumed/events", gw.base),
    ])
    .await;
    assert_eq!(status, 400, "{answer}");
    gw.stop().await;
}

/// Finding 9 (lows): with `mqtt.ws_allowed_origins`, a WebSocket handshake from another
/// browser origin is refused (403); a listed origin, and a client sending no `Origin`, are
/// served (101). Before: no such setting, every origin got 101.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_websocket_handshakes_from_other_origins_are_refused() {
    let gw = gateway::start(|c| {
        c.mqtt.ws_listen = "127.0.0.1:0".into();
        c.mqtt.ws_allowed_origins = vec!["http://app.example".into()];
    })
    .await;
    let url = format!("http://{}/mqtt", gw.gateway.mqtt_ws_addr().unwrap());
    let handshake = |origin: Option<&str>| {
        let mut args = vec![
            "--max-time".to_owned(),
            "3".to_owned(),
            "-H".to_owned(),
            "Connection: Upgrade".to_owned(),
            "-H".to_owned(),
            "Upgrade: websocket".to_owned(),
            "-H".to_owned(),
            "Sec-WebSocket-Version: 13".to_owned(),
            "-H".to_owned(),
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
            "-H".to_owned(),
            "Sec-WebSocket-Protocol: mqtt".to_owned(),
        ];
        if let Some(o) = origin {
            args.push("-H".into());
            args.push(format!("Origin: {o}"));
        }
        args.push(url.clone());
        async move { curl_async(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    let (status, answer) = handshake(Some("http://evil.example")).await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = handshake(Some("http://app.example")).await;
    assert_eq!(status, 101, "{answer}");
    let (status, answer) = handshake(None).await;
    assert_eq!(status, 101, "{answer}");
    gw.stop().await;
}

/// Finding 6 over MQTT: with `auth.max_password_checks = 1`, parallel wrong logins beyond the
/// one being checked get CONNACK "server busy" (v5 0x89) / code 3, which mosquitto_pub calls
/// "broker unavailable" (v3.1.1), the rest "bad user name or password". Before: every one was
/// checked (code 4 / 0x86 for all).
#[tokio::test(flavor = "multi_thread")]
async fn parallel_mqtt_logins_beyond_the_cap_are_told_server_busy() {
    let dir = tempfile::tempdir().unwrap();
    let secure = users_with(dir.path(), vec![]);
    let gw = gateway::start(|c| {
        secure(c);
        c.auth.max_password_checks = 1;
    })
    .await;
    let mqtt = gw.gateway.mqtt_addr().unwrap();
    for version in ["mqttv5", "mqttv311"] {
        let attempts = (0..12).map(|i| {
            let user = format!("user-{i}");
            common::mosquitto_async(
                "mosquitto_pub",
                mqtt,
                &[
                    "-V", version, "-u", &user, "-P", "wrong", "-t", "t", "-m", "x",
                ],
            )
        });
        let outs = futures::future::join_all(attempts).await;
        let said: Vec<String> = outs.iter().map(|o| text(o).to_ascii_lowercase()).collect();
        assert!(
            said.iter()
                .any(|s| s.contains("server busy") || s.contains("broker unavailable")),
            "{version}: {said:?}"
        );
        assert!(
            outs.iter().all(|o| !o.status.success()),
            "{version}: {said:?}"
        );
    }
    gw.stop().await;
}

/// Finding 6 over AMQP: beyond `auth.max_password_checks` a SASL PLAIN login ends with the
/// outcome `sys-temp` (a temporary failure), counted as busy; python3-qpid-proton clients see
/// their login fail either way.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_amqp_logins_beyond_the_cap_are_temporary_failures() {
    let dir = tempfile::tempdir().unwrap();
    let secure = users_with(dir.path(), vec![]);
    let gw = gateway::start(|c| {
        secure(c);
        c.auth.max_password_checks = 1;
        c.amqp.listen = "127.0.0.1:0".into();
    })
    .await;
    let amqp = gw.gateway.amqp_addr().unwrap();
    let attempts = (0..8).map(|i| {
        let url = format!("amqp://user-{i}:wrong@{amqp}");
        async move { proton(&url, "send", "t").await }
    });
    let outcomes = futures::future::join_all(attempts).await;
    assert!(outcomes.iter().all(|(ok, _)| !ok), "{outcomes:?}");
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains(r#"protocol="amqp""#) && l.contains(r#"reason="busy""#)),
        "{outcomes:?}\n{metrics}"
    );
    gw.stop().await;
}

/// Under ACLs (docs/security.md §Authorization): `POST /admin/topics` needs `write:` on the
/// new topic (403 otherwise, nothing created), topic metadata needs a login (401 without),
/// a `topic_pattern` subscription needs a `read:` grant matching its text (403 otherwise) and
/// an SSE stream needs `read:` on its topic and `group:` on its group (403 otherwise); each
/// with the granted case alongside.
#[tokio::test(flavor = "multi_thread")]
async fn admin_topics_topic_patterns_and_sse_streams_need_their_grants() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::start(users_with(
        dir.path(),
        vec![
            (
                "device-1",
                vec!["write:made.*", "read:commands", "group:ops"],
            ),
            ("reader", vec!["read:telemetry", "group:*"]),
        ],
    ))
    .await;
    let url = |path: &str| format!("{}{path}", gw.base);
    const DEVICE: &[&str; 2] = &["-u", "device-1:s3cret"];
    const READER: &[&str; 2] = &["-u", "reader:reader-pw"];
    let create = |login: &'static [&'static str; 2], topic: &str| {
        let body = json!({ "topic_name": topic, "partitions_count": 1 }).to_string();
        let target = url("/admin/topics");
        async move {
            let mut args: Vec<&str> = login.to_vec();
            args.extend([
                "-X",
                "POST",
                "-H",
                JSON,
                "--data",
                body.as_str(),
                target.as_str(),
            ]);
            curl_async(&args).await
        }
    };
    let (status, answer) = create(READER, "made.by-reader").await;
    assert_eq!(status, 403, "reader has no write: grant: {answer}");
    assert!(answer.contains(r#""error_code":403"#), "{answer}");
    let (status, answer) = create(DEVICE, "made.by-device").await;
    assert!(
        (200..300).contains(&status),
        "device-1 may write made.*: {answer}"
    );
    let topics = gw.gateway.backend().admin.list_topics().await.unwrap();
    assert!(
        topics.iter().any(|t| t == "made.by-device")
            && !topics.iter().any(|t| t == "made.by-reader"),
        "{topics:?}"
    );
    // Topic metadata: no login is 401; a login with the read grant is served.
    for path in ["/topics", "/topics/commands"] {
        let (status, answer) = curl_async(&[&url(path)]).await;
        assert_eq!(status, 401, "{path} without a login: {answer}");
    }
    gw.gateway
        .backend()
        .admin
        .create_topic("commands", None, None)
        .await
        .unwrap();
    let (status, answer) = curl_async(&[DEVICE[0], DEVICE[1], &url("/topics/commands")]).await;
    assert_eq!(status, 200, "{answer}");

    // topic_pattern: a literal the ACL does not grant is 403, one it grants 204.
    let (status, answer) = curl_async(&[
        READER[0],
        READER[1],
        "-X",
        "POST",
        "-H",
        V2,
        "--data",
        r#"{"name":"p1","format":"json"}"#,
        &url("/consumers/pat"),
    ])
    .await;
    assert_eq!(status, 200, "{answer}");
    for (pattern, want) in [("commands", 403), ("telemetry", 204)] {
        let body = json!({ "topic_pattern": pattern }).to_string();
        let (status, answer) = curl_async(&[
            READER[0],
            READER[1],
            "-X",
            "POST",
            "-H",
            V2,
            "--data",
            &body,
            &url("/consumers/pat/instances/p1/subscription"),
        ])
        .await;
        assert_eq!(status, want, "topic_pattern {pattern}: {answer}");
    }

    // SSE: (topic, group) both granted streams (200, read until curl's time limit); a topic
    // or a group not granted is 403.
    for (path, want) in [
        ("/topics/commands/events?group=ops", 200),
        ("/topics/telemetry/events?group=ops", 403),
        ("/topics/commands/events?group=audit", 403),
        ("/topics/commands/events", 200),
    ] {
        let (status, answer) = curl_async(&[
            DEVICE[0],
            DEVICE[1],
            "--max-time",
            "2",
            "-H",
            "accept: text/event-stream",
            &url(path),
        ])
        .await;
        assert_eq!(status, want, "SSE {path}: {answer}");
    }
    gw.stop().await;
}

/// An AMQP client that skips SASL (python3-qpid-proton with SASL off: the AMQP header at
/// once) is `anonymous`: refused with a close carrying `amqp:unauthorized-access` when
/// anonymous clients are not allowed (`auth.allow_anonymous`); when they are, it is served
/// with anonymous's grants (a topic granted to `anonymous` is written, another is refused at
/// the attach). SASL ANONYMOUS likewise: only when allowed (otherwise not offered, and the
/// login fails with `amqp:unauthorized-access`).
#[tokio::test(flavor = "multi_thread")]
async fn amqp_clients_without_sasl_or_with_sasl_anonymous_are_anonymous_only_when_allowed() {
    const NO_SASL: &[(&str, &str)] = &[("AMQP_NO_SASL", "1")];
    const ANONYMOUS: &[(&str, &str)] = &[("AMQP_MECHS", "ANONYMOUS")];
    for allow_anonymous in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let secure = users_with(
            dir.path(),
            vec![
                ("anonymous", vec!["write:open"]),
                ("device-1", vec!["write:telemetry"]),
            ],
        );
        let gw = gateway::start(|c| {
            secure(c);
            c.auth.allow_anonymous = allow_anonymous;
            c.amqp.listen = "127.0.0.1:0".into();
        })
        .await;
        let url = format!("amqp://{}", gw.gateway.amqp_addr().unwrap());
        let mech = common::proton_try_async(&url, "send", "open", ANONYMOUS).await;
        if allow_anonymous {
            assert!(mech.ok, "SASL ANONYMOUS when allowed: {mech:?}");
        } else {
            assert!(
                !mech.ok
                    && mech.kind == "ConnectionException"
                    && mech.condition.as_deref() == Some("amqp:unauthorized-access"),
                "SASL ANONYMOUS when not allowed: {mech:?}"
            );
        }
        let open = common::proton_try_async(&url, "send", "open", NO_SASL).await;
        if allow_anonymous {
            assert!(
                open.ok && open.outcome.as_deref() == Some("accepted"),
                "{open:?}"
            );
            let other = common::proton_try_async(&url, "send", "telemetry", NO_SASL).await;
            assert!(
                !other.ok
                    && other.kind == "LinkDetached"
                    && other.condition.as_deref() == Some("amqp:unauthorized-access"),
                "anonymous may not write telemetry: {other:?}"
            );
            assert_eq!(read_topic(&gw, "open", 2).await.len(), 2);
        } else {
            assert!(
                !open.ok
                    && open.kind == "ConnectionClosed"
                    && open.condition.as_deref() == Some("amqp:unauthorized-access"),
                "without SASL and without allow_anonymous: {open:?}"
            );
        }
        gw.stop().await;
    }
}

/// `auth.mode = "none"` checks no password, but an MQTT user name, an HTTP Basic user name
/// (or a client certificate, `tests/tls.rs`) still names the principal the ACL applies to:
/// `device-1` with any password writes where `device-1` is granted; a client naming nobody is
/// `anonymous` and refused there.
#[tokio::test(flavor = "multi_thread")]
async fn with_mode_none_a_user_name_still_names_the_principal() {
    let gw = gateway::start(|c| {
        c.acl = vec![AclConfig {
            principal: "device-1".into(),
            allow: vec!["write:mqtt".into()],
        }];
    })
    .await;
    let addr = gw.gateway.mqtt_addr().unwrap();
    let publish = |creds: &[&str], message: &str| {
        let mut args = vec!["-V", "mqttv5", "-q", "1", "-t", "any/topic", "-m", message];
        args.extend_from_slice(creds);
        mosquitto("mosquitto_pub", addr, &args)
    };
    let named = publish(&["-u", "device-1", "-P", "anything"], "named");
    assert!(named.status.success(), "{}", text(&named));
    // (mosquitto_pub reports a v5 PUBACK 0x87 as a warning and exits 0.)
    let nobody = publish(&[], "nobody");
    assert!(
        text(&nobody).contains("Publish 1 failed: Not authorized"),
        "anonymous is not device-1: {}",
        text(&nobody)
    );
    let url = format!("{}/topics/mqtt", gw.base);
    let record = r#"{"records":[{"value":"http"}]}"#;
    let (status, answer) = curl_async(&[
        "-u",
        "device-1:anything",
        "-X",
        "POST",
        "-H",
        JSON,
        "--data",
        record,
        &url,
    ])
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = curl_async(&["-X", "POST", "-H", JSON, "--data", record, &url]).await;
    assert_eq!(status, 403, "{answer}");
    let got = read_topic(&gw, "mqtt", 2).await;
    let values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(values, ["named", "\"http\""], "only device-1's writes");
    gw.stop().await;
}

/// Failed logins are logged with the peer address and the user name, never the password:
/// a wrong password over HTTP Basic (curl), MQTT (mosquitto_pub) and AMQP SASL PLAIN
/// (python3-qpid-proton) against the gateway process, whose log is then read. The MQTT line
/// names the client id too (lost once when logins moved into core; this caught it).
#[test]
fn failed_logins_are_logged_with_peer_and_user_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let users = common::write_test_users(dir.path());
    let (http, mqtt, amqp) = (
        common::free_addr(),
        common::free_addr(),
        common::free_addr(),
    );
    let config = dir.path().join("barnabas.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"{http}\"\n[mqtt]\nlisten = \"{mqtt}\"\n[amqp]\nlisten = \"{amqp}\"\n\
             [auth]\nmode = \"users\"\nusers_file = \"{}\"\n",
            users.display()
        ),
    )
    .unwrap();
    let mut gateway = common::Gateway::run_config(&config);
    gateway.wait_for_line("barnabas ready", Duration::from_secs(60));
    let (status, answer) = curl(&[
        "-u",
        "device-1:Wrong-http-pw",
        &format!("http://{http}/topics"),
    ]);
    assert_eq!(status, 401, "{answer}");
    let out = mosquitto(
        "mosquitto_pub",
        mqtt,
        &[
            "-u",
            "device-1",
            "-P",
            "Wrong-mqtt-pw",
            "-i",
            "meter-7",
            "-t",
            "t",
            "-m",
            "x",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let a = common::proton_try(
        &format!("amqp://device-1:Wrong-amqp-pw@{amqp}"),
        "send",
        "t",
        &[],
    );
    assert_eq!(a.sasl_outcome.as_deref(), Some("auth"), "{a:?}");
    for (protocol, needle) in [
        ("HTTP", "HTTP login refused"),
        ("MQTT", "MQTT login refused"),
        ("AMQP", "AMQP login refused"),
    ] {
        let line = gateway.wait_for_line(needle, Duration::from_secs(10));
        assert!(
            line.contains("127.0.0.1") && line.contains("device-1"),
            "{protocol}: the refusal names peer and user: {line}"
        );
        if protocol == "MQTT" {
            assert!(line.contains("meter-7"), "and the MQTT client id: {line}");
        }
    }
    let log = gateway.stderr();
    let leaked: Vec<&String> = log.iter().filter(|l| l.contains("Wrong-")).collect();
    assert!(leaked.is_empty(), "a password in the log: {leaked:#?}");
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(30)).success());
}

/// docs/design/scale-out.md §MQTT: "Topics whose names start with `barnabas.` or `__` are never
/// read as data by subscriptions", and its HTTP twin (docs/http.md: a pattern subscription
/// never hands out internal topics). MQTT: a rule `spy/{name}` → Kafka topic `{name}` makes
/// the filter `spy/+` a template over every topic in the cluster; a persistent subscriber (so
/// the gateway writes `barnabas.mqtt.sessions` for it) gets the record of `plain`, created
/// after its SUBSCRIBE like `barnabas.spy` and `__spy` (topics that appear later are read from
/// their beginning), and nothing of those nor of the gateway's state topics. HTTP: a consumer
/// subscribed to `topic_pattern` `.*` (no ACL, so any regex is taken) gets only `plain`'s
/// record, although `barnabas.http.consumers` holds its own instance's record.
///
/// Broken to: the two internal topics renamed `xbarnabas.spy` and `x__spy` (the same records,
/// no longer internal, as they would be to a gateway that did not leave internal topics out):
/// MQTT got `spy/xbarnabas.spy`, `spy/x__spy` and `spy/plain`, and HTTP `x__spy`, `plain` and
/// `xbarnabas.spy` — both checks failed.
#[tokio::test(flavor = "multi_thread")]
async fn internal_topics_are_never_read_as_data_by_subscriptions() {
    const INTERNAL: [&str; 2] = ["barnabas.spy", "__spy"];
    let gw = gateway::start(|c| {
        c.mqtt.mapping = vec![MqttMapping {
            pattern: "spy/{name}".into(),
            kafka_topic: "{name}".into(),
            key: None,
        }];
        c.mqtt.topic_refresh_ms = barnabas::config::Millis(300);
    })
    .await;
    let addr = gw.gateway.mqtt_addr().unwrap();
    let mut opts = rumqttc::MqttOptions::new("spy-sub", addr.ip().to_string(), addr.port());
    opts.set_clean_session(false);
    let (sub, mut el) = rumqttc::AsyncClient::new(opts, 10);
    sub.subscribe("spy/+", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), el.poll())
            .await
            .expect("SUBACK in time")
            .unwrap()
        {
            rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) => {
                assert_eq!(
                    s.return_codes,
                    [rumqttc::SubscribeReasonCode::Success(
                        rumqttc::QoS::AtLeastOnce
                    )]
                );
                break;
            }
            _ => continue,
        }
    }
    // Written with the gateway's own producer (a client could not write them at all), keyed
    // by the MQTT topic the rule (no key template) reads them back to.
    for topic in INTERNAL {
        common::produce(
            &gw,
            topic,
            &format!("spy/{topic}"),
            &format!("state of {topic}"),
        )
        .await;
    }
    // Long enough for the catalog to have seen them (refreshed every 300 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    common::produce(&gw, "plain", "spy/plain", "data").await;
    // Everything delivered until the data record came (at most 30 s), then 3 s more.
    let mut got: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let data_came = got.iter().any(|(t, _)| t == "spy/plain");
        let within = if data_came {
            Duration::from_secs(3)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match common::next_publish(&mut el, within).await {
            Some(p) => got.push((
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            )),
            None => break,
        }
    }
    assert_eq!(
        got,
        [("spy/plain".to_owned(), "data".to_owned())],
        "MQTT deliveries of spy/+"
    );
    drop(sub);

    // HTTP: a pattern subscription matching every topic.
    let instance = gw
        .consumer(
            "spies-http",
            json!({"format": "binary", "auto.offset.reset": "earliest"}),
        )
        .await;
    let a = gw
        .post_json(
            &format!("{instance}/subscription"),
            gateway::V2,
            &json!({"topic_pattern": ".*"}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let mut records = gw.poll_records(&instance, gateway::BINARY, 1).await;
    for _ in 0..3 {
        let a = gw
            .get(
                &format!("{instance}/records?timeout=1000"),
                Some(gateway::BINARY),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        records.extend(a.json.as_array().unwrap().iter().cloned());
    }
    let topics: Vec<&str> = records
        .iter()
        .map(|r| r["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["plain"], "HTTP records of topic_pattern .*");
    // The pattern had internal data to find: the topics exist and hold records.
    for topic in INTERNAL
        .iter()
        .chain(&["barnabas.http.consumers", "barnabas.mqtt.sessions"])
    {
        let w = gw
            .gateway
            .backend()
            .admin
            .watermarks(topic, 0)
            .await
            .unwrap();
        assert!(w.high > 0, "{topic} holds records: {w:?}");
    }
    gw.delete(&instance).await;
    gw.stop().await;
}

/// docs/design/scale-out.md §Failure cases: "Kafka unavailable: CONNECT still answers after
/// the 3 s catch-up bound …; retained publishes get a negative ack (v5 reason code, v3
/// connection closed) when their retained copy cannot be stored". The broker is a process of
/// its own, stopped with SIGSTOP (`kafka.produce_timeout_ms` 3 s): a persistent v5 session's
/// CONNECT gets its CONNACK (success) within 20 s, its retained QoS 1 publish a PUBACK with a
/// failure reason code (0x80), and a v3.1.1 client's retained QoS 1 publish no PUBACK but a
/// closed connection. (A refusal does not mean nothing was written: a produce request the
/// stopped broker had already received is stored when it resumes — seen here, one of the two
/// refused records was in `rooms` afterwards — as the at-least-once contract allows.)
///
/// Broken to: not run without the bounds (a crate edit). By reasoning: a CONNECT waiting for
/// the catch-up without a bound gets no CONNACK while the broker is stopped (the first
/// assertion), and a retained publish acknowledged without its records fails the second.
#[tokio::test(flavor = "multi_thread")]
async fn while_kafka_is_stopped_connect_answers_and_retained_publishes_are_refused() {
    use rumqttc::v5::{
        mqttbytes::{v5::Packet, QoS},
        ConnectionError, Event, StateError,
    };

    let (broker, bootstrap) = common::broker_process();
    let gw = gateway::start_on(Some(bootstrap), |c| {
        c.kafka.produce_timeout_ms = 3_000;
        c.mqtt.mapping = vec![MqttMapping {
            pattern: "rooms/{room}".into(),
            kafka_topic: "rooms".into(),
            key: Some("{room}".into()),
        }];
    })
    .await;
    common::produce(&gw, "rooms", "hall", "before").await;
    let addr = gw.gateway.mqtt_addr().unwrap();

    broker.signal("STOP");
    let mut opts = rumqttc::v5::MqttOptions::new("outage-v5", addr.ip().to_string(), addr.port());
    opts.set_clean_start(false);
    let mut properties = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
    properties.session_expiry_interval = Some(600);
    opts.set_connect_properties(properties);
    opts.set_connection_timeout(30);
    let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 10);
    let started = Instant::now();
    let connack = loop {
        match tokio::time::timeout(Duration::from_secs(20), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(c)))) => break c,
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK while Kafka is stopped: {other:?}"),
        }
    };
    assert_eq!(
        connack.code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success,
        "{connack:?}"
    );
    let connected_after = started.elapsed();
    client
        .publish("rooms/hall", QoS::AtLeastOnce, true, "retained v5")
        .await
        .unwrap();
    let refused = loop {
        match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => panic!("acknowledged: {a:?}"),
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::MqttState(StateError::PubAckFail { reason }))) => break reason,
            other => panic!("no negative PUBACK: {other:?}"),
        }
    };

    let (v3, mut v3_el) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new("outage-v3", addr.ip().to_string(), addr.port()),
        10,
    );
    v3_el.network_options.set_connection_timeout(30);
    v3.publish(
        "rooms/lobby",
        rumqttc::QoS::AtLeastOnce,
        true,
        "retained v3",
    )
    .await
    .unwrap();
    let v3_end = loop {
        match tokio::time::timeout(Duration::from_secs(30), v3_el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)))) => {
                panic!("v3.1.1 acknowledged: {a:?}")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break format!("{e:?}"),
            Err(_) => panic!("v3.1.1: neither PUBACK nor close in 30 s"),
        }
    };
    broker.signal("CONT");
    eprintln!("CONNACK after {connected_after:?}; v5 PUBACK {refused:?}; v3.1.1 {v3_end}");
    assert!(
        connected_after >= Duration::from_secs(2),
        "{connected_after:?}"
    );

    drop(client);
    gw.stop().await;
    drop(broker);
}

/// docs/design/scale-out.md §MQTT: "The age check keeps replayed records (at start, or
/// arriving late) from closing newer connections." A live v5 connection of client `replayed`;
/// a session record for it naming another owner but an older `since_ms` (a minute before the
/// connection, as a replayed or late record would) leaves it connected for 3 s; a record of a
/// newer connection elsewhere (`since_ms` now) closes it with DISCONNECT 0x8E Session Taken
/// Over — the control that shows such a record is acted upon. Replay at start goes through the
/// same check (`kick_unless` on every applied record).
///
/// Broken to: without the age check the older record closes the connection too (the first
/// wait fails); seen failing with the older record's `since_ms` set to now instead.
#[tokio::test(flavor = "multi_thread")]
async fn replayed_session_records_do_not_close_newer_connections() {
    use rumqttc::v5::{
        mqttbytes::v5::{DisconnectReasonCode, Packet},
        Event,
    };

    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let gw = gateway::start(|_| {}).await;
    let addr = gw.gateway.mqtt_addr().unwrap();
    let connecting_at = now_ms();
    let (client, mut el) = rumqttc::v5::AsyncClient::new(
        rumqttc::v5::MqttOptions::new("replayed", addr.ip().to_string(), addr.port()),
        10,
    );
    loop {
        match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    }
    let record = |since_ms: u64| {
        json!({
            "owner": "replica-gone/connection-7",
            "since_ms": since_ms,
            "connected": true,
            "expiry_secs": 0,
            "subscriptions": [],
        })
        .to_string()
    };
    common::produce(
        &gw,
        "barnabas.mqtt.sessions",
        "replayed",
        &record(connecting_at - 60_000),
    )
    .await;
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while let Ok(event) = tokio::time::timeout_at(quiet_until.into(), el.poll()).await {
        match event {
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                panic!("an older record closed the connection: {d:?}")
            }
            Ok(_) => {}
            Err(e) => panic!("an older record closed the connection: {e:?}"),
        }
    }

    common::produce(&gw, "barnabas.mqtt.sessions", "replayed", &record(now_ms())).await;
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(15), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Disconnect(d)))) => break d.reason_code,
            Ok(Err(rumqttc::v5::ConnectionError::MqttState(
                rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
            ))) => break reason_code,
            Ok(Ok(_)) => {}
            other => panic!("a newer record did not take the session over: {other:?}"),
        }
    };
    assert_eq!(reason, DisconnectReasonCode::SessionTakenOver);
    drop(client);
    gw.stop().await;
}

/// The records of `topic` (one partition) as they stand now, from its beginning.
async fn all_records(gw: &gateway::TestGateway, topic: &str) -> Vec<barnabas_core::ConsumedRecord> {
    let end = gw
        .gateway
        .backend()
        .admin
        .watermarks(topic, 0)
        .await
        .unwrap()
        .high;
    read_topic(gw, topic, usize::try_from(end).unwrap()).await
}

/// MQTT `burst/{id}` → Kafka topic `burst`, keyed by the id.
fn burst_mapping(c: &mut Config) {
    c.mqtt.mapping = vec![MqttMapping {
        pattern: "burst/{id}".into(),
        kafka_topic: "burst".into(),
        key: Some("{id}".into()),
    }];
}

/// docs/design/scale-out.md §MQTT: "DISCONNECT / connection loss: … a session with expiry 0
/// writes a tombstone. Records still in flight to Kafka are completed first." A v5 client
/// with a session expiry of 0 (persistent sessions write `connected: false` instead) publishes
/// 200 QoS 0 messages — never acknowledged, so still in flight when it sends DISCONNECT right
/// after — and disconnects: every one of them is in Kafka, and the last record of its key in
/// `barnabas.mqtt.sessions` is a tombstone (no value), after the ownership record its CONNECT
/// wrote. A client with expiry 600 beside it, for contrast, ends with a `connected: false`
/// record.
///
/// Broken to: a DISCONNECT that dropped what was in flight loses QoS 0 records (fewer than
/// 200); one that wrote no tombstone leaves the ownership record last. Seen failing with the
/// tombstone expected for the expiry-600 client (its last record has a value).
#[tokio::test(flavor = "multi_thread")]
async fn a_disconnect_with_expiry_0_writes_a_tombstone_and_drops_nothing_in_flight() {
    use rumqttc::v5::{
        mqttbytes::{v5::Packet, QoS},
        Event,
    };

    let gw = gateway::start(burst_mapping).await;
    let addr = gw.gateway.mqtt_addr().unwrap();
    for (id, expiry) in [("gone-at-once", 0u32), ("kept-600", 600)] {
        let mut opts = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_clean_start(expiry == 0);
        let mut properties = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
        properties.session_expiry_interval = Some(expiry);
        opts.set_connect_properties(properties);
        let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 300);
        loop {
            match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                other => panic!("no CONNACK: {other:?}"),
            }
        }
        if expiry == 0 {
            for i in 0..200 {
                client
                    .publish(
                        format!("burst/{id}"),
                        QoS::AtMostOnce,
                        false,
                        format!("m{i}"),
                    )
                    .await
                    .unwrap();
            }
        }
        client.disconnect().await.unwrap();
        // Drive the event loop until the connection is closed.
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), el.poll()).await {}
    }
    let burst = read_topic(&gw, "burst", 200).await;
    assert_eq!(
        burst.len(),
        200,
        "every QoS 0 record written before the DISCONNECT"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sessions = all_records(&gw, "barnabas.mqtt.sessions").await;
        let last = |id: &str| {
            sessions
                .iter()
                .rev()
                .find(|r| r.key.as_deref() == Some(id.as_bytes()))
                .map(|r| r.value.clone())
        };
        let gone = last("gone-at-once");
        let kept = last("kept-600");
        let kept_disconnected = kept.clone().flatten().is_some_and(|v| {
            serde_json::from_slice::<serde_json::Value>(&v).unwrap()["connected"] == false
        });
        let seen = sessions
            .iter()
            .filter(|r| r.key.as_deref() == Some(b"gone-at-once".as_slice()))
            .count();
        if gone == Some(None) && kept_disconnected {
            assert!(seen >= 2, "an ownership record, then the tombstone: {seen}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "last session records: gone-at-once {gone:?}, kept-600 {kept:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.stop().await;
}

/// docs/design/scale-out.md §MQTT, the order half of the promise above: "Records still in
/// flight to Kafka are completed first" — before the tombstone is written. The broker (its
/// own process) is paused with SIGSTOP, a v5 client with session expiry 0 publishes 200 QoS
/// 0 messages and sends DISCONNECT, and the broker is resumed after 2 s. The gateway can
/// complete those records only after the resume; if it waits for them, the tombstone is
/// produced after that too, so its timestamp (set by the producer when the record is
/// produced) is at least a second after the newest burst record's.
///
/// Broken to: an end that does not wait for what is in flight (`answer_in_flight` on
/// DISCONNECT and the drain at the top of `end` both removed) — the tombstone is produced
/// during the pause, 0 ms after the burst (seen failing; with only one of the two removed the
/// other still orders them).
#[tokio::test(flavor = "multi_thread")]
async fn records_in_flight_are_completed_before_the_tombstone() {
    use rumqttc::v5::{
        mqttbytes::{v5::Packet, QoS},
        Event,
    };
    const PAUSE: Duration = Duration::from_secs(2);
    let (broker, bootstrap) = common::broker_process();
    let gw = gateway::start_on(Some(bootstrap), burst_mapping).await;
    let addr = gw.gateway.mqtt_addr().unwrap();
    let mut opts = rumqttc::v5::MqttOptions::new("ordered", addr.ip().to_string(), addr.port());
    let mut properties = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
    properties.session_expiry_interval = Some(0);
    opts.set_connect_properties(properties);
    let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 300);
    // The topic made and known before the pause: a QoS 1 publish, acknowledged.
    client
        .publish("burst/ordered", QoS::AtLeastOnce, false, "first")
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no PUBACK: {other:?}"),
        }
    }
    broker.signal("STOP");
    for i in 0..200 {
        client
            .publish("burst/ordered", QoS::AtMostOnce, false, format!("m{i}"))
            .await
            .unwrap();
    }
    client.disconnect().await.unwrap();
    let sent = async {
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), el.poll()).await {}
    };
    // The pause is the fault itself: the client's packets go out meanwhile.
    tokio::join!(sent, tokio::time::sleep(PAUSE));
    broker.signal("CONT");

    let burst = read_topic(&gw, "burst", 201).await;
    assert_eq!(
        burst.len(),
        201,
        "the first record and the 200 of the burst"
    );
    let newest_burst = burst.iter().filter_map(|r| r.timestamp).max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let tombstone = loop {
        let sessions = all_records(&gw, "barnabas.mqtt.sessions").await;
        let last = sessions
            .iter()
            .rev()
            .find(|r| r.key.as_deref() == Some(b"ordered".as_slice()));
        if let Some(r) = last.filter(|r| r.value.is_none()) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no tombstone: last {last:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let after = tombstone.timestamp.unwrap() - newest_burst;
    assert!(
        after >= 1000,
        "the tombstone was produced {after} ms after the newest burst record; the burst could \
         only complete after the {PAUSE:?} pause"
    );
    gw.stop().await;
}

/// A persistent MQTT 3.1.1 session at `addr` (manual acks): client, event loop, and whether
/// the CONNACK said the session was present.
async fn persistent(
    addr: std::net::SocketAddr,
    id: &str,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop, bool) {
    let mut opts = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    loop {
        match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c)))) => {
                return (client, el, c.session_present)
            }
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK from {addr}: {other:?}"),
        }
    }
}

/// docs/design/scale-out.md §Failure cases: "A replica dies with clients connected: they
/// reconnect elsewhere, take their sessions over, unacknowledged deliveries come again". Two
/// replica processes on one broker; a persistent 3.1.1 session on `a` subscribes at QoS 1,
/// gets a record written through `b` and does not acknowledge it; `a` is killed (SIGKILL).
/// The client connects to `b` with the same id: the session is present, and the
/// unacknowledged record is delivered again (then acknowledged, nothing more comes).
///
/// Broken to: a session not stored in Kafka would not be present on `b` (the CONNACK flag), a
/// delivery committed before its PUBACK would not come again. Seen failing with the record
/// acknowledged on `a` before the kill (no second delivery within 45 s).
#[tokio::test(flavor = "multi_thread")]
async fn clients_of_a_killed_replica_resume_elsewhere_and_get_unacknowledged_deliveries_again() {
    let gw = gateway::start(|_| {}).await;
    let (mut a, _, a_mqtt) = common::replica_process(&gw.kafka);
    let (b, _, b_mqtt) = common::replica_process(&gw.kafka);

    let (client, mut el, _) = persistent(a_mqtt, "survivor").await;
    client
        .subscribe("fleet/+/status", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    let (publisher, mut pub_el, _) = persistent(b_mqtt, "publisher").await;
    publisher
        .publish(
            "fleet/7/status",
            rumqttc::QoS::AtLeastOnce,
            false,
            "unacked",
        )
        .await
        .unwrap();
    tokio::spawn(async move { while pub_el.poll().await.is_ok() {} });
    let first = common::next_publish(&mut el, Duration::from_secs(30))
        .await
        .expect("the record, delivered by a");
    assert_eq!(&first.payload[..], b"unacked");

    a.signal("KILL");
    let _ = a.wait_exit(Duration::from_secs(10));
    drop(el);
    drop(client);

    let (client, mut el, present) = persistent(b_mqtt, "survivor").await;
    assert!(present, "b resumes the session a held");
    let again = common::next_publish(&mut el, Duration::from_secs(45))
        .await
        .expect("the unacknowledged delivery again, from b");
    assert_eq!(
        (again.topic.as_str(), &again.payload[..]),
        ("fleet/7/status", &b"unacked"[..])
    );
    client.ack(&again).await.unwrap();
    assert!(
        common::next_publish(&mut el, Duration::from_secs(3))
            .await
            .is_none(),
        "nothing more"
    );
    drop(client);
    drop(b);
    gw.stop().await;
}
