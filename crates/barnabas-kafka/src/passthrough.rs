//! Identity passthrough (`kafka.identity = "passthrough"`): a client's writes reach Kafka
//! logged in as the client, so Kafka's own ACLs (and quotas, and audit logs) apply to it.
//!
//! Each principal that logged in with a password gets its own producer, whose SASL login is
//! that user name and password (the mechanism, `security.protocol` and TLS settings are the
//! operator's `[kafka.properties]`; only `sasl.username`/`sasl.password` change). Producers are
//! pooled: at most `max` at once (a librdkafka producer has its own threads and connections),
//! the least recently used idle one making room for a new principal, and any idle for
//! [`IDLE_FOR`] closed. A principal without a password (a bearer token, a client
//! certificate, anonymous) has nothing to log in to Kafka with: its writes are refused
//! (`Unauthorized`), never made as the gateway. The gateway's own writes (its state topics)
//! keep the gateway's identity.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use barnabas_core::{Delivered, Error, Identity, Principal, Publisher, Record, Result, Secret};

use crate::{admin::KafkaAdmin, config::KafkaConfig, producer::KafkaPublisher};

/// A principal's producer unused this long is closed.
pub const IDLE_FOR: Duration = Duration::from_secs(300);

struct Pooled {
    secret: Secret,
    publisher: Arc<KafkaPublisher>,
    last_used: Instant,
}

/// The gateway's producer plus one producer per writing principal.
pub struct PassthroughPublisher {
    gateway: Arc<KafkaPublisher>,
    config: KafkaConfig,
    admin: Arc<KafkaAdmin>,
    max: usize,
    pool: Mutex<HashMap<Arc<str>, Pooled>>,
}

impl PassthroughPublisher {
    /// Passthrough over `gateway` (the gateway's own producer), with at most `max`
    /// principals' producers open at once.
    pub fn new(
        gateway: Arc<KafkaPublisher>,
        config: KafkaConfig,
        admin: Arc<KafkaAdmin>,
        max: usize,
    ) -> Self {
        Self {
            gateway,
            config,
            admin,
            max: max.max(1),
            pool: Mutex::new(HashMap::new()),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Pooled>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many principals' producers are open.
    pub fn open_producers(&self) -> usize {
        self.pool().len()
    }

    /// The producer writing as `principal`, opened if needed (making room if the pool is
    /// full); an error when the principal has no password or every pooled producer is busy.
    fn producer_for(&self, principal: &Principal) -> Result<Arc<KafkaPublisher>> {
        let secret = kafka_login(principal)?;
        let mut pool = self.pool();
        let now = Instant::now();
        if let Some(p) = pool.get_mut(&principal.name) {
            if &p.secret == secret {
                p.last_used = now;
                return Ok(p.publisher.clone());
            }
        }
        // A new principal, or one whose password changed: a fresh producer (the old one, if
        // any, closes once its writes in flight are answered).
        if !pool.contains_key(&principal.name) && pool.len() >= self.max {
            let idlest = pool
                .iter()
                .filter(|(_, p)| Arc::strong_count(&p.publisher) == 1)
                .min_by_key(|(_, p)| p.last_used)
                .map(|(name, _)| name.clone());
            match idlest {
                Some(name) => {
                    if let Some(evicted) = pool.remove(&name) {
                        close(evicted.publisher);
                    }
                }
                None => {
                    return Err(Error::Unavailable(format!(
                        "identity passthrough: all {} Kafka producers are busy writing for other principals",
                        self.max
                    )))
                }
            }
        }
        let publisher = Arc::new(KafkaPublisher::new(
            &self.config.logged_in_as(&principal.name, secret),
            self.admin.clone(),
        )?);
        tracing::debug!(principal = %principal.name, open = pool.len() + 1, "Kafka producer opened for a principal");
        if let Some(replaced) = pool.insert(
            principal.name.clone(),
            Pooled {
                secret: secret.clone(),
                publisher: publisher.clone(),
                last_used: now,
            },
        ) {
            close(replaced.publisher);
        }
        Ok(publisher)
    }

    /// Closes the producers idle for [`IDLE_FOR`]; returns how many.
    pub fn close_idle(&self) -> usize {
        let now = Instant::now();
        let mut pool = self.pool();
        let idle: Vec<Arc<str>> = pool
            .iter()
            .filter(|(_, p)| {
                Arc::strong_count(&p.publisher) == 1 && now.duration_since(p.last_used) >= IDLE_FOR
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &idle {
            if let Some(p) = pool.remove(name) {
                close(p.publisher);
            }
        }
        idle.len()
    }

    /// Closes idle producers every minute until `shutdown`.
    pub fn spawn_idle_closer(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                let Some(this) = this.upgrade() else { return };
                let closed = this.close_idle();
                if closed > 0 {
                    tracing::debug!(closed, "idle principals' Kafka producers closed");
                }
            }
        });
    }
}

/// The password `principal` logs in to Kafka with; refused when it has none (a bearer token,
/// a client certificate, anonymous): never the gateway's identity instead.
pub(crate) fn kafka_login(principal: &Principal) -> Result<&Secret> {
    principal.kafka_secret.as_ref().ok_or_else(|| {
        Error::Unauthorized(format!(
            "identity passthrough: '{}' did not log in with a password, so there is no Kafka \
             identity to read or write as",
            principal.name
        ))
    })
}

/// Drops a producer off the event loop (librdkafka's destroy waits for its threads).
fn close(publisher: Arc<KafkaPublisher>) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(move || drop(publisher));
        }
        Err(_) => drop(publisher),
    }
}

