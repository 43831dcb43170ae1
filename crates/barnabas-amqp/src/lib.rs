//! barnabas' AMQP 1.0 front end, on the acceptor side of fe2o3-amqp.
//!
//! One task per connection ([`connection`]): SASL PLAIN/ANONYMOUS, then sessions whose links
//! are routed by address. A link the client sends on (target `T` or `T/partitions/P`) turns
//! transfers into Kafka records and settles each `accepted` only after Kafka acknowledged it
//! ([`produce`]); a link the client receives on (source `T/group.id/G`) is a member of Kafka
//! group `G`, sends within the client's credit and commits what the client settled
//! ([`consume`]). The Azure Event Hubs SDKs' request/response nodes `$cbs` and `$management`
//! are answered by [`node`].

pub mod address;
pub mod connection;
pub mod consume;
pub mod convert;
pub mod node;
pub mod produce;
pub mod sasl;

use std::{sync::Arc, time::Duration};

use barnabas_core::{Admin, ConsumerFactory, GatewayMetrics, MetricsRegistry, Services};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Bound on waiting for a peer while closing a link, session or connection.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Settings of the AMQP front end.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// Largest record value accepted (`limits.max_message_bytes`); above it a transfer is
    /// `rejected` with `amqp:link:message-size-exceeded`.
    pub max_message_bytes: usize,
    /// Largest frame (multi-frame transfers carry larger messages).
    pub max_frame_size: u32,
    /// Most sessions per connection (channel-max).
    pub channel_max: u16,
    /// Idle time-out offered to clients, in ms (the library sends heartbeats for theirs).
    pub idle_timeout_ms: u32,
    /// How long SASL and open may take after the TCP accept.
    pub open_timeout: Duration,
    /// Connections accepted at once (`limits.max_connections`).
    pub max_connections: usize,
    /// Transfers per second per connection (`limits.publish_rate`, 0 = no limit), over all
    /// its sender links: above it a transfer is taken in only when a token is there, so its
    /// settlement, and with it the credit the link tops up, comes later and the client's
    /// sender waits for credit. A link's credit is also capped at one second's worth.
    pub publish_rate: u32,
    /// Receiver links (each a Kafka consumer) one connection may hold at once
    /// (`limits.max_consumers_per_connection`); one more is refused with
    /// `amqp:resource-limit-exceeded`.
    pub max_consumers_per_connection: usize,
    /// Whether a write may create its topic (`kafka.auto_create_topics`).
    pub auto_create_topics: bool,
}

impl AmqpSettings {
    /// Largest transfer the link lets through to be judged (and rejected with a reason when
    /// above `max_message_bytes`): the limit plus room for sections, and twice the limit.
    pub fn max_transfer_bytes(&self) -> u64 {
        u64::try_from(
            self.max_message_bytes
                .saturating_mul(2)
                .saturating_add(65_536),
        )
        .unwrap_or(u64::MAX)
    }
}

/// Label: which way a link carries records.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `produce` (the client sends) or `consume` (the client receives).
    pub direction: &'static str,
}

impl DirectionLabel {
    /// A link the client sends on.
    pub fn produce() -> Self {
        Self {
            direction: "produce",
        }
    }
    /// A link the client receives on.
    pub fn consume() -> Self {
        Self {
            direction: "consume",
        }
    }
}

/// AMQP metrics.
#[derive(Clone, Default)]
pub struct AmqpMetrics {
    /// Open connections.
    pub connections: Gauge,
    /// Attached links, by direction.
    pub links: Family<DirectionLabel, Gauge>,
    /// Transfers settled `rejected` (bad message, too large, Kafka refused).
    pub rejected: Counter,
    /// Records sent to receivers.
    pub deliveries: Counter,
    /// Deliveries the client released or modified (read again).
    pub released: Counter,
    /// Transfers held back by `limits.publish_rate`.
    pub throttled: Counter,
}

impl AmqpMetrics {
    /// Creates and registers the AMQP families.
    pub fn new(registry: &MetricsRegistry) -> Self {
        let m = Self::default();
        barnabas_core::register_metrics!(registry, {
            "amqp_connections", "Open AMQP connections" => m.connections;
            "amqp_links", "Attached AMQP links, by direction" => m.links;
            "amqp_rejected", "AMQP transfers settled rejected" => m.rejected;
            "amqp_deliveries", "Records sent on AMQP receiver links" => m.deliveries;
            "amqp_released", "AMQP deliveries released or modified by the client (read again)" => m.released;
            "amqp_throttled_transfers", "AMQP transfers held back by limits.publish_rate" => m.throttled;
        });
        m
    }
}

