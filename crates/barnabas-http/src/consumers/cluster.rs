//! Consumer instances that any replica can serve (`docs/design/scale-out.md`).
//!
//! A Kafka consumer lives in one process, so an instance is served by one replica, its
//! *owner*. What the instance is (group, name, creation settings, subscription or assignment,
//! owner and the owner's address) is a record in the compacted topic
//! [`CONSUMERS_TOPIC`], followed by every replica. A request for an instance this replica
//! does not hold is forwarded to the owner; when the owner cannot be reached (it died, or was
//! restarted and is a new process now), this replica *adopts* the instance: it opens the same
//! consumer in the same group, which resumes from the group's committed offsets, and records
//! itself as the owner. The previous owner, if it is still alive, closes its copy when that
//! record reaches it, so the instance has one owner again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderName, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use barnabas_core::{Access, Backend, KeyedLog, OffsetReset, Principal};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Instance, InstanceSettings, Mode, Registry};
use crate::{error::ApiError, format::Format, AppState};

/// Compacted topic of consumer instances, keyed by `["group","name"]`.
pub const CONSUMERS_TOPIC: &str = "barnabas.http.consumers";

/// Marks a request one replica forwarded to another, so it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-barnabas-forwarded";

/// Longest wait for a catalog write to be acknowledged by Kafka.
const WRITE_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for other replicas' catalog writes to arrive here.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// An owner that does not accept a connection within this is taken for dead.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// One consumer instance as every replica knows it. Unknown fields make a record invalid
/// (ignored with a warning): what is not the gateway's own shape is not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceRecord {
    /// Consumer group.
    pub group: String,
    /// Instance name.
    pub name: String,
    /// Embedded format name (`json`, `binary`, `text`).
    pub format: String,
    /// `auto.offset.reset`.
    pub auto_offset_reset: String,
    /// `enable.auto.commit`.
    pub enable_auto_commit: bool,
    /// Other consumer properties the client set.
    pub properties: std::collections::BTreeMap<String, String>,
    /// Subscription or assignment.
    pub mode: Mode,
    /// Id of the replica (process) serving it.
    pub owner: String,
    /// Base URL other replicas forward its requests to.
    pub owner_url: String,
    /// The principal that created it (`Authenticator::owner_name`): the only one that may
    /// use it, on any replica.
    pub creator: String,
}

/// Consumer properties a client may set (`POST /consumers/{group}`) with their checks: the
/// only ones a record may carry back into a Kafka consumer. Anything else in a record
/// (`bootstrap.servers`, `sasl.*`, `plugin.library.paths`, …) is never applied.
fn is_client_property(key: &str, value: &str) -> bool {
    match key {
        "fetch.min.bytes" | "request.timeout.ms" => value.parse::<u32>().is_ok(),
        "isolation.level" => matches!(value, "read_committed" | "read_uncommitted"),
        _ => false,
    }
}

/// Whether `url` has the form of an advertised address, `http://host:port` (or https), and
/// nothing else: no user info, path, query or fragment that would send a forwarded request
/// (with the client's `Authorization`) somewhere other than a replica's API root.
fn is_replica_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    matches!(u.scheme(), "http" | "https")
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.port_or_known_default().is_some()
        && u.username().is_empty()
        && u.password().is_none()
        && matches!(u.path(), "" | "/")
        && u.query().is_none()
        && u.fragment().is_none()
}

/// Why a record read from the catalog is not applied, if it is not.
fn invalid_record(record: &InstanceRecord) -> Option<&'static str> {
    if record.group.is_empty() || record.name.is_empty() || record.name.contains('/') {
        return Some("group or name empty, or name with '/'");
    }
    if record.creator.is_empty() {
        return Some("no creator");
    }
    if !is_replica_url(&record.owner_url) {
        return Some("owner_url is not http://host:port");
    }
    if record.settings().is_none() {
        return Some("format or auto.offset.reset invalid");
    }
    None
}

