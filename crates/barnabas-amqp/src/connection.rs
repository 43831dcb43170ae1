//! One AMQP connection: SASL and open under a deadline, then its sessions, each routing the
//! links the client attaches to a producer or consumer task.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tracing::Instrument;

use barnabas_core::{Access, Principal};
use fe2o3_amqp::{
    acceptor::{
        ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SessionAcceptor,
        SupportedReceiverSettleModes, SupportedSenderSettleModes,
    },
    types::{
        definitions::{self, AmqpError, Role},
        messaging::TargetArchetype,
        performatives::Attach,
        primitives::Value,
    },
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

/// Serves one TCP connection to its end, its log lines in an `amqp` span naming the principal
/// once logged in. (The span is the future's, not entered on the thread: an entered span held
/// across an await would be lent to whatever other task that thread runs meanwhile.)
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
    serve(stream, peer, cert_cn, ctx, shutdown)
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

/// [`run`]'s body.
async fn serve<IO>(
    stream: IO,
    peer: std::net::SocketAddr,
    cert_cn: Option<String>,
    ctx: Arc<AmqpContext>,
    shutdown: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    // An address that failed to log in lately waits before it may try again.
    let penalty = ctx.auth.penalty(peer.ip());
    if !penalty.is_zero() {
        tokio::time::sleep(penalty).await;
    }
    let login = Login::new(ctx.auth.clone(), cert_cn.clone());
    // The client's protocol header says whether it does SASL: fe2o3-amqp's acceptor with a
    // SASL acceptor answers a plain AMQP header with the SASL one and fails, so a client that
    // skips SASL is handed to an acceptor without SASL (it is then anonymous, below).
    let accept = async {
        let mut stream = stream;
        let mut header = [0u8; 8];
        stream
            .read_exact(&mut header)
            .await
            .map_err(fe2o3_amqp::connection::OpenError::Io)?;
        let stream = Replayed::new(header, stream);
        let builder = || {
            ConnectionAcceptor::builder()
                .container_id("barnabas")
                .max_frame_size(ctx.settings.max_frame_size)
                .channel_max(ctx.settings.channel_max)
                .idle_time_out(ctx.settings.idle_timeout_ms)
                .properties(open_properties())
        };
        if header == AMQP_HEADER {
            builder().build().accept(stream).await
        } else {
            builder()
                .sasl_acceptor(login.clone())
                .build()
                .accept(stream)
                .await
        }
    };
    let mut conn = match tokio::time::timeout(ctx.settings.open_timeout, accept).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if let Some(Err(refused)) = login.outcome() {
                refused_login(&ctx, peer, login.user().as_deref(), refused);
            } else {
                tracing::debug!(error = ?e, "AMQP connection not opened");
            }
            return;
        }
        Err(_) => {
            tracing::debug!("AMQP open did not complete within the handshake deadline");
            return;
        }
    };
    // A client that skipped SASL is anonymous, if that is allowed.
    let principal = match login.outcome().unwrap_or_else(|| match &cert_cn {
        Some(cn) => ctx
            .auth
            .authenticate(barnabas_core::Credentials::Certificate(cn)),
        None => ctx.auth.authenticate(barnabas_core::Credentials::None),
    }) {
        Ok(p) => p,
        Err(refused) => {
            refused_login(&ctx, peer, login.user().as_deref(), refused);
            let _ = tokio::time::timeout(
                crate::CLOSE_WAIT,
                conn.close_with_error(refusal(
                    AmqpError::UnauthorizedAccess,
                    "authenticate with SASL PLAIN".into(),
                )),
            )
            .await;
            return;
        }
    };
    let user = login.user();
    ctx.auth.record_login(
        "amqp",
        Some(peer.ip()),
        user.as_deref(),
        &Ok(principal.clone()),
    );
    tracing::Span::current().record("principal", tracing::field::display(&principal.name));
    ctx.metrics.connections.inc();
    let conn_done = CancellationToken::new();
    // One publish-rate budget for all the connection's sender links.
    let rate = crate::produce::shared_rate(ctx.settings.publish_rate);
    // Receiver links open on this connection, across its sessions.
    let consumers = Arc::new(AtomicUsize::new(0));
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            incoming = conn.next_incoming_session() => {
                let Some(incoming) = incoming else { break };
                match SessionAcceptor::builder()
                    .properties(open_properties())
                    // Not fe2o3-amqp's default u32::MAX, which it leaves out of the begin
                    // frame as a default value: the Event Hubs SDK then reads no limit at all
                    // and cannot attach a link.
                    .handle_max(SESSION_HANDLE_MAX)
                    .build()
                    .accept_incoming_session(incoming, &mut conn).await {
                    Ok(session) => {
                        let shared = SessionShared { rate: rate.clone(), consumers: consumers.clone() };
                        sessions.spawn(serve_session(session, ctx.clone(), principal.clone(), shared, shutdown.clone(), conn_done.clone()).in_current_span());
                    }
                    Err(e) => {
                        tracing::debug!(error = ?e, "session not begun");
                        break;
                    }
                }
            }
        }
    }
    // Links settle what is in flight (they watch `shutdown`) and sessions end before the
    // connection closes, so every transfer the client sent gets its outcome; bounded, so a
    // client that stopped reading cannot hold the connection open.
    conn_done.cancel();
    let _ = tokio::time::timeout(SESSIONS_END_WAIT, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    let _ = tokio::time::timeout(crate::CLOSE_WAIT, conn.close()).await;
    ctx.metrics.connections.dec();
}

