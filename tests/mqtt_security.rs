//! MQTT findings of the second security review (issue 20), each reproduced with a stock client
//! (mosquitto_pub/mosquitto_sub, or a raw socket where the client must misbehave on purpose):
//! client-supplied `barnabas.*` user properties, a SUBSCRIBE repeating one filter 70 000 times,
//! retained messages and read ACLs, client ids bound to their principal, bounded per-client
//! state, QoS 2 de-duplication across a reconnect, and wills at shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::SocketAddr;

use common::{gateway, mosquitto, mosquitto_async, text};

fn addr(gw: &gateway::TestGateway) -> SocketAddr {
    gw.gateway.mqtt_addr().unwrap()
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
