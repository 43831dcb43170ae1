//! The MQTT connection: framing with rmqtt-codec (version sniffed from the first CONNECT),
//! and a version-neutral view of the packets the session handles, so the session is written
//! once for 3.1.1 and 5.0.

use std::num::NonZeroU16;

use barnabas_core::{AuthError, Principal};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rmqtt_codec::{
    error::DecodeError,
    types::{Publish, QoS},
    v3, v5,
    version::{ProtocolVersion, VersionCodec},
    MqttCodec, MqttPacket,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Framed, FramedParts};

/// Why a connection ends from the wire's side.
#[derive(Debug)]
pub enum WireError {
    /// The peer closed the connection.
    Closed,
    /// Bytes that are not MQTT, or a packet above the size limit.
    Decode(DecodeError),
    /// Writing failed (the peer is gone).
    Io(String),
}

/// What the client said in CONNECT, whatever its version.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    /// 3 (3.1/3.1.1) or 5.
    pub version: ProtocolVersion,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// v3 clean session / v5 clean start.
    pub clean: bool,
    /// Keep-alive in seconds (0 = none).
    pub keep_alive: u16,
    /// The last will, to publish on an abnormal close.
    pub will: Option<Will>,
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

/// One client connection.
pub struct Connection<T> {
    framed: Framed<T, MqttCodec>,
    version: ProtocolVersion,
}

/// The first packet's version sniffer, which also refuses a first packet whose declared
/// length is above `max_packet` as soon as its fixed header is in. rmqtt-codec's sniffer waits
/// for the protocol name first, so a client that announced a 256 MB packet and sent nothing
/// more held its connection until the handshake deadline.
struct FirstPacket {
    max_packet: u32,
}

impl Decoder for FirstPacket {
    type Item = ProtocolVersion;
    type Error = DecodeError;

    fn decode(
        &mut self,
        src: &mut bytes::BytesMut,
    ) -> Result<Option<ProtocolVersion>, DecodeError> {
        if let Some(size) = declared_length(src) {
            if size > self.max_packet {
                return Err(DecodeError::MaxSizeExceeded {
                    size,
                    max: self.max_packet,
                });
            }
        }
        VersionCodec.decode(src)
    }
}

/// The remaining length a fixed header declares, once its bytes are in (`None` before, and
/// for a length of more than four bytes, which the codec refuses as malformed).
fn declared_length(packet: &[u8]) -> Option<u32> {
    let mut length = 0u32;
    for (i, byte) in packet.get(1..)?.iter().take(4).enumerate() {
        length |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(length);
        }
    }
    None
}

