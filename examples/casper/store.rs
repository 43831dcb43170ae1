//! The UI store of the Casper event store: a small SQLite database a UI could query —
//! blocks, deploys, and finality signatures per block — built from the three topics.
//!
//! Every update is an idempotent upsert, so applying a record twice (at-least-once delivery)
//! or in another order across topics gives the same store: a rebuild from Kafka is identical.

use libsql::{params, Connection, Database};
use serde_json::Value;

use crate::bridge::Rec;

/// The store.
pub struct UiStore {
    _database: Database,
    db: Connection,
}

type Result<T> = std::result::Result<T, libsql::Error>;

impl UiStore {
    /// Opens (creating) the store at `path`.
    pub async fn open(path: &std::path::Path) -> Result<Self> {
        let database = libsql::Builder::new_local(path).build().await?;
        let db = database.connect()?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS blocks (
                 hash TEXT PRIMARY KEY, height INTEGER NOT NULL, era_id INTEGER NOT NULL,
                 timestamp TEXT NOT NULL, proposer TEXT NOT NULL, deploys INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS deploys (
                 hash TEXT PRIMARY KEY, accepted INTEGER NOT NULL DEFAULT 0,
                 block_hash TEXT, cost TEXT, expired INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS signatures (
                 block_hash TEXT NOT NULL, public_key TEXT NOT NULL,
                 PRIMARY KEY (block_hash, public_key));
             CREATE TABLE IF NOT EXISTS steps (era_id INTEGER PRIMARY KEY);",
        )
        .await?;
        Ok(Self {
            _database: database,
            db,
        })
    }

    /// Applies one event record.
    pub async fn apply(&self, r: &Rec) -> Result<()> {
        let v = &r.value;
        let s = |x: &Value| x.as_str().unwrap_or_default().to_owned();
        if let Some(b) = v.get("BlockAdded") {
            let header = &b["block"]["header"];
            self.db
                .execute(
                    "INSERT OR REPLACE INTO blocks VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        s(&b["block_hash"]),
                        header["height"].as_i64().unwrap_or(0),
                        header["era_id"].as_i64().unwrap_or(0),
                        s(&header["timestamp"]),
                        s(&b["block"]["body"]["proposer"]),
                        b["block"]["body"]["deploy_hashes"]
                            .as_array()
                            .map_or(0, Vec::len) as i64,
                    ],
                )
                .await?;
        } else if let Some(d) = v.get("DeployAccepted") {
            self.db
                .execute(
                    "INSERT INTO deploys (hash, accepted) VALUES (?1, 1)
                 ON CONFLICT(hash) DO UPDATE SET accepted = 1",
                    params![s(&d["hash"])],
                )
                .await?;
        } else if let Some(d) = v.get("DeployProcessed") {
            let cost = d["execution_result"]
                .as_object()
                .and_then(|o| o.values().next())
                .map(|r| s(&r["cost"]));
            self.db
                .execute(
                    "INSERT INTO deploys (hash, block_hash, cost) VALUES (?1, ?2, ?3)
                 ON CONFLICT(hash) DO UPDATE SET block_hash = ?2, cost = ?3",
                    params![s(&d["deploy_hash"]), s(&d["block_hash"]), cost],
                )
                .await?;
        } else if let Some(d) = v.get("DeployExpired") {
            self.db
                .execute(
                    "INSERT INTO deploys (hash, expired) VALUES (?1, 1)
                 ON CONFLICT(hash) DO UPDATE SET expired = 1",
                    params![s(&d["deploy_hash"])],
                )
                .await?;
        } else if let Some(f) = v.get("FinalitySignature") {
            self.db
                .execute(
                    "INSERT OR IGNORE INTO signatures VALUES (?1, ?2)",
                    params![s(&f["block_hash"]), s(&f["public_key"])],
                )
                .await?;
        } else if let Some(st) = v.get("Step") {
            self.db
                .execute(
                    "INSERT OR IGNORE INTO steps VALUES (?1)",
                    params![st["era_id"].as_i64().unwrap_or(0)],
                )
                .await?;
        }
        Ok(())
    }

    async fn one(&self, sql: &str) -> Result<i64> {
        let mut rows = self.db.query(sql, ()).await?;
        match rows.next().await? {
            Some(row) => row.get::<i64>(0),
            None => Ok(0),
        }
    }

    /// Counts per table, for progress lines.
    pub async fn counts(&self) -> Result<(i64, i64, i64)> {
        Ok((
            self.one("SELECT count(*) FROM blocks").await?,
            self.one("SELECT count(*) FROM deploys").await?,
            self.one("SELECT count(*) FROM signatures").await?,
        ))
    }

    /// The whole store as text, in a fixed order (to compare a rebuild with the original).
    pub async fn dump(&self) -> Result<String> {
        let mut out = String::new();
        for sql in [
            "SELECT hash, height, era_id, timestamp, proposer, deploys FROM blocks ORDER BY height, hash",
            "SELECT hash, accepted, coalesce(block_hash, ''), coalesce(cost, ''), expired FROM deploys ORDER BY hash",
            "SELECT block_hash, count(*) FROM signatures GROUP BY block_hash ORDER BY block_hash",
            "SELECT era_id FROM steps ORDER BY era_id",
        ] {
            let mut rows = self.db.query(sql, ()).await?;
            let n = rows.column_count();
            while let Some(row) = rows.next().await? {
                let cols: Vec<String> = (0..n)
                    .map(|i| match row.get_value(i) {
                        Ok(libsql::Value::Integer(x)) => x.to_string(),
                        Ok(libsql::Value::Text(t)) => t,
                        Ok(other) => format!("{other:?}"),
                        Err(e) => e.to_string(),
                    })
                    .collect();
                out.push_str(&cols.join("|"));
                out.push('\n');
            }
            out.push_str("--\n");
        }
        Ok(out)
    }
}
