//! One AMQP connection: SASL and open under a deadline, then its sessions, each routing the
//! links the client attaches to a producer or consumer task.

use std::{
    ops::ControlFlow,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tracing::Instrument;

use barnabas_core::{Access, Credentials, LoginSource, Principal};
use fe2o3_amqp::{
    acceptor::{
        ConnectionAcceptor, IncomingSession, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
        ListenerSessionHandle, SessionAcceptor, SupportedReceiverSettleModes,
        SupportedSenderSettleModes,
    },
    connection::OpenError,
    types::{
        definitions::{self, AmqpError, Role},
        messaging::{Source, Target, TargetArchetype},
        performatives::Attach,
        primitives::Value,
    },
    Receiver, Sender,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::{address, consume, produce, sasl::Login, AmqpContext, DirectionLabel};

/// Longest wait, when a connection ends, for its sessions to settle their links' transfers
/// and end (within the gateway's drain grace period).
const SESSIONS_END_WAIT: Duration = Duration::from_secs(8);

/// The answer to a connection over `limits.max_connections`: the open completes (any SASL
/// login passes, see [`crate::sasl::BusyLogin`]) and is followed at once by a close with
/// `amqp:resource-limit-exceeded`, so the client knows to come back later.
pub async fn answer_busy<IO>(stream: IO, ctx: Arc<AmqpContext>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let acceptor = ConnectionAcceptor::builder()
        .container_id("barnabas")
        .max_frame_size(ctx.settings.max_frame_size)
        .sasl_acceptor(crate::sasl::BusyLogin)
        .build();
    if let Ok(mut conn) = acceptor.accept(stream).await {
        let _ = conn
            .close_with_error(refusal(
                AmqpError::ResourceLimitExceeded,
                "the gateway is at its connection limit; retry later".into(),
            ))
            .await;
    }
}

/// Serves one TCP connection to its end (the handshake and login, then its sessions), its
/// log lines in an `amqp` span naming the principal once logged in. (The span is the
/// future's, not entered on the thread: an entered span held across an await would be lent
/// to whatever other task that thread runs meanwhile.)
pub async fn run<IO>(
    stream: IO,
    peer: std::net::SocketAddr,
    cert_cn: Option<String>,
    ctx: Arc<AmqpContext>,
    shutdown: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let span = tracing::debug_span!("amqp", principal = tracing::field::Empty);
    async move {
        // An address that failed to log in lately waits before it may try again.
        let penalty = ctx.auth.penalty(peer.ip());
        if !penalty.is_zero() {
            tokio::time::sleep(penalty).await;
        }
        let handshake = Handshake {
            login: Login::new(ctx.auth.clone(), cert_cn.clone()),
            peer,
            cert_cn,
            ctx,
        };
        let Some(mut conn) = handshake.open(stream).await else {
            return;
        };
        let Some(principal) = handshake.log_in(&mut conn).await else {
            return;
        };
        Connection::new(conn, handshake.ctx, principal, shutdown)
            .run()
            .await;
    }
    .instrument(span)
    .await;
}

/// The `properties` of the gateway's open, begin and attach frames (product and version, as
/// brokers announce themselves). With its last field present a frame is encoded whole, not cut
/// after its last non-null field (which AMQP allows): the Azure Event Hubs SDK's AMQP stack
/// reads every field of these frames by position and fails on a shortened one ("list index
/// out of range").
fn open_properties() -> fe2o3_amqp::types::definitions::Fields {
    let mut fields = fe2o3_amqp::types::definitions::Fields::new();
    fields.insert("product".into(), "barnabas".into());
    fields.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    fields
}

/// A connection before it is open: who connects, and the SASL exchange that says who they
/// are. Kept together because a refused login is recorded with all of them.
struct Handshake {
    peer: std::net::SocketAddr,
    /// Subject CN of the connection's verified TLS client certificate.
    cert_cn: Option<String>,
    ctx: Arc<AmqpContext>,
    /// The SASL acceptor, which remembers the login's outcome.
    login: Login,
}

impl Handshake {
    /// The open connection, or `None` (logged; a login refused in the SASL exchange
    /// recorded) when the open failed or did not complete within `open_timeout`.
    async fn open<IO>(&self, stream: IO) -> Option<ListenerConnectionHandle>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
    {
        match tokio::time::timeout(self.ctx.settings.open_timeout, self.accept(stream)).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => {
                if let Some(Err(refused)) = self.login.outcome() {
                    self.refused(refused);
                } else {
                    tracing::debug!(error = ?e, "AMQP connection not opened");
                }
                None
            }
            Err(_) => {
                tracing::debug!("AMQP open did not complete within the handshake deadline");
                None
            }
        }
    }

    /// fe2o3-amqp's accept, with or without SASL as the client's protocol header says: its
    /// acceptor with a SASL acceptor answers a plain AMQP header with the SASL one and fails,
    /// so a client that skips SASL is handed to an acceptor without SASL (it is then
    /// anonymous, see [`Self::log_in`]).
    async fn accept<IO>(&self, mut stream: IO) -> Result<ListenerConnectionHandle, OpenError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
    {
        let mut header = [0u8; 8];
        stream
            .read_exact(&mut header)
            .await
            .map_err(OpenError::Io)?;
        let stream = Replayed::new(header, stream);
        let builder = ConnectionAcceptor::builder()
            .container_id("barnabas")
            .max_frame_size(self.ctx.settings.max_frame_size)
            .channel_max(self.ctx.settings.channel_max)
            .idle_time_out(self.ctx.settings.idle_timeout_ms)
            .properties(open_properties());
        if header == AMQP_HEADER {
            builder.build().accept(stream).await
        } else {
            builder
                .sasl_acceptor(self.login.clone())
                .build()
                .accept(stream)
                .await
        }
    }

    /// The principal the open connection logged in as, recorded and named in the
    /// connection's span; or `None` when refused, after closing the connection with
    /// `amqp:unauthorized-access`.
    async fn log_in(&self, conn: &mut ListenerConnectionHandle) -> Option<Principal> {
        // A client that skipped SASL is anonymous, if that is allowed.
        let outcome = self.login.outcome().unwrap_or_else(|| match &self.cert_cn {
            Some(cn) => self.ctx.auth.authenticate(Credentials::Certificate(cn)),
            None => self.ctx.auth.authenticate(Credentials::None),
        });
        let principal = match outcome {
            Ok(p) => p,
            Err(refused) => {
                self.refused(refused);
                let _ = tokio::time::timeout(
                    crate::CLOSE_WAIT,
                    conn.close_with_error(refusal(
                        AmqpError::UnauthorizedAccess,
                        "authenticate with SASL PLAIN".into(),
                    )),
                )
                .await;
                return None;
            }
        };
        let user = self.login.user();
        self.ctx.auth.record_login(
            LoginSource::new("amqp", Some(self.peer.ip())),
            user.as_deref(),
            &Ok(principal.clone()),
        );
        tracing::Span::current().record("principal", tracing::field::display(&principal.name));
        Some(principal)
    }

    /// Records a refused login (counted, logged without the secret); the delay it earns is
    /// served when the address connects again.
    fn refused(&self, error: barnabas_core::AuthError) {
        let user = self.login.user();
        let _ = self.ctx.auth.record_login(
            LoginSource::new("amqp", Some(self.peer.ip())),
            user.as_deref(),
            &Err(error),
        );
    }
}

/// An open connection, logged in: begins the sessions the client asks for, each in its own
/// task, until the client or the gateway ends it.
struct Connection {
    conn: ListenerConnectionHandle,
    ctx: Arc<AmqpContext>,
    principal: Principal,
    /// The gateway stops.
    shutdown: CancellationToken,
    /// Cancelled when the connection ends: its sessions stop taking attaches.
    done: CancellationToken,
    /// What its sessions share.
    shared: SessionShared,
    sessions: tokio::task::JoinSet<()>,
}

impl Connection {
    fn new(
        conn: ListenerConnectionHandle,
        ctx: Arc<AmqpContext>,
        principal: Principal,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = SessionShared {
            rate: crate::produce::shared_rate(ctx.settings.publish_rate),
            consumers: Arc::new(AtomicUsize::new(0)),
        };
        Self {
            conn,
            ctx,
            principal,
            shutdown,
            done: CancellationToken::new(),
            shared,
            sessions: tokio::task::JoinSet::new(),
        }
    }

    /// Serves the connection to its end, counted in `amqp_connections` meanwhile.
    async fn run(mut self) {
        self.ctx.metrics.connections.inc();
        loop {
            let incoming = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                incoming = self.conn.next_incoming_session() => incoming,
            };
            let Some(incoming) = incoming else { break };
            if self.begin_session(incoming).await.is_break() {
                break;
            }
        }
        self.close().await;
    }

    /// Begins a session the client asked for and serves it in its own task; one that cannot
    /// be begun (logged) ends the connection.
    async fn begin_session(&mut self, incoming: IncomingSession) -> ControlFlow<()> {
        let begun = SessionAcceptor::builder()
            .properties(open_properties())
            // Not fe2o3-amqp's default u32::MAX, which it leaves out of the begin frame as a
            // default value: the Event Hubs SDK then reads no limit at all and cannot attach
            // a link.
            .handle_max(SESSION_HANDLE_MAX)
            .build()
            .accept_incoming_session(incoming, &mut self.conn)
            .await;
        let handle = match begun {
            Ok(handle) => handle,
            Err(e) => {
                tracing::debug!(error = ?e, "session not begun");
                return ControlFlow::Break(());
            }
        };
        let session = Session {
            acceptor: link_acceptor(&self.ctx),
            handle,
            ctx: self.ctx.clone(),
            principal: self.principal.clone(),
            shared: self.shared.clone(),
            shutdown: self.shutdown.clone(),
            conn_done: self.done.clone(),
            links: tokio::task::JoinSet::new(),
            answers: Arc::new(crate::node::AnswerLinks::default()),
        };
        self.sessions.spawn(session.run().in_current_span());
        ControlFlow::Continue(())
    }

    /// Links settle what is in flight (they watch `shutdown`) and sessions end before the
    /// connection closes, so every transfer the client sent gets its outcome; bounded, so a
    /// client that stopped reading cannot hold the connection open.
    async fn close(mut self) {
        self.done.cancel();
        let sessions = &mut self.sessions;
        let _ = tokio::time::timeout(SESSIONS_END_WAIT, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        let _ = tokio::time::timeout(crate::CLOSE_WAIT, self.conn.close()).await;
        self.ctx.metrics.connections.dec();
    }
}

/// Highest link handle in a session (65 536 links at once).
const SESSION_HANDLE_MAX: u32 = 65_535;

/// What a connection's sessions share.
#[derive(Clone)]
struct SessionShared {
    /// One publish-rate budget for all sender links.
    rate: crate::produce::SharedRate,
    /// Receiver links open on the connection, across its sessions
    /// (`limits.max_consumers_per_connection`).
    consumers: Arc<AtomicUsize>,
}

/// One receiver link's place in its connection's count, given back when the link ends.
struct ConsumerSlot(Arc<AtomicUsize>);

impl ConsumerSlot {
    /// A slot, unless `max` receiver links are open already.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for ConsumerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A consumer route gets a [`ConsumerSlot`], or is refused with
/// `amqp:resource-limit-exceeded`: each receiver link is a Kafka consumer, which one client
/// must not multiply without bound.
fn reserve_consumer(
    ctx: &AmqpContext,
    consumers: &Arc<AtomicUsize>,
    route: Result<Route, definitions::Error>,
) -> (Result<Route, definitions::Error>, Option<ConsumerSlot>) {
    if !matches!(route, Ok(Route::Consume(..))) {
        return (route, None);
    }
    let max = ctx.settings.max_consumers_per_connection;
    match ConsumerSlot::take(consumers, max) {
        Some(slot) => (route, Some(slot)),
        None => (
            Err(refusal(
                AmqpError::ResourceLimitExceeded,
                format!("this connection has {max} receiver links already (limits.max_consumers_per_connection)"),
            )),
            None,
        ),
    }
}

/// fe2o3-amqp's link acceptor, with its default (identity) source and target checks.
type SessionLinkAcceptor = LinkAcceptor<fn(Source) -> Option<Source>, fn(Target) -> Option<Target>>;

/// The link acceptor of a session.
fn link_acceptor(ctx: &AmqpContext) -> SessionLinkAcceptor {
    LinkAcceptor::builder()
        // Larger than the record limit so an oversized message reaches us and is answered
        // `rejected` with a reason, instead of the link being closed.
        .max_message_size(ctx.settings.max_transfer_bytes())
        .supported_sender_settle_modes(SupportedSenderSettleModes::All)
        // Settled once, by the receiver (as Azure Event Hubs does): a sender asking for
        // `second` is told `first` in the attach. The Event Hubs SDK asks for `second` but
        // ignores an unsettled disposition, and would wait for its outcome forever.
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(definitions::ReceiverSettleMode::First)
        .properties(open_properties())
        .build()
}

/// One session: routes the links the client attaches, each served in its own task, until
/// the client ends the session or its connection ends.
struct Session {
    handle: ListenerSessionHandle,
    acceptor: SessionLinkAcceptor,
    ctx: Arc<AmqpContext>,
    principal: Principal,
    shared: SessionShared,
    /// The gateway stops: links settle what is in flight and end.
    shutdown: CancellationToken,
    /// The connection ends: no more attaches.
    conn_done: CancellationToken,
    links: tokio::task::JoinSet<()>,
    /// The session's answer links of the Event Hubs nodes, for its request links.
    answers: Arc<crate::node::AnswerLinks>,
}

impl Session {
    /// Routes the session's links until it ends.
    async fn run(mut self) {
        loop {
            let attach = tokio::select! {
                _ = self.conn_done.cancelled() => break,
                a = self.handle.next_incoming_attach() => match a { Some(a) => a, None => break },
            };
            self.attach(attach).await;
        }
        // Ending the session ends its links: let them finish first.
        while self.links.join_next().await.is_some() {}
        self.answers.close().await;
        let _ = tokio::time::timeout(crate::CLOSE_WAIT, self.handle.end()).await;
    }

    /// Accepts an attach and serves the link as its route says, or refuses it.
    async fn attach(&mut self, attach: Attach) {
        let route = route(&self.ctx, &attach)
            .await
            .and_then(|r| authorize(&self.ctx, &self.principal, r));
        let (route, slot) = reserve_consumer(&self.ctx, &self.shared.consumers, route);
        let name = attach.name.clone();
        let link = match self
            .acceptor
            .accept_incoming_attach(attach, &mut self.handle)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = ?e, link = %name, "attach not accepted");
                return;
            }
        };
        match (route, link) {
            (Ok(Route::Produce(to)), LinkEndpoint::Receiver(r)) => self.produce(&name, to, r),
            (Ok(Route::Consume(from, start)), LinkEndpoint::Sender(s)) => {
                self.consume(&name, from, start, s, slot);
            }
            (Ok(Route::NodeRequests(node)), LinkEndpoint::Receiver(r)) => {
                tracing::debug!(link = %name, ?node, "request link");
                let serving = crate::node::serve_requests(
                    r,
                    node,
                    self.answers.clone(),
                    self.ctx.clone(),
                    self.principal.clone(),
                    self.shutdown.clone(),
                );
                self.links.spawn(serving.in_current_span());
            }
            (Ok(Route::NodeAnswers(node)), LinkEndpoint::Sender(s)) => {
                tracing::debug!(link = %name, ?node, "answer link");
                self.answers.attach(node, s).await;
            }
            (Err(refusal), link) => refuse(&name, link, refusal),
            (Ok(_), _) => {} // the acceptor picks the endpoint from the role: cannot happen
        }
    }

    /// Serves a link the client sends on: a producer to `to`.
    fn produce(&mut self, name: &str, to: address::ProduceTo, receiver: Receiver) {
        tracing::debug!(link = %name, topic = %to.topic, "producer link");
        let producing = produce::run(
            receiver,
            to,
            self.ctx.clone(),
            self.principal.clone(),
            self.shared.rate.clone(),
            self.shutdown.clone(),
        );
        self.spawn_link(DirectionLabel::produce(), producing);
    }

    /// Serves a link the client receives on: a consumer of `from`, holding its `slot` in the
    /// connection's count until it ends.
    fn consume(
        &mut self,
        name: &str,
        from: address::ConsumeFrom,
        start: Option<address::StartAt>,
        sender: Sender,
        slot: Option<ConsumerSlot>,
    ) {
        tracing::debug!(link = %name, topic = %from.topic, group = %from.group, "consumer link");
        let consuming = consume::run(
            sender,
            from,
            start,
            self.principal.clone(),
            self.ctx.clone(),
            self.shutdown.clone(),
        );
        self.spawn_link(DirectionLabel::consume(), async move {
            let _slot = slot;
            consuming.await;
        });
    }

    /// Serves a producer or consumer link in a task of the session, counted in
    /// `amqp_links` by direction (the link's task counts it down when it ends).
    fn spawn_link(
        &mut self,
        direction: DirectionLabel,
        serving: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.ctx.metrics.links.get_or_create(&direction).inc();
        self.links.spawn(serving.in_current_span());
    }
}

