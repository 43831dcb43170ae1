//! MQTT state that outlives a connection and a gateway process: persistent sessions and
//! retained messages, each kept in a compacted Kafka topic that every replica follows
//! ([`KeyedLog`]). Any replica can therefore resume a session or deliver a retained message,
//! and a restart of every replica loses neither.
//!
//! Session take-over across replicas goes through the same log: a CONNECT writes a record
//! naming its connection as the session's owner, and a replica holding a live connection with
//! that client id but another owner closes it (reason Session Taken Over) when the record
//! reaches it.

use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::packet::QoS;
use barnabas_core::{Backend, Header, KeyedLog, TopicPartition};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    convert::Message,
    filter::Filter,
    retained::RetainedStore,
    store::{SessionStore, StoredSession, Subscribed},
    SessionHandle, Sessions,
};

/// Compacted topic of persistent sessions, keyed by client id.
pub const SESSIONS_TOPIC: &str = "barnabas.mqtt.sessions";
/// Compacted topic of retained messages, keyed by MQTT topic (empty value = cleared).
pub const RETAINED_TOPIC: &str = "barnabas.mqtt.retained";

/// Longest wait for a state write to be acknowledged and applied here.
const WRITE_WAIT: Duration = Duration::from_secs(5);
/// Longest wait, at CONNECT and SUBSCRIBE, for other replicas' writes to arrive here.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

/// Whether a session's client is connected (its record names the connection holding it), or
/// gone with the session kept for its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Held by a live connection.
    Connected,
    /// Left behind, kept until it expires.
    Disconnected,
}

/// The two followed logs and the stores they feed.
pub struct MqttState {
    sessions_log: Arc<KeyedLog>,
    retained_log: Arc<KeyedLog>,
}

impl MqttState {
    /// Starts following both topics (created compacted if missing), feeding `stored` and
    /// `retained`, and closing local connections that another replica took over.
    pub fn follow(
        backend: &Backend,
        live: Arc<Sessions>,
        stored: Arc<SessionStore>,
        retained: Arc<RetainedStore>,
        shutdown: CancellationToken,
    ) -> Self {
        let sessions_log = KeyedLog::follow(
            backend.clone(),
            SESSIONS_TOPIC,
            Box::new(move |client_id, value, _offset| {
                let record = match value.map(|v| SessionRecord::parse(v)) {
                    None => None,
                    Some(Ok(r)) => Some(r),
                    // Garbage is not applied (not even as a deletion): what was known stays.
                    Some(Err(why)) => {
                        tracing::warn!(client_id, %why, "invalid session record; ignored");
                        return;
                    }
                };
                if let Some(r) = &record {
                    if r.connected {
                        live.kick_unless(client_id, &r.owner, r.since_ms);
                    }
                }
                match record.and_then(SessionRecord::into_stored) {
                    Some(session) => stored.put(client_id, session),
                    None => stored.remove(client_id),
                }
            }),
            shutdown.clone(),
        );
        let retained_log = KeyedLog::follow(
            backend.clone(),
            RETAINED_TOPIC,
            Box::new(move |topic, value, _offset| {
                let message = match value.map(|v| RetainedRecord::parse(v)) {
                    None => None,
                    Some(Ok(r)) => r.into_message(topic),
                    Some(Err(why)) => {
                        tracing::warn!(topic, %why, "invalid retained record; ignored");
                        return;
                    }
                };
                match message {
                    Some(m) => retained.set(m),
                    None => retained.clear(topic),
                }
            }),
            shutdown,
        );
        Self {
            sessions_log,
            retained_log,
        }
    }

    /// Waits (bounded) until the other replicas' session writes reached this one, so a
    /// reconnecting client finds the session it left elsewhere. `false` = carry on with what
    /// is known.
    pub async fn sessions_caught_up(&self) -> bool {
        self.sessions_log.caught_up(CATCH_UP_WAIT).await
    }

