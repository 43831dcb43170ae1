//! From a new connection to CONNACK: the CONNECT read under its deadline, the login, the
//! client id claimed for the principal, a persistent session resumed, and the CONNACK sent
//! together with the session's ownership record.

use std::{sync::Arc, time::Duration};

use barnabas_core::{AuthError, Credentials, LoginSource, Principal};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::{publish::Incoming, MqttSession};
use crate::{
    packet::{ConnectInfo, Refusal, Version},
    wire::{self, Connection},
    MqttContext, SessionHandle,
};

/// How long a new connection waits for the session it takes over to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// A claim on a client id: this connection's handle, and the connection it takes over.
type Claimed = (Arc<SessionHandle>, Option<Arc<SessionHandle>>);

impl<T: AsyncRead + AsyncWrite + Unpin> MqttSession<T> {
    /// The session of a client that connected (CONNACK sent), or `None` when the connection
    /// ended first — refused with the CONNACK that says why, or gone.
    pub(super) async fn connect(
        io: T,
        peer: std::net::SocketAddr,
        cert_cn: Option<String>,
        ctx: Arc<MqttContext>,
        shutdown: CancellationToken,
    ) -> Option<Self> {
        let (mut conn, mut info) = handshake(io, &ctx).await?;
        // A will is a publish held for later: the same size limit applies.
        if info
            .will
            .as_ref()
            .is_some_and(|w| w.payload.len() > ctx.settings.max_message_bytes)
        {
            tracing::debug!("will payload above limits.max_message_bytes; refused");
            let _ = conn.connack_refused(Refusal::PacketTooLarge).await;
            return None;
        }
        match authenticate(&ctx, &info, peer, cert_cn.as_deref()).await {
            Ok(principal) => info.principal = principal,
            Err(e) => {
                let _ = conn.connack_refused(e.into()).await;
                return None;
            }
        }
        let assigned = assign_client_id(&mut conn, &mut info).await?;
        tracing::Span::current().record("client_id", tracing::field::display(&info.client_id));
        let (handle, previous) = claim_session(&ctx, &mut conn, &info).await?;
        if let Some(previous) = previous {
            // Its subscriptions and commits must be stored before this session reads them.
            let _ = tokio::time::timeout(TAKEOVER_WAIT, previous.finished.cancelled()).await;
            // The client is back before the will delay of the connection it took over.
            ctx.sessions.cancel_will(&info.client_id);
        }
        let mut session = Self::new(conn, ctx, info, handle, shutdown);
        let session_present = session.resume().await;
        if session.connack(assigned, session_present).await.is_err() {
            let expiry = session.info.session_expiry;
            session.finish(expiry).await;
            return None;
        }
        // The keep-alive counts from the CONNACK: the client cannot speak before it.
        session.renew_keep_alive();
        session.conn.release_empty_buffers();
        session.ctx.metrics.connections.inc();
        tracing::debug!(version = ?session.info.version, keep_alive = session.info.keep_alive, session_present, "connected");
        Some(session)
    }

    fn new(
        conn: Connection<T>,
        ctx: Arc<MqttContext>,
        mut info: ConnectInfo,
        handle: Arc<SessionHandle>,
        shutdown: CancellationToken,
    ) -> Self {
        // v5: the gateway's Server Keep Alive, when configured, replaces the client's
        // [MQTT-3.2.2-21].
        if let Some(ska) = server_keep_alive(&ctx, &info) {
            info.keep_alive = ska;
        }
        let keep_alive =
            (info.keep_alive > 0).then(|| Duration::from_millis(u64::from(info.keep_alive) * 1500));
        Self {
            subs: None,
            rate: barnabas_core::rate::TokenBucket::per_second(ctx.settings.publish_rate),
            deadline: None,
            keep_alive,
            conn,
            ctx,
            info,
            handle,
            incoming: Incoming::default(),
            shutdown,
            aliases: std::collections::BTreeMap::new(),
        }
    }

    /// Resumes the client's stored session, unless it asked for a clean one: its
    /// subscriptions and the QoS 2 publishes awaiting PUBREL. Whether there was one.
    async fn resume(&mut self) -> bool {
        let stored = if self.info.clean {
            None
        } else {
            self.ctx.stored.get(&self.info.client_id)
        };
        let Some(stored) = stored else { return false };
        self.incoming.resume(&stored.awaiting_pubrel);
        if let Err(e) = self.subs_mut().restore(stored.subscriptions).await {
            tracing::warn!(error = %e, "stored subscriptions not resumed yet; they follow when Kafka answers");
        }
        true
    }