/// Highest link handle in a session (65 536 links at once).
const SESSION_HANDLE_MAX: u32 = 65_535;

/// What a connection's sessions share.
struct SessionShared {
    /// One publish-rate budget for all sender links.
    rate: crate::produce::SharedRate,
    /// Receiver links open (`limits.max_consumers_per_connection`).
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

/// Routes a session's links until it ends.
async fn serve_session(
    mut session: ListenerSessionHandle,
    ctx: Arc<AmqpContext>,
    principal: Principal,
    shared: SessionShared,
    shutdown: CancellationToken,
    conn_done: CancellationToken,
) {
    let SessionShared { rate, consumers } = shared;
    let acceptor = LinkAcceptor::builder()
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
        .build();
    let mut links = tokio::task::JoinSet::new();
    let answers = Arc::new(crate::node::AnswerLinks::default());
    loop {
        let attach = tokio::select! {
            _ = conn_done.cancelled() => break,
            a = session.next_incoming_attach() => match a { Some(a) => a, None => break },
        };
        let route = route(&ctx, &attach)
            .await
            .and_then(|r| authorize(&ctx, &principal, r));
        let (route, slot) = reserve_consumer(&ctx, &consumers, route);
        let name = attach.name.clone();
        let link = match acceptor.accept_incoming_attach(attach, &mut session).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = ?e, link = %name, "attach not accepted");
                continue;
            }
        };
        match (route, link) {
            (Ok(Route::Produce(to)), LinkEndpoint::Receiver(r)) => {
                tracing::debug!(link = %name, topic = %to.topic, "producer link");
                ctx.metrics
                    .links
                    .get_or_create(&DirectionLabel::produce())
                    .inc();
                links.spawn(
                    produce::run(
                        r,
                        to,
                        ctx.clone(),
                        principal.clone(),
                        rate.clone(),
                        shutdown.clone(),
                    )
                    .in_current_span(),
                );
            }
            (Ok(Route::Consume(from, start)), LinkEndpoint::Sender(s)) => {
                tracing::debug!(link = %name, topic = %from.topic, group = %from.group, "consumer link");
                ctx.metrics
                    .links
                    .get_or_create(&DirectionLabel::consume())
                    .inc();
                let consuming = consume::run(
                    s,
                    from,
                    start,
                    principal.clone(),
                    ctx.clone(),
                    shutdown.clone(),
                );
                links.spawn(
                    async move {
                        let _slot = slot;
                        consuming.await;
                    }
                    .in_current_span(),
                );
            }
            (Ok(Route::NodeRequests(node)), LinkEndpoint::Receiver(r)) => {
                tracing::debug!(link = %name, ?node, "request link");
                links.spawn(
                    crate::node::serve_requests(
                        r,
                        node,
                        answers.clone(),
                        ctx.clone(),
                        principal.clone(),
                        shutdown.clone(),
                    )
                    .in_current_span(),
                );
            }
            (Ok(Route::NodeAnswers(node)), LinkEndpoint::Sender(s)) => {
                tracing::debug!(link = %name, ?node, "answer link");
                answers.attach(node, s).await;
            }
            (Err(refusal), link) => {
                tracing::debug!(link = %name, reason = ?refusal.description, "attach refused");
                // The refusal waits for the client's detach; don't hold the session up.
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
            (Ok(_), _) => {} // the acceptor picks the endpoint from the role: cannot happen
        }
    }
    // Ending the session ends its links: let them finish first.
    while links.join_next().await.is_some() {}
    answers.close().await;
    let _ = tokio::time::timeout(crate::CLOSE_WAIT, session.end()).await;
}

