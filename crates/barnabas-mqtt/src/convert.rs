//! MQTT ↔ Kafka, both ways, in one place (as the AMQP front end's `convert.rs`): a PUBLISH
//! (or a will) becomes a record through the topic-mapping rules, its origin and v5
//! properties as `barnabas.mqtt.*` headers; a record read from Kafka (or a retained
//! message) becomes an outgoing PUBLISH — the MQTT topic it goes to, the QoS it may be
//! delivered at, and its headers as v5 properties again.

use std::{
    num::{NonZeroU16, NonZeroU32},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::packet::{Publish, PublishProperties, QoS};
use barnabas_core::{ConsumedRecord, Error, Header, Record, TopicMapper};
use bytes::Bytes;

/// Header holding the MQTT topic a record was published to.
pub const TOPIC_HEADER: &str = "barnabas.mqtt.topic";
/// Header holding the QoS a record was published with (`0`, `1`, `2`); a record without it
/// (written by a Kafka client) is as durable as QoS 2.
pub const QOS_HEADER: &str = "barnabas.mqtt.qos";
/// Header present (`1`) when the record was published with the retain flag.
pub const RETAIN_HEADER: &str = "barnabas.mqtt.retain";
/// Header holding the client id of the publisher (for v5 No Local, and for Kafka readers).
pub const CLIENT_HEADER: &str = "barnabas.mqtt.client_id";
/// Header holding a v5 Message Expiry Interval in seconds, counted from the record timestamp.
pub const EXPIRY_HEADER: &str = "barnabas.mqtt.message_expiry";
/// Header present (`1`) when a v5 publish said its payload is UTF-8 (Payload Format
/// Indicator), so that subscribers get the indicator too [MQTT-3.3.2-4].
pub const PAYLOAD_FORMAT_HEADER: &str = "barnabas.mqtt.payload_format";
const CONTENT_TYPE: &str = "barnabas.mqtt.content_type";
const RESPONSE_TOPIC: &str = "barnabas.mqtt.response_topic";
const CORRELATION_DATA: &str = "barnabas.mqtt.correlation_data";

/// Whether a header name is in the gateway's own namespace (`barnabas.`, any case): a client
/// may not set one, or it would shadow the gateway's (the first header of a name wins).
pub fn is_reserved(key: &str) -> bool {
    key.get(..9)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("barnabas."))
}

/// The headers saying where a record came from: its MQTT topic, QoS and retain flag.
pub fn origin_headers(topic: &str, qos: QoS, retain: bool) -> Vec<Header> {
    let mut headers = vec![
        Header::new(TOPIC_HEADER, topic.to_owned()),
        Header::new(QOS_HEADER, (qos as u8).to_string()),
    ];
    if retain {
        headers.push(Header::new(RETAIN_HEADER, "1"));
    }
    headers
}

/// The Kafka record for a publish to `topic`, through the mapping rules; a topic no rule
/// maps (and no default topic) is refused.
pub fn to_record(
    mapper: &TopicMapper,
    topic: &str,
    payload: Bytes,
    headers: Vec<Header>,
) -> Result<Record, Error> {
    let resolved = mapper.resolve(topic)?.ok_or_else(|| Error::InvalidTopic {
        topic: topic.to_owned(),
        reason: "no mapping rule matches and no default topic is configured".into(),
    })?;
    Ok(Record {
        topic: resolved.kafka_topic,
        partition: None,
        key: Some(resolved.key.into()),
        value: Some(payload),
        headers,
        timestamp: None,
    })
}

/// The v5 properties of a publish or a will that become Kafka headers.
pub struct V5Properties<'a> {
    /// User properties, in order.
    pub user_properties: &'a [(bytestring::ByteString, bytestring::ByteString)],
    /// Payload Format Indicator 1 (UTF-8).
    pub is_utf8_payload: bool,
    /// Content Type.
    pub content_type: Option<&'a str>,
    /// Response Topic.
    pub response_topic: Option<&'a str>,
    /// Correlation Data.
    pub correlation_data: Option<&'a Bytes>,
    /// Message Expiry Interval in seconds.
    pub message_expiry: Option<std::num::NonZeroU32>,
}

/// A v5 publish's properties as Kafka headers (user properties as they are; payload format
/// indicator, content type, response topic and correlation data under `barnabas.mqtt.*`).
/// User properties named `barnabas.*` are dropped: that namespace is the gateway's, and a
/// client's copy would shadow the gateway's own header (interface.md §4).
pub fn property_headers(p: &Publish) -> Vec<(String, Bytes)> {
    match &p.properties {
        Some(props) => v5_headers(&V5Properties {
            user_properties: &props.user_properties,
            is_utf8_payload: props.is_utf8_payload,
            content_type: props.content_type.as_deref(),
            response_topic: props.response_topic.as_deref(),
            correlation_data: props.correlation_data.as_ref(),
            message_expiry: props.message_expiry_interval,
        }),
        None => Vec::new(),
    }
}