    /// Same for retained messages, before a SUBSCRIBE delivers them.
    pub async fn retained_caught_up(&self) -> bool {
        self.retained_log.caught_up(CATCH_UP_WAIT).await
    }

    /// Records the session of `client_id` as held by connection `owner` or left behind by it
    /// (`presence`), with its subscriptions and expiry.
    pub async fn save_session(
        &self,
        client_id: &str,
        owner: &SessionHandle,
        presence: Presence,
        subscriptions: &[Subscribed],
        expiry_secs: u32,
        awaiting_pubrel: &[u16],
    ) -> barnabas_core::Result<()> {
        let connected = presence == Presence::Connected;
        let record = SessionRecord {
            owner: owner.owner.clone(),
            since_ms: owner.since_ms,
            connected,
            expiry_secs,
            expires_at_ms: (!connected && expiry_secs != u32::MAX)
                .then(|| now_ms().saturating_add(u64::from(expiry_secs) * 1000)),
            subscriptions: subscriptions.iter().map(SubscriptionRecord::from).collect(),
            principal: owner.principal.as_deref().map(str::to_owned),
            awaiting_pubrel: awaiting_pubrel.to_vec(),
        };
        let value = serde_json::to_vec(&record)
            .map_err(|e| barnabas_core::Error::Invalid(format!("session record: {e}")))?;
        self.sessions_log
            .put(client_id, Some(value), WRITE_WAIT)
            .await
            .map(drop)
    }

    /// Forgets the session of `client_id` (a clean session ended, or its expiry is 0).
    pub async fn drop_session(&self, client_id: &str) -> barnabas_core::Result<()> {
        self.sessions_log
            .put(client_id, None, WRITE_WAIT)
            .await
            .map(drop)
    }

    /// Stores `message` as its topic's retained message (an empty payload clears it).
    pub async fn retain(&self, message: &Message) -> barnabas_core::Result<()> {
        let value = if message.payload.is_empty() {
            None
        } else {
            let record = RetainedRecord::from(message);
            Some(
                serde_json::to_vec(&record)
                    .map_err(|e| barnabas_core::Error::Invalid(format!("retained record: {e}")))?,
            )
        };
        self.retained_log
            .put(&message.topic, value, WRITE_WAIT)
            .await
            .map(drop)
    }
}

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A stored QoS number (anything above 1 reads as QoS 2, as the QoS header does).
fn qos_from(n: u8) -> QoS {
    QoS::try_from(n).unwrap_or(QoS::ExactlyOnce)
}

/// A session as stored in [`SESSIONS_TOPIC`].
#[derive(Debug, Serialize, Deserialize)]
struct SessionRecord {
    /// The connection that holds (or last held) the session.
    owner: String,
    /// When that connection took the session (ms since the epoch).
    #[serde(default)]
    since_ms: u64,
    /// Whether that connection is live.
    connected: bool,
    /// Session Expiry Interval, seconds (`u32::MAX` = never).
    expiry_secs: u32,
    /// When a left-behind session ends (ms since the epoch); `None` = never, or connected.
    #[serde(default)]
    expires_at_ms: Option<u64>,
    subscriptions: Vec<SubscriptionRecord>,
    /// The principal the session belongs to (absent under `auth.mode = "none"`, and in
    /// records written before sessions were bound to their principal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    principal: Option<String>,
    /// QoS 2 packet ids written to Kafka whose PUBREL had not come.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    awaiting_pubrel: Vec<u16>,
}

/// How far in the future a session record's `since_ms` may lie (clock skew between replicas).
/// A record from further ahead would win every take-over comparison for good.
const MAX_FUTURE_MS: u64 = 60_000;

/// Why a record of the sessions or retained topic is skipped: not one the gateway could have
/// written (anyone with write access to the topic, or an older version, may have put it there).
#[derive(Debug, thiserror::Error)]
enum BadRecord {
    #[error("not a record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no owner")]
    NoOwner,
    #[error("since_ms {0} lies in the future")]
    Future(u64),
    #[error("QoS {0} is above 2")]
    Qos(u8),
}