    /// CONNACK, with the record naming this connection the session's owner. Naming it closes
    /// the client's connection on any other replica (session take-over across replicas), and
    /// keeps the subscriptions resumable. The CONNACK does not wait for that write (a
    /// reconnect storm would be paced by Kafka round trips, issue 26): the two go out
    /// together, and the session reads no packet before the record is written, so nothing
    /// it writes later can overtake it. A CONNACK never promised the record: a refused write
    /// was, and is, only logged.
    async fn connack(
        &mut self,
        assigned: Option<String>,
        session_present: bool,
    ) -> Result<(), wire::WireError> {
        let (subscribed, awaiting) = (self.subscribed(), self.incoming.awaiting_pubrel());
        let owned = self.ctx.state.save_session(
            &self.info.client_id,
            &self.handle,
            crate::state::Presence::Connected,
            &subscribed,
            self.info.session_expiry,
            &awaiting,
        );
        let connack = self.conn.connack_ok(
            assigned,
            self.ctx.settings.receive_window,
            self.ctx.settings.max_packet_bytes(),
            session_present,
            server_keep_alive(&self.ctx, &self.info),
        );
        let (owned, connack) = tokio::join!(owned, connack);
        if let Err(e) = owned {
            tracing::warn!(error = %e, "session ownership not recorded in Kafka; another replica may keep an older connection of this client");
        }
        connack
    }
}

/// The v5 Server Keep Alive the gateway imposes (`server_keep_alive`), if configured.
fn server_keep_alive(ctx: &MqttContext, info: &ConnectInfo) -> Option<u16> {
    let v5 = info.is_v5();
    ctx.settings
        .server_keep_alive
        .filter(|_| v5)
        .map(std::num::NonZeroU16::get)
}

/// The CONNECT, read within `connect_timeout`.
async fn handshake<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    ctx: &MqttContext,
) -> Option<(Connection<T>, ConnectInfo)> {
    let max_packet = ctx.settings.max_packet_bytes();
    let accepted = tokio::time::timeout(ctx.settings.connect_timeout, wire::accept(io, max_packet));
    match accepted.await {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(e)) => {
            tracing::debug!(error = ?e, "connection closed before a valid CONNECT");
            None
        }
        Err(_) => {
            tracing::debug!("no CONNECT within the handshake deadline");
            None
        }
    }
}

/// The principal the CONNECT's credentials prove, or why they do not (the refusal counted,
/// logged and answered later the more often the address fails: [`barnabas_core::Authenticator::login`]).
async fn authenticate(
    ctx: &Arc<MqttContext>,
    info: &ConnectInfo,
    peer: std::net::SocketAddr,
    cert_cn: Option<&str>,
) -> Result<Principal, AuthError> {
    // A verified client certificate names the principal when the CONNECT has no user name.
    if let (None, Some(cn)) = (&info.username, cert_cn) {
        return ctx.auth.authenticate(Credentials::Certificate(cn));
    }
    let password = info.password.as_deref().unwrap_or_default();
    let credentials = Credentials::login(info.username.as_deref(), password);
    let source = LoginSource::new("mqtt", Some(peer.ip())).client_id(&info.client_id);
    ctx.auth.login(source, credentials).await
}

/// Gives a client that sent no client id one of its own (told to a v5 client in CONNACK:
/// the `Some` returned); a 3.1.1 client without an id must ask for a clean session
/// [MQTT-3.1.3-8]. `None` when refused.
async fn assign_client_id<T: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
    info: &mut ConnectInfo,
) -> Option<Option<String>> {
    if !info.client_id.is_empty() {
        return Some(None);
    }
    if info.version == Version::V3 && !info.clean {
        let _ = conn.connack_refused(Refusal::IdentifierRejected).await;
        return None;
    }
    let id = format!("barnabas-{}", uuid::Uuid::new_v4().simple());
    let assigned = info.is_v5().then(|| id.clone());
    info.client_id = id;
    Some(assigned)
}

/// Takes the client id for this connection's principal, or refuses the CONNECT: the id is
/// held (live, or as a stored session) by another principal (v5 0x87, 3.1.1 code 5), or it
/// would start a persistent session beyond `limits.max_sessions` (v5 0x97, 3.1.1 code 3).
/// Without authentication (`auth.mode = "none"`) every client is the same principal.
async fn claim_session<T: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Arc<MqttContext>,
    conn: &mut Connection<T>,
    info: &ConnectInfo,
) -> Option<Claimed> {
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
        let _ = conn.connack_refused(Refusal::NotAuthorized).await;
        return None;
    }
    if info.session_expiry > 0
        && !ctx
            .stored
            .admits(&info.client_id, ctx.settings.max_sessions)
    {
        tracing::info!("limits.max_sessions reached; persistent session refused");
        let _ = conn.connack_refused(Refusal::QuotaExceeded).await;
        return None;
    }
    match ctx.sessions.register(&info.client_id, principal) {
        Ok(claimed) => Some(claimed),
        Err(crate::Taken) => {
            tracing::info!(principal = %info.principal.name, "client id connected as another principal; refused");
            let _ = conn.connack_refused(Refusal::NotAuthorized).await;
            None
        }
    }
}