/// [`property_headers`] of a publish's or a will's properties: subscribers get them back
/// as sent, user properties in order [MQTT-3.3.2-17/18], the others forwarded unaltered
/// [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-20], and a will's user
/// properties keep their order [MQTT-3.1.3-10] (delivery.rs turns them back into properties).
pub fn v5_headers(props: &V5Properties<'_>) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for (k, v) in props.user_properties {
        if is_reserved(k) {
            continue;
        }
        out.push((k.to_string(), Bytes::copy_from_slice(v.as_bytes())));
    }
    if props.is_utf8_payload {
        out.push((PAYLOAD_FORMAT_HEADER.into(), Bytes::from_static(b"1")));
    }
    if let Some(ct) = props.content_type {
        out.push((CONTENT_TYPE.into(), Bytes::copy_from_slice(ct.as_bytes())));
    }
    if let Some(rt) = props.response_topic {
        out.push((RESPONSE_TOPIC.into(), Bytes::copy_from_slice(rt.as_bytes())));
    }
    if let Some(cd) = props.correlation_data {
        // A copy like the others: a slice would keep the read buffer it came from for as
        // long as the header lives (a will's, a retained message's).
        out.push((CORRELATION_DATA.into(), Bytes::copy_from_slice(cd)));
    }
    if let Some(expiry) = props.message_expiry {
        out.push((EXPIRY_HEADER.into(), Bytes::from(expiry.get().to_string())));
    }
    out
}

/// When a record read from Kafka expires: its timestamp plus its expiry header. Anything
/// else than an MQTT expiry (seconds, at most `u32::MAX`), a missing or negative timestamp,
/// or a time past what the clock can hold means no expiry: a record written by any Kafka
/// client must never crash its subscribers.
fn expiry_of(record: &ConsumedRecord) -> Option<SystemTime> {
    let secs = std::str::from_utf8(record.header(EXPIRY_HEADER)?)
        .ok()?
        .parse::<u32>()
        .ok()?;
    let ts = u64::try_from(record.timestamp?).ok()?;
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ts))?
        .checked_add(Duration::from_secs(u64::from(secs)))
}

/// A message ready to be delivered to subscribers.
#[derive(Debug, Clone)]
pub struct Message {
    /// MQTT topic name it is delivered on.
    pub topic: String,
    /// Payload (a Kafka tombstone is an empty payload).
    pub payload: Bytes,
    /// The QoS it was published with: deliveries use at most this.
    pub qos: QoS,
    /// It was published with the retain flag.
    pub retain: bool,
    /// Kafka headers (the `barnabas.mqtt.*` ones become the matching v5 properties).
    pub headers: Vec<Header>,
    /// Client id of the MQTT publisher, if it came from one (v5 No Local).
    pub origin_client: Option<String>,
    /// When it expires (v5 Message Expiry Interval), if it does.
    pub expires_at: Option<SystemTime>,
}

