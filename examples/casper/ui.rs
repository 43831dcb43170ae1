//! The UI consumer of the Casper event store: a SQLite store of blocks, deploys and
//! finality signatures.
//!   cargo run -p barnabas --example casper_ui -- [GATEWAY=http://127.0.0.1:8080] [STORE=ui.db] [--rebuild] [--dump]
//! `--rebuild` deletes the store and builds it again from the beginning of Kafka;
//! `--dump` prints the store (after catching up: stops when idle for 3 s).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "bridge.rs"]
mod bridge;
#[path = "consumers.rs"]
mod consumers;
#[path = "store.rs"]
mod store;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("--"))
        .collect();
    let mut plain = args.iter().filter(|a| !a.starts_with("--"));
    let gateway = plain
        .next()
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let path = plain.next().cloned().unwrap_or_else(|| "ui.db".into());
    let dump = flags.contains(&"--dump");
    let stop = dump.then_some(Duration::from_secs(3));
    let path = std::path::Path::new(&path);
    match consumers::ui(&gateway, path, flags.contains(&"--rebuild"), stop).await {
        Ok(n) => eprintln!("ui: {n} events applied"),
        Err(e) => {
            eprintln!("ui: {e}");
            std::process::exit(1);
        }
    }
    if dump {
        let store = store::UiStore::open(path).await.expect("store");
        print!("{}", store.dump().await.expect("dump"));
    }
}
