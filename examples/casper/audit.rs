//! The audit consumer of the Casper event store: every event, once, in a JSON-lines log.
//!   cargo run -p barnabas --example casper_audit -- [GATEWAY=http://127.0.0.1:8080] [LOG=audit.jsonl]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "bridge.rs"]
mod bridge;
#[path = "consumers.rs"]
mod consumers;
#[path = "store.rs"]
mod store;

#[tokio::main]
async fn main() {
    let gateway = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let log = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "audit.jsonl".into());
    match consumers::audit(&gateway, std::path::Path::new(&log), None).await {
        Ok(n) => eprintln!("audit: {n} events appended"),
        Err(e) => {
            eprintln!("audit: {e}");
            std::process::exit(1);
        }
    }
}
