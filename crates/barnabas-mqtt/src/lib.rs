//! barnabas' MQTT 3.1.1 / 5.0 front end.
//!
//! One task per connection ([`session`]) over rmqtt-codec ([`wire`]): PUBLISHes become Kafka
//! records through the topic-mapping rules and are acknowledged (PUBACK/PUBREC) only after
//! Kafka acknowledged them, in arrival order. Subscriptions (Kafka → MQTT) are not served yet:
//! SUBSCRIBE is answered with a failure code for every filter.

pub mod session;
pub mod wire;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use barnabas_core::{GatewayMetrics, MetricsRegistry, Publisher, TopicMapper};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use tokio::{net::TcpListener, sync::Semaphore};
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
#[derive(Clone)]
pub struct MqttMetrics {
    /// Connected clients.
    pub connections: Gauge,
    /// PUBLISHes received, by QoS.
    pub publishes: Family<QosLabel, Counter>,
    /// Publishes answered negatively (v5 reason code) or by closing (v3).
    pub negative_acks: Counter,
}

impl MqttMetrics {
    /// Creates and registers the MQTT families.
    pub fn new(registry: &MetricsRegistry) -> Self {
        let m = Self {
            connections: Gauge::default(),
            publishes: Family::default(),
            negative_acks: Counter::default(),
        };
        registry.register(|r| {
            r.register(
                "mqtt_connections",
                "Connected MQTT clients",
                m.connections.clone(),
            );
            r.register(
                "mqtt_publishes",
                "MQTT PUBLISH packets received, by QoS",
                m.publishes.clone(),
            );
            r.register(
                "mqtt_negative_acks",
                "MQTT publishes Kafka refused",
                m.negative_acks.clone(),
            );
        });
        m
    }
}

/// Live sessions by client id, so a second CONNECT with the same id takes the session over.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Arc<CancellationToken>>>);

impl Sessions {
    /// Registers `client_id`, cancelling (taking over) any session holding it.
    pub fn register(&self, client_id: &str) -> Arc<CancellationToken> {
        let token = Arc::new(CancellationToken::new());
        if let Ok(mut map) = self.0.lock() {
            if let Some(old) = map.insert(client_id.to_owned(), token.clone()) {
                old.cancel();
            }
        }
        token
    }

    /// Removes `client_id` if this session (`token`) still holds it.
    pub fn unregister(&self, client_id: &str, token: &Arc<CancellationToken>) {
        if let Ok(mut map) = self.0.lock() {
            if map.get(client_id).is_some_and(|t| Arc::ptr_eq(t, token)) {
                map.remove(client_id);
            }
        }
    }
}

/// What every session shares.
pub struct MqttContext {
    /// The process-wide producer.
    pub backend_publisher: Arc<dyn Publisher>,
    /// Topic-mapping rules.
    pub mapper: TopicMapper,
    /// Settings.
    pub settings: MqttSettings,
    /// MQTT metrics.
    pub metrics: MqttMetrics,
    /// Data-path metrics shared with the other front ends.
    pub gateway_metrics: GatewayMetrics,
    /// Live sessions by client id.
    pub sessions: Sessions,
}

/// Accepts connections until `shutdown`, one session task each, at most `max_connections`.
pub async fn serve(listener: TcpListener, ctx: Arc<MqttContext>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(ctx.settings.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tracing::trace!(%peer, "MQTT connection");
            session::run(stream, ctx, shutdown).await;
        });
    }
}
