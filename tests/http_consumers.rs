//! HTTP consumer instances and SSE streams through real HTTP, against the embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use common::{
    gateway::{self, TestGateway, BINARY, JSON, TEXT, V2},
    run_python,
};
use futures::StreamExt;
use serde_json::{json, Value};

async fn produce(gw: &TestGateway, topic: &str, values: impl IntoIterator<Item = Value>) {
    let records: Vec<Value> = values.into_iter().map(|v| json!({ "value": v })).collect();
    let a = gw
        .post_json(
            &format!("/topics/{topic}"),
            JSON,
            &json!({ "records": records }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        a.json["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["offset"].is_i64()),
        "{}",
        a.text
    );
}

fn offsets(records: &[Value]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_lifecycle_and_its_errors() {
    let gw = gateway::start(|_| {}).await;
    produce(&gw, "life", (0..3).map(|i| json!(i))).await;

    // Create: generated name, base_uri from Host; duplicate, bad values, unknown fields.
    let a = gw
        .post_json(
            "/consumers/g-early",
            V2,
            &json!({"format": "json", "auto.offset.reset": "earliest"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let name = a.json["instance_id"].as_str().unwrap().to_owned();
    assert!(name.starts_with("barnabas-consumer-"));
    let host = gw.base.trim_start_matches("http://");
    assert_eq!(
        a.json["base_uri"],
        format!("http://{host}/consumers/g-early/instances/{name}")
    );
    let a = gw
        .post_json("/consumers/g1", V2, &json!({"name": "c", "format": "json"}))
        .await;
    assert_eq!(a.status, 200);
    gw.post_json("/consumers/g1", V2, &json!({"name": "c"}))
        .await
        .assert_error(409);
    gw.post_json("/consumers/g2", V2, &json!({"name": "c"}))
        .await
        .status
        .is_success()
        .then_some(())
        .unwrap();
    gw.post_json("/consumers/g1", V2, &json!({"format": "avro"}))
        .await
        .assert_error(422);
    gw.post_json(
        "/consumers/g1",
        V2,
        &json!({"auto.offset.reset": "sometimes"}),
    )
    .await
    .assert_error(422);
    gw.post_json("/consumers/g1", V2, &json!({"enable.auto.commit": "maybe"}))
        .await
        .assert_error(422);
    gw.post_json("/consumers/g1", V2, &json!({"isolation.level": "dirty"}))
        .await
        .assert_error(422);
    for (name, level) in [("rc", "read_committed"), ("ru", "read_uncommitted")] {
        let a = gw
            .post_json(
                "/consumers/g-iso",
                V2,
                &json!({"name": name, "isolation.level": level}),
            )
            .await;
        assert_eq!(a.status, 200, "{level}: {}", a.text);
    }
    // A name is a path segment: not empty, no '/'.
    for name in ["", "a/b"] {
        gw.post_json("/consumers/g1", V2, &json!({ "name": name }))
            .await
            .assert_error(422);
    }
    // An unknown field is invalid input (422, documented), malformed JSON 400 (interface §3).
    gw.post_json("/consumers/g1", V2, &json!({"colour": "blue"}))
        .await
        .assert_error(422);
    gw.post("/consumers/g1", Some(V2), "{not json")
        .await
        .assert_error(400);

    let c = "/consumers/g1/instances/c";
    // Not subscribed yet: poll is a 409, not a hang.
    gw.get(&format!("{c}/records"), Some(JSON))
        .await
        .assert_error(409);
    // Subscription rules.
    gw.post_json(
        &format!("{c}/subscription"),
        V2,
        &json!({"topics": ["life"], "topic_pattern": "l.*"}),
    )
    .await
    .assert_error(409);
    gw.post_json(&format!("{c}/subscription"), V2, &json!({}))
        .await
        .assert_error(422);
    assert_eq!(
        gw.post_json(
            &format!("{c}/subscription"),
            V2,
            &json!({"topics": ["life"]})
        )
        .await
        .status,
        204
    );
    gw.post_json(
        &format!("{c}/assignments"),
        V2,
        &json!({"partitions": [{"topic": "life", "partition": 0}]}),
    )
    .await
    .assert_error(409);
    // Accept must match the consumer's format.
    gw.get(&format!("{c}/records"), Some(BINARY))
        .await
        .assert_error(406);
    gw.get(&format!("{c}/records"), None)
        .await
        .assert_error(406);
    gw.get(&format!("{c}/records?timeout=abc"), Some(JSON))
        .await
        .assert_error(422);
    // The consumer was created with the default auto.offset.reset=latest: nothing old arrives,
    // however often it polls until the group assigns it the partition (Apache Kafka's first
    // rebalance waits group.initial.rebalance.delay.ms, 3 s, so one poll may end before it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let sub = loop {
        let a = gw
            .get(&format!("{c}/records?timeout=1500"), Some(JSON))
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.content_type(), JSON);
        assert_eq!(a.json, json!([]));
        let sub = gw.get(&format!("{c}/subscription"), None).await;
        assert_eq!(sub.json["topics"], json!(["life"]));
        if sub.json["partitions"] != json!([]) {
            break sub;
        }
        assert!(Instant::now() < deadline, "never assigned: {}", sub.text);
    };
    assert_eq!(sub.json["partitions"], json!([{"life": [0]}]));
    produce(&gw, "life", [json!({"new": true})]).await;
    let got = gw.poll_records(c, JSON, 1).await;
    assert_eq!(got[0]["value"], json!({"new": true}));
    assert_eq!(got[0]["offset"], 3);
    assert_eq!(got[0]["topic"], "life");
    assert!(got[0]["timestamp"].is_i64());
    assert!(
        got[0].get("headers").is_none(),
        "no headers key when a record has none"
    );

    // The earliest consumer sees everything.
    let e = format!("/consumers/g-early/instances/{name}");
    assert_eq!(
        gw.post_json(
            &format!("{e}/subscription"),
            V2,
            &json!({"topic_pattern": "li.*"})
        )
        .await
        .status,
        204
    );
    assert_eq!(
        offsets(&gw.poll_records(&e, JSON, 4).await),
        vec![0, 1, 2, 3]
    );

    // Unsubscribe, delete, then 404.
    assert_eq!(gw.delete(&format!("{c}/subscription")).await.status, 204);
    gw.get(&format!("{c}/records"), Some(JSON))
        .await
        .assert_error(409);
    assert_eq!(gw.delete(c).await.status, 204);
    gw.delete(c).await.assert_error(404);
    // Strimzi's document gives `DELETE …/subscription` (and it alone) `application/json`.
    gw.delete(&format!("{c}/subscription"))
        .await
        .assert_error_as(404, "application/json");
    gw.get(&format!("{c}/records"), Some(JSON))
        .await
        .assert_error(404);
    gw.post_json("/consumers/g1/instances/nobody/offsets", V2, &json!({}))
        .await
        .assert_error(404);
    gw.stop().await;
}

/// The edges of a consumer's positions and subscription (the handlers.rs mutants the HTTP
/// tests missed): a commit and a seek at offset 0 of partition 1 are taken, partition -1 or
/// offset -1 is a position that cannot exist (404); subscribing to `[]` unsubscribes; a
/// subscription to a topic not assigned yet is listed by `GET …/subscription`.
#[tokio::test(flavor = "multi_thread")]
async fn positions_and_subscriptions_at_their_edges() {
    let gw = gateway::start(|_| {}).await;
    let a = gw
        .post_json(
            "/admin/topics",
            V2,
            &json!({"topic_name": "edges", "partitions_count": 2}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let c = gw
        .consumer("g-edges", json!({"name": "e", "format": "json"}))
        .await;
    let a = gw
        .post_json(
            &format!("{c}/assignments"),
            V2,
            &json!({"partitions": [{"topic": "edges", "partition": 1}]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let at = |partition: i64, offset: i64| json!({"offsets": [{"topic": "edges", "partition": partition, "offset": offset}]});
    for path in ["offsets", "positions"] {
        let a = gw.post_json(&format!("{c}/{path}"), V2, &at(1, 0)).await;
        assert_eq!(a.status, 204, "{path} at 1/0: {}", a.text);
        for (partition, offset) in [(-1, 0), (1, -1)] {
            gw.post_json(&format!("{c}/{path}"), V2, &at(partition, offset))
                .await
                .assert_error(404);
        }
    }
    // Back to idle, then subscribe: `[]` unsubscribes, a topic not assigned yet is listed.
    let a = gw
        .post_json(&format!("{c}/assignments"), V2, &json!({"partitions": []}))
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let a = gw
        .post_json(
            &format!("{c}/subscription"),
            V2,
            &json!({"topics": ["not-yet"]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let a = gw.get(&format!("{c}/subscription"), Some(V2)).await;
    assert_eq!(a.json["topics"], json!(["not-yet"]), "{}", a.text);
    let a = gw
        .post_json(&format!("{c}/subscription"), V2, &json!({"topics": []}))
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let a = gw.get(&format!("{c}/subscription"), Some(V2)).await;
    assert_eq!(a.json["topics"], json!([]), "{}", a.text);
    gw.get(&format!("{c}/records"), Some(JSON))
        .await
        .assert_error(409);
    gw.stop().await;
}

/// `POST …/offsets` commits the offsets given, exactly; an empty list (like no body) commits
/// what the instance consumed; a topic Kafka does not have is 404 (the commit handler's
/// mutants).
#[tokio::test(flavor = "multi_thread")]
async fn explicit_offsets_are_committed_as_given_and_an_empty_list_commits_what_was_consumed() {
    let gw = gateway::start(|_| {}).await;
    let a = gw
        .post_json(
            "/admin/topics",
            V2,
            &json!({"topic_name": "commits", "partitions_count": 1}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    produce(&gw, "commits", (0..5).map(|i| json!(i))).await;
    let c = gw
        .consumer(
            "g-commits",
            json!({"name": "c", "format": "json", "auto.offset.reset": "earliest", "enable.auto.commit": false}),
        )
        .await;
    let a = gw
        .post_json(
            &format!("{c}/subscription"),
            V2,
            &json!({"topics": ["commits"]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(gw.poll_records(&c, JSON, 5).await.len(), 5);
    let tp = ("commits", 0);
    let a = gw
        .post_json(
            &format!("{c}/offsets"),
            V2,
            &json!({"offsets": [{"topic": "commits", "partition": 0, "offset": 2}]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(
        common::committed_offset(&gw, "g-commits", tp).await,
        Some(2)
    );
    let a = gw
        .post_json(&format!("{c}/offsets"), V2, &json!({"offsets": []}))
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(
        common::committed_offset(&gw, "g-commits", tp).await,
        Some(5)
    );
    // A commit Kafka refuses for a topic it does not have is a 404, not a server error.
    gw.post_json(
        &format!("{c}/offsets"),
        V2,
        &json!({"offsets": [{"topic": "no-such-topic", "partition": 0, "offset": 1}]}),
    )
    .await
    .assert_error(404);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn base_uri_follows_forwarding_headers() {
    let gw = gateway::start(|_| {}).await;
    let a = gw
        .client
        .post(gw.url("/consumers/fw"))
        .header("content-type", V2)
        .header("forwarded", "host=my-api-gateway-host;proto=http")
        .body(json!({"name": "a"}).to_string())
        .send()
        .await
        .unwrap();
    let v: Value = a.json().await.unwrap();
    assert_eq!(
        v["base_uri"],
        "http://my-api-gateway-host:80/consumers/fw/instances/a"
    );
    let a = gw
        .client
        .post(gw.url("/consumers/fw"))
        .header("content-type", V2)
        .header("x-forwarded-host", "gw.example:8443")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-path", "/bridge/consumers/fw")
        .body(json!({"name": "b"}).to_string())
        .send()
        .await
        .unwrap();
    let v: Value = a.json().await.unwrap();
    assert_eq!(
        v["base_uri"],
        "https://gw.example:8443/bridge/consumers/fw/instances/b"
    );
    // A host without a port gets the scheme's, an IPv6 literal included (its last ':' is
    // inside the brackets); an unknown scheme is refused.
    let create = |name: &'static str, host: &'static str, proto: &'static str| {
        gw.client
            .post(gw.url("/consumers/fw"))
            .header("content-type", V2)
            .header("x-forwarded-host", host)
            .header("x-forwarded-proto", proto)
            .body(json!({ "name": name }).to_string())
            .send()
    };
    let v: Value = create("c", "[::1]", "https")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["base_uri"], "https://[::1]:443/consumers/fw/instances/c");
    let refused = create("d", "gw.example", "gopher").await.unwrap();
    assert_eq!(refused.status(), 400);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn formats_on_the_way_out_and_stock_client_records_read_over_http() {
    let gw = gateway::start(|_| {}).await;
    // A stock Kafka client writes; HTTP consumers of each format read it back intact.
    run_python("kafka_client.py", &["produce", &gw.kafka, "stock-in", "3"]);
    for (format, accept) in [("binary", BINARY), ("text", TEXT), ("json", JSON)] {
        let c = gw
            .consumer(
                &format!("fmt-{format}"),
                json!({"name": format, "format": format, "auto.offset.reset": "earliest"}),
            )
            .await;
        assert_eq!(
            gw.post_json(
                &format!("{c}/subscription"),
                V2,
                &json!({"topics": ["stock-in"]})
            )
            .await
            .status,
            204
        );
        let got = gw.poll_records(&c, accept, 3).await;
        assert_eq!(got.len(), 3);
        let r = &got[1];
        assert_eq!(r["partition"], 0);
        assert_eq!(r["offset"], 1);
        assert_eq!(
            r["headers"],
            json!([{"key": "seq", "value": B64.encode("1")}])
        );
        match format {
            "binary" => {
                assert_eq!(r["key"], B64.encode("k1"));
                assert_eq!(r["value"], B64.encode("v1"));
            }
            _ => {
                // text: the UTF-8 text; json: bytes that are not JSON come as a JSON string.
                assert_eq!(r["key"], "k1");
                assert_eq!(r["value"], "v1");
            }
        }
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "topic",
                "key",
                "value",
                "partition",
                "offset",
                "timestamp",
                "headers"
            ]
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_bytes_limits_a_poll_without_losing_records() {
    let gw = gateway::start(|_| {}).await;
    produce(&gw, "mb", (0..5).map(|i| json!("x".repeat(100 + i)))).await;
    let c = gw
        .consumer(
            "mb",
            json!({"name": "c", "format": "json", "auto.offset.reset": "earliest"}),
        )
        .await;
    gw.post_json(&format!("{c}/subscription"), V2, &json!({"topics": ["mb"]}))
        .await;
    // Wait until records are buffered, asking for too few bytes for even one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = gw
            .get(&format!("{c}/records?timeout=500&max_bytes=10"), Some(JSON))
            .await;
        if a.status == 422 {
            a.assert_error(422);
            break;
        }
        assert_eq!(a.json, json!([]), "{}", a.text);
        assert!(Instant::now() < deadline);
    }
    // Room for two records at a time: all five arrive, in order, none lost.
    let mut got = Vec::new();
    while got.len() < 5 {
        let a = gw
            .get(
                &format!("{c}/records?timeout=1000&max_bytes=250"),
                Some(JSON),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        let batch = a.json.as_array().unwrap().clone();
        assert!(batch.len() <= 2, "max_bytes respected: {}", batch.len());
        got.extend(batch);
    }
    assert_eq!(offsets(&got), vec![0, 1, 2, 3, 4]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_consumer_resumes_exactly_after_its_commit() {
    let gw = gateway::start(|_| {}).await;
    produce(&gw, "resume", (0..10).map(|i| json!(i))).await;
    let body = json!({"name": "c", "format": "json", "auto.offset.reset": "earliest", "enable.auto.commit": false});

    let c = gw.consumer("rg", body.clone()).await;
    gw.post_json(
        &format!("{c}/subscription"),
        V2,
        &json!({"topics": ["resume"]}),
    )
    .await;
    let got = gw.poll_records(&c, JSON, 10).await;
    assert_eq!(offsets(&got), (0..10).collect::<Vec<_>>());
    // Commit up to offset 6 (the next to read is 6).
    let a = gw
        .post_json(
            &format!("{c}/offsets"),
            V2,
            &json!({"offsets": [{"topic": "resume", "partition": 0, "offset": 6}]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(gw.delete(&c).await.status, 204);

    let c = gw.consumer("rg", body.clone()).await;
    gw.post_json(
        &format!("{c}/subscription"),
        V2,
        &json!({"topics": ["resume"]}),
    )
    .await;
    // A poll whose max_bytes lets only two records out (values `6` and `7`, one byte each):
    // the consumer has read 8 and 9 ahead from Kafka, but handed out only 6 and 7.
    let got = loop {
        let a = gw
            .get(&format!("{c}/records?timeout=3000&max_bytes=2"), Some(JSON))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        if !a.json.as_array().unwrap().is_empty() {
            break a.json.as_array().unwrap().clone();
        }
    };
    assert_eq!(offsets(&got), vec![6, 7]);
    // Commit what was handed out (empty body), delete, re-create: it resumes at 8.
    assert_eq!(
        gw.post(&format!("{c}/offsets"), Some(V2), "").await.status,
        204
    );
    assert_eq!(gw.delete(&c).await.status, 204);
    produce(&gw, "resume", [json!("after")]).await;
    let c = gw.consumer("rg", body.clone()).await;
    gw.post_json(
        &format!("{c}/subscription"),
        V2,
        &json!({"topics": ["resume"]}),
    )
    .await;
    let got = gw.poll_records(&c, JSON, 3).await;
    assert_eq!(offsets(&got), vec![8, 9, 10]);
    // Commit everything handed out, delete, re-create: nothing old comes back.
    assert_eq!(
        gw.post(&format!("{c}/offsets"), Some(V2), "").await.status,
        204
    );
    assert_eq!(gw.delete(&c).await.status, 204);
    let c = gw.consumer("rg", body).await;
    gw.post_json(
        &format!("{c}/subscription"),
        V2,
        &json!({"topics": ["resume"]}),
    )
    .await;
    assert!(gw
        .get(&format!("{c}/records?timeout=1000"), Some(JSON))
        .await
        .json
        .as_array()
        .unwrap()
        .is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn assignments_and_seeking() {
    let gw = gateway::start(|c| c.kafka.default_partitions = 2).await;
    produce(&gw, "seek", (0..6).map(|i| json!(i))).await; // keyless: spread by the partitioner
    let w0 = gw.get("/topics/seek/partitions/0/offsets", None).await.json["end_offset"]
        .as_i64()
        .unwrap();
    let c = gw
        .consumer(
            "sg",
            json!({"name": "c", "format": "json", "auto.offset.reset": "earliest"}),
        )
        .await;
    let a = gw
        .post_json(
            &format!("{c}/assignments"),
            V2,
            &json!({"partitions": [{"topic": "seek", "partition": 0}]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    gw.post_json(
        &format!("{c}/subscription"),
        V2,
        &json!({"topics": ["seek"]}),
    )
    .await
    .assert_error(409);
    if w0 > 0 {
        let got = gw.poll_records(&c, JSON, w0 as usize).await;
        assert!(got.iter().all(|r| r["partition"] == 0));
    }
    produce(&gw, "seek", []).await;
    // Seek to the beginning, then to an offset, then to the end.
    gw.post(
        "/topics/seek/partitions/0",
        Some(JSON),
        json!({"records": [{"value": "p0"}]}).to_string(),
    )
    .await;
    let total = w0 + 1;
    let a = gw
        .post_json(
            &format!("{c}/positions/beginning"),
            V2,
            &json!({"partitions": [{"topic": "seek", "partition": 0}]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let got = gw.poll_records(&c, JSON, total as usize).await;
    assert_eq!(offsets(&got), (0..total).collect::<Vec<_>>());
    let a = gw
        .post_json(
            &format!("{c}/positions"),
            V2,
            &json!({"offsets": [{"topic": "seek", "partition": 0, "offset": total - 1}]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(
        offsets(&gw.poll_records(&c, JSON, 1).await),
        vec![total - 1]
    );
    let a = gw
        .post_json(
            &format!("{c}/positions/end"),
            V2,
            &json!({"partitions": [{"topic": "seek", "partition": 0}]}),
        )
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(
        gw.get(&format!("{c}/records?timeout=800"), Some(JSON))
            .await
            .json,
        json!([])
    );
    // A partition this instance does not hold: 404, as Strimzi.
    gw.post_json(
        &format!("{c}/positions/beginning"),
        V2,
        &json!({"partitions": [{"topic": "seek", "partition": 1}]}),
    )
    .await
    .assert_error(404);
    gw.post_json(
        &format!("{c}/positions"),
        V2,
        &json!({"offsets": [{"topic": "seek", "partition": 0}]}),
    )
    .await
    .assert_error(422);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_returns_as_soon_as_a_record_arrives() {
    let gw = gateway::start(|_| {}).await;
    produce(&gw, "lp", [json!("warm-up")]).await;
    let c = gw
        .consumer(
            "lp",
            json!({"name": "c", "format": "json", "auto.offset.reset": "earliest"}),
        )
        .await;
    gw.post_json(&format!("{c}/subscription"), V2, &json!({"topics": ["lp"]}))
        .await;
    gw.poll_records(&c, JSON, 1).await; // assigned and caught up

    let url = gw.url(&format!("{c}/records?timeout=10000"));
    let client = gw.client.clone();
    let waiting = tokio::spawn(async move {
        let resp = client.get(url).header("accept", JSON).send().await.unwrap();
        (Instant::now(), resp.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let produced_at = Instant::now();
    produce(&gw, "lp", [json!("now")]).await;
    let (answered_at, body) = waiting.await.unwrap();
    let latency = answered_at.duration_since(produced_at);
    assert_eq!(body[0]["value"], "now");
    assert!(
        latency < Duration::from_secs(2),
        "long-poll answered {latency:?} after the produce"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebalance_completes_while_a_client_is_idle_and_loses_nothing() {
    let gw = gateway::start(|c| c.kafka.default_partitions = 2).await;
    gw.post_json(
        "/admin/topics",
        JSON,
        &json!({"topic_name": "rb", "partitions_count": 2}),
    )
    .await;
    let body = |n: &str| json!({"name": n, "format": "json", "auto.offset.reset": "earliest", "enable.auto.commit": false});
    let a = gw.consumer("rbg", body("a")).await;
    gw.post_json(&format!("{a}/subscription"), V2, &json!({"topics": ["rb"]}))
        .await;
    // A gets both partitions and reads (and commits) a first batch.
    let first: Vec<Value> = (0..10)
        .map(|i| json!({"value": i, "partition": i % 2}))
        .collect();
    gw.post_json("/topics/rb", JSON, &json!({ "records": first }))
        .await;
    let mut delivered: Vec<(i64, i64)> = Vec::new();
    for r in gw.poll_records(&a, JSON, 10).await {
        delivered.push((
            r["partition"].as_i64().unwrap(),
            r["offset"].as_i64().unwrap(),
        ));
    }
    assert_eq!(
        gw.post(&format!("{a}/offsets"), Some(V2), "").await.status,
        204
    );
    // More records arrive; A's driver reads them ahead, but A's client never polls again.
    let second: Vec<Value> = (10..30)
        .map(|i| json!({"value": i, "partition": i % 2}))
        .collect();
    gw.post_json("/topics/rb", JSON, &json!({ "records": second }))
        .await;

    // B joins. A REST proxy would stall this rebalance until A polled again.
    let b = gw.consumer("rbg", body("b")).await;
    gw.post_json(&format!("{b}/subscription"), V2, &json!({"topics": ["rb"]}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut b_got: Vec<Value> = Vec::new();
    while b_got.is_empty() {
        assert!(
            Instant::now() < deadline,
            "B never got a partition while A was idle"
        );
        let r = gw
            .get(&format!("{b}/records?timeout=1000"), Some(JSON))
            .await;
        b_got.extend(r.json.as_array().unwrap().iter().cloned());
    }
    let sub = gw.get(&format!("{b}/subscription"), None).await;
    assert_eq!(
        sub.json["partitions"].as_array().unwrap().len(),
        1,
        "B holds one partition: {}",
        sub.text
    );
    let b_partition = b_got[0]["partition"].as_i64().unwrap();
    assert!(b_got.iter().all(|r| r["partition"] == b_partition));
    // B starts right after A's commit on its partition: offsets 5.. (10 of 20 second-batch records).
    assert_eq!(b_got[0]["offset"], 5, "B resumes at A's committed offset");
    let mut b_all = b_got;
    while b_all.len() < 10 {
        let r = gw
            .get(&format!("{b}/records?timeout=1000"), Some(JSON))
            .await;
        b_all.extend(r.json.as_array().unwrap().iter().cloned());
        assert!(Instant::now() < deadline);
    }
    // A's client finally polls: only its own partition's records, none of B's.
    let a_rest = gw.poll_records(&a, JSON, 10).await;
    assert!(
        a_rest.iter().all(|r| r["partition"] != b_partition),
        "A gets only its partition now"
    );
    for r in b_all.iter().chain(&a_rest) {
        delivered.push((
            r["partition"].as_i64().unwrap(),
            r["offset"].as_i64().unwrap(),
        ));
    }
    let unique: BTreeSet<_> = delivered.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "no record delivered twice: {delivered:?}"
    );
    let expected: BTreeSet<(i64, i64)> =
        (0..2).flat_map(|p| (0..15).map(move |o| (p, o))).collect();
    assert_eq!(unique, expected, "every record delivered exactly once");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_consumers_are_deleted() {
    let gw =
        gateway::start(|c| c.http.consumer_idle_timeout_ms = barnabas::config::Millis(1_000)).await;
    let c = gw.consumer("idle", json!({"name": "c"})).await;
    let keep = gw.consumer("idle", json!({"name": "busy"})).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            gw.get(&format!("{keep}/subscription"), None).await.status,
            200,
            "used instances stay"
        );
    }
    gw.get(&format!("{c}/subscription"), None)
        .await
        .assert_error(404);
    let m = gw.get("/metrics", None).await;
    assert!(
        m.text.contains("barnabas_http_consumer_instances 1"),
        "{}",
        m.text
    );
    gw.stop().await;
}

/// Reads SSE events (id, data) from a streaming response until `n` arrived or `within` passed.
async fn read_events(
    resp: reqwest::Response,
    n: usize,
    within: Duration,
) -> (Vec<(String, String)>, bool) {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    let mut saw_comment = false;
    let deadline = tokio::time::Instant::now() + within;
    while events.len() < n {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut data, mut kind) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                } else if line.starts_with(':') {
                    saw_comment = true;
                }
            }
            if !id.is_empty() {
                assert_eq!(kind, "record");
                events.push((id, data));
            }
        }
    }
    (events, saw_comment)
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_streams_records_and_resumes_from_last_event_id() {
    let gw = gateway::start(|c| c.http.sse_keep_alive_ms = barnabas::config::Millis(500)).await;
    produce(&gw, "sse", (0..5).map(|i| json!({"n": i}))).await;

    let open = |last: Option<&str>, query: &str| {
        let mut req = gw
            .client
            .get(gw.url(&format!("/topics/sse/events?{query}")))
            .header("accept", "text/event-stream");
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        req.send()
    };
    let resp = open(None, "from=earliest").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (events, _) = read_events(resp, 5, Duration::from_secs(30)).await;
    let ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["0:0", "0:1", "0:2", "0:3", "0:4"]);
    assert_eq!(events[2].1, r#"{"n":2}"#);

    // Reconnect with Last-Event-ID: resumes right after it.
    let resp = open(Some("0:2"), "from=earliest").await.unwrap();
    let (events, _) = read_events(resp, 2, Duration::from_secs(30)).await;
    assert_eq!(
        events.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["0:3", "0:4"]
    );

    // from=latest sees only new records, and idle streams get keep-alive comments.
    let resp = open(None, "from=latest").await.unwrap();
    let reader = tokio::spawn(read_events(resp, 1, Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    produce(&gw, "sse", [json!("fresh")]).await;
    let (events, saw_comment) = reader.await.unwrap();
    assert_eq!(events, vec![("0:5".to_owned(), "\"fresh\"".to_owned())]);
    assert!(saw_comment, "keep-alive comment on an idle stream");

    // Bad input.
    let bad = gw
        .client
        .get(gw.url("/topics/sse/events?from=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = gw
        .client
        .get(gw.url("/topics/sse/events"))
        .header("last-event-id", "zero")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = gw
        .client
        .get(gw.url("/topics/sse/events"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 406);

    // `data:` is UTF-8 text as it is, other bytes base64, `null` for a tombstone.
    let a = gw
        .post_json(
            "/topics/sse",
            BINARY,
            &json!({"records": [
                {"value": B64.encode(b"\xff\xfe\xfd")},
                {"value": null},
                {"value": B64.encode("plain text, é")},
            ]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let resp = open(Some("0:5"), "from=earliest").await.unwrap();
    let (events, _) = read_events(resp, 3, Duration::from_secs(30)).await;
    assert_eq!(
        events,
        vec![
            ("0:6".to_owned(), "//79".to_owned()),
            ("0:7".to_owned(), "null".to_owned()),
            ("0:8".to_owned(), "plain text, é".to_owned()),
        ]
    );
    gw.stop().await;
}

/// Writes a raw HTTP/1.1 `GET path` for an SSE stream on `stream`.
async fn send_sse_get(stream: &mut tokio::net::TcpStream, path: &str) {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
}

/// The status line of a raw `GET path` for an SSE stream, and the open connection.
async fn open_sse(gw: &TestGateway, path: &str) -> (u16, tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let http = gw.gateway.http_addr().unwrap();
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    send_sse_get(&mut stream, path).await;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a status line within 10 s")
            .unwrap();
        assert!(n > 0, "closed before a status line");
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head).into_owned();
    let status = line.split(' ').nth(1).and_then(|c| c.parse().ok());
    (
        status.unwrap_or_else(|| panic!("no status in {line:?}")),
        stream,
    )
}

/// docs/http.md §SSE: a client that closes its connection is noticed at once, whether it
/// closes it cleanly (FIN) or resets it (RST) — no record nor keep-alive comment needs to be
/// written for that (keep-alives are every 10 minutes here). With
/// `limits.max_consumers_per_principal` = 1 and a quiet topic: while the first stream is open a
/// second is refused 429; once its client has closed, the stream ends (its Kafka consumer, its
/// slot) and a new stream is admitted within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn an_sse_client_that_closes_its_connection_is_noticed_at_once() {
    let gw = gateway::start(|c| {
        c.http.sse_keep_alive_ms = barnabas::config::Millis(600_000);
        c.limits.max_consumers_per_principal = 1;
    })
    .await;
    produce(&gw, "quiet", [json!("before")]).await;
    let path = "/topics/quiet/events?from=latest";
    let (status, mut open) = open_sse(&gw, path).await;
    assert_eq!(status, 200, "the first stream");
    for reset in [false, true] {
        let (status, _refused) = open_sse(&gw, path).await;
        assert_eq!(
            status, 429,
            "one stream per principal while the first is open"
        );
        if reset {
            open.set_zero_linger().unwrap(); // close with RST
        }
        drop(open);
        let deadline = Instant::now() + Duration::from_secs(10);
        open = loop {
            assert!(
                Instant::now() < deadline,
                "the closed stream (reset: {reset}) still held its slot"
            );
            match open_sse(&gw, path).await {
                (200, stream) => break stream,
                (status, _) => assert_eq!(status, 429),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
    }
    drop(open);
    gw.stop().await;
}

/// docs/http.md §SSE: a group's commits name what the stream sent, not what the gateway read
/// ahead from Kafka. Broken to commit what was read (offsets stored at read-ahead instead of at
/// hand-out) it fails: resumed at 84 where 42 were sent. A stream that took a batch from the
/// driver before writing it would not be told apart here: it takes the next batch only once the
/// last is written, and the sockets hold about one fetch (42 records).
#[tokio::test(flavor = "multi_thread")]
async fn an_sse_group_commits_what_it_sent() {
    use tokio::io::AsyncReadExt;
    // A closed client is noticed at the next write: keep-alives make that quick.
    let gw = gateway::start(|c| c.http.sse_keep_alive_ms = barnabas::config::Millis(200)).await;
    // 200 records of 100 KB: far more than the client's small socket buffer holds, and more
    // than the gateway reads ahead from Kafka (8 MiB).
    let big = "x".repeat(100_000);
    for _ in 0..20 {
        produce(&gw, "sseg", (0..10).map(|_| json!(big))).await;
    }
    let url = gw.url("/topics/sseg/events?group=ui-store&from=earliest");
    // A client with a 16 KiB receive buffer reads four events, stops reading, then closes.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let http = gw.gateway.http_addr().unwrap();
    let mut stream = socket.connect(http).await.unwrap();
    let path = url.split_once(&gw.base).unwrap().1;
    send_sse_get(&mut stream, path).await;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while seen.windows(6).filter(|w| w == b"id: 0:").count() < 4 {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("events within 30 s")
            .unwrap();
        assert!(n > 0, "the stream ended");
        seen.extend_from_slice(&buf[..n]);
    }
    let tp = ("sseg", 0);
    // While the client stalls with its connection open, the gateway goes on reading ahead
    // from Kafka (up to 8 MiB, 80 of these records) and commits every second: those commits
    // name what the stream sent (the four read, plus what the sockets' buffers hold), never
    // the read-ahead. Committing what was read from Kafka would reach 100 or more here.
    let stalled = settled_commit(&gw, "ui-store", tp).await;
    assert!(
        (4..=60).contains(&stalled),
        "committed {stalled} while the client stalled after reading 4: more than was sent"
    );
    drop(stream);
    // The member commits again on leaving the group: still what the stream sent.
    let resumed = settled_commit(&gw, "ui-store", tp).await;
    let resp = gw
        .client
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let (events, _) = read_events(resp, 1, Duration::from_secs(30)).await;
    assert_eq!(
        events[0].0,
        format!("0:{resumed}"),
        "the group resumes at its commit"
    );
    eprintln!(
        "figures: the SSE group committed {stalled} while stalled, resumed at {resumed} (4 read)"
    );
    assert!(
        (4..=60).contains(&resumed),
        "resumed at {resumed}: committed more than was sent"
    );
    gw.stop().await;
}

/// The offset `group` has committed on `tp` once its commits stop moving (at least 4; the
/// member auto-commits every second, so two reads 1.5 s apart that agree mean it settled).
async fn settled_commit(gw: &gateway::TestGateway, group: &str, tp: (&str, i32)) -> i64 {
    let mut at =
        common::wait_for_commit_where(gw, group, tp, |at| at >= 4, Duration::from_secs(30)).await;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = common::committed_offset(gw, group, tp).await.unwrap();
        if now == at {
            return at;
        }
        at = now;
    }
}

/// strimzi-kafka-bridge #1151: the bridge's idle-consumer sweep removed entries from the map it
/// was iterating, so of several instances idle at once only one was deleted. Here three idle
/// instances of one group all go (404, and the instance gauge back to 0).
#[tokio::test(flavor = "multi_thread")]
async fn several_idle_consumers_are_all_deleted() {
    let gw =
        gateway::start(|c| c.http.consumer_idle_timeout_ms = barnabas::config::Millis(1_000)).await;
    let mut instances = Vec::new();
    for name in ["idle-1", "idle-2", "idle-3"] {
        instances.push(
            gw.consumer("sweep", json!({"name": name, "format": "json"}))
                .await,
        );
    }
    gw.wait_for_metric("barnabas_http_consumer_instances 3", "three instances")
        .await;
    gw.wait_for_metric("barnabas_http_consumer_instances 0", "all three reaped")
        .await;
    for instance in &instances {
        let a = gw.delete(instance).await;
        a.assert_error(404);
        assert_eq!(
            a.json["message"], "The specified consumer instance was not found.",
            "{instance}"
        );
    }
    gw.stop().await;
}

/// strimzi-kafka-bridge #1158: a record header whose value is null (written by a stock Kafka
/// client) made the bridge's poll fail. Here it arrives as `"value": null`, between the other
/// headers (base64) in order, in every embedded format.
#[tokio::test(flavor = "multi_thread")]
async fn a_null_header_value_is_polled_as_null() {
    let gw = gateway::start(|_| {}).await;
    run_python(
        "kafka_client.py",
        &["produce-null-header", &gw.kafka, "nullhdr"],
    );
    for (format, accept, value) in [
        ("json", JSON, json!("Simple message")),
        ("binary", BINARY, json!(B64.encode("\"Simple message\""))),
        ("text", TEXT, json!("\"Simple message\"")),
    ] {
        let c = gw
            .consumer(
                &format!("nullhdr-{format}"),
                json!({"format": format, "auto.offset.reset": "earliest"}),
            )
            .await;
        let a = gw
            .post_json(
                &format!("{c}/subscription"),
                V2,
                &json!({"topics": ["nullhdr"]}),
            )
            .await;
        assert_eq!(a.status, 204, "{}", a.text);
        let got = gw.poll_records(&c, accept, 1).await;
        assert_eq!(got[0]["value"], value, "{format}");
        assert_eq!(got[0]["key"], Value::Null, "{format}");
        assert_eq!(
            got[0]["headers"],
            json!([
                {"key": "key1", "value": B64.encode("value1")},
                {"key": "key-with-null-value", "value": null},
                {"key": "key3", "value": B64.encode("value3")},
            ]),
            "{format}"
        );
        gw.delete(&c).await;
    }
    gw.stop().await;
}

/// strimzi-kafka-bridge #1159: a poll's `timeout` and `max_bytes` stayed in force for the next
/// polls that did not give them. Here each poll has its own: after a 3 s long-poll, a poll
/// without `timeout` answers within the 100 ms default; after a `max_bytes` too small for the
/// record (422), a poll without it gets the record.
#[tokio::test(flavor = "multi_thread")]
async fn a_polls_timeout_and_max_bytes_do_not_carry_over() {
    let gw = gateway::start(|_| {}).await;
    let a = gw
        .post_json("/admin/topics", JSON, &json!({"topic_name": "nocarry"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let c = gw
        .consumer(
            "nocarry",
            json!({"format": "json", "auto.offset.reset": "earliest"}),
        )
        .await;
    let a = gw
        .post_json(
            &format!("{c}/subscription"),
            V2,
            &json!({"topics": ["nocarry"]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    // The group has its partition once a short poll has been answered with nothing twice.
    let records = format!("{c}/records");
    let started = Instant::now();
    let a = gw.get(&format!("{records}?timeout=3000"), Some(JSON)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        started.elapsed() >= Duration::from_millis(2_900),
        "an empty long-poll lasts its timeout: {:?}",
        started.elapsed()
    );
    for _ in 0..3 {
        let started = Instant::now();
        let a = gw.get(&records, Some(JSON)).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.json, json!([]));
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "a poll without timeout uses the default, not the last one: {:?}",
            started.elapsed()
        );
    }

    produce(&gw, "nocarry", [json!("x".repeat(200))]).await;
    // Until the record is buffered a poll may answer []; once it is, max_bytes=10 cannot hold it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = gw
            .get(&format!("{records}?timeout=1000&max_bytes=10"), Some(JSON))
            .await;
        if a.status == 422 {
            a.assert_error(422);
            break;
        }
        assert_eq!(a.json, json!([]), "{}", a.text);
        assert!(Instant::now() < deadline, "the record never arrived");
    }
    let a = gw.get(&format!("{records}?timeout=1000"), Some(JSON)).await;
    assert_eq!(a.status, 200, "max_bytes does not carry over: {}", a.text);
    assert_eq!(offsets(a.json.as_array().unwrap()), vec![0]);
    assert_eq!(a.json[0]["value"], json!("x".repeat(200)));
    gw.delete(&c).await;
    gw.stop().await;
}

/// docs/http.md §SSE: "without `group`, it reads with a private group and commits nothing".
/// Two streams without `group` on a one-partition topic each get every record (members of one
/// group would split it: one of them would get nothing), and once they have sent everything
/// and closed, no group Kafka knows but the `group=` one has an offset committed on the topic
/// (ListGroups, then OffsetFetch per group, asked with confluent-kafka), while that stream,
/// read beside them the same way, has committed all it sent.
///
/// Broken to: both "private" streams opened with one `group=shared` (a group they share), the
/// first got no record within 30 s; one opened with `group=privx` (a group that commits), the
/// check saw `{"privx":{"0":3},"sse-named":{"0":3}}`.
#[tokio::test(flavor = "multi_thread")]
async fn sse_without_a_group_reads_with_a_private_group_and_commits_nothing() {
    let gw = gateway::start(|c| c.http.sse_keep_alive_ms = barnabas::config::Millis(200)).await;
    produce(&gw, "ssep", (0..3).map(|i| json!({ "n": i }))).await;
    let open = |query: &'static str| {
        gw.client
            .get(gw.url(&format!("/topics/ssep/events?from=earliest{query}")))
            .header("accept", "text/event-stream")
            .send()
    };
    let private_a = open("").await.unwrap();
    let private_b = open("").await.unwrap();
    let named = open("&group=sse-named").await.unwrap();
    for resp in [&private_a, &private_b, &named] {
        assert_eq!(resp.status(), 200);
    }
    let (a, b, n) = tokio::join!(
        read_events(private_a, 3, Duration::from_secs(30)),
        read_events(private_b, 3, Duration::from_secs(30)),
        read_events(named, 3, Duration::from_secs(30)),
    );
    let ids =
        |events: &[(String, String)]| events.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    for (who, events) in [
        ("first private", &a.0),
        ("second private", &b.0),
        ("named", &n.0),
    ] {
        assert_eq!(
            ids(events),
            ["0:0", "0:1", "0:2"],
            "{who} stream: {events:?}"
        );
    }
    // The streams are dropped (closed) above; the named one commits on leaving its group.
    common::wait_for_commit(&gw, "sse-named", ("ssep", 0), 3, Duration::from_secs(30)).await;
    // Give a private group's auto-commit (1 s for group streams) time to have happened.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen: Value =
        serde_json::from_str(&common::python_async("group_offsets.py", &[&gw.kafka, "ssep"]).await)
            .unwrap();
    assert_eq!(
        seen["committed"],
        json!({"sse-named": {"0": 3}}),
        "only the named stream's group committed: {seen}"
    );
    gw.stop().await;
}

/// docs/design/scale-out.md §Failure cases (HTTP): "Kafka unavailable: create, subscribe and
/// assign answer an error (the catalog write is not acknowledged within 5 s) rather than
/// creating an instance other replicas cannot find". The broker is a process of its own,
/// stopped with SIGSTOP: creating an instance, subscribing one made before and assigning
/// another each answer a 5xx JSON error (after the 5 s bound each), and the refused instance
/// is not served (404). Once the broker is back, the earlier instance subscribes (204), and
/// the refused name can be created and used after all (200, 204, 204): the stopped broker
/// stores the refused create's catalog record when it resumes, and before the fix that name
/// was taken (create: 409) but never served (records, subscription and DELETE: 404, this
/// replica never adopting back an instance it owned). Now a record naming this very process
/// for an instance it does not hold no longer blocks a create. Seen failing before the fix:
/// the second create answered 409; and with the refused create also withdrawing its record
/// (a tombstone written in the background), the late tombstone closed the instance created
/// again (its subscription: 404) — so the record is left and only stops blocking.
///
/// Broken to: not run against a build without the 5 s bound (a crate edit). By reasoning: a
/// create that did not wait for its catalog write would answer 200 during the outage, and one
/// that waited without a bound would not answer within the test's 60 s slow-timeout.
#[tokio::test(flavor = "multi_thread")]
async fn while_kafka_is_unavailable_create_subscribe_and_assign_answer_an_error() {
    let (broker, bootstrap) = common::broker_process();
    let gw = gateway::start_on(Some(bootstrap), |_| {}).await;
    produce(&gw, "outage", [json!("before")]).await;
    let before = gw
        .consumer("outage-g", json!({"name": "before", "format": "json"}))
        .await;
    let assigned = gw
        .consumer("outage-g", json!({"name": "assigned", "format": "json"}))
        .await;

    broker.signal("STOP");
    let started = Instant::now();
    let create = gw
        .post_json(
            "/consumers/outage-g",
            V2,
            &json!({"name": "during", "format": "json"}),
        )
        .await;
    let subscribe = gw
        .post_json(
            &format!("{before}/subscription"),
            V2,
            &json!({"topics": ["outage"]}),
        )
        .await;
    let assign = gw
        .post_json(
            &format!("{assigned}/assignments"),
            V2,
            &json!({"partitions": [{"topic": "outage", "partition": 0}]}),
        )
        .await;
    let took = started.elapsed();
    let during = gw
        .get(
            "/consumers/outage-g/instances/during/records?timeout=100",
            Some(JSON),
        )
        .await;
    broker.signal("CONT");
    for (what, a) in [
        ("create", &create),
        ("subscribe", &subscribe),
        ("assign", &assign),
    ] {
        assert!(
            a.status.is_server_error() && a.json["error_code"] == a.status.as_u16(),
            "{what} while Kafka is stopped: {} {}",
            a.status,
            a.text
        );
    }
    assert_eq!(during.status, 404, "the refused instance: {}", during.text);
    assert!(
        took < Duration::from_secs(45),
        "three refusals took {took:?}"
    );

    // The refused subscribe and assign changed nothing: each instance is idle, so it may now
    // be assigned or subscribed (before the fix, the refused change stayed in place: 409).
    let a = gw.get(&format!("{before}/subscription"), Some(V2)).await;
    assert_eq!(a.json["topics"], json!([]), "{}", a.text);
    let a = gw
        .post_json(
            &format!("{before}/assignments"),
            V2,
            &json!({"partitions": [{"topic": "outage", "partition": 0}]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let a = gw
        .post_json(
            &format!("{assigned}/subscription"),
            V2,
            &json!({"topics": ["outage"]}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let again = gw
        .consumer("outage-g", json!({"name": "during", "format": "json"}))
        .await;
    let a = gw
        .post_json(
            &format!("{again}/subscription"),
            V2,
            &json!({"topics": ["outage"]}),
        )
        .await;
    assert_eq!(a.status, 204, "the refused name, created again: {}", a.text);
    let deleted = gw.delete(&again).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    gw.stop().await;
    drop(broker);
}

/// docs/design/scale-out.md §Failure cases (HTTP), on a second replica: a create refused while
/// Kafka was away leaves a catalog record that Kafka stores once it is back, naming the replica
/// that refused it (`a`) for an instance it never held. Another replica (`b`) that reads that
/// record asks `a`, which answers 404 for it, so the name can be created through `b` (200) and
/// is then served by `b`, also through `a` (forwarded: 204, then the subscription). A name whose
/// instance `a` does hold stays taken on `b` (409): the control that the question is asked, not
/// skipped.
///
/// Broken to: `b` refusing every name recorded for another live replica (the code before this
/// test): the create through `b` answered 409 (seen failing). And with `a` trusting its own
/// dead record without catching up on the catalog first, the subscribe through `a` right after
/// `b`'s create answered 404 (seen failing).
#[tokio::test(flavor = "multi_thread")]
async fn a_name_refused_while_kafka_was_away_can_be_created_on_another_replica() {
    let (broker, bootstrap) = common::broker_process();
    let a = gateway::start_on(Some(bootstrap.clone()), |_| {}).await;
    let b = gateway::start_on(Some(bootstrap), |_| {}).await;
    a.consumer("late-g", json!({"name": "held", "format": "json"}))
        .await;

    broker.signal("STOP");
    let create = a
        .post_json(
            "/consumers/late-g",
            V2,
            &json!({"name": "during", "format": "json"}),
        )
        .await;
    broker.signal("CONT");
    assert!(
        create.status.is_server_error(),
        "{} {}",
        create.status,
        create.text
    );
    // The refused create's record, stored late.
    let catalog = common::consumer_of(&a, "barnabas.http.consumers").await;
    common::poll_until(catalog.as_ref(), Duration::from_secs(30), |got| {
        got.iter().any(|(r, _)| {
            r.key
                .as_deref()
                .is_some_and(|k| k == br#"["late-g","during"]"#)
        })
    })
    .await;
    catalog.close().await.unwrap();

    let held = b
        .post_json(
            "/consumers/late-g",
            V2,
            &json!({"name": "held", "format": "json"}),
        )
        .await;
    assert_eq!(
        held.status, 409,
        "a name `a` holds, through b: {}",
        held.text
    );
    let during = b
        .consumer("late-g", json!({"name": "during", "format": "json"}))
        .await;
    let subscribed = a
        .post_json(
            &format!("{during}/subscription"),
            V2,
            &json!({"topics": ["late"]}),
        )
        .await;
    assert_eq!(
        subscribed.status, 204,
        "through a, forwarded to b: {}",
        subscribed.text
    );
    let topics = b.get(&format!("{during}/subscription"), Some(V2)).await;
    assert_eq!(topics.json["topics"], json!(["late"]), "{}", topics.text);
    a.stop().await;
    b.stop().await;
    drop(broker);
}

/// docs/design/scale-out.md §HTTP consumers on any replica: a request is forwarded to the
/// instance's owner "marked `x-barnabas-forwarded` (a forwarded request is never forwarded
/// again)". Two replicas on one broker, an instance created on `a`: a poll through `b` is
/// forwarded and answered by `a` (200), while the same poll through `b` already marked as
/// forwarded is answered by `b` itself (404: it does not hold the instance), neither forwarded
/// on nor adopted — `b` still forwards an unmarked poll afterwards, and `a` still serves it.
///
/// Broken to: a replica that forwarded marked requests too would answer the marked poll 200
/// (from `a`), one that adopted would take the instance over; seen failing with the marked
/// poll expected 200 (it was 404).
#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_request_is_never_forwarded_again() {
    let a = gateway::start(|_| {}).await;
    let b = gateway::start_on(Some(a.kafka.clone()), |_| {}).await;
    let instance = a
        .consumer("fwd-g", json!({"name": "held", "format": "json"}))
        .await;
    let subscribed = a
        .post_json(
            &format!("{instance}/subscription"),
            V2,
            &json!({"topics": ["fwd"]}),
        )
        .await;
    assert_eq!(subscribed.status, 204, "{}", subscribed.text);
    let records = format!("{instance}/records?timeout=100");
    // Through b: forwarded to a (b learns of the instance from the catalog within moments).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = b.get(&records, Some(JSON)).await;
        if got.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b never served a's instance: {} {}",
            got.status,
            got.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let marked = b
        .client
        .get(b.url(&records))
        .header("accept", JSON)
        .header("x-barnabas-forwarded", "another-replica")
        .send()
        .await
        .unwrap();
    let status = marked.status().as_u16();
    let text = marked.text().await.unwrap_or_default();
    assert_eq!(status, 404, "a marked request answered by b itself: {text}");
    assert!(text.contains("\"error_code\":404"), "{text}");
    for (via, gw) in [("b", &b), ("a", &a)] {
        let got = gw.get(&records, Some(JSON)).await;
        assert_eq!(got.status, 200, "still served via {via}: {}", got.text);
    }
    b.stop().await;
    a.stop().await;
}
