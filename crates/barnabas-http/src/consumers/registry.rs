//! Named consumer instances and the timer that deletes idle ones.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use barnabas_core::{ConsumerDriver, OffsetReset, Subscription, TopicPartition};
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use super::cluster::Cluster;
use crate::{error::ApiError, format::Format};

/// What an instance reads from: Strimzi keeps subscriptions and assignments exclusive.
/// Kept whole (topics, pattern, partitions) so that another replica can re-create it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mode {
    /// Neither subscribed nor assigned.
    #[default]
    Idle,
    /// Subscribed to these topics.
    Topics {
        /// The topics.
        topics: Vec<String>,
    },
    /// Subscribed to the topics matching a regular expression.
    Pattern {
        /// The expression.
        pattern: String,
    },
    /// Assigned partitions by hand, as (topic, partition).
    Assigned {
        /// The partitions.
        partitions: Vec<(String, i32)>,
    },
}

impl Mode {
    /// Whether the instance reads through a group subscription (topics or pattern).
    pub fn is_subscribed(&self) -> bool {
        matches!(self, Mode::Topics { .. } | Mode::Pattern { .. })
    }

    /// Makes `driver` read what this mode names. One place for the three moments a driver is
    /// pointed somewhere: a client's subscribe, unsubscribe or assign, the undo of one the
    /// catalog refused, and an adopted instance resuming as its old replica left it.
    /// Partitions assigned by hand start at their committed offsets.
    pub(crate) async fn apply(&self, driver: &ConsumerDriver) -> barnabas_core::Result<()> {
        match self {
            Mode::Idle => driver.unsubscribe().await,
            Mode::Topics { topics } => driver.subscribe(Subscription::Topics(topics.clone())).await,
            Mode::Pattern { pattern } => {
                driver
                    .subscribe(Subscription::Pattern(pattern.clone()))
                    .await
            }
            Mode::Assigned { partitions } => {
                let partitions = partitions
                    .iter()
                    .map(|(topic, partition)| {
                        (TopicPartition::new(topic.clone(), *partition), None)
                    })
                    .collect();
                driver.assign(partitions).await
            }
        }
    }
}

/// How an instance was created (the body of `POST /consumers/{group}`): what a replica needs
/// to open the same Kafka consumer again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSettings {
    /// Its embedded format; fetches must `Accept` it.
    pub format: Format,
    /// `auto.offset.reset`.
    pub auto_offset_reset: OffsetReset,
    /// `enable.auto.commit`.
    pub enable_auto_commit: bool,
    /// Other consumer properties the client set (`fetch.min.bytes`, …).
    pub properties: std::collections::BTreeMap<String, String>,
}

/// One consumer instance.
pub struct Instance {
    /// Its consumer group.
    pub group: String,
    /// Its name (`instance_id`).
    pub name: String,
    /// How it was created.
    pub settings: InstanceSettings,
    /// The driven Kafka consumer.
    pub driver: ConsumerDriver,
    /// Subscribed / assigned / neither.
    pub mode: Mutex<Mode>,
    last_used: Mutex<Instant>,
    /// The principal that created it ([`Authenticator::owner_name`]): the only one that may
    /// use it, and whose `limits.max_consumers_per_principal` it counts against.
    ///
    /// [`Authenticator::owner_name`]: barnabas_core::Authenticator::owner_name
    pub creator: Arc<str>,
}

impl Instance {
    /// A new instance, used now.
    pub fn new(
        group: String,
        name: String,
        settings: InstanceSettings,
        mode: Mode,
        driver: ConsumerDriver,
        creator: Arc<str>,
    ) -> Self {
        Self {
            group,
            name,
            settings,
            driver,
            mode: Mutex::new(mode),
            creator,
            last_used: Mutex::new(Instant::now()),
        }
    }

    /// Whether `owner` (an [`Authenticator::owner_name`]) created it.
    ///
    /// [`Authenticator::owner_name`]: barnabas_core::Authenticator::owner_name
    pub fn owned_by(&self, owner: &str) -> bool {
        *self.creator == *owner
    }

    /// Marks the instance as used (every request does), postponing its idle deletion.
    pub fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode.lock().map(|m| m.clone()).unwrap_or(Mode::Idle)
    }

    /// Sets the mode.
    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode;
        }
    }
}

