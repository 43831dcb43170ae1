//! The Kafka side of a client's PUBLISH: admitted (size, rate, topic alias, QoS 2
//! duplicates), mapped and written, and answered — PUBACK/PUBREC once Kafka acknowledged,
//! in the order the PUBLISHes arrived.

use std::{collections::BTreeMap, future::Future, num::NonZeroU16, sync::Arc};

use barnabas_core::{Access, Error, ErrorKind, OrderedWindow, Principal, Record};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Answer, MqttSession, SessionEnd};
use crate::{
    convert::{self, Message, CLIENT_HEADER},
    packet::{Ack, ConnectInfo, DisconnectReason, PubReason, Publish, QoS, TOPIC_ALIAS_MAX},
    MqttContext,
};
use barnabas_core::Header;

/// QoS 2 packet ids awaiting PUBREL kept with a session, at most (a client may have
/// 65 535; only a misbehaving one has more than our Receive Maximum).
const MAX_AWAITING_PUBREL: usize = 1024;

/// How long one answer to a departing client may take to write.
pub(super) const ANSWER_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes read from the client: those Kafka has not answered yet, and the QoS 2 packet
/// ids seen (false while Kafka has not answered, true once PUBREC was sent, until PUBREL).
/// A persistent session keeps the answered ones, so a QoS 2 PUBLISH the client sends again
/// after a reconnect is acknowledged, not written twice.
#[derive(Default)]
pub(super) struct Incoming {
    pub(super) window: OrderedWindow<Answer>,
    pub(super) qos2: BTreeMap<NonZeroU16, bool>,
}

impl Incoming {
    /// Takes over the packet ids a stored session was awaiting PUBREL for.
    pub(super) fn resume(&mut self, ids: &[u16]) {
        self.qos2.extend(
            ids.iter()
                .filter_map(|id| NonZeroU16::new(*id))
                .map(|id| (id, true)),
        );
    }

    /// Kafka answered a publish: a QoS 2 one written now awaits PUBREL; one refused is
    /// forgotten (the client may send it again).
    pub(super) fn settled(&mut self, ack: Option<Ack>, written: bool) {
        if let Some(Ack::PubRec(id)) = ack {
            if written {
                self.qos2.insert(id, true);
            } else {
                self.qos2.remove(&id);
            }
        }
    }

    /// The QoS 2 packet ids written to Kafka and awaiting PUBREL, to keep with the session.
    pub(super) fn awaiting_pubrel(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self
            .qos2
            .iter()
            .filter(|(_, written)| **written)
            .map(|(id, _)| id.get())
            .collect();
        ids.sort_unstable();
        ids.truncate(MAX_AWAITING_PUBREL);
        ids
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> MqttSession<T> {
    /// PUBLISH: admitted, then on its way to Kafka; its answer comes back through the loop.
    pub(super) async fn on_publish(&mut self, mut p: Box<Publish>) -> Result<(), SessionEnd> {
        if p.payload.len() > self.ctx.settings.max_message_bytes {
            return Err(self.close(DisconnectReason::PacketTooLarge).await);
        }
        // Over `limits.publish_rate`: wait before taking this publish, so the socket is read
        // more slowly and the client's sends back up (TCP).
        let wait = self.rate.as_mut().map(|r| r.take());
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            self.ctx.metrics.throttled.inc();
            tokio::time::sleep(wait).await;
        }
        if !resolve_alias(&mut p, &mut self.aliases) {
            return Err(self.close(DisconnectReason::TopicAliasInvalid).await);
        }
        let ack = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => None,
            (QoS::AtLeastOnce, Some(id)) => Some(Ack::PubAck(id)),
            (QoS::ExactlyOnce, Some(id)) => match self.incoming.qos2.get(&id) {
                // Retransmission of a publish Kafka already has: re-ack only.
                Some(true) => {
                    return Ok(self.conn.ack(Ack::PubRec(id), PubReason::Success).await?)
                }
                // Retransmission while Kafka is still answering: the ack follows.
                Some(false) => return Ok(()),
                None => {
                    self.incoming.qos2.insert(id, false);
                    Some(Ack::PubRec(id))
                }
            },
            _ => return Err(self.close(DisconnectReason::ProtocolError).await),
        };
        let label = crate::QosLabel { qos: p.qos as u8 };
        self.ctx.metrics.publishes.get_or_create(&label).inc();
        let write = produce(&self.ctx, &p, ack, &self.info);
        self.incoming.window.push(p.payload.len(), write);
        Ok(())
    }

