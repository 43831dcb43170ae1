//! The Azure Event Hubs dialect of the AMQP front end with the Event Hubs SDK itself
//! (azure-eventhub 5.15, pure Python with its own AMQP stack; tests/python/eventhubs_sdk.py),
//! connected with an emulator connection string (plain AMQP to the gateway); Kafka read back
//! with the adapter's consumer.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{gateway, gateway::TestGateway};
use serde_json::Value;

fn with_amqp(c: &mut barnabas::config::Config) {
    c.amqp.listen = "127.0.0.1:0".into();
}

fn addr(gw: &TestGateway) -> String {
    gw.gateway.amqp_addr().unwrap().to_string()
}

async fn sdk(args: &[&str]) -> Value {
    let out = common::python_async("eventhubs_sdk.py", args).await;
    serde_json::from_str(out.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("eventhubs_sdk.py {args:?} printed {out:?}: {e}"))
}

/// The SDK's CBS `put-token` exchange is answered 202 when auth is off (any token), and a
/// management request goes through after it.
#[tokio::test(flavor = "multi_thread")]
async fn cbs_put_token_is_accepted_with_auth_off() {
    let gw = gateway::start(with_amqp).await;
    gw.gateway
        .backend()
        .admin
        .create_topic("hub-cbs", Some(2), None)
        .await
        .unwrap();
    let out = sdk(&["cbs", &addr(&gw), "hub-cbs"]).await;
    assert_eq!(out["ok"], true, "{out}");
    gw.stop().await;
}

/// With auth on, the token is checked against the users file: a SharedAccessSignature whose
/// `sig` is a bearer token of user `skn` is accepted (202); one made from a key the users file
/// does not know is answered 401, which the SDK reports as an authentication failure.
#[tokio::test(flavor = "multi_thread")]
async fn cbs_put_token_is_checked_against_the_users_file_with_auth_on() {
    let dir = tempfile::tempdir().unwrap();
    let users = common::write_test_users(dir.path());
    let gw = gateway::start(move |c| {
        with_amqp(c);
        c.auth.mode = "users".into();
        c.auth.users_file = users.display().to_string();
        c.auth.allow_anonymous = true;
    })
    .await;
    gw.gateway
        .backend()
        .admin
        .create_topic("hub-auth", Some(1), None)
        .await
        .unwrap();
    let good = "SharedAccessSignature sr=hub-auth&sig=token-1&se=4102444800&skn=device-1";
    let out = sdk(&["cbs", &addr(&gw), "hub-auth", good]).await;
    assert_eq!(out["ok"], true, "{out}");
    let wrong_user = "SharedAccessSignature sr=hub-auth&sig=token-1&se=4102444800&skn=reader";
    let out = sdk(&["cbs", &addr(&gw), "hub-auth", wrong_user]).await;
    assert_eq!(out["ok"], false, "{out}");
    let out = sdk(&["cbs", &addr(&gw), "hub-auth"]).await;
    assert_eq!(out["ok"], false, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("401") || error.to_lowercase().contains("auth"),
        "{error}"
    );
    gw.stop().await;
}

/// `EventHubProducerClient.send_batch` (the batch message format, several events in one
/// transfer): plain, with a partition key and with a partition id, each event one Kafka record
/// of topic T — the partition key as the record key (so one partition), the partition id as
/// the record's partition.
#[tokio::test(flavor = "multi_thread")]
async fn producer_client_batches_land_in_kafka_with_key_and_partition() {
    let gw = gateway::start(with_amqp).await;
    gw.gateway
        .backend()
        .admin
        .create_topic("hub-send", Some(4), None)
        .await
        .unwrap();
    let a = addr(&gw);
    assert_eq!(
        sdk(&["send", &a, "hub-send", "plain", "3"]).await["sent"],
        3
    );
    assert_eq!(
        sdk(&["send", &a, "hub-send", "key:device-7", "4"]).await["sent"],
        4
    );
    assert_eq!(
        sdk(&["send", &a, "hub-send", "partition:2", "3"]).await["sent"],
        3
    );
    let records = common::read_topic(&gw, "hub-send", 10).await;
    assert_eq!(records.len(), 10, "{records:?}");
    let keyed: Vec<_> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"device-7".as_slice()))
        .collect();
    assert_eq!(keyed.len(), 4, "{records:?}");
    assert!(keyed.iter().all(|r| r.partition == keyed[0].partition));
    let mut keyed_values: Vec<_> = keyed
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    keyed_values.sort();
    assert_eq!(keyed_values, ["event-0", "event-1", "event-2", "event-3"]);
    let unkeyed: Vec<_> = records.iter().filter(|r| r.key.is_none()).collect();
    assert_eq!(unkeyed.len(), 6, "{records:?}");
    let in_two = unkeyed.iter().filter(|r| r.partition == 2).count();
    assert!(in_two >= 3, "the 3 events sent to partition 2: {records:?}");
    gw.stop().await;
}

