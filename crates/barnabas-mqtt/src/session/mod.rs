//! One MQTT connection, from CONNECT to close, in the shape of mini-redis's `Handler`:
//! [`MqttSession`] owns the connection, the client's subscriptions and its publishes waiting
//! for Kafka, and [`MqttSession::run`] is a short loop that hands each event to one method
//! (`on_publish`, `on_pubrel`, `on_subscribe`, …), each returning a [`SessionEnd`] through
//! `?` when the connection is over. The steps before the loop (handshake, login, claim,
//! resume, CONNACK) are in [`connect`], the Kafka side of a PUBLISH in [`publish`], and what
//! is left when the connection ends (the session kept, the will published) in [`end`].
//!
//! PUBACK/PUBREC go out only after Kafka acknowledged, in the order the PUBLISHes arrived,
//! while a bounded in-flight window stops reading the socket when Kafka is slow. Deliveries
//! to subscribers go out from the same loop, fetched only while the client's window has room.

mod connect;
mod end;
mod publish;

use std::{collections::BTreeMap, num::NonZeroU16, sync::Arc, time::Duration};
use tracing::Instrument;

use barnabas_core::{rate::TokenBucket, Delivered, Error};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    packet::{Ack, ConnectInfo, DisconnectReason, Inbound, SubscribePacket, Version},
    subscriptions::{Next, Subscriptions},
    wire::{Connection, WireError},
    MqttContext, SessionHandle,
};
use publish::{Incoming, ANSWER_WRITE_WAIT};

pub use crate::convert::TOPIC_HEADER;

/// How often acknowledged deliveries are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// Runs one connection to its end, its log lines in an `mqtt` span naming the client id once
/// known. (The span is the future's, not entered on the thread: an entered span held across
/// an await would be lent to whatever other task that thread runs meanwhile.)
///
/// Not an `async fn`: an async function's arguments stay in its future for as long as it
/// runs, and this one's live as long as the connection. Connecting runs once per connection
/// and is boxed (dropped once connected), and ending is boxed where it is awaited, so the
/// task keeps room only for the session and its loop (issue 26, idle connections).
pub fn run<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    peer: std::net::SocketAddr,
    cert_cn: Option<String>,
    ctx: Arc<MqttContext>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let span = tracing::debug_span!("mqtt", client_id = tracing::field::Empty);
    let connecting = Box::pin(MqttSession::connect(io, peer, cert_cn, ctx, shutdown));
    serve(connecting).instrument(span)
}

/// [`run`]'s body, from the connecting step it was given.
async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    connecting: std::pin::Pin<Box<impl std::future::Future<Output = Option<MqttSession<T>>>>>,
) {
    let Some(mut session) = connecting.await else {
        return;
    };
    let end = session.run().await;
    Box::pin(session.end(end)).await;
}

/// How a connected session ended, which decides its will and its expiry.
#[derive(Debug)]
enum SessionEnd {
    /// The client sent DISCONNECT; `with_will` when a v5 client asked for its will (0x04),
    /// with the Session Expiry Interval it may have changed.
    Disconnect {
        with_will: bool,
        session_expiry: Option<u32>,
    },
    /// The gateway stops: the network connection closes without DISCONNECT, so the will is
    /// published (MQTT 3.1.2.5), unless it is delayed (its timer would not outlive us).
    Shutdown,
    /// Everything else: EOF, keep-alive expiry, protocol error, take-over, a failed write,
    /// a refused publish under 3.1.1.
    Lost,
}

impl SessionEnd {
    /// Every end but a plain DISCONNECT publishes the will [MQTT-3.1.2-8].
    fn publishes_will(&self) -> bool {
        !matches!(
            self,
            Self::Disconnect {
                with_will: false,
                ..
            }
        )
    }

    /// The Session Expiry Interval a v5 DISCONNECT set, if any.
    fn session_expiry(&self) -> Option<u32> {
        match self {
            Self::Disconnect { session_expiry, .. } => *session_expiry,
            _ => None,
        }
    }
}

