//! The gateway's own namespace: its state topics (`barnabas.mqtt.sessions`,
//! `barnabas.http.consumers`, …), Kafka's internal topics (`__consumer_offsets`, …) and the
//! `barnabas.*` record headers it writes itself.
//!
//! Clients must never reach into this namespace: a forged session record disconnects another
//! client, a forged consumer-instance record redirects another client's requests, and a
//! client-supplied `barnabas.*` header would shadow the gateway's own (the first header of a
//! name wins when it is read back). Every front end asks [`crate::Authenticator::allows`]
//! before a write or read, and that one check refuses internal topics whatever the ACL says;
//! headers go through [`drop_gateway_headers`] on the way in.

use std::sync::Arc;

use crate::Header;

/// Prefix of every topic and header the gateway owns.
pub const GATEWAY_PREFIX: &str = "barnabas.";

/// Prefix of Kafka's own internal topics.
pub const KAFKA_PREFIX: &str = "__";

/// The one gateway header a client may set (interface §4): a Kafka or HTTP producer
/// addressing an MQTT topic for `default_topic` records.
pub const MQTT_TOPIC_HEADER: &str = "barnabas.mqtt.topic";

/// Longest MQTT topic name (a two-byte length prefix on the wire).
const MAX_MQTT_TOPIC_BYTES: usize = 65_535;

/// Which topics belong to the gateway and Kafka: `__*`, `barnabas.*` and the configured
/// `kafka.internal_prefix` (default `barnabas.`; another value adds a prefix, the gateway's
/// own `barnabas.*` topics stay protected).
#[derive(Debug, Clone)]
pub struct InternalTopics {
    extra_prefix: Arc<str>,
}

impl Default for InternalTopics {
    fn default() -> Self {
        Self::new(GATEWAY_PREFIX)
    }
}

impl InternalTopics {
    /// Internal topics with `prefix` protected besides `__*` and `barnabas.*` (empty: none).
    pub fn new(prefix: &str) -> Self {
        Self {
            extra_prefix: Arc::from(prefix),
        }
    }

    /// Whether `topic` belongs to the gateway or to Kafka itself.
    pub fn contains(&self, topic: &str) -> bool {
        topic.starts_with(KAFKA_PREFIX)
            || topic.starts_with(GATEWAY_PREFIX)
            || (!self.extra_prefix.is_empty() && topic.starts_with(&*self.extra_prefix))
    }
}

/// Whether a header name is in the gateway's namespace.
pub fn is_gateway_header(key: &str) -> bool {
    key.starts_with(GATEWAY_PREFIX)
}

/// Removes client-supplied `barnabas.*` headers, keeping [`MQTT_TOPIC_HEADER`] only when
/// `mqtt_topic_allowed` (then it must hold a valid MQTT topic name, else the error says why).
/// Returns how many were dropped.
pub fn drop_gateway_headers(
    headers: &mut Vec<Header>,
    mqtt_topic_allowed: bool,
) -> Result<usize, BadMqttTopicHeader> {
    let before = headers.len();
    let mut problem = None;
    headers.retain(|h| {
        if !is_gateway_header(&h.key) {
            return true;
        }
        if mqtt_topic_allowed && h.key == MQTT_TOPIC_HEADER {
            if let Err(e) = validate_mqtt_topic_name(h.value.as_deref().unwrap_or_default()) {
                problem.get_or_insert(e);
            }
            return true;
        }
        false
    });
    match problem {
        Some(e) => Err(BadMqttTopicHeader(e)),
        None => Ok(before - headers.len()),
    }
}

/// A client's [`MQTT_TOPIC_HEADER`] that holds no valid MQTT topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header {MQTT_TOPIC_HEADER}: {0}")]
pub struct BadMqttTopicHeader(pub BadTopicName);

/// Why bytes are not an MQTT topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadTopicName {
    /// Not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// Empty.
    #[error("empty MQTT topic name")]
    Empty,
    /// Above 65 535 bytes.
    #[error("longer than {MAX_MQTT_TOPIC_BYTES} bytes")]
    TooLong,
    /// Holds NUL.
    #[error("contains NUL")]
    Nul,
    /// Holds `+` or `#`.
    #[error("an MQTT topic name has no wildcards ('+', '#')")]
    Wildcard,
}

/// An MQTT topic *name* (what a PUBLISH carries): 1–65535 bytes of UTF-8, no NUL, no
/// wildcard.
pub fn validate_mqtt_topic_name(raw: &[u8]) -> Result<(), BadTopicName> {
    let name = std::str::from_utf8(raw).map_err(|_| BadTopicName::NotUtf8)?;
    if name.is_empty() {
        return Err(BadTopicName::Empty);
    }
    if name.len() > MAX_MQTT_TOPIC_BYTES {
        return Err(BadTopicName::TooLong);
    }
    if name.contains('\0') {
        return Err(BadTopicName::Nul);
    }
    if name.contains(['+', '#']) {
        return Err(BadTopicName::Wildcard);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn internal_topics() {
        let t = InternalTopics::default();
        for internal in ["barnabas.mqtt.sessions", "__consumer_offsets", "barnabas.x"] {
            assert!(t.contains(internal), "{internal}");
        }
        for data in ["telemetry", "barnabas", "mqtt.barnabas.x", "_x"] {
            assert!(!t.contains(data), "{data}");
        }
        let extra = InternalTopics::new("gw.");
        assert!(extra.contains("gw.state") && extra.contains("barnabas.mqtt.retained"));
        assert!(!InternalTopics::new("").contains("telemetry"));
    }

    #[test]
    fn gateway_headers_are_dropped_except_a_valid_mqtt_topic() {
        let mut h = vec![
            Header::new("barnabas.mqtt.message_expiry", "1"),
            Header::new("app", "x"),
            Header::new(MQTT_TOPIC_HEADER, "a/b"),
        ];
        assert_eq!(drop_gateway_headers(&mut h.clone(), false), Ok(2));
        assert_eq!(drop_gateway_headers(&mut h, true), Ok(1));
        assert_eq!(h.len(), 2);
        for bad in ["a/+", "#", "", "a\0b"] {
            let mut h = vec![Header::new(MQTT_TOPIC_HEADER, bad.to_owned())];
            assert!(drop_gateway_headers(&mut h, true).is_err(), "{bad:?}");
        }
        let mut h = vec![Header::new(MQTT_TOPIC_HEADER, vec![0xff_u8])];
        assert!(drop_gateway_headers(&mut h, true).is_err());
    }
}
