//! The Casper event store example, end to end: the fake node → barnabas (SSE sources) →
//! three topics → the audit and UI consumer groups over HTTP; then disaster recovery: the UI
//! store is deleted, its group rewound to the beginning, and the rebuilt store must be
//! identical to the original.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

mod common;

#[path = "../examples/casper/bridge.rs"]
mod bridge;
#[path = "../examples/casper/consumers.rs"]
mod consumers;
#[path = "../examples/casper/fake_node.rs"]
mod fake_node;
#[path = "../examples/casper/store.rs"]
mod store;

use std::{collections::BTreeSet, io::BufRead, time::Duration};

use barnabas::config::SseSource;
use common::gateway;

#[tokio::test(flavor = "multi_thread")]
async fn audit_log_and_ui_store_and_a_rebuild_identical_to_the_original() {
    let data = common::workspace_root().join("examples/casper/data");
    let (app, streams) = fake_node::router(
        &data,
        fake_node::Behaviour {
            pace: Duration::ZERO,
            drop_halfway_once: true,
            malformed_deploy: false,
            replay_overlap: 0,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let gw = gateway::start(|c| {
        c.sources.sse = ["main", "deploys", "sigs"]
            .iter()
            .map(|s| SseSource {
                url: format!("http://{node}/events/{s}"),
                topic: format!("casper.{s}"),
                key: "event_type".into(),
                idle_timeout_ms: barnabas::config::DEFAULT_SSE_IDLE_TIMEOUT_MS,
            })
            .collect();
    })
    .await;
    let total: usize = streams.values().map(|r| r.events.len()).sum();
    assert_eq!(total, 97 + 53 + 480);
    let dir = tempfile::tempdir().unwrap();
    let base = gw.base.clone();

    // The audit group: every event once in the log, even across a restart of the consumer.
    let log = dir.path().join("audit.jsonl");
    let written = consumers::audit(&base, &log, Some(Duration::from_secs(4)))
        .await
        .unwrap();
    assert_eq!(written, total, "every event in the audit log");
    let again = consumers::audit(&base, &log, Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(again, 0, "a restarted audit consumer appends nothing twice");
    let lines: Vec<String> = std::io::BufReader::new(std::fs::File::open(&log).unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lines.len(), total);
    let positions: BTreeSet<(String, i64, i64)> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["topic"].as_str().unwrap().to_owned(),
                v["partition"].as_i64().unwrap(),
                v["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(positions.len(), total, "no line twice");

    // The UI group: the store.
    let db = dir.path().join("ui.db");
    let applied = consumers::ui(&base, &db, false, Some(Duration::from_secs(4)))
        .await
        .unwrap();
    assert_eq!(applied, total);
    let original = store::UiStore::open(&db).await.unwrap();
    let (blocks, deploys, signatures) = original.counts().await.unwrap();
    assert!(
        blocks > 0 && deploys > 0 && signatures > 0,
        "{blocks} {deploys} {signatures}"
    );
    let before = original.dump().await.unwrap();
    drop(original);

    // Disaster: the store is lost. Rewind the group and rebuild it from Kafka.
    let rebuilt = consumers::ui(&base, &db, true, Some(Duration::from_secs(4)))
        .await
        .unwrap();
    assert_eq!(rebuilt, total, "the rebuild read everything again");
    let after = store::UiStore::open(&db)
        .await
        .unwrap()
        .dump()
        .await
        .unwrap();
    assert_eq!(after, before, "the rebuilt store is identical");
    gw.stop().await;
}
