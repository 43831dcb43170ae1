//! The cluster's topics and partition counts, fetched once for the whole process and followed.
//!
//! A subscription must pick up a topic when it appears (a read never creates a topic). Asking
//! Kafka for metadata per subscriber would cost one request per client per interval; instead
//! one task refreshes the list and every subscriber watches it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::{watch, Mutex};

use crate::{Admin, Result};

/// Topic name → partition count, internal topics left out (see [`is_internal`]).
pub type TopicList = Arc<BTreeMap<String, i32>>;

/// Shared, followed list of the cluster's topics. Cheap to clone; the refresh task ends when
/// the last clone is dropped.
#[derive(Clone)]
pub struct TopicCatalog {
    inner: Arc<Inner>,
}

struct Inner {
    admin: Arc<dyn Admin>,
    tx: watch::Sender<TopicList>,
    fetching: Mutex<()>,
}

impl TopicCatalog {
    /// Starts following the cluster's topics, refreshing every `every`.
    pub fn spawn(admin: Arc<dyn Admin>, every: Duration) -> Self {
        let (tx, _) = watch::channel(TopicList::default());
        let inner = Arc::new(Inner {
            admin,
            tx,
            fetching: Mutex::new(()),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = inner.refresh().await {
                    tracing::debug!(error = %e, "topic list refresh failed");
                }
            }
        });
        Self { inner }
    }

    /// Follows changes of the list.
    pub fn watch(&self) -> watch::Receiver<TopicList> {
        self.inner.tx.subscribe()
    }

    /// Fetches the list now (a subscriber about to start wants it current).
    pub async fn refresh(&self) -> Result<TopicList> {
        self.inner.refresh().await
    }
}

/// Kafka's own topics (`__consumer_offsets`, …) and the gateway's state topics
/// (`barnabas.mqtt.sessions`, …): no subscription reads them as data.
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with("__") || topic.starts_with("barnabas.")
}

impl Inner {
    async fn refresh(&self) -> Result<TopicList> {
        let _one_at_a_time = self.fetching.lock().await;
        let topics: BTreeMap<String, i32> = self
            .admin
            .all_topics()
            .await?
            .into_iter()
            .filter(|t| !is_internal(&t.name))
            .filter_map(|t| {
                let n = i32::try_from(t.partitions.len()).ok()?;
                (n > 0).then_some((t.name, n))
            })
            .collect();
        self.tx.send_if_modified(|current| {
            if **current == topics {
                false
            } else {
                *current = Arc::new(topics.clone());
                true
            }
        });
        Ok(self.tx.borrow().clone())
    }
}