/// A catalog value as a record, if it is a valid one (else logged and ignored).
fn parse_record(key: &str, value: &[u8]) -> Option<InstanceRecord> {
    let record = serde_json::from_slice::<InstanceRecord>(value)
        .inspect_err(
            |e| tracing::warn!(key, error = %e, "unreadable consumer instance record; ignored"),
        )
        .ok()?;
    if let Some(why) = invalid_record(&record) {
        tracing::warn!(key, why, "invalid consumer instance record; ignored");
        return None;
    }
    let expected = self::key(&record.group, &record.name);
    if expected != key {
        tracing::warn!(key, "consumer instance record under another key; ignored");
        return None;
    }
    Some(record)
}

impl InstanceRecord {
    /// The creation settings, if the record holds valid ones; of its properties only those
    /// a client may set, with valid values ([`is_client_property`]).
    pub fn settings(&self) -> Option<InstanceSettings> {
        Some(InstanceSettings {
            format: Format::from_name(&self.format)?,
            auto_offset_reset: match self.auto_offset_reset.as_str() {
                "earliest" => OffsetReset::Earliest,
                "latest" => OffsetReset::Latest,
                "none" => OffsetReset::None,
                _ => return None,
            },
            enable_auto_commit: self.enable_auto_commit,
            properties: self
                .properties
                .iter()
                .filter(|(k, v)| is_client_property(k, v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// This replica's view of every replica's consumer instances.
pub struct Cluster {
    /// This process' id (new at every start).
    replica: String,
    /// Base URL of this replica's HTTP listener as other replicas reach it.
    url: String,
    records: Mutex<HashMap<String, Known>>,
    log: OnceLock<Arc<KeyedLog>>,
    /// One adoption at a time, so two requests for a dead owner's instance open one consumer.
    adopting: tokio::sync::Mutex<()>,
    client: reqwest::Client,
}

/// What this replica knows of one key of the catalog, and from which offset of the log.
///
/// This replica's own writes are applied at once (a client that created an instance may use
/// it immediately), and again when the follower reads them back; the follower may still be
/// delivering *older* records of the same key then. Keeping the offset lets those be ignored,
/// so a deleted instance is not brought back by its own creation record arriving late.
struct Known {
    offset: i64,
    /// `None`: deleted here, its tombstone not yet read back.
    record: Option<InstanceRecord>,
}

fn key(group: &str, name: &str) -> String {
    serde_json::json!([group, name]).to_string()
}

/// How forwarding a request to the owner went.
pub enum Forwarded {
    /// The owner answered; this is its answer.
    Answer(Response),
    /// The owner could not be reached: it is gone.
    OwnerGone,
}

impl Cluster {
    /// A replica reachable by other replicas at `url` (`http://host:port`).
    pub fn new(url: String) -> Self {
        Self {
            replica: uuid::Uuid::new_v4().to_string(),
            url,
            records: Mutex::new(HashMap::new()),
            log: OnceLock::new(),
            adopting: tokio::sync::Mutex::new(()),
            client: reqwest::Client::builder()
                .connect_timeout(CONNECT_WAIT)
                .build()
                .unwrap_or_default(),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The record of `key` as known here (`None`: unknown or deleted).
    fn known(&self, key: &str) -> Option<InstanceRecord> {
        self.records().get(key).and_then(|k| k.record.clone())
    }

    /// Applies the record of `key` at `offset` (`None` = deleted) unless something newer of
    /// that key is already known; returns whether it was applied.
    fn apply(&self, key: &str, offset: i64, record: Option<InstanceRecord>) -> bool {
        let mut records = self.records();
        if records.get(key).is_some_and(|k| k.offset > offset) {
            return false;
        }
        match record {
            Some(record) => {
                records.insert(
                    key.to_owned(),
                    Known {
                        offset,
                        record: Some(record),
                    },
                );
            }
            None => {
                records.remove(key);
            }
        }
        true
    }

    /// Records this replica's own write of `key` at `offset`, applied before the follower
    /// reads it back (a deletion is kept as such until then, so older records stay ignored).
    fn apply_own(&self, key: &str, offset: i64, record: Option<InstanceRecord>) {
        let mut records = self.records();
        if records.get(key).is_some_and(|k| k.offset > offset) {
            return;
        }
        records.insert(key.to_owned(), Known { offset, record });
    }

    /// Starts (once) following the catalog: keeps the records and closes local instances
    /// that another replica adopted or deleted.
    pub fn follow(
        self: &Arc<Self>,
        backend: Backend,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) {
        if self.log.get().is_some() {
            return;
        }
        let cluster = Arc::downgrade(self);
        let log = KeyedLog::follow(
            backend,
            CONSUMERS_TOPIC,
            Box::new(move |key, value, offset| {
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                let record = match value {
                    None => None,
                    Some(v) => match parse_record(key, v) {
                        Some(r) => Some(r),
                        // Garbage is not applied: whatever was known of the key stays.
                        None => return,
                    },
                };
                let previous = cluster.known(key);
                let taken_elsewhere = record
                    .as_ref()
                    .filter(|r| r.owner != cluster.replica)
                    .map(|r| (r.group.clone(), r.name.clone()));
                let deleted = record.is_none();
                if !cluster.apply(key, offset, record) {
                    return;
                }
                // Another replica adopted the instance, or deleted it: close the copy here.
                if let Some((group, name)) = taken_elsewhere {
                    registry.evict(&group, &name);
                } else if let (true, Some(gone)) = (deleted, previous) {
                    registry.evict(&gone.group, &gone.name);
                }
            }),
            shutdown,
        );
        let _ = self.log.set(log);
    }

    /// The instance's record, waiting (bounded) for other replicas' writes when it is not
    /// known here yet.
    pub async fn lookup(&self, group: &str, name: &str) -> Option<InstanceRecord> {
        let key = key(group, name);
        if let Some(r) = self.known(&key) {
            return Some(r);
        }
        let log = self.log.get()?;
        log.caught_up(CATCH_UP_WAIT).await;
        self.known(&key)
    }

    /// The instance's record once this replica has read the whole catalog as it is now
    /// (bounded): for a record that may have been replaced by another replica's write just
    /// now, such as a name this replica left dead and another replica created since.
    pub async fn lookup_latest(&self, group: &str, name: &str) -> Option<InstanceRecord> {
        if let Some(log) = self.log.get() {
            log.caught_up(CATCH_UP_WAIT).await;
        }
        self.known(&key(group, name))
    }

    /// Records this replica as the owner of `instance`, reading in `mode`; returns once
    /// Kafka acknowledged it.
    pub async fn publish(&self, instance: &Instance, mode: Mode) -> Result<(), ApiError> {
        let Some(log) = self.log.get() else {
            return Ok(());
        };
        let (group, name, settings) = (&instance.group, &instance.name, &instance.settings);
        let record = InstanceRecord {
            group: group.to_owned(),
            name: name.to_owned(),
            format: settings.format.name().to_owned(),
            auto_offset_reset: settings.auto_offset_reset.as_str().to_owned(),
            enable_auto_commit: settings.enable_auto_commit,
            properties: settings.properties.clone(),
            mode,
            owner: self.replica.clone(),
            owner_url: self.url.clone(),
            creator: instance.creator.to_string(),
        };
        let value = serde_json::to_vec(&record)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let key = key(group, name);
        let offset = log
            .put(&key, Some(value), WRITE_WAIT)
            .await
            .map_err(ApiError::from)?;
        // Known here at once, before the follower reads it back.
        self.apply_own(&key, offset, Some(record));
        Ok(())
    }

    /// Deletes the instance from the catalog (logged, not returned, when Kafka refuses: the
    /// record then only names an owner that no longer has the instance, which answers 404).
    pub async fn forget(&self, group: &str, name: &str) {
        let Some(log) = self.log.get() else {
            return;
        };
        let key = key(group, name);
        match log.put(&key, None, WRITE_WAIT).await {
            Ok(offset) => self.apply_own(&key, offset, None),
            Err(e) => {
                tracing::warn!(%group, %name, error = %e, "could not delete the consumer instance record");
            }
        }
    }

    /// Whether `record` names this very process as the owner.
    pub fn is_own(&self, record: &InstanceRecord) -> bool {
        record.owner == self.replica
    }

    /// Whether `record` names an owner this replica should forward to: another live process.
    /// A record naming this address but another process is left by this replica's previous
    /// run (a restart), so its owner is gone.
    pub fn owned_elsewhere(&self, record: &InstanceRecord) -> bool {
        record.owner != self.replica && record.owner_url != self.url
    }

    /// Whether the record's owner (another live replica) may still hold the instance: false
    /// only when it answers 404 for it, which it does for a record it left without an
    /// instance (a create it refused while Kafka was away, whose record Kafka stored after
    /// all). Asked with the client's own headers, so the owner checks the creator as for any
    /// forwarded request; an owner that cannot be reached or answers otherwise is taken to
    /// hold it (it may be adopted), so the name stays taken.
    pub async fn owner_holds(&self, record: &InstanceRecord, headers: &HeaderMap) -> bool {
        let Ok(mut url) = reqwest::Url::parse(&record.owner_url) else {
            return true;
        };
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend([
                "consumers",
                &record.group,
                "instances",
                &record.name,
                "subscription",
            ]);
        } else {
            return true;
        }
        let request = self.as_forwarded(self.client.get(url).timeout(WRITE_WAIT), headers);
        !matches!(request.send().await, Ok(a) if a.status() == StatusCode::NOT_FOUND)
    }

    /// `request` to another replica with the client's `headers` (its credentials among them;
    /// not `Host` or `Content-Length`, which belong to the hop) and marked as forwarded by this
    /// replica, so the owner checks the creator as for the client and never forwards it on.
    fn as_forwarded(
        &self,
        mut request: reqwest::RequestBuilder,
        headers: &HeaderMap,
    ) -> reqwest::RequestBuilder {
        for (name, value) in headers {
            if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
                request = request.header(name, value);
            }
        }
        request.header(FORWARDED_HEADER, self.replica.as_str())
    }

    /// Sends the request to the record's owner and returns its answer.
    pub async fn forward(
        &self,
        record: &InstanceRecord,
        parts: &axum::http::request::Parts,
        body: bytes::Bytes,
    ) -> Forwarded {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        let url = format!("{}{path}", record.owner_url.trim_end_matches('/'));
        let request = self
            .client
            .request(parts.method.clone(), &url)
            .timeout(forward_timeout(&parts.uri))
            .body(body);
        match self.as_forwarded(request, &parts.headers).send().await {
            Ok(answer) => {
                let status = answer.status();
                let headers = answer.headers().clone();
                match answer.bytes().await {
                    Ok(bytes) => {
                        let mut response = Response::new(Body::from(bytes));
                        *response.status_mut() = status;
                        for (name, value) in &headers {
                            if is_end_to_end(name) {
                                response.headers_mut().insert(name.clone(), value.clone());
                            }
                        }
                        Forwarded::Answer(response)
                    }
                    Err(e) => Forwarded::Answer(owner_lost(record, &e)),
                }
            }
            Err(e) if e.is_connect() => {
                tracing::info!(group = %record.group, name = %record.name, owner = %record.owner_url, error = %e, "owner of the consumer instance unreachable; adopting it");
                Forwarded::OwnerGone
            }
            Err(e) => Forwarded::Answer(owner_lost(record, &e)),
        }
    }
}

/// How long a forwarded request may take: the long-poll it asks for (`?timeout=` ms, as the
/// records handler caps it; other requests take at most a catalog write) plus 5 s, so a hung
/// owner does not hold the forwarding request (and its connection) forever.
fn forward_timeout(uri: &axum::http::Uri) -> Duration {
    let poll_ms = uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "timeout")
            .and_then(|(_, v)| v.parse::<u64>().ok())
    });
    let poll = poll_ms.map_or(WRITE_WAIT, Duration::from_millis);
    poll.min(super::handlers::MAX_POLL) + Duration::from_secs(5)
}

/// 403: the instance belongs to another principal.
fn not_yours(group: &str, name: &str) -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("Consumer instance '{name}' of group '{group}' belongs to another principal."),
    )
    .into_response()
}

/// The owner took the request but its answer was lost (it died mid-request): the request
/// may have had an effect (records fetched, offsets committed), so it is not retried here.
fn owner_lost(record: &InstanceRecord, e: &reqwest::Error) -> Response {
    tracing::warn!(group = %record.group, name = %record.name, owner = %record.owner_url, error = %e, "forwarded consumer request failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The gateway replica serving this consumer instance did not answer; retry the request.",
    )
    .into_response()
}

/// Headers that describe the answer itself (not the hop between replicas).
fn is_end_to_end(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "date"
    )
}