/// A write to the client failed: it is gone.
impl From<WireError> for SessionEnd {
    fn from(_: WireError) -> Self {
        Self::Lost
    }
}

/// One connected client: its connection, its session (subscriptions, QoS 2 state) and the
/// state of the loop that serves it.
struct MqttSession<T> {
    conn: Connection<T>,
    ctx: Arc<MqttContext>,
    /// What the client said in CONNECT (its id and principal settled).
    info: ConnectInfo,
    /// This connection's claim on the client id: cancelled when another takes it over.
    handle: Arc<SessionHandle>,
    /// The client's subscriptions, made at its first SUBSCRIBE (or from a stored session):
    /// most connections only publish, and an idle one keeps 8 bytes for them instead of a
    /// whole `Subscriptions` (issue 26). [`Self::subs_mut`] makes them.
    subs: Option<Box<Subscriptions>>,
    incoming: Incoming,
    shutdown: CancellationToken,
    /// 1.5 × the keep-alive, and when it runs out unless a packet comes.
    keep_alive: Option<Duration>,
    deadline: Option<Instant>,
    /// v5 topic aliases the client set on this connection (a `BTreeMap`: at most
    /// [`crate::packet::TOPIC_ALIAS_MAX`] of them, and an empty one is half a `HashMap`
    /// in every idle connection).
    aliases: BTreeMap<NonZeroU16, bytestring::ByteString>,
    /// `limits.publish_rate`.
    rate: Option<TokenBucket>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> MqttSession<T> {
    fn v5(&self) -> bool {
        self.conn.version() == Version::V5
    }

    /// The client's subscriptions, made now if it had none.
    fn subs_mut(&mut self) -> &mut Subscriptions {
        let (ctx, info) = (&self.ctx, &self.info);
        self.subs
            .get_or_insert_with(|| Box::new(Subscriptions::new(ctx.clone(), info)))
    }

    /// What the client is subscribed to, to keep with its session.
    fn subscribed(&self) -> Vec<crate::store::Subscribed> {
        self.subs
            .as_ref()
            .map(|s| s.subscribed())
            .unwrap_or_default()
    }

    /// Room for another delivery, and something that may deliver.
    fn has_delivery_room(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.has_room())
    }