impl SessionRecord {
    /// A record read from [`SESSIONS_TOPIC`], if it is one the gateway could have written.
    fn parse(raw: &[u8]) -> Result<Self, BadRecord> {
        let r: Self = serde_json::from_slice(raw)?;
        if r.owner.is_empty() {
            return Err(BadRecord::NoOwner);
        }
        if r.since_ms > now_ms().saturating_add(MAX_FUTURE_MS) {
            return Err(BadRecord::Future(r.since_ms));
        }
        if let Some(s) = r.subscriptions.iter().find(|s| s.qos > 2) {
            return Err(BadRecord::Qos(s.qos));
        }
        Ok(r)
    }

    /// The session a reconnecting client resumes; `None` once expired.
    fn into_stored(self) -> Option<StoredSession> {
        let remaining = match self.expires_at_ms {
            Some(at) => {
                let now = now_ms();
                if at <= now {
                    return None;
                }
                Some(Duration::from_millis(at - now))
            }
            None => None,
        };
        let subscriptions = self
            .subscriptions
            .into_iter()
            .filter_map(SubscriptionRecord::into_subscribed)
            .collect();
        let mut awaiting_pubrel = self.awaiting_pubrel;
        awaiting_pubrel.truncate(1024);
        Some(StoredSession {
            awaiting_pubrel,
            ..StoredSession::resumable(
                subscriptions,
                remaining,
                self.expiry_secs,
                self.principal.map(Arc::from),
            )
        })
    }
}

/// One subscription in a [`SessionRecord`].
#[derive(Debug, Serialize, Deserialize)]
struct SubscriptionRecord {
    /// The filter as the client sent it (with any `$share/{group}/` prefix).
    filter: String,
    qos: u8,
    #[serde(default)]
    no_local: bool,
    #[serde(default)]
    retain_as_published: bool,
    #[serde(default)]
    id: Option<u32>,
    /// [`Subscribed::since`]: (Kafka topic, partition, offset).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    since: Vec<(String, i32, i64)>,
}

impl From<&Subscribed> for SubscriptionRecord {
    fn from(s: &Subscribed) -> Self {
        Self {
            filter: match &s.filter.share {
                Some(group) => format!("$share/{group}/{}", s.filter.filter),
                None => s.filter.filter.clone(),
            },
            qos: s.qos.value(),
            no_local: s.no_local,
            retain_as_published: s.retain_as_published,
            id: s.id.map(NonZeroU32::get),
            since: s
                .since
                .iter()
                .map(|(tp, offset)| (tp.topic.clone(), tp.partition, *offset))
                .collect(),
        }
    }
}

impl SubscriptionRecord {
    fn into_subscribed(self) -> Option<Subscribed> {
        Some(Subscribed {
            filter: Filter::parse(&self.filter)?,
            qos: qos_from(self.qos),
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            id: self.id.and_then(NonZeroU32::new),
            since: self
                .since
                .into_iter()
                .take(crate::store::MAX_SINCE)
                .map(|(topic, partition, offset)| (TopicPartition::new(topic, partition), offset))
                .collect(),
        })
    }
}

/// A retained message as stored in [`RETAINED_TOPIC`] (the MQTT topic is the record key).
#[derive(Debug, Serialize, Deserialize)]
struct RetainedRecord {
    /// Payload, base64.
    payload: String,
    qos: u8,
    /// Headers: key and base64 value (`None` = a header without a value).
    #[serde(default)]
    headers: Vec<(String, Option<String>)>,
    /// When it expires (ms since the epoch), if it does.
    #[serde(default)]
    expires_at_ms: Option<u64>,
}

