//! The little HTTP client the event-store consumers use: the Strimzi-compatible consumer API
//! of barnabas, nothing else (the point of the example: no Kafka client).

use serde_json::{json, Value};

const V2: &str = "application/vnd.kafka.v2+json";
const JSON: &str = "application/vnd.kafka.json.v2+json";

/// One record as the HTTP API returns it (format json).
#[derive(Debug, Clone)]
pub struct Rec {
    pub topic: String,
    pub partition: i64,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Value,
}

/// A consumer instance on the gateway.
pub struct Consumer {
    http: reqwest::Client,
    gateway: String,
    base: String,
}

type Result<T> = std::result::Result<T, String>;

async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        let status = resp.status();
        Err(format!(
            "{status}: {}",
            resp.text().await.unwrap_or_default()
        ))
    }
}

impl Consumer {
    /// Creates (or re-creates) instance `name` in `group`, reading from the earliest record
    /// when the group has no committed offset, committing only when told.
    pub async fn create(gateway: &str, group: &str, name: &str) -> Result<Self> {
        let http = reqwest::Client::new();
        let gateway = gateway.trim_end_matches('/').to_owned();
        let _ = http
            .delete(format!("{gateway}/consumers/{group}/instances/{name}"))
            .send()
            .await;
        let body = json!({"name": name, "format": "json", "auto.offset.reset": "earliest", "enable.auto.commit": false});
        let resp = http
            .post(format!("{gateway}/consumers/{group}"))
            .header("content-type", V2)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let created: Value = check(resp).await?.json().await.map_err(|e| e.to_string())?;
        let base = format!("{gateway}/consumers/{group}/instances/{name}");
        let _ = created;
        Ok(Self {
            http,
            gateway,
            base,
        })
    }

    async fn post(&self, path: &str, body: Value) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", V2)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        check(resp).await.map(|_| ())
    }

    /// Joins the group's subscription to `topics`.
    pub async fn subscribe(&self, topics: &[&str]) -> Result<()> {
        self.post("/subscription", json!({ "topics": topics }))
            .await
    }

    /// The partitions of `topics` (topics that do not exist yet are skipped).
    pub async fn partitions(&self, topics: &[&str]) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for t in topics {
            let resp = self
                .http
                .get(format!("{}/topics/{t}/partitions", self.gateway))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            let ps: Value = check(resp).await?.json().await.map_err(|e| e.to_string())?;
            for p in ps.as_array().into_iter().flatten() {
                out.push(((*t).to_owned(), p["partition"].as_i64().unwrap_or(0)));
            }
        }
        Ok(out)
    }

    /// Reads exactly these partitions (from the group's committed offsets).
    pub async fn assign(&self, partitions: &[(String, i64)]) -> Result<()> {
        let ps: Vec<Value> = partitions
            .iter()
            .map(|(t, p)| json!({"topic": t, "partition": p}))
            .collect();
        self.post("/assignments", json!({ "partitions": ps })).await
    }

    /// Moves these partitions back to their first record (disaster recovery).
    pub async fn rewind(&self, partitions: &[(String, i64)]) -> Result<()> {
        let ps: Vec<Value> = partitions
            .iter()
            .map(|(t, p)| json!({"topic": t, "partition": p}))
            .collect();
        self.post("/positions/beginning", json!({ "partitions": ps }))
            .await
    }

    /// Long-polls for records (returns as soon as some exist, or after `timeout_ms`).
    pub async fn poll(&self, timeout_ms: u64) -> Result<Vec<Rec>> {
        let resp = self
            .http
            .get(format!("{}/records?timeout={timeout_ms}", self.base))
            .header("accept", JSON)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let records: Value = check(resp).await?.json().await.map_err(|e| e.to_string())?;
        Ok(records
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Rec {
                topic: r["topic"].as_str().unwrap_or_default().to_owned(),
                partition: r["partition"].as_i64().unwrap_or(0),
                offset: r["offset"].as_i64().unwrap_or(0),
                key: r["key"].as_str().map(str::to_owned),
                value: r["value"].clone(),
            })
            .collect())
    }

    /// Commits everything returned so far.
    pub async fn commit(&self) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}/offsets", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        check(resp).await.map(|_| ())
    }

    /// Leaves the group.
    pub async fn delete(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}