/// Closes a refused link with its error, in a task of its own: the refusal waits for the
/// client's detach, which must not hold the session up.
fn refuse(name: &str, link: LinkEndpoint, refusal: definitions::Error) {
    tracing::debug!(link = %name, reason = ?refusal.description, "attach refused");
    tokio::spawn(async move {
        let closing = async {
            match link {
                LinkEndpoint::Sender(s) => s.close_with_error(refusal).await.is_ok(),
                LinkEndpoint::Receiver(r) => r.close_with_error(refusal).await.is_ok(),
            }
        };
        let _ = tokio::time::timeout(crate::CLOSE_WAIT, closing).await;
    });
}

/// The route, if the principal may use it: a producer link needs `write` on its topic, a
/// consumer link `read` on its topic and `group` on its group; otherwise the attach is
/// refused with `amqp:unauthorized-access`.
fn authorize(
    ctx: &AmqpContext,
    principal: &Principal,
    route: Route,
) -> Result<Route, definitions::Error> {
    let denied = |what: String| {
        tracing::info!(principal = %principal.name, %what, "attach denied by ACL");
        Err(refusal(
            AmqpError::UnauthorizedAccess,
            format!("principal '{}' may not {what}", principal.name),
        ))
    };
    match &route {
        Route::Produce(to) if !ctx.auth.allows(principal, Access::Write(&to.topic)) => {
            denied(format!("write to topic '{}'", to.topic))
        }
        Route::Consume(from, _) if !ctx.auth.allows(principal, Access::Read(&from.topic)) => {
            denied(format!("read from topic '{}'", from.topic))
        }
        Route::Consume(from, _) if !ctx.auth.allows(principal, Access::Group(&from.group)) => {
            denied(format!("use consumer group '{}'", from.group))
        }
        _ => Ok(route),
    }
}

