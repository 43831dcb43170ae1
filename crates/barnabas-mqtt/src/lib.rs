//! barnabas' MQTT 3.1.1 / 5.0 front end.
//!
//! One task per connection ([`session`]) over rmqtt-codec ([`wire`]): PUBLISHes become Kafka
//! records through the topic-mapping rules ([`convert`], both ways) and are acknowledged
//! (PUBACK/PUBREC) only after Kafka acknowledged them, in arrival order. SUBSCRIBE filters
//! are read back through the same rules ([`subscriptions`]): records are delivered from
//! Kafka as fast as the client acknowledges them, and committed only once it did.

pub mod convert;
pub mod filter;
pub mod outbound;
pub mod packet;
pub mod retained;
pub mod session;
pub mod state;
pub mod store;
pub mod subscriptions;
pub mod wire;
pub mod ws;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use barnabas_core::{
    Admin, ConsumerFactory, GatewayMetrics, MetricsRegistry, Services, TopicCatalog, TopicMapper,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Settings of the MQTT front end.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Largest payload accepted (`limits.max_message_bytes`); above it the client is
    /// disconnected (v5 reason 0x95).
    pub max_message_bytes: usize,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// Publishes in flight towards Kafka per connection (our v5 Receive Maximum); when full,
    /// the socket is not read until Kafka answers.
    pub receive_window: u16,
    /// Connections accepted at once (`limits.max_connections`).
    pub max_connections: usize,
    /// Publishes per second per connection (`limits.publish_rate`, 0 = no limit); above it
    /// the socket is read more slowly.
    pub publish_rate: u32,
    /// Filters one client may hold (`limits.max_subscriptions`).
    pub max_subscriptions: usize,
    /// v5 deliveries also carry `barnabas.kafka.*` user properties (`mqtt.kafka_metadata`).
    pub kafka_metadata: bool,
    /// Server Keep Alive sent to v5 clients in CONNACK (`mqtt.server_keep_alive_secs`,
    /// `None` = off): the client must use it instead of its own keep-alive
    /// [MQTT-3.2.2-21], and the gateway closes a v5 connection silent for 1.5 times it
    /// (3.1.2.10). 3.1.1 clients keep their own (their CONNACK has no such field).
    pub server_keep_alive: Option<std::num::NonZeroU16>,
    /// Persistent sessions kept (`limits.max_sessions`): a CONNECT that would add one more is
    /// refused (v5 0x97, 3.1.1 code 3).
    pub max_sessions: usize,
    /// Kafka consumers per connection (`limits.max_consumers_per_connection`): the plain
    /// subscriptions' one plus one per share group.
    pub max_consumers_per_connection: usize,
    /// Browser origins allowed to open MQTT over WebSocket (`mqtt.ws_allowed_origins`); empty
    /// = any. A handshake whose `Origin` is not listed is refused with 403.
    pub ws_allowed_origins: Vec<String>,
    /// Payload bytes of retained messages kept (`limits.max_retained_bytes`).
    pub max_retained_bytes: usize,
    /// How often the cluster's topics are listed for wildcard subscriptions
    /// (`mqtt.topic_refresh_ms`).
    pub topic_refresh: Duration,
}

impl MqttSettings {
    /// Largest MQTT packet accepted: the payload limit plus room for topic and properties.
    pub fn max_packet_bytes(&self) -> u32 {
        u32::try_from(self.max_message_bytes.saturating_add(65_536)).unwrap_or(u32::MAX)
    }
}

/// Label: QoS of a publish.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QosLabel {
    /// 0, 1 or 2.
    pub qos: u8,
}

