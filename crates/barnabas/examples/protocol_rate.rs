//! Produce rates through a running gateway, counted when the gateway acknowledges (which it
//! does only after Kafka did). A quick measurement for scripts/quick-bench/run.sh, not the
//! benchmark suite.
//!
//!   protocol_rate mqtt HOST:PORT [CONNS=8] [MSGS_EACH=25000] [SIZE=100]
//!       N MQTT connections (rumqttc) each publish QoS 1 to `devices/bench-{i}/telemetry`,
//!       up to 64 unacknowledged each; counts PUBACKs.
//!   protocol_rate amqp HOST:PORT [MESSAGES=200000] [SIZE=100] [WINDOW=200]
//!       one AMQP link (fe2o3-amqp) sends unsettled to topic `bench-amqp`, at most WINDOW
//!       unsettled; counts `accepted` outcomes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use fe2o3_amqp::{
    sasl_profile::SaslProfile,
    types::{
        messaging::{Message, Outcome},
        primitives::Binary,
    },
    Connection, Sender, Session,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Positional argument `i`, or `default` when absent.
fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .map_or(default, |a| a.parse().ok().expect("a valid argument"))
}

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("mqtt") => mqtt().await,
        Some("amqp") => amqp().await,
        _ => eprintln!("usage: protocol_rate mqtt|amqp HOST:PORT [...] (see the file's doc)"),
    }
}

async fn mqtt() {
    let addr: String = arg(2, "127.0.0.1:1883".to_owned());
    let (conns, each, size): (usize, usize, usize) = (arg(3, 8), arg(4, 25_000), arg(5, 100));
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    let port: u16 = port.parse().expect("port");
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let mut opts = MqttOptions::new(format!("bench-{i}"), host, port);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_inflight(64);
        let (client, mut el) = AsyncClient::new(opts, 128);
        let payload = payload.clone();
        let topic = format!("devices/bench-{i}/telemetry");
        tasks.push(tokio::spawn(async move {
            let publisher = tokio::spawn(async move {
                for _ in 0..each {
                    client
                        .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < each {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => panic!("connection {i}: {e:?}"),
                }
            }
            drop(publisher.await);
            acked
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "mqtt qos1: {conns} connections, {total} messages of {size} B acked in {secs:.2} s = {:.0} msg/s",
        total as f64 / secs
    );
}

async fn amqp() {
    let addr: String = arg(2, "127.0.0.1:5672".to_owned());
    let (count, size, window): (usize, usize, usize) = (arg(3, 200_000), arg(4, 100), arg(5, 200));
    let mut conn = Connection::builder()
        .container_id("amqp-rate")
        .sasl_profile(SaslProfile::Anonymous)
        .open(format!("amqp://{addr}").as_str())
        .await
        .expect("connection");
    let mut session = Session::begin(&mut conn).await.expect("session");
    let mut sender = Sender::attach(&mut session, "rate", "bench-amqp")
        .await
        .expect("link");
    // One accepted message first: the topic exists before timing starts.
    sender
        .send(Message::builder().data(Binary::from(vec![b'w'])).build())
        .await
        .unwrap();
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    let mut accepted = 0usize;
    for _ in 0..count {
        if pending.len() >= window {
            if let Some(fut) = pending.pop_front() {
                if let Ok(Outcome::Accepted(_)) = fut.await {
                    accepted += 1;
                }
            }
        }
        let msg = Message::builder()
            .data(Binary::from(payload.clone()))
            .build();
        pending.push_back(sender.send_batchable(msg).await.expect("send"));
    }
    for fut in pending {
        if let Ok(Outcome::Accepted(_)) = fut.await {
            accepted += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "amqp unsettled: 1 link, {accepted}/{count} messages of {size} B accepted in {secs:.2} s = {:.0} msg/s",
        accepted as f64 / secs
    );
    let _ = sender.close().await;
    let _ = session.end().await;
    let _ = conn.close().await;
}
