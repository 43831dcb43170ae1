//! HTTP consumers through the Strimzi Kafka Bridge's API, on the gateway and on a Strimzi
//! bridge beside it (the same requests to either): how fast one consumer instance drains a
//! topic with polls, and how long a long-poll waiting on an empty topic takes to return a
//! record POSTed to the same server.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::{latency, results::Latency};

const V2: &str = "application/vnd.kafka.v2+json";
const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const JSON: &str = "application/vnd.kafka.json.v2+json";

/// A consumer instance on `base` (`http://host:port`), deleted by [`Instance::delete`].
struct Instance {
    http: Client,
    url: String,
}

impl Instance {
    /// Creates an instance in a group of its own reading `topic` from `reset`
    /// (`earliest`/`latest`) in the binary format, and subscribes it.
    async fn subscribe(base: &str, topic: &str, reset: &str) -> Result<Instance> {
        let http = Client::new();
        let unique = std::process::id() as u128 * 1_000_000_000 + now_ns();
        let group = format!("bench-{unique}");
        let created = http
            .post(format!("{base}/consumers/{group}"))
            .header("content-type", V2)
            .body(json!({"name": "c", "format": "binary", "auto.offset.reset": reset}).to_string())
            .send()
            .await
            .context("creating a consumer")?;
        expect(created.status(), StatusCode::OK, "creating a consumer")?;
        let url = format!("{base}/consumers/{group}/instances/c");
        let subscribed = http
            .post(format!("{url}/subscription"))
            .header("content-type", V2)
            .body(json!({ "topics": [topic] }).to_string())
            .send()
            .await
            .context("subscribing")?;
        expect(subscribed.status(), StatusCode::NO_CONTENT, "subscribing")?;
        Ok(Instance { http, url })
    }

    /// One poll waiting up to `timeout_ms`: the records' values (base64, as sent).
    async fn poll(&self, timeout_ms: u64) -> Result<Vec<String>> {
        let answer = self
            .http
            .get(format!(
                "{}/records?timeout={timeout_ms}&max_bytes=10000000",
                self.url
            ))
            .header("accept", BINARY)
            .send()
            .await
            .context("polling")?;
        expect(answer.status(), StatusCode::OK, "polling")?;
        let records: Vec<Value> = answer.json().await.context("poll answer")?;
        Ok(records
            .iter()
            .map(|r| r["value"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    async fn delete(self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

fn expect(got: StatusCode, want: StatusCode, what: &str) -> Result<()> {
    if got != want {
        bail!("{what}: HTTP {got}, expected {want}");
    }
    Ok(())
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Polls `topic` (already holding at least `count` records) from the start with one consumer
/// instance until `count` records arrived; the clock runs from the first poll. Returns the
/// records read and the seconds it took.
pub async fn drain(base: &str, topic: &str, count: usize) -> Result<(usize, f64)> {
    let instance = Instance::subscribe(base, topic, "earliest").await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let mut read = 0;
    while read < count {
        if Instant::now() > deadline {
            bail!("read {read} of {count} records in 300 s");
        }
        read += instance.poll(1000).await?.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    instance.delete().await;
    Ok((read, seconds))
}

/// `samples` times: a poll waits (timeout 10 s) on `topic`, then one record is POSTed to the
/// same server; the time from the POST to the poll's answer is one sample. Returns the
/// `receive` latency row (`protocol` names the server).
pub async fn long_poll_latency(
    base: &str,
    topic: &str,
    samples: usize,
    protocol: &str,
) -> Result<Latency> {
    let instance = std::sync::Arc::new(Instance::subscribe(base, topic, "latest").await?);
    let post = |value: String| {
        let http = Client::new();
        let url = format!("{base}/topics/{topic}");
        async move {
            let answer = http
                .post(url)
                .header("content-type", JSON)
                .body(json!({"records": [{ "value": value }]}).to_string())
                .send()
                .await
                .context("producing")?;
            expect(answer.status(), StatusCode::OK, "producing")
        }
    };
    // Warm-up: until a record produced now is read, the instance may not be assigned yet.
    let warm_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        post("warm-up".into()).await?;
        if !instance.poll(1000).await?.is_empty() {
            break;
        }
        if Instant::now() > warm_deadline {
            bail!("{protocol}: the consumer read nothing within 120 s");
        }
    }
    let mut h = latency::histogram()?;
    for i in 0..samples {
        let waiting = {
            let instance = instance.clone();
            tokio::spawn(async move {
                let records = instance.poll(10_000).await;
                (Instant::now(), records)
            })
        };
        // The poll is at the server and waiting before the record is sent.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = Instant::now();
        post(format!("sample-{i}")).await?;
        let (answered, got) = waiting.await.map_err(|e| anyhow!("{e}"))?;
        if got?.is_empty() {
            bail!("{protocol}: a long poll returned nothing for the record sent {i}");
        }
        latency::record(&mut h, answered.saturating_duration_since(sent));
    }
    if let Ok(instance) = std::sync::Arc::try_unwrap(instance) {
        instance.delete().await;
    }
    Ok(latency::row(protocol, "receive (long poll)", 0, &h, None))
}
