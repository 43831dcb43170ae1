//! The Strimzi v2 consumer lifecycle over HTTP.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{FromRequestParts, Path, Query, State},
    http::{header, request::Parts, HeaderMap, StatusCode, Uri},
    response::Response,
    Extension,
};
use barnabas_core::{
    Access, CommitRequest, Consumer, ConsumerConfig, ConsumerDriver, Error, Fetched,
    GatewayMetrics, OffsetReset, Principal, SeekTo, TopicPartition, TopicPartitionOffset,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Value};

use super::{Instance, InstanceSettings, Mode};
use crate::{
    body::{
        integer, objects, parse_json, parse_json_or_default, present, saturating_int, some_objects,
        Body,
    },
    error::{ApiError, ApiResult},
    format::{json_with_type, record_json, v2_json, Format},
    AppState,
};

/// Group session timeout of consumer instances (ms), see [`open_instance`].
const SESSION_TIMEOUT_MS: &str = "10000";

/// Longest long-poll a client may ask for.
pub(super) const MAX_POLL: Duration = Duration::from_secs(300);

/// A number or boolean that may also come as a string (Confluent's docs send strings,
/// Strimzi's schema wants JSON types; both work here).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Loose {
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
}

impl Loose {
    /// As the consumer property's text; `512.0` is the integer `512` (JSON Schema's integer).
    fn as_string(&self) -> String {
        match self {
            Loose::Bool(b) => b.to_string(),
            Loose::Num(n) => integer::of(n).map_or_else(|| n.to_string(), |i| i.to_string()),
            Loose::Str(s) => s.clone(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateConsumer {
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    format: Option<String>,
    #[serde(default, deserialize_with = "present", rename = "auto.offset.reset")]
    auto_offset_reset: Option<String>,
    #[serde(default, deserialize_with = "present", rename = "enable.auto.commit")]
    enable_auto_commit: Option<Loose>,
    #[serde(default, deserialize_with = "present", rename = "fetch.min.bytes")]
    fetch_min_bytes: Option<Loose>,
    #[serde(
        default,
        deserialize_with = "present",
        rename = "consumer.request.timeout.ms"
    )]
    request_timeout_ms: Option<Loose>,
    #[serde(default, deserialize_with = "present", rename = "isolation.level")]
    isolation_level: Option<String>,
}

impl CreateConsumer {
    /// The instance's settings; 422 for a value out of range. Checked before anything is
    /// opened, so that a refused create leaves nothing behind.
    fn settings(&self) -> ApiResult<InstanceSettings> {
        let format = match self.format.as_deref() {
            None => Format::Binary,
            Some(f) => Format::from_name(f)
                .ok_or_else(|| ApiError::unprocessable("Invalid format type."))?,
        };
        let auto_offset_reset = match self.auto_offset_reset.as_deref() {
            None | Some("latest") => OffsetReset::Latest,
            Some("earliest") => OffsetReset::Earliest,
            Some("none") => OffsetReset::None,
            Some(other) => {
                return Err(ApiError::unprocessable(format!(
                    "Invalid value {other} for configuration auto.offset.reset: String must be one of: latest, earliest, none"
                )))
            }
        };
        let enable_auto_commit = match self.enable_auto_commit.as_ref().map(Loose::as_string).as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(ApiError::unprocessable(format!(
                    "Invalid value {other} for configuration enable.auto.commit: Expected value to be either true or false"
                )))
            }
        };
        Ok(InstanceSettings {
            format,
            auto_offset_reset,
            enable_auto_commit,
            properties: self.properties()?,
        })
    }

    /// The Kafka consumer properties the request sets, under Kafka's names
    /// (`consumer.request.timeout.ms` is `request.timeout.ms`); 422 for a value Kafka would
    /// not take.
    fn properties(&self) -> ApiResult<BTreeMap<String, String>> {
        let mut properties = BTreeMap::new();
        for (key, value) in [
            ("fetch.min.bytes", &self.fetch_min_bytes),
            ("request.timeout.ms", &self.request_timeout_ms),
        ] {
            if let Some(v) = value {
                let v = v.as_string();
                if v.parse::<u32>().is_err() {
                    return Err(ApiError::unprocessable(format!(
                        "Invalid value {v} for configuration {key}: expected a non-negative integer"
                    )));
                }
                properties.insert(key.to_owned(), v);
            }
        }
        if let Some(level) = &self.isolation_level {
            if level != "read_committed" && level != "read_uncommitted" {
                return Err(ApiError::unprocessable(format!(
                    "Invalid value {level} for configuration isolation.level: String must be one of: read_committed, read_uncommitted"
                )));
            }
            properties.insert("isolation.level".into(), level.clone());
        }
        Ok(properties)
    }
}