    /// Kafka answered the oldest publish, and maybe the ones after it: PUBACK/PUBREC for
    /// each answered one, in order, in one write (a write per ack was most of the session's
    /// system calls under load); v5 with a reason when Kafka refused it. MQTT 3.1.1 has no
    /// negative ack: the acks before a refusal are sent, then the connection closes.
    pub(super) async fn on_kafka_answer(&mut self, first: Answer) -> Result<(), SessionEnd> {
        let mut answer = Some(first);
        while let Some((ack, result)) = answer {
            if let Err(end) = self.queue_answer(ack, result) {
                let _ = self.conn.flush().await;
                return Err(end);
            }
            answer = self.incoming.window.ready();
        }
        Ok(self.conn.flush().await?)
    }

    /// One answer's ack into the write buffer; `Err` for a refusal MQTT 3.1.1 cannot say.
    fn queue_answer(
        &mut self,
        ack: Option<Ack>,
        result: Result<barnabas_core::Delivered, Error>,
    ) -> Result<(), SessionEnd> {
        let Some(ack) = ack else { return Ok(()) };
        let reason = match &result {
            Ok(_) => PubReason::Success,
            Err(e) => {
                self.ctx.metrics.negative_acks.inc();
                if !self.v5() {
                    tracing::warn!(error = %e, "Kafka refused a publish; closing (MQTT 3.1.1)");
                    return Err(SessionEnd::Lost);
                }
                reason_for(e)
            }
        };
        self.incoming.settled(Some(ack), result.is_ok());
        Ok(self.conn.queue_ack(ack, reason)?)
    }

