//! Scale-out: several `barnabas` processes against one broker, as replicas behind a load
//! balancer. MQTT persistent sessions and retained messages live in compacted Kafka topics,
//! so a client finds them on any replica, after every replica restarted, and a second
//! connection with the same client id on another replica takes the session over. HTTP
//! consumer instances are served by one replica and reached through any: the others forward
//! to it, and adopt the instance when it is gone.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{broker, next_publish, raw_mqtt, Gateway};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// One gateway process with MQTT and HTTP on free ports, against `bootstrap`.
struct Replica {
    process: Gateway,
    mqtt: SocketAddr,
    http: SocketAddr,
}

impl Replica {
    fn start(bootstrap: &str) -> Replica {
        Replica::start_with(bootstrap, &[])
    }

    /// [`Replica::start`] with more environment (`BARNABAS_*` settings).
    fn start_with(bootstrap: &str, env: &[(&str, &str)]) -> Replica {
        let (process, http, mqtt) = common::replica_process_with(bootstrap, env);
        Replica {
            process,
            mqtt,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn client(&self, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
        let mut opts = MqttOptions::new(id, self.mqtt.ip().to_string(), self.mqtt.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(clean);
        AsyncClient::new(opts, 100)
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(mut self) {
        self.process.signal("TERM");
        assert!(self.process.wait_exit(Duration::from_secs(30)).success());
    }
}

/// Drives the event loop to CONNACK; returns its session-present flag.
async fn connack(el: &mut EventLoop) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), el.poll())
            .await
            .expect("CONNACK in time")
            .expect("connected")
        {
            Event::Incoming(Packet::ConnAck(a)) => return a.session_present,
            _ => continue,
        }
    }
}

/// Drives the event loop until the next `want` packet.
async fn until(el: &mut EventLoop, what: &str, want: impl Fn(&Packet) -> bool) {
    loop {
        let Ok(event) = tokio::time::timeout(Duration::from_secs(30), el.poll()).await else {
            panic!("no {what} in time");
        };
        match event {
            Ok(Event::Incoming(p)) if want(&p) => return,
            Ok(_) => continue,
            Err(e) => panic!("connection error before {what}: {e:?}"),
        }
    }
}

