//! MQTT 5.0 packets ↔ the version-neutral ones of [`crate::packet`].

use std::num::NonZeroU16;

use barnabas_core::Principal;
use rmqtt_codec::{types::QoS, v5};

use crate::{
    convert::{v5_headers, V5Properties},
    packet::{
        ConnectInfo, DisconnectReason, Inbound, PubReason, PublishProperties, SubscribePacket,
        SubscribeRequest, SubscribeResult, Version, Will,
    },
};

/// A 5.0 CONNECT, its properties and the will's (as headers, like a publish's).
pub(super) fn connect_info(c: v5::Connect) -> ConnectInfo {
    ConnectInfo {
        version: Version::V5,
        client_id: c.client_id.to_string(),
        clean: c.clean_start,
        keep_alive: c.keep_alive,
        will: c.last_will.map(|w| Box::new(will(w))),
        receive_max: c.receive_max,
        session_expiry: c.session_expiry_interval_secs,
        max_packet: c.max_packet_size.map(std::num::NonZeroU32::get),
        topic_alias_max: c.topic_alias_max,
        username: c.username.map(|u| u.to_string()),
        password: c.password.as_deref().map(super::owned),
        principal: Principal::anonymous(),
    }
}

fn will(w: v5::LastWill) -> Will {
    Will {
        topic: w.topic.to_string(),
        payload: super::owned(&w.message),
        headers: v5_headers(&V5Properties {
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
    }
}

/// A packet after CONNECT.
pub(super) fn inbound(packet: v5::Packet) -> Inbound {
    match packet {
        v5::Packet::Publish(p) => Inbound::Publish(Box::new(super::publish_in(*p))),
        v5::Packet::PublishRelease(ack) => Inbound::PubRel(ack.packet_id),
        v5::Packet::Subscribe(s) => Inbound::Subscribe(subscribe(s)),
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
    }
}

fn subscribe(s: v5::Subscribe) -> SubscribePacket {
    SubscribePacket {
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
    }
}

/// The codec's PUBLISH properties as ours.
pub(super) fn properties_in(p: v5::PublishProperties) -> PublishProperties {
    move_fields!(p => PublishProperties {
        topic_alias, correlation_data, message_expiry_interval, content_type,
        user_properties, is_utf8_payload, response_topic, subscription_ids
    })
}

/// Ours as the codec's.
pub(super) fn properties_out(p: PublishProperties) -> v5::PublishProperties {
    move_fields!(p => v5::PublishProperties {
        topic_alias, correlation_data, message_expiry_interval, content_type,
        user_properties, is_utf8_payload, response_topic, subscription_ids
    })
}

/// PUBACK or PUBREC with the outcome's reason code.
pub(super) fn puback(packet_id: NonZeroU16, reason: PubReason) -> v5::PublishAck {
    v5::PublishAck {
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
    }
}

/// SUBACK with one reason code per filter.
pub(super) fn suback(packet_id: NonZeroU16, results: &[SubscribeResult]) -> v5::Packet {
    let reason = |r: &SubscribeResult| match r {
        SubscribeResult::Granted(QoS::AtMostOnce) => v5::SubscribeAckReason::GrantedQos0,
        SubscribeResult::Granted(QoS::AtLeastOnce) => v5::SubscribeAckReason::GrantedQos1,
        SubscribeResult::Granted(QoS::ExactlyOnce) => v5::SubscribeAckReason::GrantedQos2,
        SubscribeResult::InvalidFilter => v5::SubscribeAckReason::TopicFilterInvalid,
        SubscribeResult::Failed => v5::SubscribeAckReason::UnspecifiedError,
        SubscribeResult::NotAuthorized => v5::SubscribeAckReason::NotAuthorized,
        SubscribeResult::QuotaExceeded => v5::SubscribeAckReason::QuotaExceeded,
    };
    v5::Packet::SubscribeAck(v5::SubscribeAck {
        packet_id,
        properties: Vec::new(),
        reason_string: None,
        status: results.iter().map(reason).collect(),
    })
}

/// UNSUBACK: per filter, success or "no subscription existed".
pub(super) fn unsuback(packet_id: NonZeroU16, existed: &[bool]) -> v5::Packet {
    let reason = |e: &bool| {
        if *e {
            v5::UnsubscribeAckReason::Success
        } else {
            v5::UnsubscribeAckReason::NoSubscriptionExisted
        }
    };
    v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
        packet_id,
        properties: Vec::new(),
        reason_string: None,
        status: existed.iter().map(reason).collect(),
    })
}

/// The DISCONNECT reason code.
pub(super) fn disconnect_reason(reason: DisconnectReason) -> v5::DisconnectReasonCode {
    match reason {
        DisconnectReason::MalformedPacket => v5::DisconnectReasonCode::MalformedPacket,
        DisconnectReason::ProtocolError => v5::DisconnectReasonCode::ProtocolError,
        DisconnectReason::NotAuthorized => v5::DisconnectReasonCode::NotAuthorized,
        DisconnectReason::ServerShuttingDown => v5::DisconnectReasonCode::ServerShuttingDown,
        DisconnectReason::KeepAliveTimeout => v5::DisconnectReasonCode::KeepAliveTimeout,
        DisconnectReason::SessionTakenOver => v5::DisconnectReasonCode::SessionTakenOver,
        DisconnectReason::TopicAliasInvalid => v5::DisconnectReasonCode::TopicAliasInvalid,
        DisconnectReason::PacketTooLarge => v5::DisconnectReasonCode::PacketTooLarge,
    }
}

/// The v5 body of PUBREL and PUBCOMP: success, or 0x92 for a packet id not in flight.
pub(super) fn ack2(packet_id: NonZeroU16, known: bool) -> v5::PublishAck2 {
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
