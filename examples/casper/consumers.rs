//! The two consumer groups of the Casper event store, over barnabas' HTTP API only.
//!
//! - `audit`: every event of the three topics appended to a JSON-lines log, each line written
//!   (and synced) before its offset is committed; on restart, lines already in the log are
//!   not written again, so the log holds every event exactly once.
//! - `ui`: the SQLite store of `store.rs`; `rebuild` deletes it, moves the group back to the
//!   beginning of every partition (`positions/beginning`) and builds it again from Kafka.

use std::{
    collections::HashMap,
    io::{BufRead, Write},
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    bridge::{Consumer, Rec},
    store::UiStore,
};

/// The event store's topics.
pub const TOPICS: [&str; 3] = ["casper.main", "casper.deploys", "casper.sigs"];

/// When a consumer stops: never (`None`, the examples) or after this long without records.
pub type StopWhenIdle = Option<Duration>;

fn idle_for(last: Instant, stop: StopWhenIdle) -> bool {
    stop.is_some_and(|d| last.elapsed() >= d)
}

/// Polls until idle (if `stop` says so), handing each batch to `handle` and committing
/// after it; returns how many records `handle` counted.
async fn consume(
    consumer: &Consumer,
    stop: StopWhenIdle,
    mut handle: impl AsyncFnMut(&[Rec]) -> Result<usize, String>,
) -> Result<usize, String> {
    let mut total = 0;
    let mut last = Instant::now();
    while !idle_for(last, stop) {
        let records = consumer.poll(1_000).await?;
        if records.is_empty() {
            continue;
        }
        last = Instant::now();
        total += handle(&records).await?;
        consumer.commit().await?;
    }
    Ok(total)
}

/// Runs the audit consumer (group `audit`) appending to `log`.
pub async fn audit(gateway: &str, log: &Path, stop: StopWhenIdle) -> Result<usize, String> {
    // What the log already has: the highest offset per partition.
    let mut seen: HashMap<(String, i64), i64> = HashMap::new();
    if let Ok(f) = std::fs::File::open(log) {
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let key = (
                    v["topic"].as_str().unwrap_or_default().to_owned(),
                    v["partition"].as_i64().unwrap_or(0),
                );
                let off = v["offset"].as_i64().unwrap_or(-1);
                let e = seen.entry(key).or_insert(-1);
                *e = (*e).max(off);
            }
        }
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let consumer = Consumer::create(gateway, "audit", "audit-1").await?;
    consumer.subscribe(&TOPICS).await?;
    let written = consume(&consumer, stop, async |records: &[Rec]| {
        let mut n = 0;
        for r in records {
            let key = (r.topic.clone(), r.partition);
            if seen.get(&key).is_some_and(|max| r.offset <= *max) {
                continue;
            }
            let line = serde_json::json!({
                "topic": r.topic, "partition": r.partition, "offset": r.offset,
                "key": r.key, "event": r.value,
            });
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            seen.insert(key, r.offset);
            n += 1;
        }
        // On disk before the offsets are committed.
        out.sync_data().map_err(|e| e.to_string())?;
        Ok(n)
    })
    .await?;
    consumer.delete().await;
    Ok(written)
}

/// Runs the UI consumer (group `ui`) into the store at `path`; `rebuild` starts it over
/// from the beginning of every partition.
pub async fn ui(
    gateway: &str,
    path: &Path,
    rebuild: bool,
    stop: StopWhenIdle,
) -> Result<usize, String> {
    if rebuild {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    let store = UiStore::open(path).await.map_err(|e| e.to_string())?;
    let consumer = Consumer::create(gateway, "ui", "ui-1").await?;
    // The UI reads every partition itself (no rebalancing): wait until all topics exist.
    let partitions = loop {
        let ps = consumer.partitions(&TOPICS).await?;
        let topics: std::collections::BTreeSet<&str> = ps.iter().map(|(t, _)| t.as_str()).collect();
        if topics.len() == TOPICS.len() {
            break ps;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    consumer.assign(&partitions).await?;
    if rebuild {
        consumer.rewind(&partitions).await?;
    }
    let applied = consume(&consumer, stop, async |records: &[Rec]| {
        for r in records {
            store.apply(r).await.map_err(|e| e.to_string())?;
        }
        Ok(records.len())
    })
    .await?;
    consumer.delete().await;
    Ok(applied)
}
