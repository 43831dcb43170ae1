//! The packets the session handles, version-neutral and apart from the codec (as rumqttd's
//! own packet types stand apart from its v4/v5 codecs): [`crate::wire`] turns rmqtt-codec's
//! 3.1.1 and 5.0 packets into these and back, so the session, the subscriptions and the
//! MQTT ↔ Kafka mapping are written once, and nothing outside `wire` names the codec.

use std::num::{NonZeroU16, NonZeroU32};

use barnabas_core::Principal;
use bytes::Bytes;
use bytestring::ByteString;

/// Quality of service: the same three levels in every version, so the codec's plain enum
/// serves as it is.
pub use rmqtt_codec::types::QoS;

/// The protocol level a client connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1 or 3.1.1.
    V3,
    /// MQTT 5.0.
    V5,
}

/// A PUBLISH, either way: from a client, or to a subscriber.
#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    /// A re-delivery of an earlier attempt.
    pub dup: bool,
    /// The retain flag.
    pub retain: bool,
    /// QoS.
    pub qos: QoS,
    /// MQTT topic (empty when a v5 topic alias stands for it).
    pub topic: ByteString,
    /// Packet id, for QoS 1 and 2.
    pub packet_id: Option<NonZeroU16>,
    /// Payload.
    pub payload: Bytes,
    /// v5 properties (`None` on a 3.1.1 connection).
    pub properties: Option<PublishProperties>,
}

impl std::fmt::Debug for Publish {
    /// The payload stays out of logs (it is the client's data).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publish")
            .field("packet_id", &self.packet_id)
            .field("topic", &self.topic)
            .field("dup", &self.dup)
            .field("retain", &self.retain)
            .field("qos", &self.qos)
            .field("payload_len", &self.payload.len())
            .field("properties", &self.properties)
            .finish()
    }
}

/// A v5 PUBLISH's properties (3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Topic Alias.
    pub topic_alias: Option<NonZeroU16>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// Message Expiry Interval in seconds.
    pub message_expiry_interval: Option<NonZeroU32>,
    /// Content Type.
    pub content_type: Option<ByteString>,
    /// User Properties, in order (a name may repeat).
    pub user_properties: Vec<(ByteString, ByteString)>,
    /// Payload Format Indicator 1: the payload is UTF-8.
    pub is_utf8_payload: bool,
    /// Response Topic.
    pub response_topic: Option<ByteString>,
    /// Subscription Identifiers (towards a subscriber).
    pub subscription_ids: Vec<NonZeroU32>,
}

/// Why a CONNECT is refused (its CONNACK code, 3.2.2.3 / 3.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An empty client id with a persistent session (v3 2, v5 0x85).
    IdentifierRejected,
    /// Credentials that do not check out (v3 4, v5 0x86).
    BadCredentials,
    /// No credentials where they are required, or a client id another principal holds (v3
    /// 5, v5 0x87).
    NotAuthorized,
    /// `limits.max_connections` reached, or too many password checks at once: the client
    /// may retry (v3 3, v5 0x89).
    ServerBusy,
    /// No room for another session (`limits.max_sessions`; v3 3, v5 0x97).
    QuotaExceeded,
    /// A will above `limits.max_message_bytes` (v5 0x95; 3.1.1 has no code for it).
    PacketTooLarge,
}

impl From<barnabas_core::AuthError> for Refusal {
    fn from(e: barnabas_core::AuthError) -> Self {
        match e {
            barnabas_core::AuthError::BadCredentials => Refusal::BadCredentials,
            barnabas_core::AuthError::NotAuthorized => Refusal::NotAuthorized,
            barnabas_core::AuthError::Busy => Refusal::ServerBusy,
        }
    }
}

/// Why the server closes a v5 connection (its DISCONNECT reason, 3.14.2.1); a 3.1.1
/// connection is closed without a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// 0x81.
    MalformedPacket,
    /// 0x82.
    ProtocolError,
    /// 0x87.
    NotAuthorized,
    /// 0x8B.
    ServerShuttingDown,
    /// 0x8D.
    KeepAliveTimeout,
    /// 0x8E.
    SessionTakenOver,
    /// 0x94.
    TopicAliasInvalid,
    /// 0x95.
    PacketTooLarge,
}

