//! Retained messages: the last retained publish per MQTT topic, delivered to new subscribers.
//!
//! This is the replica's view of the compacted retained topic ([`crate::state`]), which every
//! replica follows. A retained message is stored only once Kafka acknowledged the publish
//! that carried it.

use std::{collections::HashMap, sync::Mutex};

use crate::{convert::Message, filter};

/// Most retained topics kept; beyond it new retained topics are not stored (and logged).
const MAX_RETAINED: usize = 100_000;

/// The retained message of every MQTT topic that has one, bounded by count and by total
/// payload bytes.
pub struct RetainedStore {
    inner: Mutex<Inner>,
    /// Most payload bytes kept (`limits.max_retained_bytes`).
    max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Message>,
    /// Sum of the payload sizes in `map`.
    bytes: usize,
}

impl Inner {
    /// Whether replacing `topic`'s message with `len` payload bytes stays within the bounds.
    fn admits(&self, topic: &str, len: usize, max_bytes: usize) -> bool {
        let old = self.map.get(topic).map(|m| m.payload.len());
        let count_ok = old.is_some() || self.map.len() < MAX_RETAINED;
        let bytes = self
            .bytes
            .saturating_sub(old.unwrap_or(0))
            .saturating_add(len);
        count_ok && bytes <= max_bytes
    }

    fn remove(&mut self, topic: &str) {
        if let Some(old) = self.map.remove(topic) {
            self.bytes = self.bytes.saturating_sub(old.payload.len());
        }
    }
}

impl Default for RetainedStore {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl RetainedStore {
    /// An empty store keeping at most `max_bytes` payload bytes.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    /// Whether `topic` may take a retained message of `len` payload bytes (an empty one
    /// clears, always fine): asked before the publish is written, so a refused retained
    /// publish writes nothing (v5 PUBACK 0x97).
    pub fn admits(&self, topic: &str, len: usize) -> bool {
        len == 0
            || self
                .inner
                .lock()
                .is_ok_and(|inner| inner.admits(topic, len, self.max_bytes))
    }

    /// Stores `message` as its topic's retained message; an empty payload clears it. Over
    /// the bounds (a record another replica admitted under other limits), it is not stored.
    pub fn set(&self, message: Message) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let len = message.payload.len();
        if len == 0 {
            inner.remove(&message.topic);
        } else if inner.admits(&message.topic, len, self.max_bytes) {
            inner.remove(&message.topic);
            inner.bytes = inner.bytes.saturating_add(len);
            inner.map.insert(message.topic.clone(), message);
        } else {
            tracing::warn!(topic = %message.topic, "retained message store full; not retained");
        }
    }

    /// Clears `topic`'s retained message.
    pub fn clear(&self, topic: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove(topic);
        }
    }

    /// The retained message of `topic`, if it has one.
    pub fn get(&self, topic: &str) -> Option<Message> {
        self.inner.lock().ok()?.map.get(topic).cloned()
    }

    /// The retained messages whose topic matches `filter`.
    pub fn matching(&self, filter: &str) -> Vec<Message> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut out: Vec<Message> = inner
            .map
            .values()
            .filter(|m| filter::matches(filter, &m.topic))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }
}