/// MQTT metrics.
#[derive(Clone, Default)]
pub struct MqttMetrics {
    /// Connected clients.
    pub connections: Gauge,
    /// PUBLISHes received, by QoS.
    pub publishes: Family<QosLabel, Counter>,
    /// Publishes answered negatively (v5 reason code) or by closing (v3).
    pub negative_acks: Counter,
    /// PUBLISHes sent to subscribers, by QoS.
    pub deliveries: Family<QosLabel, Counter>,
    /// Subscriptions of connected clients.
    pub subscriptions: Gauge,
    /// Records not delivered to a matching subscriber: above its Maximum Packet Size, or
    /// expired (v5 Message Expiry). Back-pressure never drops: it stops reading Kafka.
    pub dropped_deliveries: Counter,
    /// Publishes held back by `limits.publish_rate`.
    pub throttled: Counter,
    /// Connections answered "server busy" (over `limits.max_connections`).
    pub refused_busy: Counter,
}

impl MqttMetrics {
    /// Creates and registers the MQTT families.
    pub fn new(registry: &MetricsRegistry) -> Self {
        let m = Self::default();
        barnabas_core::register_metrics!(registry, {
            "mqtt_connections", "Connected MQTT clients" => m.connections;
            "mqtt_publishes", "MQTT PUBLISH packets received, by QoS" => m.publishes;
            "mqtt_negative_acks", "MQTT publishes Kafka refused" => m.negative_acks;
            "mqtt_deliveries", "MQTT PUBLISH packets sent to subscribers, by QoS" => m.deliveries;
            "mqtt_subscriptions", "Subscriptions of connected MQTT clients" => m.subscriptions;
            "mqtt_dropped_deliveries", "Records not delivered to a matching MQTT subscriber (too large for it, or expired)" => m.dropped_deliveries;
            "mqtt_throttled_publishes", "MQTT publishes held back by limits.publish_rate" => m.throttled;
            "mqtt_refused_busy", "MQTT connections answered server busy (limits.max_connections)" => m.refused_busy;
        });
        m
    }
}

/// One live session's handles: how to take it over, and when it is fully gone.
pub struct SessionHandle {
    /// Names this connection as the session's owner in the sessions topic.
    pub owner: String,
    /// The principal the session belongs to (`None` under `auth.mode = "none"`, where
    /// everyone is anonymous): another principal may not take the client id.
    pub principal: Option<Arc<str>>,
    /// When this connection took the session (ms since the epoch): an ownership record only
    /// takes over connections older than itself, so replayed records never close new ones.
    pub since_ms: u64,
    /// Cancelled to take the session over.
    pub kick: CancellationToken,
    /// Cancelled once the session finished (its state stored, its consumers closed).
    pub finished: CancellationToken,
}

/// A client id held by another principal's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken;

/// Whether two sessions belong to the same principal; an unknown one (`None`: no
/// authentication, or a session recorded before sessions named their principal) matches any.
pub fn same_principal(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Live sessions by client id, so a second CONNECT with the same id takes the session over,
/// and delayed wills (v5), which a reconnect cancels.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Arc<SessionHandle>>>,
    wills: Mutex<HashMap<String, CancellationToken>>,
}

impl Sessions {
    /// Registers `client_id` for `principal`, taking over any session of the same principal
    /// holding it (returned, so the caller can wait until it finished) and cancelling a
    /// delayed will. `Err(Taken)` when a live session of another principal holds it.
    pub fn register(
        &self,
        client_id: &str,
        principal: Option<Arc<str>>,
    ) -> Result<(Arc<SessionHandle>, Option<Arc<SessionHandle>>), Taken> {
        let handle = Arc::new(SessionHandle {
            owner: uuid::Uuid::new_v4().simple().to_string(),
            principal,
            since_ms: state::now_ms(),
            kick: CancellationToken::new(),
            finished: CancellationToken::new(),
        });
        let old = {
            let Ok(mut map) = self.live.lock() else {
                return Err(Taken);
            };
            if map
                .get(client_id)
                .is_some_and(|live| !same_principal(&live.principal, &handle.principal))
            {
                return Err(Taken);
            }
            map.insert(client_id.to_owned(), handle.clone())
        };
        if let Some(old) = &old {
            old.kick.cancel();
        }
        self.cancel_will(client_id);
        Ok((handle, old))
    }

