//! One MQTT connection, from CONNECT to close: the handshake under its own deadline, then a
//! loop that turns PUBLISHes into Kafka writes and answers them — PUBACK/PUBREC only after
//! Kafka acknowledged, in the order the PUBLISHes arrived — while a bounded in-flight window
//! stops reading the socket when Kafka is slow. Deliveries to subscribers go out from the
//! same loop, fetched only while the client's in-flight window has room.

use std::{
    collections::HashMap, future::Future, num::NonZeroU16, pin::Pin, sync::Arc, time::Duration,
};
use tracing::Instrument;

use barnabas_core::{
    Access, AuthError, Credentials, Delivered, Error, ErrorKind, GatewayMetrics, Header, HeldBytes,
    InFlightBytes, Principal, Record, MAX_INFLIGHT_BYTES,
};
use futures::{stream::FuturesOrdered, StreamExt};
use rmqtt_codec::{types::QoS, v5::DisconnectReasonCode, version::ProtocolVersion};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    delivery::{Message, CLIENT_HEADER, QOS_HEADER, RETAIN_HEADER},
    store::StoredSession,
    subscriptions::{Next, Subscriptions},
    wire::{self, Connection, Inbound, PubReason, Will, WireError},
    MqttContext,
};

pub use crate::delivery::TOPIC_HEADER;

/// How often acknowledged deliveries are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// How long a new connection waits for the session it takes over to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Unacknowledged QoS 1/2 deliveries per client at most (capped further by its Receive
/// Maximum): Kafka is the queue, so a deeper window would only hold records in memory.
const DELIVERY_WINDOW: u16 = 64;

/// Longest v5 Will Delay honoured (one day): a delayed will holds its payload in memory
/// until then, and a client must not park one for 136 years.
const MAX_WILL_DELAY_SECS: u32 = 86_400;

type Pending =
    Pin<Box<dyn Future<Output = (Option<(bool, NonZeroU16)>, Result<Delivered, Error>)> + Send>>;

/// Publishes read from the client: those Kafka has not answered yet, and the QoS 2 packet
/// ids seen (false while Kafka has not answered, true once PUBREC was sent, until PUBREL).
/// A persistent session keeps the answered ones, so a QoS 2 PUBLISH the client sends again
/// after a reconnect is acknowledged, not written twice.
#[derive(Default)]
struct Incoming {
    inflight: FuturesOrdered<Pending>,
    qos2: HashMap<NonZeroU16, bool>,
}

/// QoS 2 packet ids awaiting PUBREL kept with a session, at most (a client may have
/// 65 535; only a misbehaving one has more than our Receive Maximum).
const MAX_AWAITING_PUBREL: usize = 1024;

impl Incoming {
    /// Takes over the packet ids a stored session was awaiting PUBREL for.
    fn resume(&mut self, ids: &[u16]) {
        self.qos2.extend(
            ids.iter()
                .filter_map(|id| NonZeroU16::new(*id))
                .map(|id| (id, true)),
        );
    }

    /// A publish Kafka answered after the connection ended.
    fn settled(&mut self, ack: Option<(bool, NonZeroU16)>, written: bool) {
        if let Some((true, id)) = ack {
            if written {
                self.qos2.insert(id, true);
            } else {
                self.qos2.remove(&id);
            }
        }
    }

