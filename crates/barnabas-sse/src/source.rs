//! One SSE source: connect, write every event to Kafka (one at a time, each acknowledged
//! before the next), and on any break resume from what Kafka holds.
//!
//! Nothing is acknowledged here but by Kafka: the position to resume from is read back from
//! the topic (the highest `sse.id` this URL wrote), never kept only in memory, so a restart
//! of the gateway or a dropped node connection neither loses nor repeats an event.

use std::{sync::Arc, time::Duration};

use barnabas_core::{
    Admin, ConsumerConfig, ConsumerFactory, Error, Header, OffsetReset, Publisher, Record, SeekTo,
    TopicPartition,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{
    parser::{SseEvent, SseParser},
    SourceMetrics,
};

/// Header: the event's SSE id.
pub const ID_HEADER: &str = "sse.id";
/// Header: the stream's URL (several sources may share a topic).
pub const URL_HEADER: &str = "sse.url";
/// Header: the event's SSE type, when the stream gives one.
pub const EVENT_HEADER: &str = "sse.event";
/// Header: the Casper API version announced by the stream's first event.
pub const API_VERSION_HEADER: &str = "casper.api_version";

/// How far back in each partition the resume position is looked for.
const RESUME_SCAN: i64 = 1_000;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How an event's record key is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRule {
    /// The event's single top-level JSON key (Casper: `BlockAdded`, `DeployProcessed`, …).
    EventType,
    /// The value at this JSON pointer (RFC 6901), e.g. `/BlockAdded/block_hash`.
    Pointer(String),
}

/// A `key` that is neither `event_type` nor a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is neither event_type nor a JSON pointer starting with '/'")]
pub struct BadKeyRule(pub String);

impl KeyRule {
    /// `event_type` or a JSON pointer (starting with `/`).
    pub fn parse(text: &str) -> Result<Self, BadKeyRule> {
        match text {
            "event_type" => Ok(Self::EventType),
            p if p.starts_with('/') => Ok(Self::Pointer(p.to_owned())),
            other => Err(BadKeyRule(other.to_owned())),
        }
    }
}

/// What one source reads and where it writes.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The stream's URL.
    pub url: String,
    /// The Kafka topic.
    pub topic: String,
    /// How keys are chosen.
    pub key: KeyRule,
    /// A stream silent this long (not even a keep-alive comment) is reconnected
    /// (`idle_timeout_ms`, 120 s by default).
    pub idle_timeout: Duration,
}

/// What a source needs from Kafka.
#[derive(Clone)]
pub struct SourceContext {
    /// The process-wide producer.
    pub publisher: Arc<dyn Publisher>,
    /// For reading the resume position back.
    pub consumers: Arc<dyn ConsumerFactory>,
    /// Watermarks of the topic.
    pub admin: Arc<dyn Admin>,
    /// Source metrics.
    pub metrics: SourceMetrics,
}

/// Why a connection ended.
enum Break {
    Shutdown,
    Retry(String),
}