/// `POST /consumers/{group}` → `{instance_id, base_uri}`.
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(group): Path<String>,
    origin: Origin,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    crate::auth::check(&state, &principal, Access::Group(&group))?;
    let owner = state.auth.owner_name(&principal);
    crate::quota::check_room(&state, &owner)?;
    let req: CreateConsumer = parse_json_or_default(&body)?;
    let settings = req.settings()?;
    let name = free_name(&state, &group, req.name, &headers).await?;
    let instance = open_instance(
        &state,
        &group,
        &name,
        settings,
        Mode::Idle,
        Some(&principal),
        owner,
    )
    .await?;
    announce(&state, &instance).await?;
    let format = instance.settings.format.name();
    tracing::info!(%group, %name, format, "consumer instance created");
    let base_uri = origin.instance_uri(&name)?;
    Ok(v2_json(
        StatusCode::OK,
        &json!({ "instance_id": name, "base_uri": base_uri }),
    ))
}

/// The name a new instance gets (`requested`, or a fresh one): 422 for one a URL path cannot
/// carry, 409 for one an instance of `group` already has, here or on another replica
/// (`headers`: the client's, to ask that replica with).
async fn free_name(
    state: &AppState,
    group: &str,
    requested: Option<String>,
    headers: &HeaderMap,
) -> ApiResult<String> {
    let name = requested.unwrap_or_else(|| format!("barnabas-consumer-{}", uuid::Uuid::new_v4()));
    if name.is_empty() || name.contains('/') {
        return Err(ApiError::unprocessable(
            "consumer name must be non-empty and contain no '/'",
        ));
    }
    // A catalog record naming this very process for an instance it does not hold is a dead
    // name (a create refused while Kafka was away whose record Kafka stored after all, a
    // delete whose tombstone was not written): nobody serves it, so it may be created again.
    // So is one naming another live replica that answers 404 for it.
    let taken = match state.cluster.lookup(group, &name).await {
        _ if state.consumers.contains(group, &name) => true,
        Some(r) if state.cluster.is_own(&r) => false,
        Some(r) if state.cluster.owned_elsewhere(&r) => {
            state.cluster.owner_holds(&r, headers).await
        }
        Some(_) => true,
        None => false,
    };
    if taken {
        return Err(ApiError::conflict(
            "A consumer instance with the specified name already exists in the Kafka Bridge.",
        ));
    }
    Ok(name)
}

/// Writes a new instance to the cluster catalog, so that the other replicas forward its
/// requests here. An instance the catalog does not name would be unreachable through them:
/// when the write fails, it is closed again and the create refused.
async fn announce(state: &AppState, instance: &Instance) -> ApiResult<()> {
    let Err(e) = state.cluster.publish(instance, Mode::Idle).await else {
        return Ok(());
    };
    let _ = state.consumers.remove(&instance.group, &instance.name);
    let _ = instance.driver.close().await;
    // Its record may still be stored when Kafka comes back; it names this process for
    // an instance it does not hold, which does not block a new create (see `free_name`). Not
    // withdrawn: a late tombstone would close an instance created again meanwhile.
    Err(e)
}