/// Publishes at QoS 1 through `replica` and waits for the PUBACK (i.e. Kafka has it).
async fn publish(replica: &Replica, topic: &str, payload: &str, retain: bool) {
    let (c, mut el) = replica.client(&format!("pub-{}", uuid::Uuid::new_v4().simple()), true);
    connack(&mut el).await;
    c.publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
        .await
        .unwrap();
    until(&mut el, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;
}

/// Publishes each `(topic, payload)` at QoS 1 on one connection through `replica` and waits
/// for all their PUBACKs.
async fn publish_all(replica: &Replica, records: &[(String, String)]) {
    let (c, mut el) = replica.client(&format!("pub-{}", uuid::Uuid::new_v4().simple()), true);
    connack(&mut el).await;
    for (topic, payload) in records {
        c.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }
    for _ in records {
        until(&mut el, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    }
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;
}

/// Subscribes at QoS 1 and waits for the SUBACK.
async fn subscribe(c: &AsyncClient, el: &mut EventLoop, filter: &str) {
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    until(el, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_retained_messages_move_between_replicas_and_survive_their_restart() {
    let kafka = broker::start().await;
    let bootstrap = kafka.bootstrap();
    let a = Replica::start(&bootstrap);
    let b = Replica::start(&bootstrap);

    // A persistent session subscribes on A and leaves.
    let (c, mut el) = a.client("roamer", false);
    connack(&mut el).await;
    subscribe(&c, &mut el, "fleet/+/status").await;
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;

    // A record is written while it is away (through A); it comes back on B.
    publish(&a, "fleet/7/status", "while-away", false).await;
    let (c, mut el) = b.client("roamer", false);
    assert!(connack(&mut el).await, "B resumes the session A kept");
    let got = next_publish(&mut el, Duration::from_secs(30))
        .await
        .expect("the record written while away, delivered by B");
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("fleet/7/status", &b"while-away"[..])
    );
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;

    // A retained message set through A is delivered on SUBSCRIBE at B.
    publish(&a, "config/site-1", "blue", true).await;
    let (c, mut el) = b.client("reader", true);
    connack(&mut el).await;
    c.subscribe("config/#", QoS::AtLeastOnce).await.unwrap();
    let retained = next_publish(&mut el, Duration::from_secs(30))
        .await
        .expect("retained message at B");
    assert!(retained.retain);
    assert_eq!(&retained.payload[..], b"blue");
    drop(c);

    // Every replica restarts: both still hold.
    a.stop();
    b.stop();
    let a = Replica::start(&bootstrap);
    let b = Replica::start(&bootstrap);
    let (c, mut el) = b.client("roamer", false);
    assert!(connack(&mut el).await, "the session outlived every replica");
    publish(&a, "fleet/8/status", "after-restart", false).await;
    let got = next_publish(&mut el, Duration::from_secs(30))
        .await
        .expect("delivery to the resumed session after the restart");
    assert_eq!(&got.payload[..], b"after-restart");
    drop(c);
    let (c, mut el) = a.client("reader-2", true);
    connack(&mut el).await;
    c.subscribe("config/#", QoS::AtLeastOnce).await.unwrap();
    let retained = next_publish(&mut el, Duration::from_secs(30))
        .await
        .expect("retained message after the restart");
    assert_eq!(&retained.payload[..], b"blue");

    // Clearing it through B (empty retained publish) clears it on A too.
    publish(&b, "config/site-1", "", true).await;
    let (c, mut el) = a.client("reader-3", true);
    connack(&mut el).await;
    subscribe(&c, &mut el, "config/#").await;
    let none = next_publish(&mut el, Duration::from_secs(3)).await;
    assert!(
        none.is_none(),
        "cleared retained message still delivered: {none:?}"
    );
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_on_one_replica_takes_the_session_over_from_another() {
    let kafka = broker::start().await;
    let bootstrap = kafka.bootstrap();
    let a = Replica::start(&bootstrap);
    let b = Replica::start(&bootstrap);

    let (_first, mut first_el) = a.client("twin", true);
    connack(&mut first_el).await;
    let (_second, mut second_el) = b.client("twin", true);
    connack(&mut second_el).await;

    // A closes its connection of "twin" (MQTT 3.1.1 has no DISCONNECT from the server).
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match first_el.poll().await {
                Err(_) | Ok(Event::Incoming(Packet::Disconnect)) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "A kept the connection B took over");
    // B's connection stays.
    let still = tokio::time::timeout(Duration::from_secs(2), second_el.poll()).await;
    assert!(
        !matches!(still, Ok(Err(_))),
        "B's connection was closed too: {still:?}"
    );
    // An MQTT 5 connection taken over from another replica is told why: DISCONNECT 0x8E.
    let mut first = raw_mqtt::connected(a.mqtt, &raw_mqtt::connect_v5("twin5", 0, None, None));
    let _second = raw_mqtt::connected(b.mqtt, &raw_mqtt::connect_v5("twin5", 0, None, None));
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    assert_eq!(
        raw_mqtt::read_packet(&mut first).map(|(kind, body)| (kind, body.first().copied())),
        Some((0xe0, Some(0x8e))),
        "DISCONNECT 0x8E (session taken over) from A"
    );
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_subscription_across_replicas_delivers_each_record_once() {
    let kafka = broker::start().await;
    let bootstrap = kafka.bootstrap();
    let a = Replica::start(&bootstrap);
    let b = Replica::start(&bootstrap);
    // The MQTT front end's default topic, with two partitions so both members get a share.
    let (status, body) = call(
        &a,
        reqwest::Method::POST,
        "/admin/topics",
        V2,
        Some(serde_json::json!({ "topic_name": "mqtt", "partitions_count": 2 })),
    )
    .await;
    assert!(
        status == 201 || status == 200,
        "create topic: {status} {body}"
    );
    // Records are keyed by MQTT topic and partitioned by librdkafka's default partitioner
    // (CRC32 of the key, not the Java client's murmur2): jobs/0 … jobs/19 fall ten on each
    // partition, but jobs/0 … jobs/3 all on partition 1. Probes therefore go to the same 20
    // topics as the jobs, so they reach every partition the jobs do, whatever the hash.
    let topics: Vec<String> = (0..20).map(|i| format!("jobs/{i}")).collect();

    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, String)>();
    let mut clients = Vec::new();
    for (member, replica) in [&a, &b].into_iter().enumerate() {
        let (c, mut el) = replica.client(&format!("worker-{member}"), true);
        connack(&mut el).await;
        subscribe(&c, &mut el, "$share/workers/jobs/+").await;
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
    // The group is settled once both members received probes of the same round, two rounds
    // in a row: the second round was published after both had their final assignment (a
    // shared group without commits starts at the end of the log when it is assigned, so
    // probes published during the rebalance may be missed or, moved with their partition,
    // come twice).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut both_in_a_row = 0;
    let mut round = 0;
    let mut seen = [BTreeSet::new(), BTreeSet::new()];
    while both_in_a_row < 2 {
        assert!(
            Instant::now() < deadline,
            "both members never got probes of one round twice in a row; topics each got: {seen:?}"
        );
        round += 1;
        let tag = format!("probe-{round}-");
        let probes: Vec<(String, String)> = topics
            .iter()
            .map(|t| (t.clone(), format!("{tag}{t}")))
            .collect();
        publish_all(&a, &probes).await;
        let mut got = [false, false];
        while let Ok(Some((member, p))) =
            tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
        {
            if let Some(topic) = p.strip_prefix(&tag) {
                got[member] = true;
                seen[member].insert(topic.to_owned());
            }
        }
        both_in_a_row = if got[0] && got[1] {
            both_in_a_row + 1
        } else {
            0
        };
    }
    let sent: BTreeSet<String> = (0..20).map(|i| format!("job-{i}")).collect();
    let jobs: Vec<(String, String)> = (0..20)
        .map(|i| (topics[i].clone(), format!("job-{i}")))
        .collect();
    publish_all(&a, &jobs).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got
        .iter()
        .filter(|(_, p): &&(usize, String)| p.starts_with("job-"))
        .count()
        < sent.len()
        && Instant::now() < deadline
    {
        if let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            got.push(p);
        }
    }
    // Anything still on its way would be a duplicate.
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        got.push(p);
    }
    got.retain(|(_, p)| p.starts_with("job-"));
    let unique: BTreeSet<String> = got.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(unique, sent, "every record delivered");
    assert_eq!(got.len(), sent.len(), "no record delivered twice: {got:?}");
    let per_member = [0, 1].map(|m| got.iter().filter(|(member, _)| *member == m).count());
    assert!(
        per_member[0] > 0 && per_member[1] > 0,
        "both replicas' members share the load: {per_member:?}"
    );
    drop(clients);
    a.stop();
    b.stop();
}

const JSON_V2: &str = "application/vnd.kafka.json.v2+json";
const V2: &str = "application/vnd.kafka.v2+json";

/// `method path` with a JSON body (or none) through `replica`; returns (status, body).
async fn call(
    replica: &Replica,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, replica.url(path))
        .header("accept", JSON_V2)
        .timeout(Duration::from_secs(60));
    if let Some(body) = body {
        request = request
            .header("content-type", content_type)
            .body(body.to_string());
    }
    let answer = request.send().await.expect("HTTP answer");
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Produces `values` (JSON numbers) to `topic` through `replica`.
async fn produce_numbers(replica: &Replica, topic: &str, values: std::ops::Range<u32>) {
    let records: Vec<serde_json::Value> =
        values.map(|v| serde_json::json!({ "value": v })).collect();
    let (status, body) = call(
        replica,
        reqwest::Method::POST,
        &format!("/topics/{topic}"),
        JSON_V2,
        Some(serde_json::json!({ "records": records })),
    )
    .await;
    assert_eq!(status, 200, "produce: {body}");
}

/// One poll of the instance through `replica`: (status, the record values).
async fn poll(replica: &Replica, instance: &str) -> (u16, Vec<u64>) {
    let (status, body) = call(
        replica,
        reqwest::Method::GET,
        &format!("{instance}/records?timeout=1000"),
        JSON_V2,
        None,
    )
    .await;
    let values = body
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["value"].as_u64()).collect())
        .unwrap_or_default();
    (status, values)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_consumer_created_on_one_replica_is_served_by_another_and_outlives_its_replica() {
    let kafka = broker::start().await;
    let bootstrap = kafka.bootstrap();
    let a = Replica::start(&bootstrap);
    let b = Replica::start(&bootstrap);
    let (status, body) = call(
        &a,
        reqwest::Method::POST,
        "/admin/topics",
        V2,
        Some(serde_json::json!({ "topic_name": "orders", "partitions_count": 1 })),
    )
    .await;
    assert!(
        status == 201 || status == 200,
        "create topic: {status} {body}"
    );
    produce_numbers(&a, "orders", 0..10).await;

    // Created on A; subscribed, polled and committed through B.
    let (status, body) = call(
        &a,
        reqwest::Method::POST,
        "/consumers/billing",
        V2,
        Some(serde_json::json!({
            "name": "clerk", "format": "json",
            "auto.offset.reset": "earliest", "enable.auto.commit": false,
        })),
    )
    .await;
    assert_eq!(status, 200, "create: {body}");
    let instance = "/consumers/billing/instances/clerk";
    let (status, body) = call(
        &b,
        reqwest::Method::POST,
        &format!("{instance}/subscription"),
        V2,
        Some(serde_json::json!({ "topics": ["orders"] })),
    )
    .await;
    assert_eq!(status, 204, "subscribe through B: {body}");
    let (status, body) = call(
        &b,
        reqwest::Method::GET,
        &format!("{instance}/subscription"),
        V2,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["topics"],
        serde_json::json!(["orders"]),
        "A's instance as seen through B"
    );
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.len() < 10 && Instant::now() < deadline {
        let (status, values) = poll(&b, instance).await;
        assert_eq!(status, 200, "poll through B");
        first.extend(values);
    }
    assert_eq!(
        first,
        (0..10).collect::<Vec<u64>>(),
        "every record, in order, through B"
    );
    let (status, body) = call(
        &b,
        reqwest::Method::POST,
        &format!("{instance}/offsets"),
        V2,
        None,
    )
    .await;
    assert_eq!(status, 204, "commit through B: {body}");
    // A answers for it too, and an unknown instance is 404 on both.
    let (status, _) = poll(&a, instance).await;
    assert_eq!(status, 200);
    for replica in [&a, &b] {
        let (status, body) = poll(replica, "/consumers/billing/instances/nobody").await;
        assert_eq!(status, 404, "unknown instance: {body:?}");
    }

    // More records, fetched through B but not committed.
    produce_numbers(&b, "orders", 10..20).await;
    let mut before_kill = Vec::new();
    while !(10..20).all(|v| before_kill.contains(&v)) {
        let (status, values) = poll(&b, instance).await;
        assert_eq!(status, 200, "poll through B");
        before_kill.extend(values);
    }
    // A long poll forwarded by B waits at A, and A is killed during it: the client gets
    // 503 (B does not replay a request the owner may have served).
    let waiting = tokio::spawn({
        let url = b.url(&format!("{instance}/records?timeout=20000"));
        async move {
            let answer = reqwest::Client::new()
                .get(url)
                .header("accept", JSON_V2)
                .send()
                .await
                .expect("an answer from B");
            (
                answer.status().as_u16(),
                answer.text().await.unwrap_or_default(),
            )
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await; // the poll is at A now (it waits 20 s)
    assert!(!waiting.is_finished(), "the long poll was answered early");
    a.process.signal("KILL");
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("B answered once A died")
        .unwrap();
    assert_eq!(status, 503, "forwarded poll whose owner died: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error_code"], 503, "{body}");

    // B adopts the instance and resumes from the last commit: nothing committed comes
    // again, nothing after it is missing.
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(10..20).all(|v| after.contains(&v)) {
        assert!(
            Instant::now() < deadline,
            "records after the last commit missing after A died: got {after:?} (before the kill: {before_kill:?})"
        );
        let (status, values) = poll(&b, instance).await;
        assert_eq!(status, 200, "the next poll after A died is adopted by B");
        after.extend(values);
    }
    assert!(
        after.iter().all(|v| *v >= 10),
        "a committed record was delivered again: {after:?}"
    );

    // Deleted through B: gone everywhere.
    let (status, body) = call(&b, reqwest::Method::DELETE, instance, V2, None).await;
    assert_eq!(status, 204, "delete: {body}");
    let (status, _) = poll(&b, instance).await;
    assert_eq!(status, 404);
    b.stop();
}

/// docs/design/scale-out.md §Failure cases (HTTP), "owner alive but unreachable": A serves an
/// instance but advertises an address nobody listens on (a network split, as B sees it), so
/// B adopts the instance on the first request it gets for it. A is alive and follows the
/// catalog: once B's record reaches it, A closes its copy (its Kafka consumer leaves the
/// group, so B is assigned the partition and reads every record), and A forwards the
/// instance's requests to B from then on instead of serving them from a copy of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_closes_its_copy_of_an_instance_another_replica_adopted() {
    let kafka = broker::start().await;
    let bootstrap = kafka.bootstrap();
    let unreachable = common::free_addr().to_string();
    let advertised = ("BARNABAS_HTTP__ADVERTISED_ADDRESS", unreachable.as_str());
    let a = Replica::start_with(&bootstrap, &[advertised]);
    let b = Replica::start(&bootstrap);
    let topic = serde_json::json!({ "topic_name": "split", "partitions_count": 1 });
    let (status, body) = call(&a, reqwest::Method::POST, "/admin/topics", V2, Some(topic)).await;
    assert!(
        status == 201 || status == 200,
        "create topic: {status} {body}"
    );
    produce_numbers(&a, "split", 0..10).await;
    let settings =
        serde_json::json!({ "name": "x", "format": "json", "auto.offset.reset": "earliest" });
    let (status, body) = call(
        &a,
        reqwest::Method::POST,
        "/consumers/split-g",
        V2,
        Some(settings),
    )
    .await;
    assert_eq!(status, 200, "create on A: {body}");
    let instance = "/consumers/split-g/instances/x";
    let topics = serde_json::json!({ "topics": ["split"] });
    let subscribe = format!("{instance}/subscription");
    let (status, body) = call(&a, reqwest::Method::POST, &subscribe, V2, Some(topics)).await;
    assert_eq!(status, 204, "subscribe on A: {body}");
    let (instances, within) = ("barnabas_http_consumer_instances", Duration::from_secs(30));
    common::wait_for_metric_line(
        a.http,
        &format!("{instances} 1"),
        "A holds the instance",
        within,
    );

    // Through B: A cannot be reached, so B adopts the instance and, once A's copy has left
    // the group, reads every record.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 10 {
        assert!(Instant::now() < deadline, "B read only {got:?}");
        let (status, values) = poll(&b, instance).await;
        assert_eq!(status, 200, "poll through B");
        got.extend(values);
    }
    assert_eq!(
        got,
        (0..10).collect::<Vec<u64>>(),
        "every record once, in order"
    );
    common::wait_for_metric_line(b.http, &format!("{instances} 1"), "B adopted it", within);
    common::wait_for_metric_line(
        a.http,
        &format!("{instances} 0"),
        "A closed its copy",
        within,
    );

    // A forwards the instance's requests to its owner now, and does not take it back.
    let (status, body) = call(&a, reqwest::Method::GET, &subscribe, V2, None).await;
    assert_eq!(status, 200, "through A: {body}");
    assert_eq!(body["topics"], serde_json::json!(["split"]));
    let (_, metrics) = common::http_get(a.http, "/metrics");
    assert!(
        metrics.contains(&format!("\n{instances} 0\n")),
        "A serves no copy: {metrics}"
    );
    b.stop();
    a.stop();
}

/// docs/design/scale-out.md §HTTP consumers on any replica: a name is unique across replicas
/// (creating it again on another replica is 409), and a replica that stops cleanly keeps its
/// instances' records, so in a rolling restart the instance is adopted by another replica
/// and carries on from its commit.
#[tokio::test(flavor = "multi_thread")]
async fn consumer_names_are_unique_across_replicas_and_survive_a_rolling_restart() {
    let kafka = broker::start().await;
    let bootstrap = kafka.bootstrap();
    let a = Replica::start(&bootstrap);
    let b = Replica::start(&bootstrap);
    produce_numbers(&a, "rolling", 0..5).await;
    let create = serde_json::json!({
        "name": "roller", "format": "json",
        "auto.offset.reset": "earliest", "enable.auto.commit": false,
    });
    let (status, body) = call(
        &a,
        reqwest::Method::POST,
        "/consumers/ops",
        V2,
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, 200, "create on A: {body}");
    let (status, body) = call(
        &b,
        reqwest::Method::POST,
        "/consumers/ops",
        V2,
        Some(create),
    )
    .await;
    assert_eq!(status, 409, "the same name on B: {body}");
    assert_eq!(body["error_code"], 409, "{body}");

    let instance = "/consumers/ops/instances/roller";
    let subscription = serde_json::json!({ "topics": ["rolling"] });
    let (status, body) = call(
        &a,
        reqwest::Method::POST,
        &format!("{instance}/subscription"),
        V2,
        Some(subscription),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.len() < 5 {
        assert!(Instant::now() < deadline, "records never came: {first:?}");
        let (status, values) = poll(&a, instance).await;
        assert_eq!(status, 200);
        first.extend(values);
    }
    let (status, _) = call(
        &a,
        reqwest::Method::POST,
        &format!("{instance}/offsets"),
        V2,
        None,
    )
    .await;
    assert_eq!(status, 204, "commit");
    a.stop();

    produce_numbers(&b, "rolling", 5..10).await;
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(5..10).all(|v| after.contains(&v)) {
        assert!(
            Instant::now() < deadline,
            "the instance was lost with A: {after:?}"
        );
        let (status, values) = poll(&b, instance).await;
        assert_eq!(status, 200, "adopted by B");
        after.extend(values);
    }
    assert!(
        after.iter().all(|v| *v >= 5),
        "resumed after the commit: {after:?}"
    );
    b.stop();
}
