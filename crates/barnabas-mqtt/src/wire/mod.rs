//! The codec layer: the MQTT connection framed with rmqtt-codec (version sniffed from the
//! first CONNECT), its 3.1.1 and 5.0 packets turned into the version-neutral ones of
//! [`crate::packet`] (`v3.rs`, `v5.rs`) and back. The only module that names the codec.

use std::num::NonZeroU16;

use barnabas_core::AuthError;
use futures::{SinkExt, StreamExt};
use rmqtt_codec::{
    error::DecodeError,
    types::{Publish as CodecPublish, QoS},
    v3, v5,
    version::{ProtocolVersion, VersionCodec},
    MqttCodec, MqttPacket,
};

use crate::packet::{
    Ack, ConnectInfo, DisconnectReason, Inbound, PubReason, Publish, SubscribeResult, Version,
    TOPIC_ALIAS_MAX,
};

mod v3_packets;
mod v5_packets;
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

impl WireError {
    /// A packet above the size limit (v5 DISCONNECT 0x95 rather than 0x81).
    pub fn is_too_large(&self) -> bool {
        matches!(self, WireError::Decode(DecodeError::MaxSizeExceeded { .. }))
    }
}

/// A PUBLISH from the codec as ours.
fn publish_in(p: CodecPublish) -> Publish {
    Publish {
        dup: p.dup,
        retain: p.retain,
        qos: p.qos,
        topic: p.topic,
        packet_id: p.packet_id,
        payload: p.payload,
        properties: p.properties.map(v5_packets::properties_in),
    }
}

/// Ours as the codec's, to encode; `pub(crate)` for the size tests that encode one.
pub(crate) fn publish_out(p: Publish) -> CodecPublish {
    CodecPublish {
        dup: p.dup,
        retain: p.retain,
        qos: p.qos,
        topic: p.topic,
        packet_id: p.packet_id,
        payload: p.payload,
        properties: p.properties.map(v5_packets::properties_out),
    }
}

/// One client connection.
pub struct Connection<T> {
    framed: Framed<T, MqttCodec>,
    version: Version,
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
    let (version, codec) = match version {
        ProtocolVersion::MQTT3 => (Version::V3, MqttCodec::V3(v3::Codec::new(max_packet))),
        ProtocolVersion::MQTT5 => (Version::V5, MqttCodec::V5(v5::Codec::new(max_packet, 0))),
    };
    // The bytes read so far stay: the CONNECT is decoded from them by the version's codec.
    let sniffed = sniffing.into_parts();
    let mut parts = FramedParts::new(sniffed.io, codec);
    parts.read_buf = sniffed.read_buf;
    parts.write_buf = sniffed.write_buf;
    let mut framed = Framed::from_parts(parts);
    let info = match framed.next().await {
        Some(Ok((MqttPacket::V3(v3::Packet::Connect(c)), _))) => v3_packets::connect_info(*c),
        Some(Ok((MqttPacket::V5(v5::Packet::Connect(c)), _))) => v5_packets::connect_info(*c),
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
    pub fn version(&self) -> Version {
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
            MqttPacket::V3(p) => v3_packets::inbound(p),
            MqttPacket::V5(p) => v5_packets::inbound(p),
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
            Version::V3 => MqttPacket::V3(v3::Packet::ConnectAck(v3::ConnectAck {
                return_code: v3::ConnectAckReason::ConnectionAccepted,
                session_present,
            })),
            Version::V5 => MqttPacket::V5(v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
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
            }))),
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
        if self.version != Version::V5 {
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
            Version::V3 => MqttPacket::V3(v3::Packet::ConnectAck(v3::ConnectAck {
                return_code: v3_reason,
                session_present: false,
            })),
            Version::V5 => MqttPacket::V5(v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                reason_code: v5_reason,
                ..v5::ConnectAck::default()
            }))),
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
            Version::V3 if qos2 => MqttPacket::V3(v3::Packet::PublishReceived { packet_id }),
            Version::V3 => MqttPacket::V3(v3::Packet::PublishAck { packet_id }),
            Version::V5 => {
                let ack = v5_packets::puback(packet_id, reason);
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
            Version::V3 => MqttPacket::V3(v3::Packet::PublishComplete { packet_id }),
            Version::V5 => MqttPacket::V5(v5::Packet::PublishComplete(v5_packets::ack2(
                packet_id, known,
            ))),
        };
        self.send(packet).await
    }

    /// PINGRESP.
    pub async fn pong(&mut self) -> Result<(), WireError> {
        let packet = match self.version {
            Version::V3 => MqttPacket::V3(v3::Packet::PingResponse),
            Version::V5 => MqttPacket::V5(v5::Packet::PingResponse),
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
            Version::V3 => v3_packets::suback(packet_id, results),
            Version::V5 => v5_packets::suback(packet_id, results),
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
            Version::V3 => MqttPacket::V3(v3::Packet::UnsubscribeAck { packet_id }),
            Version::V5 => v5_packets::unsuback(packet_id, existed),
        };
        self.send(packet).await
    }

    /// A PUBLISH to the client.
    pub async fn publish(&mut self, publish: Publish) -> Result<(), WireError> {
        let packet = match self.version {
            Version::V3 => MqttPacket::V3(v3::Packet::Publish(Box::new(publish_out(publish)))),
            Version::V5 => MqttPacket::V5(v5::Packet::Publish(Box::new(publish_out(publish)))),
        };
        self.send(packet).await
    }

    /// PUBREL answering the client's PUBREC; `known` = false answers v5 0x92.
    pub async fn pubrel(&mut self, packet_id: NonZeroU16, known: bool) -> Result<(), WireError> {
        let packet = match self.version {
            Version::V3 => MqttPacket::V3(v3::Packet::PublishRelease { packet_id }),
            Version::V5 => MqttPacket::V5(v5::Packet::PublishRelease(v5_packets::ack2(
                packet_id, known,
            ))),
        };
        self.send(packet).await
    }

    /// v5 DISCONNECT with a reason before the server closes; nothing for v3.
    pub async fn disconnect(&mut self, reason: DisconnectReason) {
        if self.version == Version::V5 {
            let packet = MqttPacket::V5(v5::Packet::Disconnect(v5::Disconnect {
                reason_code: v5_packets::disconnect_reason(reason),
                session_expiry_interval_secs: None,
                server_reference: None,
                reason_string: None,
                user_properties: Vec::new(),
            }));
            let _ = self.send(packet).await;
        }
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