/// `get_eventhub_properties` lists the topic's partitions; `get_partition_properties` gives
/// each one's sequence numbers and offsets from the watermarks.
#[tokio::test(flavor = "multi_thread")]
async fn management_reads_hub_and_partition_properties_from_kafka() {
    let gw = gateway::start(with_amqp).await;
    gw.gateway
        .backend()
        .admin
        .create_topic("hub-props", Some(3), None)
        .await
        .unwrap();
    let a = addr(&gw);
    sdk(&["send", &a, "hub-props", "partition:1", "5"]).await;
    let out = sdk(&["props", &a, "hub-props"]).await;
    assert_eq!(out["eventhub"]["eventhub_name"], "hub-props", "{out}");
    assert_eq!(
        out["eventhub"]["partition_ids"],
        serde_json::json!(["0", "1", "2"]),
        "{out}"
    );
    let parts = out["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for p in parts {
        let id = p["id"].as_str().unwrap();
        assert_eq!(p["beginning_sequence_number"], 0, "{p}");
        if id == "1" {
            assert_eq!(p["is_empty"], false, "{p}");
            assert_eq!(p["last_enqueued_sequence_number"], 4, "{p}");
            assert_eq!(p["last_enqueued_offset"], "4", "{p}");
        } else {
            assert_eq!(p["is_empty"], true, "{p}");
            assert_eq!(p["last_enqueued_sequence_number"], -1, "{p}");
        }
    }
    gw.stop().await;
}

/// `EventHubConsumerClient.receive` on one partition (source
/// `T/ConsumerGroups/$Default/Partitions/P`): from `-1` (the beginning), from an offset
/// (exclusive), from a sequence number (exclusive and inclusive) and from `@latest` (only what
/// is sent after the receiver started), with the Event Hubs annotations on every event.
#[tokio::test(flavor = "multi_thread")]
async fn consumer_client_receives_from_every_starting_position() {
    let gw = gateway::start(with_amqp).await;
    gw.gateway
        .backend()
        .admin
        .create_topic("hub-recv", Some(2), None)
        .await
        .unwrap();
    let a = addr(&gw);
    sdk(&["send", &a, "hub-recv", "partition:1", "5"]).await;
    let bodies = |out: &Value| -> Vec<String> {
        assert_eq!(out["errors"], serde_json::json!([]), "{out}");
        out["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["body"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = sdk(&["receive", &a, "hub-recv", "1", "-1", "5"]).await;
    assert_eq!(
        bodies(&all),
        ["event-0", "event-1", "event-2", "event-3", "event-4"]
    );
    for (i, e) in all["events"].as_array().unwrap().iter().enumerate() {
        assert_eq!(e["offset"], i.to_string(), "{e}");
        assert_eq!(e["sequence_number"], i, "{e}");
        assert!(e["enqueued_time_ms"].as_i64().unwrap() > 0, "{e}");
    }
    let from_offset = sdk(&["receive", &a, "hub-recv", "1", "offset:2", "2"]).await;
    assert_eq!(bodies(&from_offset), ["event-3", "event-4"]);
    let from_seq = sdk(&["receive", &a, "hub-recv", "1", "seq:3", "1"]).await;
    assert_eq!(bodies(&from_seq), ["event-4"]);
    let from_seq_incl = sdk(&["receive", &a, "hub-recv", "1", "seq-incl:3", "2"]).await;
    assert_eq!(bodies(&from_seq_incl), ["event-3", "event-4"]);
    let latest = sdk(&["receive", &a, "hub-recv", "1", "@latest", "2"]).await;
    assert_eq!(bodies(&latest), ["event-1000", "event-1001"]);
    assert_eq!(latest["events"][0]["sequence_number"], 5);
    gw.stop().await;
}

/// `EventHubConsumerClient.receive` from an enqueued time: the first event whose Kafka
/// timestamp is after it (looked up through the Kafka adapter's offsets-by-time).
#[tokio::test(flavor = "multi_thread")]
async fn consumer_client_receives_from_an_enqueued_time() {
    let gw = gateway::start(with_amqp).await;
    gw.gateway
        .backend()
        .admin
        .create_topic("hub-time", Some(2), None)
        .await
        .unwrap();
    let a = addr(&gw);
    sdk(&["send", &a, "hub-time", "partition:0", "3"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    sdk(&["send", &a, "hub-time", "partition:0", "2"]).await;
    let out = sdk(&[
        "receive",
        &a,
        "hub-time",
        "0",
        &format!("time:{between}"),
        "2",
    ])
    .await;
    assert_eq!(out["errors"], serde_json::json!([]), "{out}");
    let offsets: Vec<_> = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(offsets, ["3", "4"], "{out}");
    let from_zero = sdk(&["receive", &a, "hub-time", "0", "time:0", "1"]).await;
    assert_eq!(from_zero["events"][0]["offset"], "0", "{from_zero}");
    gw.stop().await;
}