/// Opens the Kafka consumer of an instance (in `mode`) and registers it on this replica; 409
/// if the name is taken here. The consumer reads as `principal` (its own Kafka login with
/// identity passthrough); only `creator` may use it.
pub(super) async fn open_instance(
    state: &AppState,
    group: &str,
    name: &str,
    settings: InstanceSettings,
    mode: Mode,
    principal: Option<&Principal>,
    creator: Arc<str>,
) -> ApiResult<Arc<Instance>> {
    let session = open_consumer(state, group, &settings, principal).await?;
    let driver = ConsumerDriver::spawn(session, state.settings.driver_limits);
    // A new consumer reads nothing yet: only an adopted instance has a mode to resume.
    let resumed = match mode {
        Mode::Idle => Ok(()),
        _ => mode.apply(&driver).await,
    };
    let instance = Arc::new(Instance::new(
        group.to_owned(),
        name.to_owned(),
        settings,
        mode,
        driver,
        creator,
    ));
    if let Err(e) = resumed {
        let _ = instance.driver.close().await;
        return Err(e.into());
    }
    if let Err(e) = state.consumers.insert(instance.clone()) {
        let _ = instance.driver.close().await;
        return Err(e);
    }
    Ok(instance)
}

/// The Kafka consumer behind an instance of `group` with `settings`: 422 for a property Kafka's
/// client refuses, as for one refused by [`CreateConsumer::settings`].
async fn open_consumer(
    state: &AppState,
    group: &str,
    settings: &InstanceSettings,
    principal: Option<&Principal>,
) -> ApiResult<Arc<dyn Consumer>> {
    let mut properties = settings.properties.clone();
    // A replica that dies leaves its members in their groups until this times out; the
    // replica adopting its instances only gets their partitions after that. Kafka's pre-3.0
    // default (10 s) rather than today's 45 s: heartbeats come from the client's own thread,
    // so a busy gateway does not miss them.
    properties
        .entry("session.timeout.ms".to_owned())
        .or_insert_with(|| SESSION_TIMEOUT_MS.to_owned());
    state
        .backend
        .consumers
        .create(ConsumerConfig {
            group_id: group.to_owned(),
            auto_offset_reset: settings.auto_offset_reset,
            enable_auto_commit: settings.enable_auto_commit,
            properties,
            explicit_offset_store: true,
            principal: principal.cloned(),
        })
        .await
        .map_err(|e| match e {
            Error::Config(m) | Error::Invalid(m) => ApiError::unprocessable(m),
            other => other.into(),
        })
}

/// Records what the instance now reads (`mode`, already applied to its driver), here and in
/// the cluster catalog, so that a replica adopting the instance reads the same. When the
/// catalog write fails (Kafka unavailable), the driver and the mode go back to what they
/// were: the client was answered an error, so the instance is as it last saw it succeed, and
/// its next subscribe or assign is not refused as exclusive. (Partitions assigned by hand come
/// back at their committed offsets; a write that timed out may still land in the catalog,
/// where the instance's next change overwrites it.)
async fn record_mode(state: &AppState, instance: &Instance, mode: Mode) -> ApiResult<()> {
    let before = instance.mode();
    instance.set_mode(mode.clone());
    let Err(e) = state.cluster.publish(instance, mode).await else {
        return Ok(());
    };
    match before.apply(&instance.driver).await {
        Ok(()) => instance.set_mode(before),
        // The driver kept the new state: so does the mode, so that the two agree.
        Err(undo) => {
            tracing::warn!(error = %undo, "consumer instance not put back after a refused change")
        }
    }
    Err(e)
}

/// Points the instance at `mode` and records it ([`record_mode`]): how every subscribe,
/// unsubscribe and assign ends.
async fn switch_mode(state: &AppState, instance: &Instance, mode: Mode) -> ApiResult<StatusCode> {
    mode.apply(&instance.driver).await?;
    record_mode(state, instance, mode).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where the client addressed `POST /consumers/{group}`, as `scheme://host:port/…/{group}/`:
/// the start of the new instance's `base_uri` ([`Origin::instance_uri`]). Kept as read, error
/// included: a scheme without a known port is refused (400) only when the answer is written.
pub struct Origin(ApiResult<String>);

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Origin(origin(&parts.headers, &parts.uri)))
    }
}

impl Origin {
    /// `scheme://host:port/…/consumers/{group}/instances/{name}`.
    fn instance_uri(self, name: &str) -> ApiResult<String> {
        Ok(format!("{}instances/{name}", self.0?))
    }
}

