//! Retained messages: the last retained publish per MQTT topic, delivered to new subscribers.
//!
//! This is the replica's view of the compacted retained topic ([`crate::state`]), which every
//! replica follows. A retained message is stored only once Kafka acknowledged the publish
//! that carried it.

use std::{collections::HashMap, sync::Mutex};

use crate::{delivery::Message, filter};

/// Most retained topics kept; beyond it new retained topics are not stored (and logged).
const MAX_RETAINED: usize = 100_000;

/// The retained message of every MQTT topic that has one.
#[derive(Default)]
pub struct RetainedStore(Mutex<HashMap<String, Message>>);

impl RetainedStore {
    /// Stores `message` as its topic's retained message; an empty payload clears it.
    pub fn set(&self, message: Message) {
        let Ok(mut map) = self.0.lock() else { return };
        if message.payload.is_empty() {
            map.remove(&message.topic);
        } else if map.len() < MAX_RETAINED || map.contains_key(&message.topic) {
            map.insert(message.topic.clone(), message);
        } else {
            tracing::warn!(topic = %message.topic, "retained message store full; not retained");
        }
    }

    /// Clears `topic`'s retained message.
    pub fn clear(&self, topic: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(topic);
        }
    }

    /// The retained messages whose topic matches `filter`.
    pub fn matching(&self, filter: &str) -> Vec<Message> {
        let Ok(map) = self.0.lock() else {
            return Vec::new();
        };
        let mut out: Vec<Message> = map
            .values()
            .filter(|m| filter::matches(filter, &m.topic))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }
}