enum Route {
    Produce(address::ProduceTo),
    Consume(address::ConsumeFrom, Option<address::StartAt>),
    /// Requests to an Event Hubs node (`$cbs`, `$management`): the client sends.
    NodeRequests(crate::node::Node),
    /// Answers from an Event Hubs node: the client receives.
    NodeAnswers(crate::node::Node),
}

fn refusal(condition: AmqpError, description: String) -> definitions::Error {
    definitions::Error::new(condition, Some(description), None)
}

/// Decides what a link is from its attach, or why it is refused.
async fn route(ctx: &AmqpContext, attach: &Attach) -> Result<Route, definitions::Error> {
    match attach.role {
        // The client sends: a producer on the target address.
        Role::Sender => route_sender(ctx, attach).await,
        // The client receives: a consumer group member on the source address.
        Role::Receiver => route_receiver(attach),
    }
}

/// What a link's address names.
enum LinkAddress<T> {
    /// An Event Hubs request/response node.
    Node(crate::node::Node),
    /// A topic (and partition or group), as the link's kind of address reads.
    Topic(T),
}

/// A link's address, read by `parse` unless it names a node; refused with
/// `amqp:invalid-field` when malformed, or missing (`missing` says what the link needs).
/// Sender and receiver links share this; only their address forms differ.
fn link_address<T>(
    address: Option<String>,
    missing: &str,
    parse: impl FnOnce(&str) -> Result<T, address::AddressError>,
) -> Result<LinkAddress<T>, definitions::Error> {
    let address = address.ok_or_else(|| refusal(AmqpError::InvalidField, missing.into()))?;
    if let Some(node) = crate::node::Node::of(&address) {
        return Ok(LinkAddress::Node(node));
    }
    parse(&address)
        .map(LinkAddress::Topic)
        .map_err(|e| refusal(AmqpError::InvalidField, e.to_string()))
}