/// What every connection shares.
pub struct AmqpContext {
    /// The process-wide producer, counted as `amqp`.
    pub(crate) publisher: barnabas_core::MeteredPublisher,
    /// Makes the consumers behind receiver links.
    pub(crate) consumers: Arc<dyn ConsumerFactory>,
    /// Topic checks for attaches.
    pub(crate) admin: Arc<dyn Admin>,
    /// Settings.
    pub(crate) settings: AmqpSettings,
    /// AMQP metrics.
    pub(crate) metrics: AmqpMetrics,
    /// Data-path metrics shared with the other front ends.
    pub(crate) gateway_metrics: GatewayMetrics,
    /// Authentication (SASL) and topic/group ACLs, shared with the other front ends.
    pub(crate) auth: Arc<barnabas_core::Authenticator>,
    /// The TLS server side of the AMQPS listener.
    pub(crate) tls: Option<Arc<barnabas_core::tls::TlsAcceptor>>,
}

impl AmqpContext {
    /// The front end's shared state, built from the process's `services`.
    pub fn new(services: &Services, settings: AmqpSettings) -> Arc<Self> {
        Arc::new(Self {
            publisher: services.publisher("amqp"),
            consumers: services.backend.consumers.clone(),
            admin: services.backend.admin.clone(),
            settings,
            metrics: AmqpMetrics::new(&services.registry),
            gateway_metrics: services.gateway_metrics.clone(),
            auth: services.auth.clone(),
            tls: services.tls.clone(),
        })
    }
}

/// The AMQP front end's listeners, bound by the caller; either may be off.
#[derive(Default)]
pub struct AmqpListeners {
    /// `amqp.listen`: AMQP over TCP.
    pub tcp: Option<TcpListener>,
    /// `amqp.tls_listen`: AMQPS.
    pub tls: Option<TcpListener>,
}

impl AmqpListeners {
    /// Whether any listener is on.
    pub fn any(&self) -> bool {
        self.tcp.is_some() || self.tls.is_some()
    }
}

/// Starts the AMQP front end: one task per listener, joining `tasks`; each stops accepting
/// at `shutdown`.
pub fn start(
    ctx: &Arc<AmqpContext>,
    listeners: AmqpListeners,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &CancellationToken,
) {
    if let Some(listener) = listeners.tcp {
        tasks.spawn(serve(listener, ctx.clone(), shutdown.clone()));
    }
    if let Some(listener) = listeners.tls {
        tasks.spawn(serve_tls(listener, ctx.clone(), shutdown.clone()));
    }
}

/// Accepts connections until `shutdown`, one task each, at most `max_connections`. Each
/// connection runs in its own task: fe2o3-amqp can panic on some malformed frames, and that
/// ends only that connection.
pub async fn serve(listener: TcpListener, ctx: Arc<AmqpContext>, shutdown: CancellationToken) {
    let max = ctx.settings.max_connections;
    // Over the limit: open, then close with amqp:resource-limit-exceeded.
    barnabas_core::serve_connections(
        listener,
        "amqp",
        max,
        shutdown.clone(),
        |stream, peer| connection::run(stream, peer, None, ctx.clone(), shutdown.clone()),
        |stream| connection::answer_busy(stream, ctx.clone()),
    )
    .await;
}

/// [`serve`] for AMQPS: the TLS handshake (under the open deadline) comes first.
pub async fn serve_tls(listener: TcpListener, ctx: Arc<AmqpContext>, shutdown: CancellationToken) {
    let max = ctx.settings.max_connections;
    barnabas_core::serve_connections(
        listener,
        "amqps",
        max,
        shutdown.clone(),
        |stream, peer| {
            let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
            async move {
                let Some(tls) = ctx.tls.clone() else {
                    tracing::error!("AMQPS listener without a TLS configuration");
                    return;
                };
                if let Some((stream, cn)) = tls.accept_within(stream, peer).await {
                    connection::run(stream, peer, cn, ctx, shutdown).await;
                }
            }
        },
        // Over the limit: the handshake, then open and close as over plain TCP.
        |stream| {
            let ctx = ctx.clone();
            async move {
                let Some(tls) = ctx.tls.clone() else { return };
                if let Ok((stream, _)) = tls.accept(stream).await {
                    connection::answer_busy(stream, ctx).await;
                }
            }
        },
    )
    .await;
}