#[async_trait]
impl Publisher for PassthroughPublisher {
    /// The gateway's own writes (state topics) with its own login; a client's with the
    /// client's, through a producer logged in as it.
    async fn publish(
        &self,
        identity: Identity<'_>,
        records: Vec<Record>,
    ) -> Vec<Result<Delivered>> {
        let Identity::Client(principal) = identity else {
            return self.gateway.publish(identity, records).await;
        };
        match self.producer_for(principal) {
            Ok(producer) => producer.publish(identity, records).await,
            Err(e) => records.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn flush(&self, timeout: Duration) -> Result<()> {
        let producers: Vec<Arc<KafkaPublisher>> =
            self.pool().values().map(|p| p.publisher.clone()).collect();
        for p in producers {
            p.flush(timeout).await?;
        }
        self.gateway.flush(timeout).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use barnabas_core::{Authenticator, Credentials};

    use super::*;

    fn principal(user: &str, password: &str) -> Principal {
        Authenticator::open()
            .keeping_passwords()
            .authenticate(Credentials::Password {
                user,
                password: password.as_bytes(),
            })
            .unwrap()
    }

    fn pool(max: usize) -> PassthroughPublisher {
        // Creating librdkafka clients does not contact the cluster: no broker needed here.
        let config = KafkaConfig {
            bootstrap_servers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        };
        let admin = Arc::new(KafkaAdmin::new(&config).unwrap());
        let gateway = Arc::new(KafkaPublisher::new(&config, admin.clone()).unwrap());
        PassthroughPublisher::new(gateway, config, admin, max)
    }

    #[tokio::test]
    async fn each_principal_logs_in_as_itself_and_the_pool_stays_bounded() {
        let pool = pool(1);
        let a = principal("device-a", "pw-a");
        let config = pool
            .config
            .logged_in_as(&a.name, a.kafka_secret.as_ref().unwrap());
        assert_eq!(config.properties["sasl.username"], "device-a");
        assert_eq!(config.properties["sasl.password"], "pw-a");
        assert!(
            !format!("{a:?}").contains("pw-a"),
            "a secret is never printed"
        );

        let held = pool.producer_for(&a).unwrap();
        assert!(
            Arc::ptr_eq(&held, &pool.producer_for(&a).unwrap()),
            "reused"
        );
        // The one slot is busy (a write in flight holds it): a second principal waits.
        let b = principal("device-b", "pw-b");
        assert!(matches!(pool.producer_for(&b), Err(Error::Unavailable(_))));
        drop(held);
        // Idle now: b takes the slot.
        pool.producer_for(&b).unwrap();
        assert_eq!(pool.open_producers(), 1);
        // A changed password is a new login.
        let b2 = principal("device-b", "pw-b2");
        assert!(!Arc::ptr_eq(
            &pool.producer_for(&b).unwrap(),
            &pool.producer_for(&b2).unwrap()
        ));
        // No password, no Kafka identity.
        let token_user = Principal::named("device-c");
        assert!(matches!(
            pool.producer_for(&token_user),
            Err(Error::Unauthorized(_))
        ));
    }
}