    /// Whether acknowledged deliveries wait to be committed.
    fn wants_commit(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.wants_commit())
    }

    /// Whether the socket is read: not while the client's publishes waiting for Kafka fill
    /// the window (`receive_window` of them, or `MAX_INFLIGHT_BYTES`) — its sends back up.
    fn reads(&self) -> bool {
        let window = usize::from(self.ctx.settings.receive_window);
        self.incoming.window.has_room(window)
    }

    /// The session's loop: one event at a time, each to its handler. The task's future is
    /// kept for the whole connection and has room for the largest state it can reach, so
    /// the waiting ([`Self::next_event`]) is inline and the handling boxed: an idle
    /// connection holds only the wait (issue 26). Once busy — publishes waiting for Kafka,
    /// deliveries unacknowledged — the boxed part handles event after event until the
    /// connection is idle again, so a busy connection is not allocated per event.
    async fn run(&mut self) -> SessionEnd {
        let mut waits = Waits::new(&self.ctx);
        loop {
            let event = self.next_event(&mut waits).await;
            if let Err(end) = Box::pin(self.while_busy(event, &mut waits)).await {
                return end;
            }
        }
    }

    /// Handles `event`, then every event after it while the connection has work in hand.
    async fn while_busy(&mut self, event: Event, waits: &mut Waits) -> Result<(), SessionEnd> {
        self.handle(event).await?;
        while !self.incoming.window.is_empty() || self.subs.as_ref().is_some_and(|s| s.busy()) {
            let event = self.next_event(waits).await;
            self.handle(event).await?;
        }
        Ok(())
    }

    /// The next thing that needs the session: it only waits, handling is [`Self::handle`].
    async fn next_event(&mut self, waits: &mut Waits) -> Event {
        tokio::select! {
            _ = self.handle.kick.cancelled() => Event::TakenOver,
            _ = self.shutdown.cancelled() => Event::Shutdown,
            _ = keep_alive_expiry(self.deadline), if self.deadline.is_some() => {
                Event::KeepAliveExpired
            }
            ready = deliveries_ready(&mut self.subs), if self.has_delivery_room() => {
                Event::Delivery(ready)
            }
            Ok(()) = waits.topics.changed() => Event::TopicsChanged,
            _ = waits.commit_tick.tick(), if self.wants_commit() => Event::CommitDue,
            Some(answer) = self.incoming.window.next(), if !self.incoming.window.is_empty() => {
                Event::KafkaAnswer(answer)
            }
            packet = self.conn.next(), if self.reads() => Event::Packet(packet),
        }
    }

    /// One event to its handler; `Err` ends the connection.
    async fn handle(&mut self, event: Event) -> Result<(), SessionEnd> {
        match event {
            Event::TakenOver => Err(self.close(DisconnectReason::SessionTakenOver).await),
            Event::Shutdown => Err(Box::pin(self.on_shutdown()).await),
            Event::KeepAliveExpired => {
                tracing::debug!("keep-alive expired");
                Err(self.close(DisconnectReason::KeepAliveTimeout).await)
            }
            Event::Delivery(next) => self.on_delivery(next).await,
            Event::TopicsChanged => Box::pin(self.on_topics_changed()).await,
            Event::CommitDue => {
                if let Some(subs) = self.subs.as_mut() {
                    subs.commit();
                }
                Ok(())
            }
            Event::KafkaAnswer(answer) => self.on_kafka_answer(answer).await,
            Event::Packet(packet) => match self.on_packet(packet).await {
                Ok(()) => Ok(self.conn.flush_unless_more_read().await?),
                Err(end) => {
                    // Answers queued for the packets before the last (a PUBREL's PUBCOMP)
                    // still go out, bounded as every answer at the end is.
                    let _ = tokio::time::timeout(ANSWER_WRITE_WAIT, self.conn.flush()).await;
                    Err(end)
                }
            },
        }
    }

    /// Kafka's topic list changed: pattern subscriptions pick up new topics.
    async fn on_topics_changed(&mut self) -> Result<(), SessionEnd> {
        let list = self.ctx.catalog.watch().borrow().clone();
        if let Some(subs) = self.subs.as_mut() {
            subs.topics_changed(&list).await;
        }
        Ok(())
    }

    /// The client spoke (or was just let in): it has 1.5 × its keep-alive until it must again.
    fn renew_keep_alive(&mut self) {
        self.deadline = self.keep_alive.map(|k| Instant::now() + k);
    }

    /// Tells a v5 client why the connection closes (3.1.1 has no server DISCONNECT).
    async fn close(&mut self, reason: DisconnectReason) -> SessionEnd {
        self.conn.disconnect(reason).await;
        SessionEnd::Lost
    }

    /// One packet from the client, to its handler; any packet renews the keep-alive.
    async fn on_packet(&mut self, packet: Result<Inbound, WireError>) -> Result<(), SessionEnd> {
        let packet = match packet {
            Ok(p) => p,
            Err(e @ WireError::Decode(_)) => {
                tracing::debug!(error = ?e, "bad packet; closing");
                let reason = if e.is_too_large() {
                    DisconnectReason::PacketTooLarge
                } else {
                    DisconnectReason::MalformedPacket
                };
                return Err(self.close(reason).await);
            }
            Err(WireError::Closed | WireError::Io(_)) => return Err(SessionEnd::Lost),
        };
        self.renew_keep_alive();
        match packet {
            Inbound::Publish(p) => self.on_publish(p).await,
            Inbound::PubRel(id) => self.on_pubrel(id),
            Inbound::Subscribe(packet) => Box::pin(self.on_subscribe(packet)).await,
            Inbound::Unsubscribe(id, filters) => Box::pin(self.on_unsubscribe(id, &filters)).await,
            Inbound::PubAck(id) => {
                if let Some(subs) = self.subs.as_mut() {
                    subs.puback(id);
                }
                Ok(())
            }
            Inbound::PubRec(id) => self.on_pubrec(id),
            Inbound::PubComp(id) => {
                if let Some(subs) = self.subs.as_mut() {
                    subs.pubcomp(id);
                }
                Ok(())
            }
            Inbound::Ping => {
                self.conn.pong().await?;
                // A client that pings has been quiet: the room its reads were given goes
                // back until it sends more.
                self.conn.release_empty_buffers();
                Ok(())
            }
            Inbound::Disconnect {
                with_will,
                session_expiry,
            } => Err(Box::pin(self.on_disconnect(with_will, session_expiry)).await),
            Inbound::Ignored => Ok(()),
            Inbound::ProtocolError => Err(self.close(DisconnectReason::ProtocolError).await),
        }
    }

    /// PUBREL: the QoS 2 publish is done on our side (PUBCOMP, queued: written with the
    /// answers to the packets read with it); an unknown id is v5 0x92.
    fn on_pubrel(&mut self, id: NonZeroU16) -> Result<(), SessionEnd> {
        let known = self.incoming.qos2.remove(&id).is_some();
        Ok(self.conn.queue_pubcomp(id, known)?)
    }

    /// PUBREC for one of our QoS 2 deliveries: PUBREL (queued, as a PUBCOMP is; an unknown
    /// id is v5 0x92).
    fn on_pubrec(&mut self, id: NonZeroU16) -> Result<(), SessionEnd> {
        let known = self.subs.as_mut().is_some_and(|s| s.pubrec(id));
        Ok(self.conn.queue_pubrel(id, known)?)
    }

    /// SUBSCRIBE: the consumers set up, the session's subscriptions recorded, then SUBACK;
    /// retained messages follow the SUBACK through the delivery window.
    async fn on_subscribe(&mut self, packet: SubscribePacket) -> Result<(), SessionEnd> {
        if !self.ctx.state.retained_caught_up().await {
            tracing::debug!("retained topic not caught up; delivering what this replica knows");
        }
        let results = self.subs_mut().subscribe(packet.requests, packet.id).await;
        self.save_subscriptions().await;
        Ok(self.conn.suback(packet.packet_id, &results).await?)
    }

    /// UNSUBSCRIBE: the filters dropped, the session recorded, then UNSUBACK.
    async fn on_unsubscribe(
        &mut self,
        id: NonZeroU16,
        filters: &[String],
    ) -> Result<(), SessionEnd> {
        let existed = self.subs_mut().unsubscribe(filters).await;
        self.save_subscriptions().await;
        Ok(self.conn.unsuback(id, &existed).await?)
    }

    /// Records a persistent session's subscriptions after SUBSCRIBE/UNSUBSCRIBE, so another
    /// replica taking the session over resumes them.
    async fn save_subscriptions(&mut self) {
        if self.info.session_expiry == 0 {
            return;
        }
        let subscribed = self.subscribed();
        let saved = self.ctx.state.save_session(
            &self.info.client_id,
            &self.handle,
            crate::state::Presence::Connected,
            &subscribed,
            self.info.session_expiry,
            &[],
        );
        if let Err(e) = saved.await {
            tracing::warn!(error = %e, "subscriptions not recorded in Kafka");
        }
    }

    /// A record (or retained message) for the client, or Kafka refusing its reads (its own
    /// login under identity passthrough, or an ACL): then nothing will come, and v5 says why
    /// (0x87).
    async fn on_delivery(&mut self, ready: Result<(), Error>) -> Result<(), SessionEnd> {
        if let Err(e) = ready {
            tracing::warn!(error = %e, "Kafka refused this client's reads; disconnecting");
            return Err(self.close(DisconnectReason::NotAuthorized).await);
        }
        let Some(subs) = self.subs.as_mut() else {
            return Ok(());
        };
        for _ in 0..DELIVERIES_PER_WRITE {
            let publish = match subs.take() {
                Some(Next::Record(feed, record)) => subs.deliver(feed, record),
                Some(Next::Retained(topic, qos, id)) => subs.deliver_retained(&topic, qos, id),
                None => break,
            };
            if let Some(publish) = publish {
                self.conn.queue_publish(publish)?;
            }
            if !subs.has_room() || self.conn.unsent_bytes() >= DELIVERY_WRITE_BYTES {
                break;
            }
        }
        Ok(self.conn.flush().await?)
    }

    /// DISCONNECT: every publish read is answered first.
    async fn on_disconnect(&mut self, with_will: bool, session_expiry: Option<u32>) -> SessionEnd {
        self.answer_in_flight().await;
        SessionEnd::Disconnect {
            with_will,
            session_expiry,
        }
    }

    /// The gateway stops: every publish read is answered, then v5 hears why (0x8B).
    async fn on_shutdown(&mut self) -> SessionEnd {
        self.answer_in_flight().await;
        self.conn
            .disconnect(DisconnectReason::ServerShuttingDown)
            .await;
        SessionEnd::Shutdown
    }
}

