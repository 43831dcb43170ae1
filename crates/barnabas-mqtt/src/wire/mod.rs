//! The codec layer: the MQTT connection framed with rmqtt-codec (version sniffed from the
//! first CONNECT), its 3.1.1 and 5.0 packets turned into the version-neutral ones of
//! [`crate::packet`] (`v3_packets.rs`, `v5_packets.rs`) and back. The only module that names the codec.

use std::{future::Future, num::NonZeroU16};

use futures::{SinkExt, StreamExt};
use rmqtt_codec::{
    error::DecodeError,
    types::{Publish as CodecPublish, QoS},
    v3, v5,
    version::{ProtocolVersion, VersionCodec},
    MqttCodec, MqttPacket,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Encoder;
use tokio_util::codec::{Decoder, Framed, FramedParts};

use crate::packet::{
    Ack, ConnectInfo, DisconnectReason, Inbound, PubReason, Publish, Refusal, SubscribeResult,
    Version, TOPIC_ALIAS_MAX,
};

/// Builds a `$to` from the fields of the same names in `$from` (the codec's packets and
/// ours have them alike), plus fields already bound under their names: each conversion
/// lists its fields once.
macro_rules! move_fields {
    ($from:ident => $to:path { $($field:ident),* $(,)? } $(, $bound:ident)*) => {
        {
            $to { $($field: $from.$field,)* $($bound,)* }
        }
    };
}

mod v3_packets;
mod v5_packets;

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

/// A packet written, or why not (the peer is gone).
pub type Sent = Result<(), WireError>;

impl WireError {
    /// A packet above the size limit (v5 DISCONNECT 0x95 rather than 0x81).
    pub fn is_too_large(&self) -> bool {
        matches!(self, WireError::Decode(DecodeError::MaxSizeExceeded { .. }))
    }
}

/// A PUBLISH from the codec as ours.
fn publish_in(p: CodecPublish) -> Publish {
    let properties = p.properties.map(v5_packets::properties_in);
    move_fields!(p => Publish { dup, retain, qos, topic, packet_id, payload }, properties)
}

/// Ours as the codec's, to encode; `pub(crate)` for the size tests that encode one.
pub(crate) fn publish_out(p: Publish) -> CodecPublish {
    let properties = p.properties.map(v5_packets::properties_out);
    move_fields!(p => CodecPublish { dup, retain, qos, topic, packet_id, payload }, properties)
}

/// A copy of bytes the codec handed out as a slice of the read buffer, for what is kept
/// longer than a packet (a CONNECT's will and password, for the whole connection): a slice
/// would keep the whole buffer it came from — the handshake's 8 KiB; 7.4 KiB per idle
/// connection with a will and a password against 3.1 without (issue 26).
fn owned(bytes: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(bytes)
}

/// One client connection.
pub struct Connection<T> {
    framed: Framed<T, ReadAhead>,
    version: Version,
}

/// Spare room a streaming connection's read buffer is given before its next read.
const READ_AHEAD: usize = 4096;

/// The version's codec, and how the read buffer grows. `Framed` reserves one byte before each
/// read; a buffer given back after the handshake ([`Connection::release_empty_buffers`])
/// therefore read a packet's first byte alone and then exactly its rest: two `recv` calls and
/// an allocation per packet, 1.6 system calls per message under MQTT QoS 1 load (issue 26,
/// `perf record -e raw_syscalls:sys_enter`). Here the buffer gets [`READ_AHEAD`] bytes of room
/// when a packet is half in, or when the last read held more than one packet (the client
/// streams): one read then takes whatever the client has sent. A connection that sends a
/// packet now and then (an idle client's PINGREQ) keeps reading into a buffer of its size.
struct ReadAhead {
    codec: MqttCodec,
    /// Packets decoded since the last read.
    decoded: u8,
}

impl Decoder for ReadAhead {
    type Item = <MqttCodec as Decoder>::Item;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Self::Item>, DecodeError> {
        let packet = self.codec.decode(src)?;
        if packet.is_some() {
            self.decoded = self.decoded.saturating_add(1);
        } else {
            if !src.is_empty() || self.decoded > 1 {
                src.reserve(READ_AHEAD);
            }
            self.decoded = 0;
        }
        Ok(packet)
    }
}

impl Encoder<MqttPacket> for ReadAhead {
    type Error = <MqttCodec as Encoder<MqttPacket>>::Error;

    fn encode(&mut self, packet: MqttPacket, dst: &mut bytes::BytesMut) -> Result<(), Self::Error> {
        self.codec.encode(packet, dst)
    }
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
    fixed_header(packet).map(|(length, _)| length)
}

/// The remaining length a fixed header declares and the header's own size in bytes (the type
/// byte and 1–4 length bytes), once its bytes are in.
fn fixed_header(packet: &[u8]) -> Option<(u32, usize)> {
    let mut length = 0u32;
    for (i, byte) in packet.get(1..)?.iter().take(4).enumerate() {
        length |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((length, 2 + i));
        }
    }
    None
}

