//! MQTT 3.1.1 packets ↔ the version-neutral ones of [`crate::packet`].

use rmqtt_codec::v3;

use barnabas_core::Principal;

use crate::packet::{
    ConnectInfo, Inbound, SubscribePacket, SubscribeRequest, SubscribeResult, Version, Will,
};

/// A 3.1.1 CONNECT: no properties; a session without Clean Session lasts until the client
/// cleans it (expiry "never").
pub(super) fn connect_info(c: v3::Connect) -> ConnectInfo {
    ConnectInfo {
        version: Version::V3,
        client_id: c.client_id.to_string(),
        clean: c.clean_session,
        keep_alive: c.keep_alive,
        will: c.last_will.map(|w| {
            Box::new(Will {
                topic: w.topic.to_string(),
                payload: super::owned(&w.message),
                headers: Vec::new(),
                qos: w.qos,
                retain: w.retain,
                delay_secs: 0,
            })
        }),
        receive_max: None,
        session_expiry: if c.clean_session { 0 } else { u32::MAX },
        max_packet: None,
        topic_alias_max: 0,
        username: c.username.map(|u| u.to_string()),
        password: c.password.as_deref().map(super::owned),
        principal: Principal::anonymous(),
    }
}

/// A packet after CONNECT.
pub(super) fn inbound(packet: v3::Packet) -> Inbound {
    match packet {
        v3::Packet::Publish(p) => Inbound::Publish(Box::new(super::publish_in(*p))),
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
    }
}

/// SUBACK: 3.1.1 has one failure code for every refusal.
pub(super) fn suback(packet_id: std::num::NonZeroU16, results: &[SubscribeResult]) -> v3::Packet {
    v3::Packet::SubscribeAck {
        packet_id,
        status: results
            .iter()
            .map(|r| match r {
                SubscribeResult::Granted(q) => v3::SubscribeReturnCode::Success(*q),
                _ => v3::SubscribeReturnCode::Failure,
            })
            .collect(),
    }
}