/// Deliveries written together, at most: what the subscriptions hold in hand goes out in one
/// write, as long as the client's window has room. A write per PUBLISH was one system call
/// per delivered message (issue 26); the bounds keep one write's bytes, and the time before
/// the session looks at anything else, small.
const DELIVERIES_PER_WRITE: usize = 64;
/// Bytes of deliveries written together, at most (one above it still goes alone).
const DELIVERY_WRITE_BYTES: usize = 64 * 1024;

/// What the session's loop waits for, one at a time.
enum Event {
    /// Another connection took the client id over.
    TakenOver,
    /// The gateway stops.
    Shutdown,
    /// The client was silent for 1.5 × its keep-alive.
    KeepAliveExpired,
    /// A record or retained message for the client is in hand, or Kafka refused its reads.
    Delivery(Result<(), Error>),
    /// Kafka's topic list changed.
    TopicsChanged,
    /// Acknowledged deliveries wait to be committed, and the commit interval passed.
    CommitDue,
    /// Kafka answered the oldest publish waiting for it.
    KafkaAnswer(Answer),
    /// A packet from the client, or the connection's end.
    Packet(Result<Inbound, WireError>),
}

/// The loop's own watches, apart from the session so that waiting borrows both.
struct Waits {
    /// Kafka's topic list, for pattern subscriptions.
    topics: tokio::sync::watch::Receiver<barnabas_core::TopicList>,
    commit_tick: tokio::time::Interval,
}

impl Waits {
    fn new(ctx: &MqttContext) -> Self {
        let mut commit_tick = tokio::time::interval(COMMIT_EVERY);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            topics: ctx.catalog.watch(),
            commit_tick,
        }
    }
}

/// What Kafka answered for one publish: its ack (none for QoS 0) and the write's outcome.
type Answer = (Option<Ack>, Result<Delivered, Error>);

/// [`Subscriptions::ready`], for a client that may have none (`select!` polls it only when
/// it has some).
async fn deliveries_ready(subs: &mut Option<Box<Subscriptions>>) -> Result<(), Error> {
    match subs {
        Some(subs) => subs.ready().await,
        None => std::future::pending().await,
    }
}

/// The keep-alive's timer (`select!` polls it only when there is a deadline).
fn keep_alive_expiry(deadline: Option<Instant>) -> tokio::time::Sleep {
    let far = || Instant::now() + Duration::from_secs(86_400 * 365);
    tokio::time::sleep_until(deadline.unwrap_or_else(far))
}