impl From<&Message> for RetainedRecord {
    fn from(m: &Message) -> Self {
        Self {
            payload: B64.encode(&m.payload),
            qos: m.qos.value(),
            headers: m
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_ref().map(|v| B64.encode(v))))
                .collect(),
            expires_at_ms: m.expires_at.and_then(|t| {
                t.duration_since(UNIX_EPOCH)
                    .ok()
                    .and_then(|d| u64::try_from(d.as_millis()).ok())
            }),
        }
    }
}

impl RetainedRecord {
    /// A record read from [`RETAINED_TOPIC`], if it is one the gateway could have written.
    fn parse(raw: &[u8]) -> Result<Self, BadRecord> {
        let r: Self = serde_json::from_slice(raw)?;
        if r.qos > 2 {
            return Err(BadRecord::Qos(r.qos));
        }
        Ok(r)
    }

    fn into_message(self, topic: &str) -> Option<Message> {
        let expires_at = self
            .expires_at_ms
            .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)));
        if expires_at.is_some_and(|t| t <= SystemTime::now()) {
            return None;
        }
        let payload = B64.decode(self.payload.as_bytes()).ok()?;
        let headers = self
            .headers
            .into_iter()
            .map(|(key, value)| Header {
                key,
                value: value.and_then(|v| B64.decode(v.as_bytes()).ok().map(Bytes::from)),
            })
            .collect();
        Some(Message {
            topic: topic.to_owned(),
            payload: Bytes::from(payload),
            qos: qos_from(self.qos),
            retain: true,
            headers,
            origin_client: None,
            expires_at,
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_session_record_round_trips_and_expires() {
        let subscribed = Subscribed {
            filter: Filter::parse("$share/g/a/+").expect("valid filter"),
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: false,
            id: NonZeroU32::new(7),
            since: [(TopicPartition::new("mqtt", 0), 42)].into_iter().collect(),
        };
        let record = SessionRecord {
            owner: "o".into(),
            since_ms: 1,
            connected: false,
            expiry_secs: 60,
            expires_at_ms: Some(now_ms() + 60_000),
            subscriptions: vec![SubscriptionRecord::from(&subscribed)],
            principal: Some("alice".into()),
            awaiting_pubrel: vec![7],
        };
        let json = serde_json::to_vec(&record).expect("serialises");
        let back: SessionRecord = serde_json::from_slice(&json).expect("parses");
        let stored = back.into_stored().expect("not expired");
        assert_eq!(stored.principal.as_deref(), Some("alice"));
        assert_eq!(stored.awaiting_pubrel, [7]);
        assert_eq!(stored.subscriptions.len(), 1);
        let s = &stored.subscriptions[0];
        assert_eq!(s.filter, subscribed.filter);
        assert_eq!(
            (s.qos, s.no_local, s.id),
            (QoS::AtLeastOnce, true, NonZeroU32::new(7))
        );
        assert_eq!(s.since, subscribed.since);

        let expired = SessionRecord {
            expires_at_ms: Some(now_ms() - 1),
            ..serde_json::from_slice(&json).expect("parses")
        };
        assert!(expired.into_stored().is_none());
    }

    #[test]
    fn a_retained_record_keeps_payload_headers_and_expiry() {
        let message = Message {
            topic: "t/1".into(),
            payload: Bytes::from_static(b"\x00bin"),
            qos: QoS::AtLeastOnce,
            retain: true,
            headers: vec![
                Header::new("k", "v"),
                Header {
                    key: "n".into(),
                    value: None,
                },
            ],
            origin_client: Some("c".into()),
            expires_at: None,
        };
        let json = serde_json::to_vec(&RetainedRecord::from(&message)).expect("serialises");
        let back: RetainedRecord = serde_json::from_slice(&json).expect("parses");
        let m = back.into_message("t/1").expect("not expired");
        assert_eq!(m.payload, message.payload);
        assert_eq!(m.headers, message.headers);
        assert_eq!(m.qos, QoS::AtLeastOnce);

        let old = RetainedRecord {
            expires_at_ms: Some(1),
            ..serde_json::from_slice(&json).expect("parses")
        };
        assert!(old.into_message("t/1").is_none());
    }
}