/// `scheme://host:port/path/` of a request, honouring `Forwarded`, `X-Forwarded-Host`/`-Proto`
/// and `X-Forwarded-Path` as Strimzi's bridge does.
fn origin(headers: &HeaderMap, uri: &Uri) -> ApiResult<String> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let mut scheme = "http".to_owned();
    let mut host = header("host").unwrap_or("localhost").to_owned();
    if let Some(fwd) = header("forwarded") {
        let part = |key: &str| {
            fwd.split([';', ',']).find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case(key)
                    .then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        if let (Some(h), Some(p)) = (part("host"), part("proto")) {
            host = h;
            scheme = p;
        }
    } else if let (Some(h), Some(p)) = (header("x-forwarded-host"), header("x-forwarded-proto")) {
        host = h.to_owned();
        scheme = p.to_owned();
    }
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !has_port {
        let port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => {
                return Err(ApiError::bad_request(format!(
                    "{other} is not a valid schema/proto."
                )))
            }
        };
        host = format!("{host}:{port}");
    }
    let path = header("x-forwarded-path").unwrap_or(uri.path());
    let sep = if path.ends_with('/') { "" } else { "/" };
    Ok(format!("{scheme}://{host}{path}{sep}"))
}

/// `DELETE /consumers/{group}/instances/{name}` → 204.
pub async fn delete(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let instance = state.consumers.remove(&group, &name)?;
    state.cluster.forget(&group, &name).await;
    instance.driver.close().await?;
    tracing::info!(%group, %name, "consumer instance deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The one topic a `topic_pattern` can match when it is a literal: topic-name characters
/// only, dots escaped (`public\.x`), optionally anchored; `None` for any other regex syntax.
fn literal_topic(pattern: &str) -> Option<String> {
    let inner = pattern.strip_prefix('^').unwrap_or(pattern);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    let mut topic = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next() == Some('.') => topic.push('.'),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => topic.push(c),
            _ => return None,
        }
    }
    (!topic.is_empty()).then_some(topic)
}

/// Whether `principal` may subscribe to `pattern`. ACL grants are globs and a pattern is a
/// regex (`public.*` as a grant does not cover the regex `public.x|secret`), so with ACLs
/// configured only a literal pattern ([`literal_topic`]) is accepted, checked as that topic;
/// anything else is 403. Without ACLs any regex is accepted, and internal topics it matches
/// are never delivered (see [`records`]).
fn check_pattern(state: &AppState, principal: &Principal, pattern: &str) -> ApiResult<()> {
    if !state.auth.has_acl() {
        return Ok(());
    }
    match literal_topic(pattern) {
        Some(topic) => crate::auth::check(state, principal, Access::Read(&topic)),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "With ACLs configured, topic_pattern must be a literal topic name (dots escaped as \\.) granted by a read: rule; '{pattern}' is a regular expression the grants cannot be checked against: subscribe to a list of topics instead."
            ),
        )),
    }
}