/// Route layer of every `/consumers/{group}/instances/{name}…` route: serves the request here
/// when this replica holds the instance, forwards it to the owner otherwise, and adopts the
/// instance when the owner is gone.
pub async fn route_to_owner(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let (Some(group), Some(name)) = (params.get("group"), params.get("name")) else {
        return next.run(request).await;
    };
    // No client can create an instance in an internal group (`__*`, `barnabas.*`), so none
    // exists there for it: 404, the status Strimzi's openapi.json lists (not a 403 that
    // suggests otherwise).
    if state.auth.is_internal(group) {
        return super::registry::not_found().into_response();
    }
    let principal = request.extensions().get::<Principal>().cloned();
    let who = principal.as_ref().map(|p| state.auth.owner_name(p));
    if let Some(principal) = &principal {
        if let Err(denied) = crate::auth::check(&state, principal, Access::Group(group)) {
            return denied.into_response();
        }
    }
    // Only its creator may use an instance: checked here when this replica holds it (also for
    // a forwarded request, authenticated again here), before forwarding or adopting otherwise.
    if let Some(instance) = state.consumers.peek(group, name) {
        if who.as_deref().is_some_and(|w| !instance.owned_by(w)) {
            return not_yours(group, name);
        }
        return next.run(request).await;
    }
    if request.headers().contains_key(FORWARDED_HEADER) {
        return next.run(request).await;
    }
    let Some(mut record) = state.cluster.lookup(group, name).await else {
        return next.run(request).await;
    };
    if state.cluster.is_own(&record) {
        // A name this process left dead may have been created on another replica since.
        match state.cluster.lookup_latest(group, name).await {
            Some(latest) => record = latest,
            None => return next.run(request).await,
        }
    }
    if who.as_deref().is_some_and(|w| *w != *record.creator) {
        return not_yours(group, name);
    }
    if state.cluster.is_own(&record) {
        // This very process owned it and no longer holds it: it was deleted or reaped here
        // (its tombstone not written, Kafka being away). Never adopt that back: answer 404.
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.settings.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                .into_response()
        }
    };
    if state.cluster.owned_elsewhere(&record) {
        match state.cluster.forward(&record, &parts, body.clone()).await {
            Forwarded::Answer(response) => return response,
            Forwarded::OwnerGone => {}
        }
    }
    if let Err(e) = adopt(&state, &record, principal.as_ref()).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// Opens the recorded instance on this replica (same group, settings and subscription or
/// assignment: it resumes from the group's committed offsets) and records this replica as
/// its owner. Its consumer reads as `principal`, the client whose request adopts it (the
/// record holds no password to log in to Kafka with under identity passthrough).
async fn adopt(
    state: &AppState,
    record: &InstanceRecord,
    principal: Option<&Principal>,
) -> Result<(), ApiError> {
    let _one_at_a_time = state.cluster.adopting.lock().await;
    if state.consumers.contains(&record.group, &record.name) {
        return Ok(());
    }
    let settings = record.settings().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored consumer instance record is not valid",
        )
    })?;
    // What it reads is checked again, as the adopting client: a record is not a grant.
    if let Some(principal) = principal {
        super::handlers::check_mode(state, principal, &record.mode)?;
    }
    let instance = super::handlers::open_instance(
        state,
        &record.group,
        &record.name,
        settings,
        record.mode.clone(),
        principal,
        Arc::from(record.creator.as_str()),
    )
    .await?;
    tracing::info!(group = %record.group, name = %record.name, previous_owner = %record.owner_url, "consumer instance adopted");
    state.cluster.publish(&instance, instance.mode()).await
}