    /// Answers every publish still waiting for Kafka, in order, before the connection ends
    /// (the client's DISCONNECT, or the gateway's stop): they were read, so they are
    /// answered — each bounded by the produce timeout, and each answer's write by
    /// [`ANSWER_WRITE_WAIT`] (a client that stopped reading is not answered further). MQTT
    /// 3.1.1 has no negative ack: after its first refusal the rest go unanswered.
    pub(super) async fn answer_in_flight(&mut self) {
        let v5 = self.v5();
        let mut answering = true;
        while let Some((ack, result)) = self.incoming.window.next().await {
            let Some(ack) = ack else { continue };
            self.incoming.settled(Some(ack), result.is_ok());
            let reason = result
                .as_ref()
                .map_or_else(reason_for, |_| PubReason::Success);
            if reason != PubReason::Success {
                self.ctx.metrics.negative_acks.inc();
            }
            answering &= v5 || reason == PubReason::Success;
            if answering {
                let sent = tokio::time::timeout(ANSWER_WRITE_WAIT, self.conn.ack(ack, reason));
                answering = matches!(sent.await, Ok(Ok(())));
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

/// Maps and writes one publish; the future resolves once Kafka answered (and, for a
/// retained publish, once its retained copy is stored too).
fn produce(
    ctx: &Arc<MqttContext>,
    p: &Publish,
    ack: Option<Ack>,
    info: &ConnectInfo,
) -> impl Future<Output = Answer> + Send + 'static {
    let topic = p.topic.to_string();
    let mut headers = convert::origin_headers(&topic, p.qos, p.retain);
    headers.push(Header::new(CLIENT_HEADER, info.client_id.clone()));
    headers.extend(
        convert::property_headers(p)
            .into_iter()
            .map(|(k, v)| Header::new(k, v)),
    );
    let retained = p.retain.then(|| retained_copy(p, &topic, &headers));
    let record = convert::to_record(&ctx.mapper, &topic, p.payload.clone(), headers)
        .and_then(|r| authorize_write(ctx, &info.principal, r))
        .and_then(|r| admit_retained(ctx, &topic, p.retain, p.payload.len()).map(|()| r));
    let principal = info.principal.clone();
    let ctx = ctx.clone();
    async move {
        let record = match record {
            Ok(r) => r,
            Err(e) => return (ack, Err(e)),
        };
        let result = ctx.publisher.publish_one_as(&principal, record).await;
        let result = match (result, retained) {
            // Boxed: the retained copy's write is rare, and its future would otherwise make
            // every publish's future (moved into the window per publish) as large as it is.
            (Ok(d), Some(message)) => Box::pin(ctx.state.retain(&message)).await.map(|()| {
                ctx.retained.set(message);
                d
            }),
            (result, _) => result,
        };
        (ack, result)
    }
}

/// A retained publish as the retained store keeps it; its v5 Message Expiry counts from now.
fn retained_copy(p: &Publish, topic: &str, headers: &[Header]) -> Message {
    let expiry = p
        .properties
        .as_ref()
        .and_then(|props| props.message_expiry_interval);
    Message {
        topic: topic.to_owned(),
        // A copy: the payload is a slice of the connection's read buffer, which a stored
        // slice would keep whole (4 KiB of read-ahead for one short message) for as long as
        // the message stays retained.
        payload: bytes::Bytes::copy_from_slice(&p.payload),
        qos: p.qos,
        retain: true,
        headers: headers.to_vec(),
        origin_client: None,
        expires_at: expiry.and_then(|secs| {
            std::time::SystemTime::now()
                .checked_add(std::time::Duration::from_secs(u64::from(secs.get())))
        }),
    }
}

/// A retained publish the retained store has no room for (`limits.max_retained_bytes`, or
/// its topic count) is refused before anything is written: v5 0x97, 3.1.1 closes.
fn admit_retained(ctx: &MqttContext, topic: &str, retain: bool, len: usize) -> Result<(), Error> {
    if !retain || ctx.retained.admits(topic, len) {
        return Ok(());
    }
    tracing::info!(
        topic,
        "retained store full (limits.max_retained_bytes); publish refused"
    );
    Err(Error::Overloaded)
}

/// The record, if the principal may write to its Kafka topic.
pub(super) fn authorize_write(
    ctx: &MqttContext,
    principal: &Principal,
    record: Record,
) -> Result<Record, Error> {
    if ctx.auth.allows(principal, Access::Write(&record.topic)) {
        Ok(record)
    } else {
        tracing::info!(principal = %principal.name, topic = %record.topic, "publish denied by ACL");
        Err(Error::Unauthorized(format!(
            "principal '{}' may not write to '{}'",
            principal.name, record.topic
        )))
    }
}

/// Applies a v5 topic alias: a publish with a topic and an alias sets it, one with only an
/// alias uses it. `false` when the alias is unknown or out of range (0x94).
fn resolve_alias(
    p: &mut Publish,
    aliases: &mut BTreeMap<NonZeroU16, bytestring::ByteString>,
) -> bool {
    let alias = p.properties.as_ref().and_then(|props| props.topic_alias);
    match alias {
        None => !p.topic.is_empty(),
        Some(a) if a.get() > TOPIC_ALIAS_MAX => false,
        Some(a) if p.topic.is_empty() => match aliases.get(&a) {
            Some(t) => {
                p.topic = t.clone();
                true
            }
            None => false,
        },
        Some(a) => {
            aliases.insert(a, p.topic.clone());
            true
        }
    }
}