/// A link the client sends on: requests to a node, or a producer to its target topic, which
/// must exist (see [`check_target`]).
async fn route_sender(ctx: &AmqpContext, attach: &Attach) -> Result<Route, definitions::Error> {
    let target = attach.target.as_deref().and_then(|t| match t {
        TargetArchetype::Target(t) => t.address.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    });
    let needs = "a sender link needs a target address (TOPIC or TOPIC/partitions/N)";
    match link_address(target, needs, address::parse_target)? {
        LinkAddress::Node(node) => Ok(Route::NodeRequests(node)),
        LinkAddress::Topic(to) => {
            check_target(ctx, &to).await?;
            Ok(Route::Produce(to))
        }
    }
}

/// Refuses a producer's target that cannot be written: with `amqp:not-found` a partition the
/// topic lacks, or a topic that does not exist when writes may not create it (with
/// `kafka.auto_create_topics` on, only an explicit partition needs the topic to exist).
async fn check_target(
    ctx: &AmqpContext,
    to: &address::ProduceTo,
) -> Result<(), definitions::Error> {
    if ctx.settings.auto_create_topics && to.partition.is_none() {
        return Ok(());
    }
    match ctx.admin.topic_metadata(&to.topic).await {
        Ok(md) => match to.partition {
            Some(p) if usize::try_from(p).map_or(true, |p| p >= md.partitions.len()) => {
                Err(refusal(
                    AmqpError::NotFound,
                    format!("topic '{}' has no partition {p}", to.topic),
                ))
            }
            _ => Ok(()),
        },
        Err(barnabas_core::Error::UnknownTopic(_)) if ctx.settings.auto_create_topics => {
            Err(refusal(
                AmqpError::NotFound,
                format!(
                    "topic '{}' does not exist, so partition {} does not",
                    to.topic,
                    to.partition.unwrap_or(0)
                ),
            ))
        }
        Err(barnabas_core::Error::UnknownTopic(_)) => Err(refusal(
            AmqpError::NotFound,
            format!(
                "topic '{}' does not exist (kafka.auto_create_topics is off)",
                to.topic
            ),
        )),
        Err(e) => Err(produce::condition_for(&e)),
    }
}

