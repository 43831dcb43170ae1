//! Metadata: `GET /topics…`, and `POST /admin/topics`.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    Extension,
};
use barnabas_core::{Access, Error, ErrorKind, PartitionMetadata, Principal, TopicMetadata};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    body::{content_type, integer, parse_json, Body},
    error::{ApiError, ApiResult},
    format::{v2_json, Format},
    produce::parse_partition,
    AppState,
};

fn partition_json(p: &PartitionMetadata) -> Value {
    let replicas: Vec<Value> = p
        .replicas
        .iter()
        .map(|b| {
            json!({
                "broker": b,
                "leader": *b == p.leader,
                "in_sync": p.in_sync_replicas.contains(b),
            })
        })
        .collect();
    json!({ "partition": p.partition, "leader": p.leader, "replicas": replicas })
}

/// `GET /topics`: the topics the principal may read (never internal ones).
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Response> {
    let mut topics = state.backend.admin.list_topics().await?;
    // Internal ones first, so that listing does not log a refusal per internal topic.
    topics.retain(|t| !state.auth.is_internal(t) && state.auth.allows(&principal, Access::Read(t)));
    Ok(v2_json(StatusCode::OK, &json!(topics)))
}

/// A topic's metadata, shown only to a principal that may read the topic (403; internal
/// topics always): the check comes before Kafka is asked, so nothing is learnt otherwise.
async fn metadata(
    state: &AppState,
    principal: &Principal,
    topic: &str,
) -> ApiResult<TopicMetadata> {
    crate::auth::check(state, principal, Access::Read(topic))?;
    describe(state, topic).await
}

/// A topic's metadata; a name Kafka cannot have is a topic that does not exist (404, the status
/// Strimzi's openapi.json lists for these operations, rather than a 422).
async fn describe(state: &AppState, topic: &str) -> ApiResult<TopicMetadata> {
    match state.backend.admin.topic_metadata(topic).await {
        Err(e) if e.kind() == ErrorKind::Invalid => Err(ApiError::not_found(format!(
            "topic '{topic}' not found: {e}"
        ))),
        other => Ok(other?),
    }
}

/// Every partition of a topic, as [`partition_json`].
fn partitions_json(md: &TopicMetadata) -> Vec<Value> {
    md.partitions.iter().map(partition_json).collect()
}

/// `GET /topics/{topic}`.
pub async fn get_topic(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(topic): Path<String>,
) -> ApiResult<Response> {
    let md = metadata(&state, &principal, &topic).await?;
    Ok(v2_json(
        StatusCode::OK,
        &json!({ "name": md.name, "partitions": partitions_json(&md) }),
    ))
}

/// `GET /topics/{topic}/partitions`.
pub async fn partitions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(topic): Path<String>,
) -> ApiResult<Response> {
    let md = metadata(&state, &principal, &topic).await?;
    Ok(v2_json(StatusCode::OK, &json!(partitions_json(&md))))
}

/// One partition's metadata, shown as [`metadata`] is; 404 for a partition id the topic does
/// not have, or one that is no partition id at all ([`parse_partition`]).
async fn find_partition(
    state: &AppState,
    principal: &Principal,
    topic: &str,
    raw: &str,
) -> ApiResult<PartitionMetadata> {
    crate::auth::check(state, principal, Access::Read(topic))?;
    let partition = parse_partition(raw)?;
    let md = describe(state, topic).await?;
    md.partitions
        .into_iter()
        .find(|p| p.partition == partition)
        .ok_or_else(|| {
            ApiError::from(Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })
        })
}

/// `GET /topics/{topic}/partitions/{partition}`.
pub async fn partition(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((topic, raw)): Path<(String, String)>,
) -> ApiResult<Response> {
    let p = find_partition(&state, &principal, &topic, &raw).await?;
    Ok(v2_json(StatusCode::OK, &partition_json(&p)))
}

/// `GET /topics/{topic}/partitions/{partition}/offsets`: beginning and end offsets.
pub async fn offsets(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((topic, raw)): Path<(String, String)>,
) -> ApiResult<Response> {
    let p = find_partition(&state, &principal, &topic, &raw).await?;
    let w = state.backend.admin.watermarks(&topic, p.partition).await?;
    Ok(v2_json(
        StatusCode::OK,
        &json!({ "beginning_offset": w.low, "end_offset": w.high }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    topic_name: String,
    #[serde(default, deserialize_with = "integer::opt_i32")]
    partitions_count: Option<i32>,
    #[serde(default, deserialize_with = "integer::opt_i32")]
    replication_factor: Option<i32>,
}

/// `POST /admin/topics` `{"topic_name", "partitions_count"?, "replication_factor"?}` → 201.
/// A topic that already exists is 409 (Strimzi answers 500).
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let media = content_type(&headers);
    if media != Format::Json.content_type()
        && media != crate::format::V2_JSON
        && media != "application/json"
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type '{media}' is not supported here: use application/vnd.kafka.json.v2+json"),
        ));
    }
    let req: NewTopic = parse_json(&body)?;
    crate::auth::check(&state, &principal, Access::Write(&req.topic_name))?;
    let max = state.settings.max_topic_partitions;
    if req.partitions_count.is_some_and(|n| n < 1 || n > max) {
        return Err(ApiError::unprocessable(format!(
            "partitions_count must be between 1 and {max} (limits.max_topic_partitions)"
        )));
    }
    let admin = &state.backend.admin;
    if admin.list_topics().await?.contains(&req.topic_name) {
        return Err(ApiError::conflict(format!(
            "topic '{}' already exists",
            req.topic_name
        )));
    }
    admin
        .create_topic(
            &req.topic_name,
            req.partitions_count,
            req.replication_factor,
        )
        .await?;
    Ok(v2_json(StatusCode::CREATED, &json!({})))
}