/// All consumer instances of this gateway, by (group, name).
pub struct Registry {
    instances: Mutex<HashMap<(String, String), Arc<Instance>>>,
    live: Gauge,
}

impl Registry {
    /// An empty registry reporting its size on `live`.
    pub fn new(live: Gauge) -> Self {
        Self {
            instances: Mutex::new(HashMap::new()),
            live,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Instance>>> {
        self.instances
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many instances `principal` created on this replica.
    pub fn count_owned_by(&self, principal: &str) -> usize {
        self.lock()
            .values()
            .filter(|i| i.owned_by(principal))
            .count()
    }

    /// The instance if this replica holds it (not touched: nothing used it yet).
    pub fn peek(&self, group: &str, name: &str) -> Option<Arc<Instance>> {
        self.lock()
            .get(&(group.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Whether (group, name) is taken.
    pub fn contains(&self, group: &str, name: &str) -> bool {
        self.lock()
            .contains_key(&(group.to_owned(), name.to_owned()))
    }

    /// Adds an instance; 409 if the name is taken in that group.
    pub fn insert(&self, instance: Arc<Instance>) -> Result<(), ApiError> {
        let mut map = self.lock();
        let key = (instance.group.clone(), instance.name.clone());
        if map.contains_key(&key) {
            return Err(duplicate());
        }
        map.insert(key, instance);
        self.live.set(map.len() as i64);
        Ok(())
    }

    /// The instance, touched; 404 if there is none.
    pub fn get(&self, group: &str, name: &str) -> Result<Arc<Instance>, ApiError> {
        let instance = self
            .lock()
            .get(&(group.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(not_found)?;
        instance.touch();
        Ok(instance)
    }

    /// Removes and returns the instance; 404 if there is none.
    pub fn remove(&self, group: &str, name: &str) -> Result<Arc<Instance>, ApiError> {
        let mut map = self.lock();
        let instance = map
            .remove(&(group.to_owned(), name.to_owned()))
            .ok_or_else(not_found)?;
        self.live.set(map.len() as i64);
        Ok(instance)
    }

    /// Closes and removes every instance (at shutdown: members leave their groups cleanly).
    pub async fn close_all(&self) {
        let all: Vec<Arc<Instance>> = {
            let mut map = self.lock();
            let all = map.drain().map(|(_, i)| i).collect();
            self.live.set(0);
            all
        };
        futures::future::join_all(all.iter().map(|i| i.driver.close())).await;
    }

    /// Removes the instance if present and closes its Kafka consumer in the background
    /// (another replica took it over, or deleted it).
    pub fn evict(&self, group: &str, name: &str) {
        let Ok(instance) = self.remove(group, name) else {
            return;
        };
        tracing::info!(%group, %name, "consumer instance taken over by another replica; closed here");
        tokio::spawn(async move {
            let _ = instance.driver.close().await;
        });
    }

    /// Starts the task that deletes instances idle longer than `timeout`, from this
    /// replica and from the `cluster`'s catalog, until `shutdown`: the cluster holds Kafka
    /// clients, which must be gone before an embedded broker stops.
    pub fn start_reaper(
        self: &Arc<Self>,
        timeout: Duration,
        cluster: Arc<Cluster>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let registry = Arc::downgrade(self);
        let every = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                let expired: Vec<Arc<Instance>> = {
                    let mut map = registry.lock();
                    let keys: Vec<_> = map
                        .iter()
                        .filter(|(_, i)| i.idle_for() >= timeout)
                        .map(|(k, _)| k.clone())
                        .collect();
                    let out = keys.iter().filter_map(|k| map.remove(k)).collect();
                    registry.live.set(map.len() as i64);
                    out
                };
                for instance in expired {
                    tracing::info!(group = %instance.group, name = %instance.name, ?timeout, "deleting idle consumer instance");
                    let _ = instance.driver.close().await;
                    cluster.forget(&instance.group, &instance.name).await;
                }
            }
        });
    }
}

/// 404 for an instance that does not exist (here, or for the caller).
pub(crate) fn not_found() -> ApiError {
    ApiError::not_found("The specified consumer instance was not found.")
}

fn duplicate() -> ApiError {
    ApiError::conflict(
        "A consumer instance with the specified name already exists in the Kafka Bridge.",
    )
}