/// Reads the CONNECT (the caller bounds this with the handshake deadline).
pub async fn accept<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    max_packet: u32,
) -> Result<(Connection<T>, ConnectInfo), WireError> {
    let mut sniffing = Framed::new(io, FirstPacket { max_packet });
    let version = match sniffing.next().await {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(WireError::Decode(e)),
        None => return Err(WireError::Closed),
    };
    let codec = match version {
        ProtocolVersion::MQTT3 => MqttCodec::V3(v3::Codec::new(max_packet)),
        ProtocolVersion::MQTT5 => MqttCodec::V5(v5::Codec::new(max_packet, 0)),
    };
    // The bytes read so far stay: the CONNECT is decoded from them by the version's codec.
    let sniffed = sniffing.into_parts();
    let mut parts = FramedParts::new(sniffed.io, codec);
    parts.read_buf = sniffed.read_buf;
    parts.write_buf = sniffed.write_buf;
    let mut framed = Framed::from_parts(parts);
    let info = match framed.next().await {
        Some(Ok((MqttPacket::V3(v3::Packet::Connect(c)), _))) => ConnectInfo {
            version,
            client_id: c.client_id.to_string(),
            clean: c.clean_session,
            keep_alive: c.keep_alive,
            will: c.last_will.map(|w| Will {
                topic: w.topic.to_string(),
                payload: w.message,
                headers: Vec::new(),
                qos: w.qos,
                retain: w.retain,
                delay_secs: 0,
            }),
            receive_max: None,
            session_expiry: if c.clean_session { 0 } else { u32::MAX },
            max_packet: None,
            topic_alias_max: 0,
            username: c.username.map(|u| u.to_string()),
            password: c.password,
            principal: Principal::anonymous(),
        },
        Some(Ok((MqttPacket::V5(v5::Packet::Connect(c)), _))) => ConnectInfo {
            version,
            client_id: c.client_id.to_string(),
            clean: c.clean_start,
            keep_alive: c.keep_alive,
            will: c.last_will.map(|w| Will {
                topic: w.topic.to_string(),
                payload: w.message,
                headers: crate::convert::v5_headers(&crate::convert::V5Properties {
                    user_properties: &w.user_properties,
                    is_utf8_payload: w.is_utf8_payload.unwrap_or(false),
                    content_type: w.content_type.as_deref(),
                    response_topic: w.response_topic.as_deref(),
                    correlation_data: w.correlation_data.as_ref(),
                    message_expiry: w.message_expiry_interval,
                }),
                qos: w.qos,
                retain: w.retain,
                delay_secs: w.will_delay_interval_sec.unwrap_or(0),
            }),
            receive_max: c.receive_max,
            session_expiry: c.session_expiry_interval_secs,
            max_packet: c.max_packet_size.map(std::num::NonZeroU32::get),
            topic_alias_max: c.topic_alias_max,
            username: c.username.map(|u| u.to_string()),
            password: c.password,
            principal: Principal::anonymous(),
        },
        Some(Ok(_)) => return Err(WireError::Decode(DecodeError::UnsupportedPacketType)),
        Some(Err(DecodeError::InvalidClientId)) => {
            // The codec refuses a 3.1.1 CONNECT with an empty client id and CleanSession 0;
            // the client must still get CONNACK 0x02 (identifier rejected) before the
            // connection closes [MQTT-3.1.3-9].
            let mut conn = Connection { framed, version };
            let _ = conn.connack_identifier_rejected().await;
            return Err(WireError::Decode(DecodeError::InvalidClientId));
        }
        Some(Err(e)) => return Err(WireError::Decode(e)),
        None => return Err(WireError::Closed),
    };
    Ok((Connection { framed, version }, info))
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// The protocol version of this connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Gives back the read and write buffers when nothing is in them. `Framed` starts each
    /// with 8 KiB, so an idle connection held 16 KiB of empty buffers; a released buffer grows
    /// again, doubling, from the next packet's first bytes (issue 26: 10 000 idle
    /// connections). A busy connection never empties them between packets for long, so this
    /// is called once the handshake is over, not per packet.
    pub fn release_empty_buffers(&mut self) {
        if self.framed.read_buffer().is_empty() {
            *self.framed.read_buffer_mut() = bytes::BytesMut::new();
        }
        if self.framed.write_buffer().is_empty() {
            *self.framed.write_buffer_mut() = bytes::BytesMut::new();
        }
    }

    async fn send(&mut self, packet: MqttPacket) -> Result<(), WireError> {
        self.framed
            .send(packet)
            .await
            .map_err(|e| WireError::Io(e.to_string()))
    }

    /// The next packet; `Err(Closed)` at EOF.
    pub async fn next(&mut self) -> Result<Inbound, WireError> {
        let (packet, _) = match self.framed.next().await {
            Some(Ok(p)) => p,
            Some(Err(e)) => return Err(WireError::Decode(e)),
            None => return Err(WireError::Closed),
        };
        Ok(match packet {
            MqttPacket::V3(p) => match p {
                v3::Packet::Publish(p) => Inbound::Publish(p),
                v3::Packet::PublishRelease { packet_id } => Inbound::PubRel(packet_id),
                v3::Packet::Subscribe {
                    packet_id,
                    topic_filters,
                } => Inbound::Subscribe(SubscribePacket {
                    packet_id,
                    id: None,
                    requests: topic_filters
                        .into_iter()
                        .map(|(f, qos)| SubscribeRequest {
                            raw: f.to_string(),
                            qos,
                            no_local: false,
                            retain_as_published: false,
                            retain_handling: 0,
                        })
                        .collect(),
                }),
                v3::Packet::Unsubscribe {
                    packet_id,
                    topic_filters,
                } => Inbound::Unsubscribe(
                    packet_id,
                    topic_filters.iter().map(ToString::to_string).collect(),
                ),
                v3::Packet::PingRequest => Inbound::Ping,
                v3::Packet::Disconnect => Inbound::Disconnect {
                    with_will: false,
                    session_expiry: None,
                },
                v3::Packet::PublishAck { packet_id } => Inbound::PubAck(packet_id),
                v3::Packet::PublishReceived { packet_id } => Inbound::PubRec(packet_id),
                v3::Packet::PublishComplete { packet_id } => Inbound::PubComp(packet_id),
                _ => Inbound::ProtocolError,
            },
            MqttPacket::V5(p) => match p {
                v5::Packet::Publish(p) => Inbound::Publish(p),
                v5::Packet::PublishRelease(ack) => Inbound::PubRel(ack.packet_id),
                v5::Packet::Subscribe(s) => Inbound::Subscribe(SubscribePacket {
                    packet_id: s.packet_id,
                    id: s.id,
                    requests: s
                        .topic_filters
                        .into_iter()
                        .map(|(f, o)| SubscribeRequest {
                            raw: f.to_string(),
                            qos: o.qos,
                            no_local: o.no_local,
                            retain_as_published: o.retain_as_published,
                            retain_handling: u8::from(o.retain_handling),
                        })
                        .collect(),
                }),
                v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe(
                    u.packet_id,
                    u.topic_filters.iter().map(ToString::to_string).collect(),
                ),
                v5::Packet::PingRequest => Inbound::Ping,
                v5::Packet::Disconnect(d) => Inbound::Disconnect {
                    with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
                    session_expiry: d.session_expiry_interval_secs,
                },
                v5::Packet::PublishAck(a) => Inbound::PubAck(a.packet_id),
                v5::Packet::PublishReceived(a) => Inbound::PubRec(a.packet_id),
                v5::Packet::PublishComplete(a) => Inbound::PubComp(a.packet_id),
                _ => Inbound::ProtocolError,
            },
            MqttPacket::Version(_) => Inbound::ProtocolError,
        })
    }

    /// CONNACK accepting the connection; `server_keep_alive` is the v5 Server Keep Alive
    /// the client must use instead of its own [MQTT-3.2.2-21] (3.1.1 has no such field).
    pub async fn connack_ok(
        &mut self,
        assigned_id: Option<String>,
        receive_max: u16,
        max_packet: u32,
        session_present: bool,
        server_keep_alive: Option<u16>,
    ) -> Result<(), WireError> {
        let packet = match self.version {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::ConnectAck(v3::ConnectAck {
                return_code: v3::ConnectAckReason::ConnectionAccepted,
                session_present,
            })),
            ProtocolVersion::MQTT5 => {
                MqttPacket::V5(v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                    session_present,
                    reason_code: v5::ConnectAckReason::Success,
                    receive_max: NonZeroU16::new(receive_max).unwrap_or(NonZeroU16::MIN),
                    max_qos: QoS::ExactlyOnce,
                    max_packet_size: Some(max_packet),
                    assigned_client_id: assigned_id.map(Into::into),
                    topic_alias_max: TOPIC_ALIAS_MAX,
                    retain_available: true,
                    wildcard_subscription_available: true,
                    subscription_identifiers_available: true,
                    shared_subscription_available: true,
                    server_keepalive_sec: server_keep_alive,
                    ..v5::ConnectAck::default()
                })))
            }
        };
        self.send(packet).await
    }

    /// CONNACK refusing an empty client id with a persistent session (v3 code 2, v5 0x85).
    pub async fn connack_identifier_rejected(&mut self) -> Result<(), WireError> {
        self.connack_refusal(
            v3::ConnectAckReason::IdentifierRejected,
            v5::ConnectAckReason::ClientIdentifierNotValid,
        )
        .await
    }

    /// CONNACK "server busy" (`limits.max_connections` reached): v3 code 3 (server
    /// unavailable) / v5 0x89 (server busy).
    pub async fn connack_busy(&mut self) -> Result<(), WireError> {
        self.connack_refusal(
            v3::ConnectAckReason::ServiceUnavailable,
            v5::ConnectAckReason::ServerBusy,
        )
        .await
    }

    /// CONNACK refusing a session the gateway has no room for (`limits.max_sessions`): v3
    /// code 3 (server unavailable) / v5 0x97 (quota exceeded).
    pub async fn connack_quota_exceeded(&mut self) -> Result<(), WireError> {
        self.connack_refusal(
            v3::ConnectAckReason::ServiceUnavailable,
            v5::ConnectAckReason::QuotaExceeded,
        )
        .await
    }

    /// v5 CONNACK 0x95 for a will above `limits.max_message_bytes`; 3.1.1 has no such code
    /// (the connection is closed without an answer, as for an oversized PUBLISH).
    pub async fn connack_packet_too_large(&mut self) -> Result<(), WireError> {
        if self.version != ProtocolVersion::MQTT5 {
            return Ok(());
        }
        self.connack_refusal(
            v3::ConnectAckReason::ServiceUnavailable,
            v5::ConnectAckReason::PacketTooLarge,
        )
        .await
    }

    /// CONNACK refusing the credentials: v3 code 4 / v5 0x86 for bad ones, v3 5 / v5 0x87
    /// when they are missing.
    pub async fn connack_refused(&mut self, error: AuthError) -> Result<(), WireError> {
        match error {
            AuthError::BadCredentials => {
                self.connack_refusal(
                    v3::ConnectAckReason::BadUserNameOrPassword,
                    v5::ConnectAckReason::BadUserNameOrPassword,
                )
                .await
            }
            AuthError::NotAuthorized => {
                self.connack_refusal(
                    v3::ConnectAckReason::NotAuthorized,
                    v5::ConnectAckReason::NotAuthorized,
                )
                .await
            }
            // Too many password checks at once: "server busy", the client may retry.
            AuthError::Busy => {
                self.connack_refusal(
                    v3::ConnectAckReason::ServiceUnavailable,
                    v5::ConnectAckReason::ServerBusy,
                )
                .await
            }
        }
    }

    /// A CONNACK refusing the connection, with the reason of the client's protocol version.
    async fn connack_refusal(
        &mut self,
        v3_reason: v3::ConnectAckReason,
        v5_reason: v5::ConnectAckReason,
    ) -> Result<(), WireError> {
        let packet = match self.version {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::ConnectAck(v3::ConnectAck {
                return_code: v3_reason,
                session_present: false,
            })),
            ProtocolVersion::MQTT5 => {
                MqttPacket::V5(v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                    reason_code: v5_reason,
                    ..v5::ConnectAck::default()
                })))
            }
        };
        self.send(packet).await
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2). v3 has no negative acks: the caller closes instead.
    pub async fn ack(&mut self, ack: Ack, reason: PubReason) -> Result<(), WireError> {
        let (qos2, packet_id) = match ack {
            Ack::PubAck(id) => (false, id),
            Ack::PubRec(id) => (true, id),
        };
        let packet = match self.version {
            ProtocolVersion::MQTT3 if qos2 => {
                MqttPacket::V3(v3::Packet::PublishReceived { packet_id })
            }
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::PublishAck { packet_id }),
            ProtocolVersion::MQTT5 => {
                let ack = v5::PublishAck {
                    packet_id,
                    reason_code: match reason {
                        PubReason::Success => v5::PublishAckReason::Success,
                        PubReason::TopicNameInvalid => v5::PublishAckReason::TopicNameInvalid,
                        PubReason::QuotaExceeded => v5::PublishAckReason::QuotaExceeded,
                        PubReason::NotAuthorized => v5::PublishAckReason::NotAuthorized,
                        PubReason::Unspecified => v5::PublishAckReason::UnspecifiedError,
                    },
                    properties: Vec::new(),
                    reason_string: None,
                };
                MqttPacket::V5(if qos2 {
                    v5::Packet::PublishReceived(ack)
                } else {
                    v5::Packet::PublishAck(ack)
                })
            }
        };
        self.send(packet).await
    }

    /// PUBCOMP for a PUBREL; `known` = false answers v5 0x92 (packet id not found).
    pub async fn pubcomp(&mut self, packet_id: NonZeroU16, known: bool) -> Result<(), WireError> {
        let packet = match self.version {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::PublishComplete { packet_id }),
            ProtocolVersion::MQTT5 => {
                MqttPacket::V5(v5::Packet::PublishComplete(ack2(packet_id, known)))
            }
        };
        self.send(packet).await
    }

    /// PINGRESP.
    pub async fn pong(&mut self) -> Result<(), WireError> {
        let packet = match self.version {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::PingResponse),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::PingResponse),
        };
        self.send(packet).await
    }

    /// SUBACK with one code per filter (v3 has only "failure" for refusals).
    pub async fn suback(
        &mut self,
        packet_id: NonZeroU16,
        results: &[SubscribeResult],
    ) -> Result<(), WireError> {
        let packet = match self.version {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::SubscribeAck {
                packet_id,
                status: results
                    .iter()
                    .map(|r| match r {
                        SubscribeResult::Granted(q) => v3::SubscribeReturnCode::Success(*q),
                        _ => v3::SubscribeReturnCode::Failure,
                    })
                    .collect(),
            }),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::SubscribeAck(v5::SubscribeAck {
                packet_id,
                properties: Vec::new(),
                reason_string: None,
                status: results
                    .iter()
                    .map(|r| match r {
                        SubscribeResult::Granted(QoS::AtMostOnce) => {
                            v5::SubscribeAckReason::GrantedQos0
                        }
                        SubscribeResult::Granted(QoS::AtLeastOnce) => {
                            v5::SubscribeAckReason::GrantedQos1
                        }
                        SubscribeResult::Granted(QoS::ExactlyOnce) => {
                            v5::SubscribeAckReason::GrantedQos2
                        }
                        SubscribeResult::InvalidFilter => {
                            v5::SubscribeAckReason::TopicFilterInvalid
                        }
                        SubscribeResult::Failed => v5::SubscribeAckReason::UnspecifiedError,
                        SubscribeResult::NotAuthorized => v5::SubscribeAckReason::NotAuthorized,
                        SubscribeResult::QuotaExceeded => v5::SubscribeAckReason::QuotaExceeded,
                    })
                    .collect(),
            })),
        };
        self.send(packet).await
    }

    /// UNSUBACK; `existed` says per filter whether there was such a subscription (v5 codes).
    pub async fn unsuback(
        &mut self,
        packet_id: NonZeroU16,
        existed: &[bool],
    ) -> Result<(), WireError> {
        let packet = match self.version {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::UnsubscribeAck { packet_id }),
            ProtocolVersion::MQTT5 => {
                MqttPacket::V5(v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
                    packet_id,
                    properties: Vec::new(),
                    reason_string: None,
                    status: existed
                        .iter()
                        .map(|e| {
                            if *e {
                                v5::UnsubscribeAckReason::Success
                            } else {
                                v5::UnsubscribeAckReason::NoSubscriptionExisted
                            }
                        })
                        .collect(),
                }))
            }
        };
        self.send(packet).await
    }

    /// A PUBLISH to the client.
    pub async fn publish(&mut self, publish: Publish) -> Result<(), WireError> {
        let packet = match self.version {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::Publish(Box::new(publish))),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::Publish(Box::new(publish))),
        };
        self.send(packet).await
    }

    /// PUBREL answering the client's PUBREC; `known` = false answers v5 0x92.
    pub async fn pubrel(&mut self, packet_id: NonZeroU16, known: bool) -> Result<(), WireError> {
        let packet = match self.version {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::PublishRelease { packet_id }),
            ProtocolVersion::MQTT5 => {
                MqttPacket::V5(v5::Packet::PublishRelease(ack2(packet_id, known)))
            }
        };
        self.send(packet).await
    }

    /// v5 DISCONNECT with a reason before the server closes; nothing for v3.
    pub async fn disconnect(&mut self, reason: v5::DisconnectReasonCode) {
        if self.version == ProtocolVersion::MQTT5 {
            let packet = MqttPacket::V5(v5::Packet::Disconnect(v5::Disconnect {
                reason_code: reason,
                session_expiry_interval_secs: None,
                server_reference: None,
                reason_string: None,
                user_properties: Vec::new(),
            }));
            let _ = self.send(packet).await;
        }
    }
}

/// The v5 body of PUBREL and PUBCOMP: success, or 0x92 for a packet id not in flight.
fn ack2(packet_id: NonZeroU16, known: bool) -> v5::PublishAck2 {
    v5::PublishAck2 {
        packet_id,
        reason_code: if known {
            v5::PublishAck2Reason::Success
        } else {
            v5::PublishAck2Reason::PacketIdNotFound
        },
        properties: Vec::new(),
        reason_string: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_header_declares_its_remaining_length() {
        assert_eq!(declared_length(&[0x10]), None);
        assert_eq!(declared_length(&[0x10, 0x00]), Some(0));
        assert_eq!(declared_length(&[0x10, 0x7f]), Some(127));
        assert_eq!(declared_length(&[0x10, 0x80, 0x01]), Some(128));
        assert_eq!(declared_length(&[0x10, 0xff, 0xff]), None, "not all in yet");
        assert_eq!(
            declared_length(&[0x10, 0xff, 0xff, 0xff, 0x7f]),
            Some(268_435_455)
        );
        assert_eq!(declared_length(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]), None);
    }
}