    /// The QoS 2 packet ids written to Kafka and awaiting PUBREL, to keep with the session.
    fn awaiting_pubrel(&self) -> Vec<u16> {
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

/// How the session ended, which decides whether the will is published.
enum End {
    /// DISCONNECT (without will).
    Normal,
    /// Server shutdown: the network connection closes without DISCONNECT, so the will is
    /// published (MQTT 3.1.2.5), unless it is delayed (its timer would not outlive us).
    Shutdown,
    /// Everything else: EOF, keep-alive expiry, protocol error, takeover, refused write.
    Abnormal,
}

/// Runs one connection to its end, its log lines in an `mqtt` span naming the client id once
/// known. (The span is the future's, not entered on the thread: an entered span held across
/// an await would be lent to whatever other task that thread runs meanwhile.)
pub async fn run<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    peer: std::net::SocketAddr,
    cert_cn: Option<String>,
    ctx: Arc<MqttContext>,
    shutdown: CancellationToken,
) {
    let span = tracing::debug_span!("mqtt", client_id = tracing::field::Empty);
    connection(io, peer, cert_cn, ctx, shutdown)
        .instrument(span)
        .await;
}

/// [`run`]'s body. The steps before and after the session (handshake, login, claim, restore,
/// ownership write, end, will) run once per connection and their futures are boxed: inline,
/// the task would keep room for the largest of them beside the session's own loop for as
/// long as the connection lives (5.4 KiB per idle connection, issue 26).
async fn connection<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    peer: std::net::SocketAddr,
    cert_cn: Option<String>,
    ctx: Arc<MqttContext>,
    shutdown: CancellationToken,
) {
    let max_packet = ctx.settings.max_packet_bytes();
    let (mut conn, mut info) = match tokio::time::timeout(
        ctx.settings.connect_timeout,
        Box::pin(wire::accept(io, max_packet)),
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
    // A will is a publish held for later: the same size limit applies.
    if info
        .will
        .as_ref()
        .is_some_and(|w| w.payload.len() > ctx.settings.max_message_bytes)
    {
        tracing::debug!("will payload above limits.max_message_bytes; refused");
        let _ = conn.connack_packet_too_large().await;
        return;
    }
    match Box::pin(authenticate(&ctx, &info, peer, cert_cn.as_deref())).await {
        Ok(principal) => info.principal = principal,
        Err(e) => {
            let _ = conn.connack_refused(e).await;
            return;
        }
    }
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
    info.client_id.clone_from(&client_id);
    tracing::Span::current().record("client_id", tracing::field::display(&client_id));
    let Some((handle, previous)) = Box::pin(claim_session(&ctx, &mut conn, &info)).await else {
        return;
    };
    if let Some(previous) = previous {
        // Its subscriptions and commits must be stored before this session reads them.
        let _ = tokio::time::timeout(TAKEOVER_WAIT, previous.finished.cancelled()).await;
        // The client is back before the will delay of the connection it took over.
        ctx.sessions.cancel_will(&client_id);
    }
    let v5 = info.version == ProtocolVersion::MQTT5;
    let stored = if info.clean {
        None
    } else {
        ctx.stored.get(&client_id)
    };
    let window = info.receive_max.map_or(usize::from(DELIVERY_WINDOW), |r| {
        usize::from(r.get().min(DELIVERY_WINDOW))
    });
    let max_packet = info.max_packet.and_then(|m| usize::try_from(m).ok());
    let mut subs = Subscriptions::new(
        ctx.clone(),
        info.principal.clone(),
        &client_id,
        info.session_expiry > 0,
        v5,
        window,
        max_packet,
        info.topic_alias_max,
    );
    let session_present = stored.is_some();
    let mut incoming = Incoming::default();
    if let Some(stored) = stored {
        incoming.resume(&stored.awaiting_pubrel);
        if let Err(e) = Box::pin(subs.restore(stored.subscriptions)).await {
            tracing::warn!(error = %e, "stored subscriptions not resumed yet; they follow when Kafka answers");
        }
    }
    // v5: the gateway's Server Keep Alive, when configured, replaces the client's
    // [MQTT-3.2.2-21]; the keep-alive check below then uses it.
    let server_keep_alive = ctx.settings.server_keep_alive.filter(|_| v5);
    if let Some(ska) = server_keep_alive {
        info.keep_alive = ska.get();
    }
    // Naming this connection the session's owner closes the client's connection on any other
    // replica (session take-over across replicas), and keeps the subscriptions resumable. The
    // CONNACK does not wait for that write (a reconnect storm would be paced by Kafka round
    // trips, issue 26): the two go out together, and the session reads no packet before the
    // record is written, so nothing it writes later can overtake it. A CONNACK never promised
    // the record: a refused write was, and is, only logged.
    let (subscribed, awaiting) = (subs.subscribed(), incoming.awaiting_pubrel());
    let owned = ctx.state.save_session(
        &client_id,
        &handle,
        true,
        &subscribed,
        info.session_expiry,
        &awaiting,
    );
    let connack = conn.connack_ok(
        assigned,
        ctx.settings.receive_window,
        max_packet_size(&ctx),
        session_present,
        server_keep_alive.map(std::num::NonZeroU16::get),
    );
    let (owned, connack) = Box::pin(async { tokio::join!(owned, connack) }).await;
    if let Err(e) = owned {
        tracing::warn!(error = %e, "session ownership not recorded in Kafka; another replica may keep an older connection of this client");
    }
    if connack.is_err() {
        let awaiting = incoming.awaiting_pubrel();
        Box::pin(finish(
            &ctx,
            &client_id,
            &handle,
            subs,
            info.session_expiry,
            &awaiting,
        ))
        .await;
        return;
    }
    conn.release_empty_buffers();
    ctx.metrics.connections.inc();
    tracing::debug!(version = ?info.version, keep_alive = info.keep_alive, session_present, "connected");

    let (end, expiry) = serve(
        &mut conn,
        &ctx,
        &info,
        &mut incoming,
        &mut subs,
        &handle,
        &shutdown,
    )
    .await;
    // Publishes read before the connection ended are still written (each bounded by the
    // produce timeout); nobody is left to acknowledge them.
    while let Some((ack, result)) = incoming.inflight.next().await {
        incoming.settled(ack, result.is_ok());
    }

    ctx.metrics.connections.dec();
    let expiry = expiry.unwrap_or(info.session_expiry);
    let will = info.will.take().filter(|_| !matches!(end, End::Normal));
    let delayed = will
        .as_ref()
        .is_some_and(|w| w.delay_secs > 0 && expiry > 0);
    // A delayed will is registered before the session is let go: a connection taking the
    // session over waits for `finish`, then cancels it (the client is back in time).
    let cancelled =
        (delayed && !matches!(end, End::Shutdown)).then(|| ctx.sessions.delay_will(&client_id));
    Box::pin(finish(
        &ctx,
        &client_id,
        &handle,
        subs,
        expiry,
        &incoming.awaiting_pubrel(),
    ))
    .await;
    let principal = info.principal.clone();
    let Some(will) = will else { return };
    if delayed && matches!(end, End::Shutdown) {
        tracing::debug!("delayed will dropped at shutdown");
        return;
    }
    if let Some(cancelled) = cancelled {
        let delay = Duration::from_secs(u64::from(
            will.delay_secs.min(expiry).min(MAX_WILL_DELAY_SECS),
        ));
        let ctx = ctx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancelled.cancelled() => tracing::debug!("client back before its will delay; will dropped"),
                _ = tokio::time::sleep(delay) => {
                    ctx.sessions.will_done(&client_id, &cancelled);
                    publish_will(&ctx, &principal, will).await;
                }
            }
        });
    } else {
        Box::pin(publish_will(&ctx, &principal, will)).await;
    }
}