/// Records a login refused in the SASL exchange (counted, logged without the secret); the
/// delay it earns is served when the address connects again.
fn refused_login(
    ctx: &AmqpContext,
    peer: std::net::SocketAddr,
    user: Option<&str>,
    error: barnabas_core::AuthError,
) {
    let _ = ctx
        .auth
        .record_login("amqp", Some(peer.ip()), user, &Err(error));
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
        Role::Sender => {
            let address = attach
                .target
                .as_deref()
                .and_then(|t| match t {
                    TargetArchetype::Target(t) => t.address.clone(),
                    #[allow(unreachable_patterns)]
                    _ => None,
                })
                .ok_or_else(|| {
                    refusal(
                        AmqpError::InvalidField,
                        "a sender link needs a target address (TOPIC or TOPIC/partitions/N)".into(),
                    )
                })?;
            if let Some(node) = crate::node::Node::of(&address) {
                return Ok(Route::NodeRequests(node));
            }
            let to = address::parse_target(&address)
                .map_err(|e| refusal(AmqpError::InvalidField, e.to_string()))?;
            if !ctx.settings.auto_create_topics || to.partition.is_some() {
                match ctx.admin.topic_metadata(&to.topic).await {
                    Ok(md) => {
                        if let Some(p) = to.partition {
                            if usize::try_from(p).map_or(true, |p| p >= md.partitions.len()) {
                                return Err(refusal(
                                    AmqpError::NotFound,
                                    format!("topic '{}' has no partition {p}", to.topic),
                                ));
                            }
                        }
                    }
                    Err(barnabas_core::Error::UnknownTopic(_))
                        if ctx.settings.auto_create_topics =>
                    {
                        return Err(refusal(
                            AmqpError::NotFound,
                            format!(
                                "topic '{}' does not exist, so partition {} does not",
                                to.topic,
                                to.partition.unwrap_or(0)
                            ),
                        ));
                    }
                    Err(barnabas_core::Error::UnknownTopic(_)) => {
                        return Err(refusal(
                            AmqpError::NotFound,
                            format!(
                                "topic '{}' does not exist (kafka.auto_create_topics is off)",
                                to.topic
                            ),
                        ));
                    }
                    Err(e) => return Err(produce::condition_for(&e)),
                }
            }
            Ok(Route::Produce(to))
        }
        // The client receives: a consumer group member on the source address.
        Role::Receiver => {
            let source = attach.source.as_deref();
            let address = source.and_then(|s| s.address.clone()).ok_or_else(|| {
                refusal(
                    AmqpError::InvalidField,
                    "a receiver link needs a source address (TOPIC/group.id/GROUP)".into(),
                )
            })?;
            if let Some(node) = crate::node::Node::of(&address) {
                return Ok(Route::NodeAnswers(node));
            }
            let from = address::parse_source(&address)
                .map_err(|e| refusal(AmqpError::InvalidField, e.to_string()))?;
            let selector = source
                .and_then(|s| s.filter.as_ref())
                .and_then(|f| f.get("apache.org:selector-filter:string"));
            let start = match selector {
                None => None,
                Some(v) => {
                    let text = match v {
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
                    Some(address::parse_position_filter(&text).map_err(|e| {
                        let condition = if text.contains("x-opt-enqueued-time") {
                            AmqpError::NotImplemented
                        } else {
                            AmqpError::InvalidField
                        };
                        refusal(condition, e.to_string())
                    })?)
                }
            };
            Ok(Route::Consume(from, start))
        }
    }
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