/// Whether `principal` may read what `mode` reads (an adopted instance is checked again).
pub(super) fn check_mode(state: &AppState, principal: &Principal, mode: &Mode) -> ApiResult<()> {
    match mode {
        Mode::Idle => Ok(()),
        Mode::Topics { topics } => topics
            .iter()
            .try_for_each(|t| crate::auth::check(state, principal, Access::Read(t))),
        Mode::Pattern { pattern } => check_pattern(state, principal, pattern),
        Mode::Assigned { partitions } => partitions
            .iter()
            .try_for_each(|(t, _)| crate::auth::check(state, principal, Access::Read(t))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    #[serde(default, deserialize_with = "present")]
    topics: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    topic_pattern: Option<String>,
}

fn exclusive() -> ApiError {
    ApiError::conflict("Subscriptions to topics, partitions, and patterns are mutually exclusive.")
}

/// A request body that asks an instance to read something else: a subscription
/// ([`SubscribeBody`]) or an assignment ([`PartitionsBody`]).
trait ModeRequest: DeserializeOwned {
    /// The mode asked for, or why not: 403 for what `principal` may not read, 409 when it
    /// would mix a subscription and an assignment (Strimzi keeps them exclusive).
    fn mode(self, state: &AppState, principal: &Principal, instance: &Instance) -> ApiResult<Mode>;
}

/// What subscribe and assign share: the instance, the mode its body asks for, applied and
/// recorded.
async fn change_mode<R: ModeRequest>(
    state: &AppState,
    principal: &Principal,
    group: &str,
    name: &str,
    body: &[u8],
) -> ApiResult<StatusCode> {
    let instance = state.consumers.get(group, name)?;
    let mode = parse_json::<R>(body)?.mode(state, principal, &instance)?;
    switch_mode(state, &instance, mode).await
}

/// `POST …/subscription` `{topics}` or `{topic_pattern}` → 204.
pub async fn subscribe(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((group, name)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    change_mode::<SubscribeBody>(&state, &principal, &group, &name, &body).await
}

/// `POST …/assignments` `{partitions:[{topic, partition}]}` → 204.
pub async fn assign(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((group, name)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    change_mode::<PartitionsBody>(&state, &principal, &group, &name, &body).await
}

/// Besides [`ModeRequest`]'s refusals, 409 when the instance has partitions assigned or the body
/// names both topics and a pattern, 422 when it names neither. No topics is no subscription.
impl ModeRequest for SubscribeBody {
    fn mode(self, state: &AppState, principal: &Principal, instance: &Instance) -> ApiResult<Mode> {
        for topic in self.topics.iter().flatten() {
            crate::auth::check(state, principal, Access::Read(topic))?;
        }
        if let Some(pattern) = &self.topic_pattern {
            check_pattern(state, principal, pattern)?;
        }
        if matches!(instance.mode(), Mode::Assigned { .. }) {
            return Err(exclusive());
        }
        match (self.topics, self.topic_pattern) {
            (Some(_), Some(_)) => Err(exclusive()),
            (None, None) => Err(ApiError::unprocessable(
                "A list (of Topics type) or a topic_pattern must be specified.",
            )),
            (Some(topics), None) if topics.is_empty() => Ok(Mode::Idle),
            (Some(topics), None) => Ok(Mode::Topics { topics }),
            (None, Some(pattern)) => Ok(Mode::Pattern { pattern }),
        }
    }
}

/// `GET …/subscription` → `{"topics":[…],"partitions":[{"t":[0,1]}]}`.
pub async fn subscription(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let instance = state.consumers.get(&group, &name)?;
    let assigned = instance.driver.assignment().await?;
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in assigned {
        by_topic.entry(tp.topic).or_default().push(tp.partition);
    }
    let mut topics: Vec<String> = match instance.mode() {
        Mode::Topics { topics } => topics,
        _ => Vec::new(),
    };
    for t in by_topic.keys() {
        if !topics.contains(t) {
            topics.push(t.clone());
        }
    }
    let partitions: Vec<Value> = by_topic
        .into_iter()
        .map(|(t, ps)| json!({ t: ps }))
        .collect();
    Ok(v2_json(
        StatusCode::OK,
        &json!({ "topics": topics, "partitions": partitions }),
    ))
}

/// `DELETE …/subscription` → 204.
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let instance = state.consumers.get(&group, &name)?;
    switch_mode(&state, &instance, Mode::Idle).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionRef {
    #[serde(default, deserialize_with = "present")]
    topic: Option<String>,
    #[serde(default, deserialize_with = "integer::some_i32")]
    partition: Option<i32>,
}

/// Strimzi's `Partitions`: nothing is required, so `{}` is no partitions (and `{}` in the list
/// names no partition: 404).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionsBody {
    #[serde(default, deserialize_with = "objects")]
    partitions: Vec<PartitionRef>,
}

impl PartitionsBody {
    /// The partitions named: 404 for an entry that names none, or one that cannot exist.
    fn partitions(self) -> ApiResult<Vec<TopicPartition>> {
        self.partitions
            .into_iter()
            .map(|p| match (p.topic, p.partition) {
                (Some(topic), Some(partition)) => {
                    check_position(&topic, partition, None)?;
                    Ok(TopicPartition::new(topic, partition))
                }
                _ => Err(ApiError::not_found(
                    "partition not found: an entry of 'partitions' names no topic or no partition",
                )),
            })
            .collect()
    }
}

/// Besides [`ModeRequest`]'s refusals, 404 for a partition that cannot exist
/// ([`PartitionsBody::partitions`]). No partitions is no assignment.
impl ModeRequest for PartitionsBody {
    fn mode(self, state: &AppState, principal: &Principal, instance: &Instance) -> ApiResult<Mode> {
        let partitions = self.partitions()?;
        for tp in &partitions {
            crate::auth::check(state, principal, Access::Read(&tp.topic))?;
        }
        if instance.mode().is_subscribed() {
            return Err(exclusive());
        }
        if partitions.is_empty() {
            return Ok(Mode::Idle);
        }
        Ok(Mode::Assigned {
            partitions: partitions
                .into_iter()
                .map(|tp| (tp.topic, tp.partition))
                .collect(),
        })
    }
}

/// `?timeout=&max_bytes=` of a poll, as sent: integers of any size (JSON Schema's `integer`),
/// read with [`saturating_int`]. Each poll uses its own, or the defaults when absent: nothing
/// carries over from one poll to the next (strimzi-kafka-bridge #1159).
#[derive(Deserialize)]
pub struct PollParams {
    timeout: Option<String>,
    max_bytes: Option<String>,
}

impl PollParams {
    /// `(timeout, max_bytes)`: a negative timeout is 0 (answer at once), a negative
    /// `max_bytes` 0 (no record fits); 422 when either is not an integer.
    fn read(&self) -> ApiResult<(Duration, Option<usize>)> {
        let int = |name: &str, raw: &Option<String>| -> ApiResult<Option<i64>> {
            raw.as_deref()
                .map(|v| {
                    saturating_int(v).ok_or_else(|| {
                        ApiError::unprocessable(format!(
                            "query parameter {name}='{v}' is not an integer"
                        ))
                    })
                })
                .transpose()
        };
        let timeout = int("timeout", &self.timeout)?.unwrap_or(100).max(0);
        let timeout = Duration::from_millis(u64::try_from(timeout).unwrap_or(0)).min(MAX_POLL);
        let max_bytes = int("max_bytes", &self.max_bytes)?
            .map(|m| usize::try_from(m.max(0)).unwrap_or(usize::MAX));
        Ok((timeout, max_bytes))
    }
}

/// `GET …/records`: a long-poll that returns as soon as records are buffered, or at `timeout`.
pub async fn records(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    params: Result<Query<PollParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let instance = state.consumers.get(&group, &name)?;
    let Query(params) = params.map_err(|e| ApiError::unprocessable(e.body_text()))?;
    if instance.mode() == Mode::Idle {
        return Err(ApiError::conflict(
            "Consumer is not subscribed to any topics or assigned any partitions",
        ));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.split(';').next().map(str::trim) != Some(instance.settings.format.content_type()) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "Consumer format does not match the embedded format requested by the Accept header.",
        ));
    }
    let (timeout, max_bytes) = params.read()?;
    let fetched = instance
        .driver
        .fetch(state.settings.driver_limits.poll_batch, max_bytes, timeout)
        .await?;
    instance.touch();
    match fetched {
        Fetched::Records(mut records) => {
            // A pattern subscription (without ACLs) may match internal topics: never delivered.
            records.retain(|r| !state.auth.is_internal(&r.topic));
            state
                .gateway_metrics
                .records_out
                .get_or_create(&GatewayMetrics::label("http"))
                .inc_by(records.len() as u64);
            let body: Vec<Value> = records.iter().map(|r| record_json(instance.settings.format, r)).collect();
            Ok(json_with_type(StatusCode::OK, &Value::Array(body), instance.settings.format.content_type()))
        }
        Fetched::TooLarge { size } => Err(ApiError::unprocessable(format!(
            "Response exceeds the maximum number of bytes the consumer can receive (next record: {size} bytes)"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetRef {
    topic: String,
    #[serde(deserialize_with = "integer::i32")]
    partition: i32,
    #[serde(deserialize_with = "integer::i64")]
    offset: i64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OffsetsBody {
    #[serde(default, deserialize_with = "some_objects")]
    offsets: Option<Vec<OffsetRef>>,
}

/// 404 for a position that cannot exist: a topic name Kafka cannot have, a negative partition
/// id or offset (librdkafka would take a negative offset for a logical one, e.g. -1 for the
/// end). 404 is what Strimzi's openapi.json lists for commits and seeks.
fn check_position(topic: &str, partition: i32, offset: Option<i64>) -> ApiResult<()> {
    if let Err(e) = barnabas_core::validate_topic_name(topic) {
        return Err(ApiError::not_found(format!(
            "topic '{topic}' not found: {e}"
        )));
    }
    if partition < 0 {
        return Err(ApiError::not_found(format!(
            "partition {partition} of topic '{topic}' not found"
        )));
    }
    match offset {
        Some(o) if o < 0 => Err(ApiError::not_found(format!(
            "offset {o} of partition {partition} of topic '{topic}' not found"
        ))),
        _ => Ok(()),
    }
}

/// `POST …/offsets`: commit these offsets, or (empty body) everything fetched so far → 204.
pub async fn commit(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let instance = state.consumers.get(&group, &name)?;
    let req: OffsetsBody = parse_json_or_default(&body)?;
    for o in req.offsets.iter().flatten() {
        check_position(&o.topic, o.partition, Some(o.offset))?;
    }
    let request = match req.offsets {
        None => CommitRequest::AllConsumed,
        Some(list) if list.is_empty() => CommitRequest::AllConsumed,
        Some(list) => CommitRequest::Offsets(
            list.into_iter()
                .map(|o| TopicPartitionOffset {
                    topic: o.topic,
                    partition: o.partition,
                    offset: o.offset,
                })
                .collect(),
        ),
    };
    instance
        .driver
        .commit(request)
        .await
        .map_err(|e| match e.kind() {
            barnabas_core::ErrorKind::Invalid | barnabas_core::ErrorKind::NotFound => {
                ApiError::from(e)
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Seeks, answering 404 for a partition this instance does not hold (as Strimzi).
async fn seek_to(
    instance: &Instance,
    positions: Vec<(TopicPartition, SeekTo)>,
) -> ApiResult<StatusCode> {
    for (tp, to) in &positions {
        let offset = match to {
            SeekTo::Offset(o) => Some(*o),
            _ => None,
        };
        check_position(&tp.topic, tp.partition, offset)?;
    }
    if positions.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    match instance.driver.seek(positions.clone()).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(Error::IllegalState(m)) => {
            // Assigned a moment ago (POST …/assignments) but not fetching yet: the seek
            // applies as soon as it is, before any record of those partitions is returned.
            let assigned = instance.driver.assignment().await?;
            if positions.iter().all(|(tp, _)| assigned.contains(tp)) {
                instance.driver.seek_when_assigned(positions).await?;
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(ApiError::not_found(format!(
                    "No current assignment for partition: {m}"
                )))
            }
        }
        Err(other) => Err(other.into()),
    }
}

/// `POST …/positions` `{offsets:[{topic, partition, offset}]}` → 204.
pub async fn seek(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let instance = state.consumers.get(&group, &name)?;
    // Strimzi's `OffsetCommitSeekList` requires nothing: `{}` moves nothing.
    let req: OffsetsBody = parse_json(&body)?;
    let positions = req
        .offsets
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            (
                TopicPartition::new(o.topic, o.partition),
                SeekTo::Offset(o.offset),
            )
        })
        .collect();
    seek_to(&instance, positions).await
}

/// `POST …/positions/beginning` `{partitions:[…]}` → 204.
pub async fn seek_beginning(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    seek_edge(&state, &group, &name, &body, SeekTo::Beginning).await
}

/// `POST …/positions/end` `{partitions:[…]}` → 204.
pub async fn seek_end(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    seek_edge(&state, &group, &name, &body, SeekTo::End).await
}

/// Moves every partition named in a `{partitions:[…]}` body to one end.
async fn seek_edge(
    state: &AppState,
    group: &str,
    name: &str,
    body: &[u8],
    to: SeekTo,
) -> ApiResult<StatusCode> {
    let instance = state.consumers.get(group, name)?;
    let positions = parse_json::<PartitionsBody>(body)?
        .partitions()?
        .into_iter()
        .map(|tp| (tp, to))
        .collect();
    seek_to(&instance, positions).await
}
