//! One MQTT connection, from CONNECT to close: the handshake under its own deadline, then a
//! loop that turns PUBLISHes into Kafka writes and answers them — PUBACK/PUBREC only after
//! Kafka acknowledged, in the order the PUBLISHes arrived — while a bounded in-flight window
//! stops reading the socket when Kafka is slow.

use std::{
    collections::HashMap, future::Future, num::NonZeroU16, pin::Pin, sync::Arc, time::Duration,
};

use barnabas_core::{Delivered, Error, ErrorKind, GatewayMetrics, Header, Record};
use futures::{stream::FuturesOrdered, StreamExt};
use rmqtt_codec::{types::QoS, v5::DisconnectReasonCode, version::ProtocolVersion};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    wire::{self, Connection, Inbound, PubReason, Will, WireError},
    MqttContext,
};

/// MQTT topic name header on every record.
pub const TOPIC_HEADER: &str = "barnabas.mqtt.topic";

type Pending =
    Pin<Box<dyn Future<Output = (Option<(bool, NonZeroU16)>, Result<Delivered, Error>)> + Send>>;

/// How the session ended, which decides whether the will is published.
enum End {
    /// DISCONNECT (without will), or server shutdown.
    Normal,
    /// Everything else: EOF, keep-alive expiry, protocol error, takeover, refused write.
    Abnormal,
}

/// Runs one connection to its end.
pub async fn run<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    ctx: Arc<MqttContext>,
    shutdown: CancellationToken,
) {
    let max_packet = ctx.settings.max_packet_bytes();
    let (mut conn, info) = match tokio::time::timeout(
        ctx.settings.connect_timeout,
        wire::accept(io, max_packet),
    )
    .await
    {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            tracing::debug!(error = ?e, "connection closed before a valid CONNECT");
            return;
        }
        Err(_) => {
            tracing::debug!("no CONNECT within the handshake deadline");
            return;
        }
    };
    let (client_id, assigned) = if info.client_id.is_empty() {
        if info.version == ProtocolVersion::MQTT3 && !info.clean {
            let _ = conn.connack_identifier_rejected().await;
            return;
        }
        let id = format!("barnabas-{}", uuid::Uuid::new_v4().simple());
        let assigned = (info.version == ProtocolVersion::MQTT5).then(|| id.clone());
        (id, assigned)
    } else {
        (info.client_id.clone(), None)
    };
    let span = tracing::debug_span!("mqtt", client_id = %client_id);
    let _enter = span.enter();
    let kicked = ctx.sessions.register(&client_id);
    if conn
        .connack_ok(assigned, ctx.settings.receive_window, max_packet)
        .await
        .is_err()
    {
        ctx.sessions.unregister(&client_id, &kicked);
        return;
    }
    ctx.metrics.connections.inc();
    tracing::debug!(version = ?info.version, keep_alive = info.keep_alive, "connected");

    let end = serve(&mut conn, &ctx, &info, &kicked, &shutdown).await;

    ctx.metrics.connections.dec();
    ctx.sessions.unregister(&client_id, &kicked);
    if let (End::Abnormal, Some(will)) = (end, info.will) {
        publish_will(&ctx, will).await;
    }
}