impl Message {
    /// The message a record read from Kafka carries: the MQTT topic from its topic header,
    /// else the mapping rules read backwards; `None` when no MQTT topic can be told. With
    /// `kafka_metadata` (`mqtt.kafka_metadata`), v5 deliveries also carry the record's Kafka
    /// topic, partition, offset, timestamp and key as `barnabas.kafka.*` user properties; off
    /// by default, so that a subscriber gets the user properties as published and nothing
    /// more [MQTT-3.3.2-17/18].
    pub fn from_record(
        record: &ConsumedRecord,
        mapper: &TopicMapper,
        kafka_metadata: bool,
    ) -> Option<Self> {
        let topic = match record.header(TOPIC_HEADER) {
            Some(t) => std::str::from_utf8(t).ok()?.to_owned(),
            None => mapper.reverse(&record.topic, record.key.as_deref())?,
        };
        let qos = match record.header(QOS_HEADER).map(|q| q.as_ref()) {
            Some(b"0") => QoS::AtMostOnce,
            Some(b"1") => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let expires_at = expiry_of(record);
        let origin_client = record
            .header(CLIENT_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned);
        let mut headers = record.headers.clone();
        if kafka_metadata {
            push_kafka_metadata(&mut headers, record);
        }
        Some(Self {
            topic,
            payload: record.value.clone().unwrap_or_default(),
            qos,
            retain: record.header(RETAIN_HEADER).is_some(),
            headers,
            origin_client,
            expires_at,
        })
    }
    /// Seconds left before it expires: `Some(None)` = no expiry, `None` = expired.
    pub fn remaining(&self) -> Option<Option<NonZeroU32>> {
        let Some(at) = self.expires_at else {
            return Some(None);
        };
        let left = at.duration_since(SystemTime::now()).ok()?.as_secs();
        Some(Some(
            NonZeroU32::new(u32::try_from(left).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN),
        ))
    }

    /// The PUBLISH for one subscriber.
    pub fn to_publish(
        &self,
        qos: QoS,
        packet_id: Option<NonZeroU16>,
        retain: bool,
        subscription_ids: Vec<NonZeroU32>,
        v5: bool,
    ) -> Publish {
        Publish {
            dup: false,
            retain,
            qos,
            topic: self.topic.as_str().into(),
            packet_id,
            payload: self.payload.clone(),
            properties: v5.then(|| self.properties(subscription_ids)),
        }
    }

    fn properties(&self, subscription_ids: Vec<NonZeroU32>) -> PublishProperties {
        let mut props = PublishProperties {
            subscription_ids,
            message_expiry_interval: self.remaining().flatten(),
            ..PublishProperties::default()
        };
        for h in &self.headers {
            let Some(value) = &h.value else { continue };
            let text = || std::str::from_utf8(value).ok();
            match h.key.as_str() {
                TOPIC_HEADER | QOS_HEADER | RETAIN_HEADER | CLIENT_HEADER | EXPIRY_HEADER => {}
                PAYLOAD_FORMAT_HEADER => props.is_utf8_payload = value.as_ref() == b"1",
                CONTENT_TYPE => props.content_type = text().map(Into::into),
                RESPONSE_TOPIC => props.response_topic = text().map(Into::into),
                CORRELATION_DATA => props.correlation_data = Some(value.clone()),
                key => {
                    if let Some(v) = text() {
                        props.user_properties.push((key.into(), v.into()));
                    }
                }
            }
        }
        props
    }
}

/// The record's place in Kafka as `barnabas.kafka.*` headers (see [`Message::from_record`]).
fn push_kafka_metadata(headers: &mut Vec<Header>, record: &ConsumedRecord) {
    headers.push(Header::new("barnabas.kafka.topic", record.topic.clone()));
    headers.push(Header::new(
        "barnabas.kafka.partition",
        record.partition.to_string(),
    ));
    headers.push(Header::new(
        "barnabas.kafka.offset",
        record.offset.to_string(),
    ));
    if let Some(ts) = record.timestamp {
        headers.push(Header::new("barnabas.kafka.timestamp", ts.to_string()));
    }
    if let Some(key) = &record.key {
        headers.push(Header::new("barnabas.kafka.key", key.clone()));
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn record(expiry: &str, timestamp: Option<i64>) -> ConsumedRecord {
        ConsumedRecord {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                Header::new(TOPIC_HEADER, "a/b"),
                Header::new(EXPIRY_HEADER, expiry.to_owned()),
            ],
        }
    }

    /// Issue 20: a forged or absurd expiry header (from any Kafka writer) is no expiry, never
    /// a panic.
    #[test]
    fn an_absurd_expiry_header_is_no_expiry() {
        let mapper = TopicMapper::new(&[], "mqtt").expect("mapper");
        for (expiry, ts) in [
            ("18446744073709551615", Some(1)),
            ("4294967296", Some(1)),
            ("-5", Some(1)),
            ("x", Some(1)),
            ("60", Some(-1)),
            ("60", None),
        ] {
            let m = Message::from_record(&record(expiry, ts), &mapper, false).expect("message");
            assert!(m.expires_at.is_none(), "{expiry} at {ts:?}");
            assert_eq!(m.remaining(), Some(None));
        }
        // The largest timestamp and expiry Kafka and MQTT allow: far away, but no panic.
        let m = Message::from_record(&record("4294967295", Some(i64::MAX)), &mapper, false)
            .expect("message");
        assert!(m.remaining().is_some());
    }

    #[test]
    fn the_gateway_namespace_is_reserved_in_any_case() {
        assert!(is_reserved("barnabas.mqtt.message_expiry"));
        assert!(is_reserved("BARNABAS.x"));
        assert!(!is_reserved("barnabas"));
        assert!(!is_reserved("unit"));
        assert!(!is_reserved("é"));
    }
}