    /// Drops the delayed will of `client_id`, if one waits: the client is back in time.
    pub fn cancel_will(&self, client_id: &str) {
        if let Some(will) = self.wills.lock().ok().and_then(|mut w| w.remove(client_id)) {
            will.cancel();
        }
    }

    /// Takes over the live session of `client_id` unless `owner` names it: another replica
    /// (or connection) now holds the session.
    pub fn kick_unless(&self, client_id: &str, owner: &str, since_ms: u64) {
        if let Ok(map) = self.live.lock() {
            if let Some(live) = map.get(client_id) {
                if live.owner != owner && live.since_ms <= since_ms {
                    live.kick.cancel();
                }
            }
        }
    }

    /// Removes `client_id` if this session (`handle`) still holds it.
    pub fn unregister(&self, client_id: &str, handle: &Arc<SessionHandle>) {
        if let Ok(mut map) = self.live.lock() {
            if map.get(client_id).is_some_and(|t| Arc::ptr_eq(t, handle)) {
                map.remove(client_id);
            }
        }
    }

    /// Registers a delayed will; the token is cancelled if the client reconnects first.
    pub fn delay_will(&self, client_id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut wills) = self.wills.lock() {
            if let Some(old) = wills.insert(client_id.to_owned(), token.clone()) {
                old.cancel();
            }
        }
        token
    }

    /// Forgets a delayed will that was published.
    pub fn will_done(&self, client_id: &str, token: &CancellationToken) {
        if let Ok(mut wills) = self.wills.lock() {
            if wills.get(client_id).is_some_and(|t| t == token) {
                wills.remove(client_id);
            }
        }
    }
}

/// What every session shares.
pub struct MqttContext {
    /// The process-wide producer, counted as `mqtt`. (This and the two stores below stay
    /// public for the session fuzz target, which seeds records, retained messages and stored
    /// sessions through them.)
    pub publisher: barnabas_core::MeteredPublisher,
    /// Topic-mapping rules.
    pub(crate) mapper: TopicMapper,
    /// Settings.
    pub(crate) settings: MqttSettings,
    /// MQTT metrics.
    pub(crate) metrics: MqttMetrics,
    /// `barnabas_records_delivered_total{protocol="mqtt"}`, the family every front end
    /// shares, looked up once here rather than per delivery.
    pub(crate) records_delivered: prometheus_client::metrics::counter::Counter,
    /// Live sessions by client id.
    pub(crate) sessions: Arc<Sessions>,
    /// Makes the consumers behind subscriptions.
    pub(crate) consumers: Arc<dyn ConsumerFactory>,
    /// Watermarks for where new subscriptions start.
    pub(crate) admin: Arc<dyn Admin>,
    /// The cluster's topics, followed for subscriptions.
    pub(crate) catalog: TopicCatalog,
    /// Retained messages.
    pub retained: Arc<retained::RetainedStore>,
    /// Persistent sessions of disconnected clients.
    pub stored: Arc<store::SessionStore>,
    /// The compacted topics behind `retained` and `stored`, shared with the other replicas.
    pub(crate) state: state::MqttState,
    /// Authentication and topic ACLs, shared with the other front ends.
    pub(crate) auth: Arc<barnabas_core::Authenticator>,
    /// The TLS server side of the `mqtts` and `wss` listeners.
    pub(crate) tls: Option<Arc<barnabas_core::tls::TlsAcceptor>>,
}

