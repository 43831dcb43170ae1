//! Persistent sessions between connections: what a client subscribed to, kept while it is
//! away (its undelivered records wait in Kafka, at its group's committed offsets).
//!
//! This is the replica's view of the compacted sessions topic ([`crate::state`]), which every
//! replica follows: a session left on one replica is found on any other, and after a restart.

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::packet::QoS;
use barnabas_core::TopicPartition;

use crate::filter::Filter;

/// One subscription of a session.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The filter (and share group).
    pub filter: Filter,
    /// Granted QoS.
    pub qos: QoS,
    /// v5 No Local.
    pub no_local: bool,
    /// v5 Retain As Published.
    pub retain_as_published: bool,
    /// v5 Subscription Identifier.
    pub id: Option<NonZeroU32>,
    /// Where this subscription starts in partitions the session was already reading when
    /// it was made: a record before it was published before the SUBACK and is not this
    /// subscription's (3.8.4: a subscription gets what is published after it exists).
    /// Entries are dropped once the session's reading passed them.
    pub since: BTreeMap<TopicPartition, i64>,
}

/// Partitions a subscription remembers a start for, at most (a stored record with more is
/// cut short: the gateway's own records never have more than the cluster's partitions).
pub const MAX_SINCE: usize = 10_000;

/// A session kept for a client that is not connected.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// Its subscriptions.
    pub subscriptions: Vec<Subscribed>,
    /// When it ends (`None` = never: v3 persistent sessions, v5 expiry 0xFFFFFFFF).
    pub expires: Option<Instant>,
    /// The principal it belongs to (`None`: no authentication, or recorded before sessions
    /// named their principal).
    pub principal: Option<Arc<str>>,
    /// QoS 2 packet ids of publishes written to Kafka whose PUBREL had not come: the same
    /// PUBLISH sent again after the reconnect is acknowledged, not written twice.
    pub awaiting_pubrel: Vec<u16>,
}

impl StoredSession {
    /// A session of `principal` ending `expiry_secs` from now (`u32::MAX` = never).
    pub fn new(
        subscriptions: Vec<Subscribed>,
        expiry_secs: u32,
        principal: Option<Arc<str>>,
    ) -> Self {
        Self {
            subscriptions,
            principal,
            awaiting_pubrel: Vec::new(),
            expires: (expiry_secs != u32::MAX)
                .then(|| Instant::now().checked_add(Duration::from_secs(u64::from(expiry_secs))))
                .flatten(),
        }
    }

    /// A session read from the sessions topic: one left behind ends after `remaining`; one
    /// whose connection is live (or never ends) keeps its full `expiry_secs` from now.
    pub fn resumable(
        subscriptions: Vec<Subscribed>,
        remaining: Option<Duration>,
        expiry_secs: u32,
        principal: Option<Arc<str>>,
    ) -> Self {
        match remaining {
            Some(left) => Self {
                subscriptions,
                principal,
                awaiting_pubrel: Vec::new(),
                // A time the clock cannot hold is as good as never.
                expires: Instant::now().checked_add(left),
            },
            None => Self::new(subscriptions, expiry_secs, principal),
        }
    }
}

/// Persistent sessions of disconnected clients, by client id.
#[derive(Default)]
pub struct SessionStore(Mutex<HashMap<String, StoredSession>>);

impl SessionStore {
    /// The client's stored session, if it has one that has not expired.
    pub fn get(&self, client_id: &str) -> Option<StoredSession> {
        let mut map = self.0.lock().ok()?;
        let now = Instant::now();
        map.retain(|_, s| s.expires.is_none_or(|e| e > now));
        map.get(client_id).cloned()
    }

    /// Whether `client_id` may hold a session: it has one, or fewer than `max` sessions
    /// (live or left behind, on any replica) are kept.
    pub fn admits(&self, client_id: &str, max: usize) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        let now = Instant::now();
        map.retain(|_, s| s.expires.is_none_or(|e| e > now));
        map.contains_key(client_id) || map.len() < max
    }

    /// Forgets the client's session.
    pub fn remove(&self, client_id: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(client_id);
        }
    }

    /// Keeps a session for the client's next connection.
    pub fn put(&self, client_id: &str, session: StoredSession) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(client_id.to_owned(), session);
        }
    }
}
