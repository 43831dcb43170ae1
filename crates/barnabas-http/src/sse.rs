//! `GET /topics/{topic}/events`: a topic as a Server-Sent Events stream.
//!
//! Each record is an event `id: <partition>:<offset>`, `event: record`, `data: <value>`. With
//! `group=G` the stream is a member of consumer group G and commits what it has sent; without,
//! it reads with a private group and commits nothing. `Last-Event-ID` resumes after that
//! position. A slow client is not buffered for: the stream is pulled by the connection, so
//! the consumer's read-ahead fills and its partitions pause.

use std::{collections::VecDeque, convert::Infallible, ops::ControlFlow, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Extension,
};
use barnabas_core::{
    Access, ConsumedRecord, ConsumerConfig, ConsumerDriver, Fetched, GatewayMetrics, OffsetReset,
    Principal, SeekTo, Subscription, TopicPartition,
};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use futures::{stream, Stream};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{error::ApiError, quota::StreamSlot, AppState};

/// `?group=&from=`.
#[derive(Deserialize)]
pub struct SseParams {
    group: Option<String>,
    from: Option<String>,
}

/// The event id of a record: `<partition>:<offset>`.
pub fn event_id(r: &ConsumedRecord) -> String {
    format!("{}:{}", r.partition, r.offset)
}

/// The data of a record's event: its value as UTF-8 text (JSON is text), else base64;
/// a tombstone is `null`.
fn event_data(r: &ConsumedRecord) -> String {
    match &r.value {
        None => "null".into(),
        Some(v) => match std::str::from_utf8(v) {
            Ok(text) => text.to_owned(),
            Err(_) => B64.encode(v),
        },
    }
}

fn parse_last_event_id(raw: &str) -> Result<(i32, i64), ApiError> {
    raw.split_once(':')
        .and_then(|(p, o)| Some((p.trim().parse().ok()?, o.trim().parse().ok()?)))
        // The stream resumes *after* it: offset + 1 must exist (no overflow on i64::MAX).
        .filter(|(p, o): &(i32, i64)| *p >= 0 && *o >= 0 && *o < i64::MAX)
        .ok_or_else(|| {
            ApiError::bad_request(format!("Last-Event-ID '{raw}' is not <partition>:<offset>"))
        })
}

/// `GET /topics/{topic}/events`.
pub async fn events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(topic): Path<String>,
    Query(params): Query<SseParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    if !(accept.contains("text/event-stream") || accept.contains("*/*")) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "this endpoint serves text/event-stream",
        ));
    }
    barnabas_core::validate_topic_name(&topic)?;
    crate::auth::check(&state, &principal, Access::Read(&topic))?;
    if let Some(group) = params.group.as_deref().filter(|g| !g.is_empty()) {
        crate::auth::check(&state, &principal, Access::Group(group))?;
    }
    let reset = match params.from.as_deref() {
        None | Some("latest") => OffsetReset::Latest,
        Some("earliest") => OffsetReset::Earliest,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "from must be 'earliest' or 'latest', not '{other}'"
            )))
        }
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(parse_last_event_id)
        .transpose()?;
    // Each stream is a Kafka consumer: counted with the principal's consumer instances.
    let slot = crate::quota::take_stream(&state, state.auth.owner_name(&principal))?;
    let driver = open_consumer(&state, &principal, &topic, &params, reset, resume).await?;
    tracing::debug!(%topic, group = ?params.group, ?resume, "SSE stream opened");
    let stream = RecordStream {
        driver,
        pending: VecDeque::new(),
        _slot: slot,
        metrics: state.gateway_metrics.clone(),
        shutdown: state.shutdown.clone(),
    };
    Ok(Sse::new(stream.events())
        .keep_alive(
            KeepAlive::new()
                .interval(state.settings.sse_keep_alive)
                .text("keep-alive"),
        )
        .into_response())
}

/// The stream's Kafka consumer, subscribed to `topic` and, when the client resumes, moved to
/// just after `resume`. With `?group=` it is a member of that group and commits what it has
/// sent; without, it reads with a private group and commits nothing.
async fn open_consumer(
    state: &AppState,
    principal: &Principal,
    topic: &str,
    params: &SseParams,
    reset: OffsetReset,
    resume: Option<(i32, i64)>,
) -> Result<ConsumerDriver, ApiError> {
    let (group_id, commits) = match &params.group {
        Some(g) if !g.is_empty() => (g.clone(), true),
        _ => (format!("barnabas-sse-{}", uuid::Uuid::new_v4()), false),
    };
    let mut properties = std::collections::BTreeMap::new();
    if commits {
        properties.insert("auto.commit.interval.ms".to_owned(), "1000".to_owned());
    }
    let session = state
        .backend
        .consumers
        .create(ConsumerConfig {
            group_id,
            auto_offset_reset: reset,
            enable_auto_commit: commits,
            properties,
            explicit_offset_store: true,
            principal: Some(principal.clone()),
        })
        .await?;
    let driver = ConsumerDriver::spawn(session, state.settings.driver_limits);
    driver
        .subscribe(Subscription::Topics(vec![topic.to_owned()]))
        .await?;
    if let Some((partition, offset)) = resume {
        driver
            .seek_when_assigned(vec![(
                TopicPartition::new(topic, partition),
                SeekTo::Offset(offset + 1),
            )])
            .await?;
    }
    Ok(driver)
}

/// What an open stream carries from one event to the next. Dropped when the stream ends or
/// the client goes away, which gives its [`StreamSlot`] back.
struct RecordStream {
    driver: ConsumerDriver,
    /// Records taken from the driver and not sent yet.
    pending: VecDeque<ConsumedRecord>,
    /// Its place among the principal's Kafka consumers, held for as long as the stream is.
    _slot: StreamSlot,
    metrics: GatewayMetrics,
    /// Ends the stream at shutdown, so that draining the server finishes.
    shutdown: CancellationToken,
}

impl RecordStream {
    /// One record per take: a record taken from the driver counts as consumed (its offset is
    /// what the group commits), so the stream takes a record only when the client's
    /// connection has accepted the one before. Taking a batch would commit records read
    /// ahead that never reached the client, and the group would skip them after a
    /// disconnect. The driver still reads ahead from Kafka in batches.
    const BATCH: usize = 1;

    /// The events, pulled by the connection one at a time.
    fn events(self) -> impl Stream<Item = Result<Event, Infallible>> {
        stream::unfold(self, |mut stream| async move {
            let event = stream.next_event().await?;
            Some((Ok(event), stream))
        })
    }

    /// The next record as an event, waiting for one as long as it takes; `None` when the
    /// stream ends (shutdown, or Kafka failed), its consumer closed.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(
                    Event::default()
                        .id(event_id(&r))
                        .event("record")
                        .data(event_data(&r)),
                );
            }
            if self.poll().await.is_break() {
                let _ = self.driver.close().await;
                return None;
            }
        }
    }

    /// One fetch from the driver into `pending` (nothing when the wait runs out); `Break` when
    /// the stream must end instead: at shutdown, or when the driver failed (logged).
    async fn poll(&mut self) -> ControlFlow<()> {
        let fetched = tokio::select! {
            fetched = self.driver.fetch(Self::BATCH, None, Duration::from_secs(30)) => fetched,
            _ = self.shutdown.cancelled() => return ControlFlow::Break(()),
        };
        match fetched {
            Ok(Fetched::Records(records)) => {
                self.metrics
                    .records_out
                    .get_or_create(&GatewayMetrics::label("sse"))
                    .inc_by(records.len() as u64);
                self.pending.extend(records);
            }
            Ok(Fetched::TooLarge { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, "SSE stream ends");
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}
