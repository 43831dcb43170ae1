//! SSE sources end to end: a fake Casper node serving the recorded streams
//! (`examples/casper/data/*.sse`, via examples/casper/fake_node.rs, honouring `start_from`, dropping each stream halfway once)
//! → the gateway → three topics; every event exactly once, keyed by its type, also across a
//! gateway restart in mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

mod common;

#[path = "../examples/casper/fake_node.rs"]
mod fake_node;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use barnabas::config::SseSource;
use common::{gateway, read_topic};
use fake_node::Recorded;

async fn fake_node(pace: Duration) -> (SocketAddr, std::collections::HashMap<String, Recorded>) {
    let (app, streams) = fake_node::router(
        &common::workspace_root().join("examples/casper/data"),
        fake_node::Behaviour {
            pace,
            drop_halfway_once: true,
            malformed_deploy: true,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, streams)
}

fn sources(node: SocketAddr, which: &[&str]) -> Vec<SseSource> {
    which
        .iter()
        .map(|s| SseSource {
            url: format!("http://{node}/events/{s}"),
            topic: format!("casper.{s}"),
            key: "event_type".into(),
        })
        .collect()
}

async fn written(gw: &gateway::TestGateway, topic: &str) -> i64 {
    let admin = &gw.gateway.backend().admin;
    let Ok(md) = admin.topic_metadata(topic).await else {
        return 0;
    };
    let mut n = 0;
    for p in md.partitions {
        let w = admin.watermarks(topic, p.partition).await.unwrap();
        n += w.high - w.low;
    }
    n
}

async fn wait_for(gw: &gateway::TestGateway, topic: &str, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = written(gw, topic).await;
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {got} of {n} events written"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every recorded event exactly once, keyed by its type, with its headers.
async fn check_exactly_once(gw: &gateway::TestGateway, stream: &str, rec: &Recorded, url: &str) {
    let topic = format!("casper.{stream}");
    let got = read_topic(gw, &topic, rec.events.len()).await;
    // Nothing beyond them either.
    assert_eq!(
        written(gw, &topic).await,
        rec.events.len() as i64,
        "{topic}: duplicates"
    );
    let mut by_id: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &got {
        let id: u64 = std::str::from_utf8(r.header("sse.id").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        *by_id.entry(id).or_default() += 1;
        let value: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let event_type = value.as_object().unwrap().keys().next().unwrap().clone();
        assert_eq!(
            r.key.as_deref(),
            Some(event_type.as_bytes()),
            "key = event type"
        );
        assert_eq!(r.header("sse.url").map(|u| &u[..]), Some(url.as_bytes()));
        assert_eq!(
            r.header("casper.api_version").map(|u| &u[..]),
            Some(b"1.4.8".as_slice())
        );
    }
    let expected: BTreeMap<u64, usize> = rec.events.iter().map(|(_, id)| (*id, 1)).collect();
    assert_eq!(by_id, expected, "{topic}: every event exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn casper_streams_land_exactly_once_across_a_dropped_connection() {
    let (node, recs) = fake_node(Duration::from_millis(1)).await;
    let gw = gateway::start(|c| c.sources.sse = sources(node, &["main", "deploys", "sigs"])).await;
    for (stream, n) in [("main", 97), ("deploys", 53), ("sigs", 480)] {
        assert_eq!(recs[stream].events.len(), n);
        wait_for(
            &gw,
            &format!("casper.{stream}"),
            n as i64,
            Duration::from_secs(120),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for stream in ["main", "deploys", "sigs"] {
        let url = format!("http://{node}/events/{stream}");
        check_exactly_once(&gw, stream, &recs[stream], &url).await;
    }
    let metrics = gw.get("/metrics", None).await.text;
    let deploys = format!("http://{node}/events/deploys");
    let malformed = format!("barnabas_sse_source_malformed_total{{url=\"{deploys}\"}} 1");
    assert!(
        metrics.contains(&malformed),
        "{malformed} not in:\n{metrics}"
    );
    assert!(
        metrics.contains("barnabas_sse_source_reconnects_total"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_restart_mid_stream_neither_loses_nor_repeats_events() {
    use barnabas::embedded::{EmbeddedKafka, Storage};
    let broker = EmbeddedKafka::start(common::free_addr(), None, Storage::Temporary)
        .await
        .unwrap();
    let (node, recs) = fake_node(Duration::from_millis(10)).await;
    let configure = |c: &mut barnabas::config::Config| c.sources.sse = sources(node, &["sigs"]);
    let gw = gateway::start_on(Some(broker.bootstrap()), configure).await;
    wait_for(&gw, "casper.sigs", 60, Duration::from_secs(60)).await;
    gw.stop().await;
    let gw = gateway::start_on(Some(broker.bootstrap()), configure).await;
    wait_for(&gw, "casper.sigs", 480, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let url = format!("http://{node}/events/sigs");
    check_exactly_once(&gw, "sigs", &recs["sigs"], &url).await;
    gw.stop().await;
    broker.stop().await;
}
