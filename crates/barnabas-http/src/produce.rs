//! `POST /topics/{topic}` and `POST /topics/{topic}/partitions/{partition}`: records in, one
//! answer per record, sent only after Kafka acknowledged (or refused) every one of them.

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Extension,
};
use barnabas_core::{Access, ErrorKind, Header, Principal, Record};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    body::{content_type, integer, objects, parse_json, some_objects, Body},
    error::{status_for, ApiError, ApiResult},
    format::{decode_header_value, Format},
    AppState,
};

/// A body without `records` is valid in Strimzi's schema (nothing is required): no records.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceRequest {
    #[serde(default, deserialize_with = "objects")]
    records: Vec<ProduceRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceRecord {
    #[serde(default)]
    key: Option<Value>,
    value: Value,
    #[serde(default, deserialize_with = "integer::some_i32")]
    partition: Option<i32>,
    #[serde(default, deserialize_with = "integer::some_i64")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "some_objects")]
    headers: Option<Vec<HeaderIn>>,
}

/// Strimzi's `KafkaHeader` allows other properties besides `key` and `value`: ignored.
#[derive(Deserialize)]
struct HeaderIn {
    key: String,
    /// Required, but may be null (a Kafka header without value, strimzi-kafka-bridge #1158).
    #[serde(deserialize_with = "Option::deserialize")]
    value: Option<String>,
}

/// `?async=true`: answer 204 at once, without waiting for Kafka (at-most-once).
#[derive(Deserialize, Default)]
pub struct ProduceParams {
    #[serde(default, rename = "async")]
    is_async: Option<String>,
}

type Params = Result<Query<ProduceParams>, QueryRejection>;

impl ProduceParams {
    /// `async` is a boolean: `true` or `false`, anything else 422 (the status Strimzi's
    /// openapi.json lists for an invalid produce request).
    fn is_async(params: Params) -> ApiResult<bool> {
        let Query(params) = params.map_err(|e| ApiError::unprocessable(e.body_text()))?;
        match params.is_async.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::unprocessable(format!(
                "query parameter async='{other}' is not a boolean (true or false)"
            ))),
        }
    }
}

/// `POST /topics/{topic}`.
pub async fn to_topic(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(topic): Path<String>,
    params: Params,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    produce(state, &principal, topic, None, params, &headers, &body).await
}

/// `POST /topics/{topic}/partitions/{partition}`.
pub async fn to_partition(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((topic, partition)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let partition = parse_partition(&partition)?;
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

/// A partition number from a path: 404 when it is not a partition id at all (negative, not a
/// 32-bit integer): no such partition exists, and 404 is the status Strimzi's openapi.json
/// lists for these operations (its bridge answers an undocumented 400, strimzi-kafka-bridge
/// #1173).
pub fn parse_partition(raw: &str) -> ApiResult<i32> {
    raw.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| {
        ApiError::not_found(format!(
            "partition '{raw}' not found: partition ids are integers from 0"
        ))
    })
}

/// Both produce routes, once the path is read: 403 unless the principal may write to the
/// topic, then the records checked, rate-limited and sent.
async fn produce(
    state: AppState,
    principal: &Principal,
    topic: String,
    path_partition: Option<i32>,
    params: Params,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    crate::auth::check(&state, principal, Access::Write(&topic))?;
    let is_async = ProduceParams::is_async(params)?;
    let records = records_of(&topic, path_partition, headers, body)?;
    if records.is_empty() {
        // Nothing to send, but the path still names a topic (and partition) that must exist.
        exists(&state, &topic, path_partition).await?;
    }
    take_rate(&state, principal, records.len())?;
    if is_async {
        let (publisher, principal) = (state.publisher.clone(), principal.clone());
        tokio::spawn(async move { publisher.publish_as(&principal, records).await });
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let results = state.publisher.publish_as(principal, records).await;
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

/// The request's records, ready for Kafka, or why not: 415 for a content type that names no
/// embedded format, 400 for no body or malformed JSON, 422 for a body or a record that is
/// invalid (the record's index in the message). All are refused before anything is sent.
fn records_of(
    topic: &str,
    path_partition: Option<i32>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Vec<Record>> {
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
    let records = parse_json::<ProduceRequest>(body)?.records;
    if path_partition.is_some()
        && records
            .iter()
            .any(|r| r.partition.is_some() || r.timestamp.is_some())
    {
        return Err(ApiError::unprocessable(
            "'partition' and 'timestamp' are not allowed in the body when the path names the partition",
        ));
    }
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            to_record(topic, path_partition, format, r)
                .map_err(|m| ApiError::unprocessable(format!("records[{i}]: {m}")))
        })
        .collect()
}

/// Takes `count` records from the principal's `limits.publish_rate` bucket: 413 for more than
/// the bucket holds, 429 (with when to retry) when it is spent.
fn take_rate(state: &AppState, principal: &Principal, count: usize) -> ApiResult<()> {
    // One request may not carry more than a full bucket (one second's worth): it could never
    // be within the rate, and taking it into debt would let it through at once.
    let burst = state.settings.publish_rate as usize;
    if burst > 0 && count > burst {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{count} records in one request; at most {burst} (limits.publish_rate, records per second) per request"
            ),
        ));
    }
    state
        .rates
        .try_take(&state.auth.owner_name(principal), count)
        .map_err(ApiError::too_many_requests)
}

/// 404 unless `topic` (and `partition`) exist; an invalid name is a topic that does not.
async fn exists(state: &AppState, topic: &str, partition: Option<i32>) -> ApiResult<()> {
    let md = state
        .backend
        .admin
        .topic_metadata(topic)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Invalid | ErrorKind::NotFound => {
                ApiError::not_found(format!("topic '{topic}' not found: {e}"))
            }
            _ => ApiError::from(e),
        })?;
    match partition {
        Some(p) if !md.partitions.iter().any(|m| m.partition == p) => Err(ApiError::not_found(
            format!("partition {p} of topic '{topic}' not found"),
        )),
        _ => Ok(()),
    }
}

/// Why one record of a produce request cannot be written (the request is answered 422).
#[derive(Debug, thiserror::Error)]
enum BadRecord {
    #[error("timestamp {0} is negative")]
    NegativeTimestamp(i64),
    #[error(transparent)]
    Field(#[from] crate::format::DecodeError),
    #[error(transparent)]
    MqttTopic(#[from] barnabas_core::internal::BadMqttTopicHeader),
}

fn to_record(
    topic: &str,
    path_partition: Option<i32>,
    format: Format,
    r: ProduceRecord,
) -> Result<Record, BadRecord> {
    // As Kafka's own producer refuses them (and the bridge, with 422): a negative timestamp
    // would be stored and then break offset lookups by time.
    if let Some(t) = r.timestamp.filter(|t| *t < 0) {
        return Err(BadRecord::NegativeTimestamp(t));
    }
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