/// Runs the source until `shutdown`.
pub async fn run(spec: SourceSpec, ctx: SourceContext, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %spec.url, error = %e, "SSE source cannot start");
            return;
        }
    };
    let label = crate::SourceLabel {
        url: spec.url.clone(),
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => Break::Shutdown,
            b = connect_and_copy(&client, &spec, &ctx, &mut backoff) => b,
        };
        match outcome {
            Break::Shutdown => return,
            Break::Retry(why) => {
                ctx.metrics.reconnects.get_or_create(&label).inc();
                tracing::warn!(url = %spec.url, reason = %why, retry_in = ?backoff, "SSE source reconnecting");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect_and_copy(
    client: &reqwest::Client,
    spec: &SourceSpec,
    ctx: &SourceContext,
    backoff: &mut Duration,
) -> Break {
    let mut last = match last_written(ctx, spec).await {
        Ok(id) => id,
        Err(e) => return Break::Retry(format!("cannot read the resume position from Kafka: {e}")),
    };
    let url = match last {
        Some(id) => with_start_from(&spec.url, id + 1),
        None => spec.url.clone(),
    };
    tracing::info!(%url, resume_after = ?last, "SSE source connecting");
    let response = match client
        .get(&url)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => return Break::Retry(format!("HTTP {}", r.status())),
        Err(e) => return Break::Retry(e.to_string()),
    };
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    let mut api_version: Option<String> = None;
    loop {
        let chunk = match tokio::time::timeout(spec.idle_timeout, body.next()).await {
            Err(_) => return Break::Retry(format!("nothing received for {:?}", spec.idle_timeout)),
            Ok(None) => return Break::Retry("the stream ended".into()),
            Ok(Some(Err(e))) => return Break::Retry(e.to_string()),
            Ok(Some(Ok(c))) => c,
        };
        for event in parser.feed(&chunk) {
            match write(ctx, spec, &event, &mut api_version, last).await {
                Ok(Some(id)) => {
                    last = Some(id);
                    *backoff = Duration::from_millis(500);
                }
                Ok(None) => {}
                Err(e) => {
                    return Break::Retry(format!("Kafka did not take event {:?}: {e}", event.id))
                }
            }
        }
        if let Some(ms) = parser.retry_ms {
            *backoff = Duration::from_millis(ms).min(MAX_BACKOFF);
        }
    }
}

/// Writes one event (or takes note of the API version); returns its id once Kafka has it.
async fn write(
    ctx: &SourceContext,
    spec: &SourceSpec,
    event: &SseEvent,
    api_version: &mut Option<String>,
    last: Option<u64>,
) -> Result<Option<u64>, Error> {
    let label = crate::SourceLabel {
        url: spec.url.clone(),
    };
    let id: Option<u64> = event.id.as_deref().and_then(|i| i.trim().parse().ok());
    if let (Some(id), Some(last)) = (id, last) {
        if id <= last {
            return Ok(None); // replayed by the node: already in Kafka
        }
    }
    let json: serde_json::Value = match serde_json::from_str(&event.data) {
        Ok(v) => v,
        Err(e) => {
            ctx.metrics.malformed.get_or_create(&label).inc();
            tracing::warn!(url = %spec.url, id = ?event.id, error = %e, "malformed SSE event skipped");
            return Ok(None);
        }
    };
    if let Some(v) = json
        .get("ApiVersion")
        .filter(|_| json.as_object().is_some_and(|o| o.len() == 1))
    {
        *api_version = Some(v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        return Ok(None);
    }
    let key = match &spec.key {
        KeyRule::EventType => json
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.keys().next().cloned()),
        KeyRule::Pointer(p) => json
            .pointer(p)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
    };
    let mut headers = vec![Header::new(URL_HEADER, spec.url.clone())];
    if let Some(i) = &event.id {
        headers.push(Header::new(ID_HEADER, i.clone()));
    }
    if let Some(t) = &event.event {
        headers.push(Header::new(EVENT_HEADER, t.clone()));
    }
    if let Some(v) = api_version {
        headers.push(Header::new(API_VERSION_HEADER, v.clone()));
    }
    let record = Record {
        topic: spec.topic.clone(),
        partition: None,
        key: key.map(Into::into),
        value: Some(event.data.clone().into()),
        headers,
        timestamp: None,
    };
    ctx.publisher
        .publish_one(barnabas_core::Identity::Gateway, record)
        .await?;
    ctx.metrics.events.get_or_create(&label).inc();
    Ok(id)
}

/// The URL asking the node to replay from `id`.
fn with_start_from(url: &str, id: u64) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}start_from={id}")
}

/// The highest SSE id this URL wrote to the topic (looking at the last records of each
/// partition), or `None` when it wrote nothing yet.
async fn last_written(ctx: &SourceContext, spec: &SourceSpec) -> Result<Option<u64>, Error> {
    let partitions = match ctx.admin.topic_metadata(&spec.topic).await {
        Ok(md) => md.partitions,
        Err(Error::UnknownTopic(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut ranges = Vec::new();
    for p in &partitions {
        let w = ctx.admin.watermarks(&spec.topic, p.partition).await?;
        if w.high > w.low {
            ranges.push((p.partition, (w.high - RESUME_SCAN).max(w.low), w.high));
        }
    }
    if ranges.is_empty() {
        return Ok(None);
    }
    let session = ctx
        .consumers
        .create(ConsumerConfig {
            group_id: "barnabas.sse.resume".into(),
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        })
        .await?;
    let mut best: Option<u64> = None;
    let result = async {
        for (partition, from, high) in ranges {
            session
                .assign_at(vec![(
                    TopicPartition::new(spec.topic.clone(), partition),
                    Some(SeekTo::Offset(from)),
                )])
                .await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let mut next = from;
            while next < high {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Timeout(Duration::from_secs(20)));
                }
                for r in session.poll(500, Duration::from_millis(500)).await? {
                    next = next.max(r.offset + 1);
                    let ours = r
                        .header(URL_HEADER)
                        .is_some_and(|u| u.as_ref() == spec.url.as_bytes());
                    let id = r
                        .header(ID_HEADER)
                        .and_then(|i| std::str::from_utf8(i).ok()?.trim().parse::<u64>().ok());
                    if let (true, Some(id)) = (ours, id) {
                        best = Some(best.map_or(id, |b| b.max(id)));
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = session.close().await;
    result.map(|()| best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_from_is_appended_to_the_query() {
        assert_eq!(
            with_start_from("http://n:9999/events/main", 5),
            "http://n:9999/events/main?start_from=5"
        );
        assert_eq!(
            with_start_from("http://n/e?x=1", 5),
            "http://n/e?x=1&start_from=5"
        );
    }

    #[test]
    fn key_rules() {
        assert_eq!(KeyRule::parse("event_type"), Ok(KeyRule::EventType));
        assert_eq!(KeyRule::parse("/a/b"), Ok(KeyRule::Pointer("/a/b".into())));
        assert!(KeyRule::parse("hash").is_err());
    }
}
