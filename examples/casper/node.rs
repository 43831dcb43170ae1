//! A fake Casper node serving the recorded streams, for trying the event store without a
//! node:  cargo run -p barnabas --example casper_node -- [ADDR=127.0.0.1:9999] [DATA_DIR]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "fake_node.rs"]
mod fake_node;

use std::{path::PathBuf, time::Duration};

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".into());
    let dir = std::env::args().nth(2).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/casper/data"),
        PathBuf::from,
    );
    let (app, streams) = fake_node::router(
        &dir,
        fake_node::Behaviour {
            pace: Duration::from_millis(2),
            drop_halfway_once: false,
            malformed_deploy: false,
            replay_overlap: 0,
        },
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    for (name, rec) in &streams {
        eprintln!(
            "serving http://{addr}/events/{name}: {} events",
            rec.events.len()
        );
    }
    axum::serve(listener, app).await.expect("serve");
}