/// Takes the client id for this connection's principal, or refuses the CONNECT: the id is
/// held (live, or as a stored session) by another principal (v5 0x87, 3.1.1 code 5), or it
/// would start a persistent session beyond `limits.max_sessions` (v5 0x97, 3.1.1 code 3).
/// Without authentication (`auth.mode = "none"`) every client is the same principal.
async fn claim_session<T: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Arc<MqttContext>,
    conn: &mut Connection<T>,
    info: &wire::ConnectInfo,
) -> Option<(Arc<crate::SessionHandle>, Option<Arc<crate::SessionHandle>>)> {
    let principal = ctx
        .auth
        .checks_credentials()
        .then(|| info.principal.name.clone());
    // The client may have left its session on another replica a moment ago. That matters when
    // this connection resumes or keeps a session, or when the id may be another principal's;
    // a clean session without credentials (every client the same principal) reads nothing the
    // other replicas wrote, so its CONNACK waits for no Kafka round trip (issue 26).
    let reads_shared_state = !info.clean || info.session_expiry > 0 || principal.is_some();
    if reads_shared_state && !ctx.state.sessions_caught_up().await {
        tracing::debug!("sessions topic not caught up; deciding on what this replica knows");
    }
    let held = ctx.stored.get(&info.client_id);
    if held.is_some_and(|s| !crate::same_principal(&s.principal, &principal)) {
        tracing::info!(principal = %info.principal.name, "client id held by another principal's session; refused");
        let _ = conn.connack_refused(AuthError::NotAuthorized).await;
        return None;
    }
    if info.session_expiry > 0
        && !ctx
            .stored
            .admits(&info.client_id, ctx.settings.max_sessions)
    {
        tracing::info!("limits.max_sessions reached; persistent session refused");
        let _ = conn.connack_quota_exceeded().await;
        return None;
    }
    match ctx.sessions.register(&info.client_id, principal) {
        Ok(claimed) => Some(claimed),
        Err(crate::Taken) => {
            tracing::info!(principal = %info.principal.name, "client id connected as another principal; refused");
            let _ = conn.connack_refused(AuthError::NotAuthorized).await;
            None
        }
    }
}

