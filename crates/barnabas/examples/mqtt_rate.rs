//! QoS 1 publish rate through a running gateway: N MQTT connections (rumqttc) each publish
//! M messages of S bytes to `devices/bench-{i}/telemetry`, up to 64 unacknowledged each, and
//! the rate counts PUBACKs (which the gateway sends only after Kafka acknowledged).
//! A quick measurement for scripts/quick-bench/run.sh, not the benchmark suite.
//!
//!   cargo run --release -p barnabas --example mqtt_rate -- HOST:PORT [CONNS] [MSGS_EACH] [SIZE]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:1883".into());
    let conns: usize = args.get(2).map_or(8, |a| a.parse().expect("connections"));
    let each: usize = args
        .get(3)
        .map_or(25_000, |a| a.parse().expect("messages each"));
    let size: usize = args
        .get(4)
        .map_or(100, |a| a.parse().expect("payload size"));
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
