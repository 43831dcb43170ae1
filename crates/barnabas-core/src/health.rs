//! Process readiness, shared between the task that watches Kafka and the probes that report it.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

/// Whether the gateway can serve traffic now: its listeners are bound and Kafka answered
/// recently. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A flag that starts out not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records whether Kafka answered the last check.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// What `/ready` answers.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