fn max_packet_size(ctx: &MqttContext) -> u32 {
    ctx.settings.max_packet_bytes()
}

/// Ends a session: keeps a persistent one's subscriptions (and the QoS 2 packet ids
/// awaiting PUBREL), commits and closes its consumers, and lets a session taking over go on.
async fn finish(
    ctx: &Arc<MqttContext>,
    client_id: &str,
    handle: &Arc<crate::SessionHandle>,
    subs: Subscriptions,
    expiry: u32,
    awaiting_pubrel: &[u16],
) {
    // A session taken over belongs to its new connection, which records it from now on.
    let taken_over = handle.kick.is_cancelled();
    let subscribed = subs.subscribed();
    subs.close().await;
    if expiry > 0 {
        ctx.stored.put(
            client_id,
            StoredSession {
                awaiting_pubrel: awaiting_pubrel.to_vec(),
                ..StoredSession::new(subscribed.clone(), expiry, handle.principal.clone())
            },
        );
    }
    if !taken_over {
        let saved = if expiry > 0 {
            ctx.state
                .save_session(
                    client_id,
                    handle,
                    false,
                    &subscribed,
                    expiry,
                    awaiting_pubrel,
                )
                .await
        } else {
            ctx.stored.remove(client_id);
            ctx.state.drop_session(client_id).await
        };
        if let Err(e) = saved {
            tracing::warn!(error = %e, "session end not recorded in Kafka");
        }
    }
    ctx.sessions.unregister(client_id, handle);
    handle.finished.cancel();
}

/// Answers every publish still waiting for Kafka, in order, before the connection ends (the
/// client's DISCONNECT, or the gateway's stop): they were read, so they are answered — each
/// bounded by the produce timeout, and each answer's write by [`ANSWER_WRITE_WAIT`] (a client
/// that stopped reading is not answered further). MQTT 3.1.1 has no negative ack: after its
/// first refusal the rest go unanswered, as the connection closes.
async fn answer_in_flight<T: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
    ctx: &MqttContext,
    inflight: &mut FuturesOrdered<Pending>,
    qos2: &mut HashMap<NonZeroU16, bool>,
    v5: bool,
) {
    let mut answering = true;
    while let Some((ack, result)) = inflight.next().await {
        let Some((is_qos2, id)) = ack else { continue };
        if is_qos2 {
            if result.is_ok() {
                qos2.insert(id, true);
            } else {
                qos2.remove(&id);
            }
        }
        let reason = result
            .as_ref()
            .map_or_else(reason_for, |_| PubReason::Success);
        if reason != PubReason::Success {
            ctx.metrics.negative_acks.inc();
        }
        answering &= v5 || reason == PubReason::Success;
        if answering {
            let sent = tokio::time::timeout(ANSWER_WRITE_WAIT, conn.ack(is_qos2, id, reason));
            answering = matches!(sent.await, Ok(Ok(())));
        }
    }
}