impl MqttContext {
    /// The front end's shared state, built from the process's `services`: from now until
    /// `shutdown` it follows the sessions and retained topics every replica writes, and
    /// lists the cluster's topics every `settings.topic_refresh`.
    pub fn new(
        services: &Services,
        mapper: TopicMapper,
        settings: MqttSettings,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        let backend = &services.backend;
        let sessions = Arc::new(Sessions::default());
        let retained = Arc::new(retained::RetainedStore::new(settings.max_retained_bytes));
        let stored = Arc::new(store::SessionStore::default());
        let state = state::MqttState::follow(
            backend,
            sessions.clone(),
            stored.clone(),
            retained.clone(),
            shutdown.clone(),
        );
        Arc::new(Self {
            publisher: services.publisher("mqtt"),
            mapper,
            catalog: TopicCatalog::spawn(backend.admin.clone(), settings.topic_refresh),
            settings,
            metrics: MqttMetrics::new(&services.registry),
            records_delivered: services
                .gateway_metrics
                .records_out
                .get_or_create(&GatewayMetrics::label("mqtt"))
                .clone(),
            sessions,
            consumers: backend.consumers.clone(),
            admin: backend.admin.clone(),
            retained,
            stored,
            state,
            auth: services.auth.clone(),
            tls: services.tls.clone(),
        })
    }
}

/// The MQTT front end's listeners, bound by the caller (a busy port is a start-up error);
/// any may be off.
#[derive(Default)]
pub struct MqttListeners {
    /// `mqtt.listen`: MQTT over TCP.
    pub tcp: Option<TcpListener>,
    /// `mqtt.ws_listen`: MQTT over WebSocket.
    pub websocket: Option<TcpListener>,
    /// `mqtt.tls_listen`: MQTT over TLS.
    pub tls: Option<TcpListener>,
    /// `mqtt.wss_listen`: MQTT over WebSocket over TLS.
    pub secure_websocket: Option<TcpListener>,
}

impl MqttListeners {
    /// Whether any listener is on.
    pub fn any(&self) -> bool {
        self.tcp.is_some()
            || self.websocket.is_some()
            || self.tls.is_some()
            || self.secure_websocket.is_some()
    }
}

/// Starts the MQTT front end: one task per listener, joining `tasks`; each stops accepting
/// at `shutdown` and returns once its sessions ended.
pub fn start(
    ctx: &Arc<MqttContext>,
    listeners: MqttListeners,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &CancellationToken,
) {
    let MqttListeners {
        tcp,
        websocket,
        tls,
        secure_websocket,
    } = listeners;
    for (listener, transport) in [
        (tcp, Transport::Tcp),
        (websocket, Transport::WebSocket),
        (tls, Transport::Tls),
        (secure_websocket, Transport::SecureWebSocket),
    ] {
        if let Some(listener) = listener {
            tasks.spawn(serve(listener, transport, ctx.clone(), shutdown.clone()));
        }
    }
}

/// How clients reach a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT straight over TCP.
    Tcp,
    /// MQTT over WebSocket (path `/mqtt`).
    WebSocket,
    /// MQTT over TLS (`ctx.tls`).
    Tls,
    /// MQTT over WebSocket over TLS (`ctx.tls`).
    SecureWebSocket,
}

/// Accepts connections until `shutdown`, one session task each; at most `max_connections`
/// per listener. TLS and WebSocket handshakes run under the CONNECT deadline too.
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    ctx: Arc<MqttContext>,
    shutdown: CancellationToken,
) {
    let max = ctx.settings.max_connections;
    let protocol = match transport {
        Transport::Tcp => "mqtt",
        Transport::WebSocket => "mqtt-ws",
        Transport::Tls => "mqtts",
        Transport::SecureWebSocket => "mqtt-wss",
    };
    // Returns once every session ended (storing its state, publishing its client's will),
    // before the caller flushes the producer.
    barnabas_core::serve_connections(
        listener,
        protocol,
        max,
        shutdown.clone(),
        |stream, peer| {
            let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
            // One boxed future per transport: a task holding the `match` of all four would
            // be as large as the largest (WebSocket over TLS), 14 KiB, for every connection.
            let session: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                match transport {
                    Transport::Tcp => Box::pin(session::run(stream, peer, None, ctx, shutdown)),
                    Transport::WebSocket => {
                        Box::pin(websocket_session(stream, peer, None, ctx, shutdown))
                    }
                    Transport::Tls | Transport::SecureWebSocket => {
                        Box::pin(tls_session(stream, peer, transport, ctx, shutdown))
                    }
                };
            session
        },
        |stream| {
            let ctx = ctx.clone();
            async move { answer_busy(stream, transport, &ctx).await }
        },
    )
    .await;
}