async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
    ctx: &Arc<MqttContext>,
    info: &wire::ConnectInfo,
    kicked: &CancellationToken,
    shutdown: &CancellationToken,
) -> End {
    let v5 = conn.version() == ProtocolVersion::MQTT5;
    let keep_alive =
        (info.keep_alive > 0).then(|| Duration::from_millis(u64::from(info.keep_alive) * 1500));
    let mut deadline = keep_alive.map(|k| Instant::now() + k);
    let window = usize::from(ctx.settings.receive_window);
    let mut inflight: FuturesOrdered<Pending> = FuturesOrdered::new();
    // QoS 2 packet ids seen: false while Kafka has not answered, true once PUBREC was sent.
    let mut qos2: HashMap<NonZeroU16, bool> = HashMap::new();

    loop {
        tokio::select! {
            _ = kicked.cancelled() => {
                conn.disconnect(DisconnectReasonCode::SessionTakenOver).await;
                return End::Abnormal;
            }
            _ = shutdown.cancelled() => {
                conn.disconnect(DisconnectReasonCode::ServerShuttingDown).await;
                return End::Normal;
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                tracing::debug!("keep-alive expired");
                conn.disconnect(DisconnectReasonCode::KeepAliveTimeout).await;
                return End::Abnormal;
            }
            Some((ack, result)) = inflight.next(), if !inflight.is_empty() => {
                let Some((is_qos2, packet_id)) = ack else { continue };
                let reason = match &result {
                    Ok(_) => PubReason::Success,
                    Err(e) => {
                        ctx.metrics.negative_acks.inc();
                        if !v5 {
                            // MQTT 3.1.1 has no negative ack: close without acknowledging.
                            tracing::warn!(error = %e, "Kafka refused a publish; closing (MQTT 3.1.1)");
                            return End::Abnormal;
                        }
                        reason_for(e)
                    }
                };
                if is_qos2 {
                    if reason == PubReason::Success {
                        qos2.insert(packet_id, true);
                    } else {
                        qos2.remove(&packet_id);
                    }
                }
                if conn.ack(is_qos2, packet_id, reason).await.is_err() {
                    return End::Abnormal;
                }
            }
            packet = conn.next(), if inflight.len() < window => {
                let packet = match packet {
                    Ok(p) => p,
                    Err(WireError::Closed) => return End::Abnormal,
                    Err(WireError::Decode(e)) => {
                        tracing::debug!(error = %e, "bad packet; closing");
                        let reason = if matches!(e, rmqtt_codec::error::DecodeError::MaxSizeExceeded { .. }) {
                            DisconnectReasonCode::PacketTooLarge
                        } else {
                            DisconnectReasonCode::MalformedPacket
                        };
                        conn.disconnect(reason).await;
                        return End::Abnormal;
                    }
                    Err(WireError::Io(_)) => return End::Abnormal,
                };
                deadline = keep_alive.map(|k| Instant::now() + k);
                match packet {
                    Inbound::Publish(p) => {
                        if p.payload.len() > ctx.settings.max_message_bytes {
                            conn.disconnect(DisconnectReasonCode::PacketTooLarge).await;
                            return End::Abnormal;
                        }
                        if p.topic.is_empty() {
                            // Topic aliases are not offered (Topic Alias Maximum 0).
                            conn.disconnect(DisconnectReasonCode::TopicAliasInvalid).await;
                            return End::Abnormal;
                        }
                        let ack = match (p.qos, p.packet_id) {
                            (QoS::AtMostOnce, _) => None,
                            (QoS::AtLeastOnce, Some(id)) => Some((false, id)),
                            (QoS::ExactlyOnce, Some(id)) => {
                                match qos2.get(&id) {
                                    // Retransmission of a publish Kafka already has: re-ack only.
                                    Some(true) => {
                                        if conn.ack(true, id, PubReason::Success).await.is_err() {
                                            return End::Abnormal;
                                        }
                                        continue;
                                    }
                                    // Retransmission while Kafka is still answering: the ack follows.
                                    Some(false) => continue,
                                    None => {
                                        qos2.insert(id, false);
                                        Some((true, id))
                                    }
                                }
                            }
                            _ => {
                                conn.disconnect(DisconnectReasonCode::ProtocolError).await;
                                return End::Abnormal;
                            }
                        };
                        ctx.metrics.publishes.get_or_create(&crate::QosLabel { qos: p.qos as u8 }).inc();
                        inflight.push_back(produce(ctx, &p, ack));
                    }
                    Inbound::PubRel(id) => {
                        let known = qos2.remove(&id).is_some();
                        if conn.pubcomp(id, known).await.is_err() {
                            return End::Abnormal;
                        }
                    }
                    Inbound::Subscribe(id, n) => {
                        if conn.suback_refused(id, n).await.is_err() {
                            return End::Abnormal;
                        }
                    }
                    Inbound::Unsubscribe(id, n) => {
                        if conn.unsuback(id, n).await.is_err() {
                            return End::Abnormal;
                        }
                    }
                    Inbound::Ping => {
                        if conn.pong().await.is_err() {
                            return End::Abnormal;
                        }
                    }
                    Inbound::Disconnect { with_will } => {
                        // Answer what is still in flight first: those publishes were accepted.
                        while let Some((Some((is_qos2, id)), result)) = inflight.next().await {
                            let reason = result.as_ref().map_or_else(reason_for, |_| PubReason::Success);
                            if v5 || reason == PubReason::Success {
                                let _ = conn.ack(is_qos2, id, reason).await;
                            }
                        }
                        return if with_will { End::Abnormal } else { End::Normal };
                    }
                    Inbound::Ignored => {}
                    Inbound::ProtocolError => {
                        conn.disconnect(DisconnectReasonCode::ProtocolError).await;
                        return End::Abnormal;
                    }
                }
            }
        }
    }
}