/// Whether `buffer` starts with a whole packet: its fixed header and every byte it announces.
fn holds_whole_packet(buffer: &[u8]) -> bool {
    fixed_header(buffer).is_some_and(|(length, header)| {
        usize::try_from(length).is_ok_and(|length| buffer.len() - header >= length)
    })
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
    let codec = ReadAhead { codec, decoded: 0 };
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
            let _ = conn.connack_refused(Refusal::IdentifierRejected).await;
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
    /// again from the next packet's first bytes (issue 26: 10 000 idle connections), by
    /// [`READ_AHEAD`] once the client streams. Called once the handshake is over and after a
    /// PINGREQ (a client that pings has been quiet), not per packet.
    pub fn release_empty_buffers(&mut self) {
        if self.framed.read_buffer().is_empty() {
            *self.framed.read_buffer_mut() = bytes::BytesMut::new();
        }
        if self.framed.write_buffer().is_empty() {
            *self.framed.write_buffer_mut() = bytes::BytesMut::new();
        }
    }

    /// Encodes the packet into the write buffer at once, then returns the flush: a future
    /// that awaits it holds no packet, so the session loop's future — kept for the whole
    /// connection — keeps no room for one (a `SinkExt::send` held its ~300-byte item across
    /// the write; issue 26, idle connections). Every answer below builds its packet the same
    /// way, outside the future it returns.
    fn send(&mut self, packet: MqttPacket) -> impl Future<Output = Sent> + '_ {
        let queued = self.queue(packet);
        self.flush_after(queued)
    }

    /// The flush of a packet just queued, or the error its encoding gave.
    async fn flush_after(&mut self, queued: Sent) -> Sent {
        queued?;
        self.flush().await
    }

    /// Appends the packet's bytes to the write buffer (bytes a cancelled flush left there go
    /// out first, with the next flush).
    fn queue(&mut self, packet: MqttPacket) -> Sent {
        let mut buffer = std::mem::take(self.framed.write_buffer_mut());
        let encoded = self.framed.codec_mut().encode(packet, &mut buffer);
        *self.framed.write_buffer_mut() = buffer;
        encoded.map_err(|e| WireError::Io(e.to_string()))
    }

    /// The packet of the connection's version: only the side sent is built (a PUBLISH
    /// moves into it).
    fn packet_as(
        &self,
        v3: impl FnOnce() -> v3::Packet,
        v5: impl FnOnce() -> v5::Packet,
    ) -> MqttPacket {
        match self.version {
            Version::V3 => MqttPacket::V3(v3()),
            Version::V5 => MqttPacket::V5(v5()),
        }
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
    ) -> Sent {
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

    /// A CONNACK refusing the connection, with the reason code of the client's version. A
    /// 3.1.1 client asked for no more than it may (a will above `limits.max_message_bytes`)
    /// has no code for "packet too large" and gets no CONNACK: the connection is closed, as
    /// for an oversized PUBLISH.
    pub async fn connack_refused(&mut self, refusal: Refusal) -> Sent {
        if refusal == Refusal::PacketTooLarge && self.version == Version::V3 {
            return Ok(());
        }
        let (v3_reason, v5_reason) = connack_reasons(refusal);
        let packet = self.packet_as(
            || {
                v3::Packet::ConnectAck(v3::ConnectAck {
                    return_code: v3_reason,
                    session_present: false,
                })
            },
            || {
                v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                    reason_code: v5_reason,
                    ..v5::ConnectAck::default()
                }))
            },
        );
        self.send(packet).await
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2). v3 has no negative acks: the caller closes instead.
    pub fn ack(&mut self, ack: Ack, reason: PubReason) -> impl Future<Output = Sent> + '_ {
        let queued = self.queue_ack(ack, reason);
        self.flush_after(queued)
    }

    /// PUBACK/PUBREC into the write buffer, sent with the next [`flush`](Self::flush) (or
    /// any packet sent after it): answers Kafka gave together go out in one write.
    pub fn queue_ack(&mut self, ack: Ack, reason: PubReason) -> Sent {
        let packet = match ack {
            Ack::PubAck(packet_id) => self.packet_as(
                || v3::Packet::PublishAck { packet_id },
                || v5::Packet::PublishAck(v5_packets::puback(packet_id, reason)),
            ),
            Ack::PubRec(packet_id) => self.packet_as(
                || v3::Packet::PublishReceived { packet_id },
                || v5::Packet::PublishReceived(v5_packets::puback(packet_id, reason)),
            ),
        };
        self.queue(packet)
    }

    /// Writes what the write buffer holds.
    pub async fn flush(&mut self) -> Sent {
        std::future::poll_fn(|cx| self.framed.poll_flush_unpin(cx))
            .await
            .map_err(|e| WireError::Io(e.to_string()))
    }

    /// PUBCOMP for a PUBREL into the write buffer; `known` = false answers v5 0x92 (packet id
    /// not found). Sent by [`flush_unless_more_read`](Self::flush_unless_more_read) (or any
    /// packet sent after it): a client streaming QoS 2 sends its PUBRELs together, and a
    /// write per PUBCOMP was one system call per message (issue 26, `mqtt-qos2`).
    pub fn queue_pubcomp(&mut self, packet_id: NonZeroU16, known: bool) -> Sent {
        let packet = self.packet_as(
            || v3::Packet::PublishComplete { packet_id },
            || v5::Packet::PublishComplete(v5_packets::ack2(packet_id, known)),
        );
        self.queue(packet)
    }

    /// Writes what the write buffer holds, unless the read buffer already holds the next
    /// whole packet: its handler runs before the session waits again and flushes then. So
    /// answers to packets that arrived together go out together, and none waits for the
    /// client's next read.
    pub async fn flush_unless_more_read(&mut self) -> Sent {
        if self.framed.write_buffer().is_empty() || holds_whole_packet(self.framed.read_buffer()) {
            return Ok(());
        }
        self.flush().await
    }

    /// PINGRESP.
    pub fn pong(&mut self) -> impl Future<Output = Sent> + '_ {
        let packet = self.packet_as(|| v3::Packet::PingResponse, || v5::Packet::PingResponse);
        self.send(packet)
    }

    /// SUBACK with one code per filter (v3 has only "failure" for refusals).
    pub fn suback(
        &mut self,
        id: NonZeroU16,
        results: &[SubscribeResult],
    ) -> impl Future<Output = Sent> + '_ {
        let packet = self.packet_as(
            || v3_packets::suback(id, results),
            || v5_packets::suback(id, results),
        );
        self.send(packet)
    }

    /// UNSUBACK; `existed` says per filter whether there was such a subscription (v5 codes).
    pub fn unsuback(
        &mut self,
        packet_id: NonZeroU16,
        existed: &[bool],
    ) -> impl Future<Output = Sent> + '_ {
        let packet = self.packet_as(
            || v3::Packet::UnsubscribeAck { packet_id },
            || v5_packets::unsuback(packet_id, existed),
        );
        self.send(packet)
    }

    /// A PUBLISH to the client into the write buffer, sent with the next
    /// [`flush`](Self::flush): deliveries in hand go out together.
    pub fn queue_publish(&mut self, publish: Publish) -> Sent {
        let packet = Box::new(publish_out(publish));
        let packet = match self.version {
            Version::V3 => MqttPacket::V3(v3::Packet::Publish(packet)),
            Version::V5 => MqttPacket::V5(v5::Packet::Publish(packet)),
        };
        self.queue(packet)
    }

    /// Bytes queued and not yet written.
    pub fn unsent_bytes(&self) -> usize {
        self.framed.write_buffer().len()
    }

    /// PUBREL answering the client's PUBREC into the write buffer, sent as a PUBCOMP is
    /// ([`flush_unless_more_read`](Self::flush_unless_more_read)); `known` = false answers
    /// v5 0x92.
    pub fn queue_pubrel(&mut self, packet_id: NonZeroU16, known: bool) -> Sent {
        let packet = self.packet_as(
            || v3::Packet::PublishRelease { packet_id },
            || v5::Packet::PublishRelease(v5_packets::ack2(packet_id, known)),
        );
        self.queue(packet)
    }

    /// v5 DISCONNECT with a reason before the server closes; nothing for v3.
    pub fn disconnect(&mut self, reason: DisconnectReason) -> impl Future<Output = ()> + '_ {
        let packet = (self.version == Version::V5).then(|| {
            MqttPacket::V5(v5::Packet::Disconnect(v5::Disconnect {
                reason_code: v5_packets::disconnect_reason(reason),
                session_expiry_interval_secs: None,
                server_reference: None,
                reason_string: None,
                user_properties: Vec::new(),
            }))
        });
        let sent = packet.map(|p| self.send(p));
        async move {
            if let Some(sent) = sent {
                let _ = sent.await;
            }
        }
    }
}