/// How long one answer to a departing client may take to write.
const ANSWER_WRITE_WAIT: Duration = Duration::from_secs(5);

/// The session's packet loop. Its rarely taken steps (SUBSCRIBE, UNSUBSCRIBE, saving the
/// subscriptions, answering at the end) are boxed where they are awaited, so that the loop's
/// future — kept for the whole connection — has no room reserved for them (issue 26).
async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
    ctx: &Arc<MqttContext>,
    info: &wire::ConnectInfo,
    incoming: &mut Incoming,
    subs: &mut Subscriptions,
    owner: &crate::SessionHandle,
    shutdown: &CancellationToken,
) -> (End, Option<u32>) {
    let kicked = &owner.kick;
    let v5 = conn.version() == ProtocolVersion::MQTT5;
    let mut topics = ctx.catalog.watch();
    // v5 topic aliases the client set on this connection.
    let mut aliases: HashMap<NonZeroU16, bytestring::ByteString> = HashMap::new();
    let mut commit_tick = tokio::time::interval(COMMIT_EVERY);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keep_alive =
        (info.keep_alive > 0).then(|| Duration::from_millis(u64::from(info.keep_alive) * 1500));
    let mut deadline = keep_alive.map(|k| Instant::now() + k);
    let window = usize::from(ctx.settings.receive_window);
    let inflight_bytes = InFlightBytes::default();
    let Incoming { inflight, qos2 } = incoming;
    let mut rate = barnabas_core::rate::TokenBucket::per_second(ctx.settings.publish_rate);

    loop {
        tokio::select! {
            _ = kicked.cancelled() => {
                conn.disconnect(DisconnectReasonCode::SessionTakenOver).await;
                return (End::Abnormal, None);
            }
            _ = shutdown.cancelled() => {
                Box::pin(answer_in_flight(conn, ctx, inflight, qos2, v5)).await;
                conn.disconnect(DisconnectReasonCode::ServerShuttingDown).await;
                return (End::Shutdown, None);
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                tracing::debug!("keep-alive expired");
                conn.disconnect(DisconnectReasonCode::KeepAliveTimeout).await;
                return (End::Abnormal, None);
            }
            next = subs.next(), if subs.has_room() => match next {
                Ok(next) => {
                    let publish = match next {
                        Next::Record(feed, record) => subs.deliver(feed, record),
                        Next::Retained(topic, qos, id) => subs.deliver_retained(&topic, qos, id),
                    };
                    if let Some(publish) = publish {
                        if conn.publish(publish).await.is_err() {
                            return (End::Abnormal, None);
                        }
                    }
                }
                Err(e) => {
                    // Kafka refuses this client's reads (its own login under identity
                    // passthrough, or an ACL): nothing will come; v5 says why (0x87).
                    tracing::warn!(error = %e, "Kafka refused this client's reads; disconnecting");
                    conn.disconnect(DisconnectReasonCode::NotAuthorized).await;
                    return (End::Abnormal, None);
                }
            },
            Ok(()) = topics.changed() => {
                let list = topics.borrow_and_update().clone();
                Box::pin(subs.topics_changed(&list)).await;
            }
            _ = commit_tick.tick(), if subs.wants_commit() => subs.commit(),
            Some((ack, result)) = inflight.next(), if !inflight.is_empty() => {
                let Some((is_qos2, packet_id)) = ack else { continue };
                let reason = match &result {
                    Ok(_) => PubReason::Success,
                    Err(e) => {
                        ctx.metrics.negative_acks.inc();
                        if !v5 {
                            // MQTT 3.1.1 has no negative ack: close without acknowledging.
                            tracing::warn!(error = %e, "Kafka refused a publish; closing (MQTT 3.1.1)");
                            return (End::Abnormal, None);
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
                    return (End::Abnormal, None);
                }
            }
            packet = conn.next(), if inflight.len() < window
                && inflight_bytes.current() < MAX_INFLIGHT_BYTES => {
                let packet = match packet {
                    Ok(p) => p,
                    Err(WireError::Closed) => return (End::Abnormal, None),
                    Err(WireError::Decode(e)) => {
                        tracing::debug!(error = %e, "bad packet; closing");
                        let reason = if matches!(e, rmqtt_codec::error::DecodeError::MaxSizeExceeded { .. }) {
                            DisconnectReasonCode::PacketTooLarge
                        } else {
                            DisconnectReasonCode::MalformedPacket
                        };
                        conn.disconnect(reason).await;
                        return (End::Abnormal, None);
                    }
                    Err(WireError::Io(_)) => return (End::Abnormal, None),
                };
                deadline = keep_alive.map(|k| Instant::now() + k);
                match packet {
                    Inbound::Publish(mut p) => {
                        if p.payload.len() > ctx.settings.max_message_bytes {
                            conn.disconnect(DisconnectReasonCode::PacketTooLarge).await;
                            return (End::Abnormal, None);
                        }
                        // Over `limits.publish_rate`: wait before taking this publish, so the
                        // socket is read more slowly and the client's sends back up (TCP).
                        if let Some(wait) = rate.as_mut().map(|r| r.take()).filter(|w| !w.is_zero()) {
                            ctx.metrics.throttled.inc();
                            tokio::time::sleep(wait).await;
                        }
                        if !resolve_alias(&mut p, &mut aliases) {
                            conn.disconnect(DisconnectReasonCode::TopicAliasInvalid).await;
                            return (End::Abnormal, None);
                        }
                        let ack = match (p.qos, p.packet_id) {
                            (QoS::AtMostOnce, _) => None,
                            (QoS::AtLeastOnce, Some(id)) => Some((false, id)),
                            (QoS::ExactlyOnce, Some(id)) => {
                                match qos2.get(&id) {
                                    // Retransmission of a publish Kafka already has: re-ack only.
                                    Some(true) => {
                                        if conn.ack(true, id, PubReason::Success).await.is_err() {
                                            return (End::Abnormal, None);
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
                                return (End::Abnormal, None);
                            }
                        };
                        ctx.metrics.publishes.get_or_create(&crate::QosLabel { qos: p.qos as u8 }).inc();
                        let held = inflight_bytes.hold(p.payload.len());
                        inflight.push_back(produce(ctx, &p, ack, info, held));
                    }
                    Inbound::PubRel(id) => {
                        let known = qos2.remove(&id).is_some();
                        if conn.pubcomp(id, known).await.is_err() {
                            return (End::Abnormal, None);
                        }
                    }
                    Inbound::Subscribe(packet) => {
                        if !Box::pin(ctx.state.retained_caught_up()).await {
                            tracing::debug!("retained topic not caught up; delivering what this replica knows");
                        }
                        // Retained messages follow the SUBACK through the delivery window.
                        let results = Box::pin(subs.subscribe(packet.requests, packet.id)).await;
                        Box::pin(save_subscriptions(ctx, info, owner, subs.subscribed())).await;
                        if conn.suback(packet.packet_id, &results).await.is_err() {
                            return (End::Abnormal, None);
                        }
                    }
                    Inbound::Unsubscribe(id, filters) => {
                        let existed = Box::pin(subs.unsubscribe(&filters)).await;
                        Box::pin(save_subscriptions(ctx, info, owner, subs.subscribed())).await;
                        if conn.unsuback(id, &existed).await.is_err() {
                            return (End::Abnormal, None);
                        }
                    }
                    Inbound::PubAck(id) => subs.puback(id),
                    Inbound::PubRec(id) => {
                        let known = subs.pubrec(id);
                        if conn.pubrel(id, known).await.is_err() {
                            return (End::Abnormal, None);
                        }
                    }
                    Inbound::PubComp(id) => subs.pubcomp(id),
                    Inbound::Ping => {
                        if conn.pong().await.is_err() {
                            return (End::Abnormal, None);
                        }
                    }
                    Inbound::Disconnect { with_will, session_expiry } => {
                        Box::pin(answer_in_flight(conn, ctx, inflight, qos2, v5)).await;
                        let end = if with_will { End::Abnormal } else { End::Normal };
                        return (end, session_expiry);
                    }
                    Inbound::Ignored => {}
                    Inbound::ProtocolError => {
                        conn.disconnect(DisconnectReasonCode::ProtocolError).await;
                        return (End::Abnormal, None);
                    }
                }
            }
        }
    }
}

/// Records a persistent session's subscriptions after SUBSCRIBE/UNSUBSCRIBE, so another
/// replica taking the session over resumes them.
async fn save_subscriptions(
    ctx: &MqttContext,
    info: &wire::ConnectInfo,
    owner: &crate::SessionHandle,
    subscribed: Vec<crate::store::Subscribed>,
) {
    if info.session_expiry == 0 {
        return;
    }
    if let Err(e) = ctx
        .state
        .save_session(
            &info.client_id,
            owner,
            true,
            &subscribed,
            info.session_expiry,
            &[],
        )
        .await
    {
        tracing::warn!(error = %e, "subscriptions not recorded in Kafka");
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
    info: &wire::ConnectInfo,
    held: HeldBytes,
) -> Pending {
    let client_id = info.client_id.as_str();
    let topic = p.topic.to_string();
    let mut headers = origin_headers(&topic, p.qos, p.retain);
    headers.push(Header::new(CLIENT_HEADER, client_id.to_owned()));
    headers.extend(
        wire::property_headers(p)
            .into_iter()
            .map(|(k, v)| Header::new(k, v)),
    );
    let retained = p.retain.then(|| Message {
        topic: topic.clone(),
        payload: p.payload.clone(),
        qos: p.qos,
        retain: true,
        headers: headers.clone(),
        origin_client: None,
        expires_at: p
            .properties
            .as_ref()
            .and_then(|props| props.message_expiry_interval)
            .and_then(|secs| {
                std::time::SystemTime::now().checked_add(Duration::from_secs(u64::from(secs.get())))
            }),
    });
    let record = to_record(ctx, &topic, p.payload.clone(), headers)
        .and_then(|r| authorize_write(ctx, &info.principal, r))
        .and_then(|r| admit_retained(ctx, &topic, p.retain, p.payload.len()).map(|()| r));
    let publisher = ctx.backend_publisher.clone();
    let principal = info.principal.clone();
    let metrics = ctx.gateway_metrics.clone();
    let ctx = ctx.clone();
    Box::pin(async move {
        let record = match record {
            Ok(r) => r,
            Err(e) => return (ack, Err(e)),
        };
        let started = Instant::now();
        let result = publisher.publish_one_as(&principal, record).await;
        drop(held);
        let label = GatewayMetrics::label("mqtt");
        metrics
            .produce_latency
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => metrics.records_in.get_or_create(&label).inc(),
            Err(_) => metrics.records_failed.get_or_create(&label).inc(),
        };
        let result = match (result, retained) {
            // The publish is acknowledged once its retained copy is stored too.
            (Ok(d), Some(message)) => match ctx.state.retain(&message).await {
                Ok(()) => {
                    ctx.retained.set(message);
                    Ok(d)
                }
                Err(e) => Err(e),
            },
            (result, _) => result,
        };
        (ack, result)
    })
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
fn authorize_write(
    ctx: &MqttContext,
    principal: &Principal,
    record: barnabas_core::Record,
) -> Result<barnabas_core::Record, Error> {
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

/// The principal the CONNECT's credentials prove, or why they do not. Failed logins are
/// counted, logged without the secret, and answered later the more often an address fails.
async fn authenticate(
    ctx: &Arc<MqttContext>,
    info: &wire::ConnectInfo,
    peer: std::net::SocketAddr,
    cert_cn: Option<&str>,
) -> Result<Principal, AuthError> {
    // A verified client certificate names the principal when the CONNECT has no user name.
    if let (None, Some(cn)) = (&info.username, cert_cn) {
        return ctx.auth.authenticate(Credentials::Certificate(cn));
    }
    let user = info.username.clone();
    let password = info.password.clone().unwrap_or_default();
    let outcome = ctx
        .auth
        .authenticate_off_loop(Credentials::login(user.as_deref(), &password))
        .await;
    match outcome {
        Ok(principal) => {
            if !principal.anonymous {
                ctx.throttle.succeeded(peer.ip());
            }
            Ok(principal)
        }
        Err(e) => {
            ctx.gateway_metrics.auth_failed("mqtt", e);
            tracing::info!(%peer, user = ?user, client_id = %info.client_id, error = %e, "MQTT login refused");
            if e == AuthError::BadCredentials {
                let delay = ctx.throttle.failed(peer.ip());
                tokio::time::sleep(delay).await;
            }
            Err(e)
        }
    }
}

/// Topic Alias Maximum we offer v5 clients.
pub const TOPIC_ALIAS_MAX: u16 = 32;

/// Applies a v5 topic alias: a publish with a topic and an alias sets it, one with only an
/// alias uses it. `false` when the alias is unknown or out of range (0x94).
fn resolve_alias(
    p: &mut rmqtt_codec::types::Publish,
    aliases: &mut HashMap<NonZeroU16, bytestring::ByteString>,
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

/// The headers saying where a record came from: its MQTT topic, QoS and retain flag.
fn origin_headers(topic: &str, qos: QoS, retain: bool) -> Vec<Header> {
    let mut headers = vec![
        Header::new(TOPIC_HEADER, topic.to_owned()),
        Header::new(QOS_HEADER, (qos as u8).to_string()),
    ];
    if retain {
        headers.push(Header::new(RETAIN_HEADER, "1"));
    }
    headers
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
async fn publish_will(ctx: &Arc<MqttContext>, principal: &Principal, will: Will) {
    // A will's Message Expiry Interval counts from when it is published (3.1.3.2.4).
    let expires_at = will
        .headers
        .iter()
        .find(|(k, _)| k == crate::delivery::EXPIRY_HEADER)
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
        .and_then(|secs| {
            std::time::SystemTime::now().checked_add(Duration::from_secs(u64::from(secs)))
        });
    let mut headers = origin_headers(&will.topic, will.qos, will.retain);
    headers.extend(will.headers.into_iter().map(|(k, v)| Header::new(k, v)));
    let retained = will.retain.then(|| Message {
        topic: will.topic.clone(),
        payload: will.payload.clone(),
        qos: will.qos,
        retain: true,
        headers: headers.clone(),
        origin_client: None,
        expires_at,
    });
    let record = match to_record(ctx, &will.topic, will.payload, headers)
        .and_then(|r| authorize_write(ctx, principal, r))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, topic = %will.topic, "will not published");
            return;
        }
    };
    match tokio::time::timeout(
        Duration::from_secs(10),
        ctx.backend_publisher.publish_one_as(principal, record),
    )
    .await
    {
        Ok(Ok(d)) => {
            tracing::debug!(offset = d.offset, topic = %will.topic, "will published");
            if let Some(message) =
                retained.filter(|m| ctx.retained.admits(&m.topic, m.payload.len()))
            {
                match ctx.state.retain(&message).await {
                    Ok(()) => ctx.retained.set(message),
                    Err(e) => tracing::warn!(error = %e, "retained will not stored"),
                }
            }
        }
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