/// A link the client receives on: answers from a node, or a consumer of its source,
/// starting where its filter says.
fn route_receiver(attach: &Attach) -> Result<Route, definitions::Error> {
    let source = attach.source.as_deref();
    let needs = "a receiver link needs a source address (TOPIC/group.id/GROUP)";
    match link_address(
        source.and_then(|s| s.address.clone()),
        needs,
        address::parse_source,
    )? {
        LinkAddress::Node(node) => Ok(Route::NodeAnswers(node)),
        LinkAddress::Topic(from) => Ok(Route::Consume(from, start_position(source)?)),
    }
}

/// Where a consumer starts: the position of the source's selector filter (Event Hubs'
/// form, see [`address::parse_position_filter`]), `None` without one. A filter on the
/// enqueued time that cannot be read is refused as `amqp:not-implemented`, any other bad
/// filter as `amqp:invalid-field`.
fn start_position(source: Option<&Source>) -> Result<Option<address::StartAt>, definitions::Error> {
    let Some(selector) = source
        .and_then(|s| s.filter.as_ref())
        .and_then(|f| f.get("apache.org:selector-filter:string"))
    else {
        return Ok(None);
    };
    let text = match selector {
        Value::Described(d) => match &d.value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        },
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
    .ok_or_else(|| {
        refusal(
            AmqpError::InvalidField,
            "the selector filter must be a string".into(),
        )
    })?;
    address::parse_position_filter(&text)
        .map(Some)
        .map_err(|e| {
            let condition = if text.contains("x-opt-enqueued-time") {
                AmqpError::NotImplemented
            } else {
                AmqpError::InvalidField
            };
            refusal(condition, e.to_string())
        })
}

/// The protocol header of a client that goes straight to AMQP, without SASL.
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

/// A stream whose first bytes, already read to look at them, are read again.
#[derive(Debug)]
struct Replayed<IO> {
    first: [u8; 8],
    replayed: usize,
    io: IO,
}

impl<IO> Replayed<IO> {
    fn new(first: [u8; 8], io: IO) -> Self {
        Self {
            first,
            replayed: 0,
            io,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Replayed<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.first.get(this.replayed..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Replayed<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
