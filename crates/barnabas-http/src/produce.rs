//! `POST /topics/{topic}` and `POST /topics/{topic}/partitions/{partition}`: records in, one
//! answer per record, sent only after Kafka acknowledged (or refused) every one of them.

use std::time::Instant;

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Extension,
};
use barnabas_core::{Access, GatewayMetrics, Header, Principal, Record};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    body::{content_type, parse_json, Body},
    error::{status_for, ApiError, ApiResult},
    format::{decode_header_value, Format},
    AppState,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceRequest {
    records: Option<Vec<ProduceRecord>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceRecord {
    #[serde(default)]
    key: Option<Value>,
    value: Value,
    #[serde(default)]
    partition: Option<i32>,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    headers: Option<Vec<HeaderIn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderIn {
    key: String,
    value: Option<String>,
}

/// `?async=true`: answer 204 at once, without waiting for Kafka (at-most-once).
#[derive(Deserialize, Default)]
pub struct ProduceParams {
    #[serde(default, rename = "async")]
    is_async: bool,
}

/// `POST /topics/{topic}`.
pub async fn to_topic(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(topic): Path<String>,
    Query(params): Query<ProduceParams>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    crate::auth::check(&state, &principal, Access::Write(&topic))?;
    produce(state, &principal, topic, None, params, &headers, &body).await
}

/// `POST /topics/{topic}/partitions/{partition}`.
pub async fn to_partition(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((topic, partition)): Path<(String, String)>,
    Query(params): Query<ProduceParams>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let partition = parse_partition(&partition)?;
    crate::auth::check(&state, &principal, Access::Write(&topic))?;
    produce(
        state,
        &principal,
        topic,
        Some(partition),
        params,
        &headers,
        &body,
    )
    .await
}

/// A partition number from a path: 400 when it is not a non-negative integer.
pub fn parse_partition(raw: &str) -> ApiResult<i32> {
    raw.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| {
        ApiError::bad_request(format!("partition '{raw}' is not a non-negative integer"))
    })
}

async fn produce(
    state: AppState,
    principal: &Principal,
    topic: String,
    path_partition: Option<i32>,
    params: ProduceParams,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let media = content_type(headers);
    let format = Format::from_content_type(&media).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type '{media}' is not supported here: use application/vnd.kafka.json.v2+json, application/vnd.kafka.binary.v2+json or application/vnd.kafka.text.v2+json"
            ),
        )
    })?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the request has no body"));
    }
    let request: ProduceRequest = parse_json(body).map_err(as_bad_request)?;
    let records = request
        .records
        .ok_or_else(|| ApiError::unprocessable("the body must have a 'records' array"))?;
    if path_partition.is_some()
        && records
            .iter()
            .any(|r| r.partition.is_some() || r.timestamp.is_some())
    {
        return Err(ApiError::bad_request(
            "'partition' and 'timestamp' are not allowed in the body when the path names the partition",
        ));
    }
    let records = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            to_record(&topic, path_partition, format, r)
                .map_err(|m| ApiError::unprocessable(format!("records[{i}]: {m}")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    // One request may not carry more than a full bucket (one second's worth): it could never
    // be within the rate, and taking it into debt would let it through at once.
    let burst = state.settings.publish_rate as usize;
    if burst > 0 && records.len() > burst {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} records in one request; at most {burst} (limits.publish_rate, records per second) per request",
                records.len()
            ),
        ));
    }
    if let Err(retry) = state
        .rates
        .try_take(&state.auth.owner_name(principal), records.len())
    {
        return Err(ApiError::too_many_requests(retry));
    }

    let publisher = state.backend.publisher.clone();
    let metrics = state.gateway_metrics.clone();
    if params.is_async {
        let principal = principal.clone();
        tokio::spawn(async move {
            let results = publisher.publish_as(&principal, records).await;
            count(&metrics, &results);
        });
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let started = Instant::now();
    let results = publisher.publish_as(principal, records).await;
    metrics
        .produce_latency
        .get_or_create(&GatewayMetrics::label("http"))
        .observe(started.elapsed().as_secs_f64());
    count(&metrics, &results);
    let offsets: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(d) => json!({ "partition": d.partition, "offset": d.offset }),
            Err(e) => {
                json!({ "error_code": status_for(e.kind()).as_u16(), "message": e.to_string() })
            }
        })
        .collect();
    Ok(crate::format::v2_json(
        StatusCode::OK,
        &json!({ "offsets": offsets }),
    ))
}

fn count(metrics: &GatewayMetrics, results: &[barnabas_core::Result<barnabas_core::Delivered>]) {
    let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
    let label = GatewayMetrics::label("http");
    metrics.records_in.get_or_create(&label).inc_by(ok);
    metrics
        .records_failed
        .get_or_create(&label)
        .inc_by(results.len() as u64 - ok);
}

/// Body-shape problems (wrong types, unknown or missing fields) are 400, as Strimzi's schema
/// validation answers them.
fn as_bad_request(e: ApiError) -> ApiError {
    ApiError::bad_request(e.message)
}

fn to_record(
    topic: &str,
    path_partition: Option<i32>,
    format: Format,
    r: ProduceRecord,
) -> Result<Record, String> {
    let key = match &r.key {
        None | Some(Value::Null) => None,
        Some(k) => Some(format.decode(k, "key")?),
    };
    // A null value is Kafka's null (a tombstone), in every format.
    let value = match &r.value {
        Value::Null => None,
        v => Some(format.decode(v, "value")?),
    };
    let mut headers = Vec::new();
    for h in r.headers.unwrap_or_default() {
        let value = h.value.as_deref().map(decode_header_value).transpose()?;
        headers.push(Header { key: h.key, value });
    }
    // `barnabas.*` headers are the gateway's (interface §4): dropped, except the MQTT topic a
    // producer may address (`default_topic` records), which must be a valid topic name.
    barnabas_core::internal::drop_gateway_headers(&mut headers, true)?;
    Ok(Record {
        topic: topic.to_owned(),
        partition: path_partition.or(r.partition),
        key,
        value,
        headers,
        timestamp: r.timestamp,
    })
}