/// A refusal's CONNACK codes: 3.1.1's return code, 5.0's reason code.
fn connack_reasons(refusal: Refusal) -> (v3::ConnectAckReason, v5::ConnectAckReason) {
    use v3::ConnectAckReason as V3;
    use v5::ConnectAckReason as V5;
    match refusal {
        Refusal::IdentifierRejected => (V3::IdentifierRejected, V5::ClientIdentifierNotValid),
        Refusal::BadCredentials => (V3::BadUserNameOrPassword, V5::BadUserNameOrPassword),
        Refusal::NotAuthorized => (V3::NotAuthorized, V5::NotAuthorized),
        Refusal::ServerBusy => (V3::ServiceUnavailable, V5::ServerBusy),
        Refusal::QuotaExceeded => (V3::ServiceUnavailable, V5::QuotaExceeded),
        Refusal::PacketTooLarge => (V3::ServiceUnavailable, V5::PacketTooLarge),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
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

    #[test]
    fn a_whole_packet_is_told_from_a_part() {
        assert!(!holds_whole_packet(&[]));
        assert!(!holds_whole_packet(&[0x62]), "the length not in yet");
        assert!(holds_whole_packet(&[0xc0, 0x00]), "PINGREQ");
        assert!(
            !holds_whole_packet(&[0x62, 0x02, 0x00]),
            "PUBREL one byte short"
        );
        assert!(holds_whole_packet(&[0x62, 0x02, 0x00, 0x01]));
        assert!(
            holds_whole_packet(&[0x62, 0x02, 0x00, 0x01, 0x30]),
            "and more"
        );
        let long = [&[0x30, 0x80, 0x01][..], &[0; 127]].concat();
        assert!(
            !holds_whole_packet(&long),
            "128 announced in two bytes, 127 in"
        );
        assert!(holds_whole_packet(&[&long[..], &[0]].concat()));
        let padded = [&[0x30, 0x81, 0x00][..], &[0]].concat();
        assert!(
            holds_whole_packet(&padded),
            "a length in more bytes than it needs"
        );
    }

    /// PUBCOMPs for PUBRELs read together go out in one write, after the last of them; one
    /// for a PUBREL read alone goes out at once.
    #[tokio::test]
    async fn answers_to_packets_read_together_are_written_together() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let connect = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        client.write_all(&connect).await.unwrap();
        let (mut conn, _) = accept(server, 1024).await.unwrap();
        let pubrel = |id: u8| [0x62, 2, 0, id];
        client
            .write_all(&[pubrel(1), pubrel(2)].concat())
            .await
            .unwrap();
        let mut answers = Vec::new();
        for id in [1, 2] {
            assert!(matches!(conn.next().await, Ok(Inbound::PubRel(_))));
            let id = NonZeroU16::new(id).unwrap();
            conn.queue_pubcomp(id, true).unwrap();
            conn.flush_unless_more_read().await.unwrap();
            let mut got = [0; 8];
            let read =
                tokio::time::timeout(std::time::Duration::from_millis(50), client.read(&mut got));
            answers.push(read.await.map(|n| got[..n.unwrap()].to_vec()).ok());
        }
        assert_eq!(answers[0], None, "the first waits: the second PUBREL is in");
        assert_eq!(
            answers[1],
            Some([[0x70, 2, 0, 1], [0x70, 2, 0, 2]].concat())
        );
        client.write_all(&pubrel(3)).await.unwrap();
        assert!(matches!(conn.next().await, Ok(Inbound::PubRel(_))));
        conn.queue_pubcomp(NonZeroU16::new(3).unwrap(), true)
            .unwrap();
        conn.flush_unless_more_read().await.unwrap();
        let mut got = [0; 8];
        let n = client.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], &[0x70, 2, 0, 3]);
    }

    /// A 3.1.1 CONNECT with a will (`devices/d1/status`: `offline`), a user name and a password.
    fn connect_with_will() -> Vec<u8> {
        let field = |s: &[u8]| [&(s.len() as u16).to_be_bytes()[..], s].concat();
        let body = [
            &field(b"MQTT")[..],
            &[4, 0xc6, 0, 60],
            &field(b"d1"),
            &field(b"devices/d1/status"),
            &field(b"offline"),
            &field(b"user"),
            &field(b"secret"),
        ]
        .concat();
        [&[0x10, body.len() as u8][..], &body].concat()
    }

    /// What a connection keeps of its CONNECT is its own, not a slice of the read buffer
    /// (which a slice would keep whole for as long as the connection lasts).
    #[tokio::test]
    async fn a_will_and_password_are_not_slices_of_the_read_buffer() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(&connect_with_will()).await.unwrap();
        let (_conn, info) = accept(server, 1024).await.unwrap();
        let will = info.will.unwrap();
        assert_eq!(&will.payload[..], b"offline");
        assert!(
            will.payload.try_into_mut().is_ok(),
            "the will shares its bytes"
        );
        let password = info.password.unwrap();
        assert_eq!(&password[..], b"secret");
        assert!(
            password.try_into_mut().is_ok(),
            "the password shares its bytes"
        );
    }

    /// A 3.1.1 QoS 0 PUBLISH to `a` with payload `x`.
    const PUBLISH: [u8; 6] = [0x30, 4, 0, 1, b'a', b'x'];

    fn v3_reader() -> ReadAhead {
        ReadAhead {
            codec: MqttCodec::V3(v3::Codec::new(1024)),
            decoded: 0,
        }
    }

    /// Decodes what `src` holds, as `Framed` does after a read: packets until `None`.
    fn decode_all(reader: &mut ReadAhead, src: &mut bytes::BytesMut) -> usize {
        let mut packets = 0;
        while reader.decode(src).unwrap().is_some() {
            packets += 1;
        }
        packets
    }

    /// The read buffer gets room for more than the next packet when a packet is half in or
    /// the last read held several; a lone packet (an idle client's PINGREQ) does not grow it.
    #[test]
    fn a_streaming_connection_reads_ahead_and_a_quiet_one_does_not() {
        let mut reader = v3_reader();
        let mut src = bytes::BytesMut::from(&PUBLISH[..1]);
        assert_eq!(decode_all(&mut reader, &mut src), 0);
        assert!(src.capacity() - src.len() >= READ_AHEAD, "a packet half in");

        let mut src = bytes::BytesMut::from(&[PUBLISH, PUBLISH].concat()[..]);
        assert_eq!(decode_all(&mut reader, &mut src), 2);
        assert!(src.capacity() >= READ_AHEAD, "two packets in one read");

        let mut src = bytes::BytesMut::from(&PUBLISH[..]);
        assert_eq!(decode_all(&mut reader, &mut src), 1);
        assert!(src.capacity() < READ_AHEAD, "one packet alone");
    }
}