/// An MQTT session over TLS (`mqtts`) or WebSocket over TLS (`mqtt-wss`), once the TLS
/// handshake is over within the CONNECT deadline.
async fn tls_session(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    transport: Transport,
    ctx: Arc<MqttContext>,
    shutdown: CancellationToken,
) {
    let Some(tls) = ctx.tls.clone() else {
        tracing::error!("MQTT TLS listener without a TLS configuration");
        return;
    };
    let Some((stream, cn)) = tls.accept_within(stream, peer).await else {
        return;
    };
    if transport == Transport::Tls {
        session::run(stream, peer, cn, ctx, shutdown).await;
    } else {
        websocket_session(stream, peer, cn, ctx, shutdown).await;
    }
}

/// An MQTT session over WebSocket (`mqtt-ws`, or `mqtt-wss` once TLS is done), once the
/// upgrade is over within the CONNECT deadline.
async fn websocket_session<S>(
    stream: S,
    peer: std::net::SocketAddr,
    cert_cn: Option<String>,
    ctx: Arc<MqttContext>,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match websocket(stream, &ctx).await {
        Ok(io) => session::run(io, peer, cert_cn, ctx, shutdown).await,
        Err(e) => tracing::debug!(%peer, error = %e, "WebSocket handshake failed"),
    }
}

/// A connection over `limits.max_connections`: its CONNECT (over plain TCP or WebSocket) is
/// answered CONNACK "server busy" (v5 0x89, v3.1.1 3), so the client knows to come back later.
/// Over TLS after the handshake: what that costs is capped by the busy answers' own bounds
/// (`barnabas_core::BUSY_ANSWERS` at once, each under `BUSY_DEADLINE`).
async fn answer_busy(stream: tokio::net::TcpStream, transport: Transport, ctx: &MqttContext) {
    ctx.metrics.refused_busy.inc();
    match transport {
        Transport::Tcp => connack_busy(stream, ctx).await,
        Transport::WebSocket => {
            if let Ok(io) = websocket(stream, ctx).await {
                connack_busy(io, ctx).await;
            }
        }
        Transport::Tls | Transport::SecureWebSocket => {
            let Some(tls) = ctx.tls.clone() else { return };
            let Ok((io, _)) = tls.accept(stream).await else {
                return;
            };
            if transport == Transport::Tls {
                connack_busy(io, ctx).await;
            } else if let Ok(io) = websocket(io, ctx).await {
                connack_busy(io, ctx).await;
            }
        }
    }
}

/// Reads the CONNECT and answers it "server busy".
async fn connack_busy<S>(io: S, ctx: &MqttContext)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Ok((mut conn, _)) = wire::accept(io, ctx.settings.max_packet_bytes()).await {
        let _ = conn.connack_refused(packet::Refusal::ServerBusy).await;
    }
}

/// The WebSocket upgrade, under the CONNECT deadline.
async fn websocket<S>(
    stream: S,
    ctx: &MqttContext,
) -> Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, ws::UpgradeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::time::timeout(
        ctx.settings.connect_timeout,
        ws::upgrade(
            stream,
            ctx.settings.max_message_bytes,
            ctx.settings.ws_allowed_origins.clone(),
        ),
    )
    .await
    .map_err(|_| ws::UpgradeError::TimedOut)?
}