/// The v5 reason code for a refused write.
fn reason_for(e: &Error) -> PubReason {
    match e.kind() {
        ErrorKind::Overloaded => PubReason::QuotaExceeded,
        ErrorKind::Unauthorized => PubReason::NotAuthorized,
        ErrorKind::Invalid | ErrorKind::NotFound => PubReason::TopicNameInvalid,
        _ => PubReason::Unspecified,
    }
}

/// Maps and writes one publish; the future resolves once Kafka answered.
fn produce(
    ctx: &Arc<MqttContext>,
    p: &rmqtt_codec::types::Publish,
    ack: Option<(bool, NonZeroU16)>,
) -> Pending {
    let topic = p.topic.to_string();
    let mut headers = vec![Header::new(TOPIC_HEADER, topic.clone())];
    headers.extend(
        wire::property_headers(p)
            .into_iter()
            .map(|(k, v)| Header::new(k, v)),
    );
    let record = to_record(ctx, &topic, p.payload.clone(), headers);
    let publisher = ctx.backend_publisher.clone();
    let metrics = ctx.gateway_metrics.clone();
    Box::pin(async move {
        let record = match record {
            Ok(r) => r,
            Err(e) => return (ack, Err(e)),
        };
        let started = Instant::now();
        let result = publisher.publish_one(record).await;
        let label = GatewayMetrics::label("mqtt");
        metrics
            .produce_latency
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => metrics.records_in.get_or_create(&label).inc(),
            Err(_) => metrics.records_failed.get_or_create(&label).inc(),
        };
        (ack, result)
    })
}

/// The Kafka record for a publish to `topic`, through the mapping rules.
fn to_record(
    ctx: &MqttContext,
    topic: &str,
    payload: bytes::Bytes,
    headers: Vec<Header>,
) -> Result<Record, Error> {
    let resolved = ctx
        .mapper
        .resolve(topic)?
        .ok_or_else(|| Error::InvalidTopic {
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

/// Writes the last will (bounded wait); its failure is logged, there is no one left to tell.
async fn publish_will(ctx: &Arc<MqttContext>, will: Will) {
    let mut headers = vec![Header::new(TOPIC_HEADER, will.topic.clone())];
    headers.extend(
        will.user_properties
            .into_iter()
            .map(|(k, v)| Header::new(k, v)),
    );
    let record = match to_record(ctx, &will.topic, will.payload, headers) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, topic = %will.topic, "will not published");
            return;
        }
    };
    match tokio::time::timeout(
        Duration::from_secs(10),
        ctx.backend_publisher.publish_one(record),
    )
    .await
    {
        Ok(Ok(d)) => tracing::debug!(offset = d.offset, topic = %will.topic, "will published"),
        Ok(Err(e)) => tracing::warn!(error = %e, topic = %will.topic, "will not published"),
        Err(_) => tracing::warn!(topic = %will.topic, "will not published: Kafka did not answer"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