/// What the client said in CONNECT, whatever its version.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    /// 3.1.1 or 5.0.
    pub version: Version,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// v3 clean session / v5 clean start.
    pub clean: bool,
    /// Keep-alive in seconds (0 = none).
    pub keep_alive: u16,
    /// The last will, to publish on an abnormal close (boxed: most clients have none, and
    /// the session keeps this for the whole connection).
    pub will: Option<Box<Will>>,
    /// v5 Receive Maximum of the client: its window for our QoS 1/2 deliveries.
    pub receive_max: Option<NonZeroU16>,
    /// v5 Session Expiry Interval in seconds (0 = the session ends with the connection).
    pub session_expiry: u32,
    /// v5 Maximum Packet Size the client accepts.
    pub max_packet: Option<u32>,
    /// v5 Topic Alias Maximum of the client: how many topic aliases we may set towards it
    /// (0 = none) [MQTT-3.1.2-26].
    pub topic_alias_max: u16,
    /// CONNECT user name.
    pub username: Option<String>,
    /// CONNECT password.
    pub password: Option<Bytes>,
    /// Who the client is, once authenticated (anonymous until then).
    pub principal: Principal,
}

impl ConnectInfo {
    /// Whether the client speaks MQTT 5.0.
    pub fn is_v5(&self) -> bool {
        self.version == Version::V5
    }
}

/// A last will.
#[derive(Debug, Clone)]
pub struct Will {
    /// MQTT topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// v5 will properties as Kafka headers, in the shape [`crate::convert::property_headers`] gives a
    /// publish's: user properties in order, then payload format indicator, content type,
    /// response topic, correlation data and message expiry under `barnabas.mqtt.*`, so that
    /// subscribers get the will with the properties it was set with (3.1.3.2).
    pub headers: Vec<(String, Bytes)>,
    /// QoS of the will message.
    pub qos: QoS,
    /// Retain flag of the will message.
    pub retain: bool,
    /// v5 Will Delay Interval in seconds.
    pub delay_secs: u32,
}

/// An inbound packet after CONNECT.
#[derive(Debug)]
pub enum Inbound {
    /// PUBLISH.
    Publish(Box<Publish>),
    /// PUBREL for a QoS 2 publish.
    PubRel(NonZeroU16),
    /// SUBSCRIBE.
    Subscribe(SubscribePacket),
    /// UNSUBSCRIBE (packet id, filters).
    Unsubscribe(NonZeroU16, Vec<String>),
    /// PUBACK for a QoS 1 delivery.
    PubAck(NonZeroU16),
    /// PUBREC for a QoS 2 delivery.
    PubRec(NonZeroU16),
    /// PUBCOMP ending a QoS 2 delivery.
    PubComp(NonZeroU16),
    /// PINGREQ.
    Ping,
    /// DISCONNECT.
    Disconnect {
        /// A v5 client asked for its will to be published (reason 0x04).
        with_will: bool,
        /// A v5 client's new Session Expiry Interval.
        session_expiry: Option<u32>,
    },
    /// Anything a client should not send (CONNECT again, server-side packets).
    ProtocolError,
    /// Packets without effect here (a v5 AUTH is refused elsewhere).
    Ignored,
}

/// A SUBSCRIBE, whatever its version.
#[derive(Debug)]
pub struct SubscribePacket {
    /// Packet id for the SUBACK.
    pub packet_id: NonZeroU16,
    /// v5 Subscription Identifier.
    pub id: Option<std::num::NonZeroU32>,
    /// The filters and their options.
    pub requests: Vec<SubscribeRequest>,
}

/// What one SUBSCRIBE filter asked for.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    /// The filter as sent.
    pub raw: String,
    /// Requested QoS.
    pub qos: QoS,
    /// v5 No Local: not the client's own publishes.
    pub no_local: bool,
    /// v5 Retain As Published.
    pub retain_as_published: bool,
    /// v5 Retain Handling (0 send, 1 send if new, 2 do not send).
    pub retain_handling: u8,
}

/// The answer to one SUBSCRIBE filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeResult {
    /// Granted at this QoS.
    Granted(QoS),
    /// Not a valid filter (v5 0x8F).
    InvalidFilter,
    /// Kafka could not be reached to set it up (v5 0x80).
    Failed,
    /// The principal may not read a topic the filter maps to (v5 0x87, v3 0x80).
    NotAuthorized,
    /// The client holds `limits.max_subscriptions` filters already (v5 0x97, v3 0x80).
    QuotaExceeded,
}

/// Topic Alias Maximum we offer v5 clients (CONNACK); a PUBLISH naming a higher alias is
/// refused (0x94).
pub const TOPIC_ALIAS_MAX: u16 = 32;

/// The answer a QoS 1 or QoS 2 PUBLISH waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// QoS 1: PUBACK.
    PubAck(NonZeroU16),
    /// QoS 2: PUBREC (PUBREL and PUBCOMP follow).
    PubRec(NonZeroU16),
}

/// The outcome of a publish, for its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubReason {
    /// Written to Kafka.
    Success,
    /// No topic mapping and no default topic, or a mapped name Kafka cannot hold (0x90).
    TopicNameInvalid,
    /// Kafka is overloaded (0x97).
    QuotaExceeded,
    /// Kafka refused or did not answer (0x80).
    Unspecified,
    /// Not allowed (0x87).
    NotAuthorized,
}
