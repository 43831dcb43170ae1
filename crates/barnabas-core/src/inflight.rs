//! Bytes held by writes Kafka has not answered yet, counted per connection or link, so a
//! front end stops reading input while too much is waiting (memory stays bounded whatever
//! the message sizes, beside the count window each protocol has).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// Payload bytes one connection (MQTT) or link (AMQP) may have waiting for Kafka: with each
/// protocol's count window this bounds memory (1 000 × 1 MiB messages would be 1 GiB).
pub const MAX_INFLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// One connection's (or link's) bytes in flight towards Kafka.
#[derive(Debug, Clone, Default)]
pub struct InFlightBytes(Arc<AtomicUsize>);

impl InFlightBytes {
    /// Counts `bytes` until the returned guard is dropped (when Kafka answered, or the write
    /// was abandoned).
    pub fn hold(&self, bytes: usize) -> HeldBytes {
        self.0.fetch_add(bytes, Ordering::Relaxed);
        HeldBytes(self.0.clone(), bytes)
    }

    /// Bytes held now.
    pub fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bytes of one write, released when dropped.
#[derive(Debug)]
pub struct HeldBytes(Arc<AtomicUsize>, usize);

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_counted_while_held_and_released_on_drop() {
        let budget = InFlightBytes::default();
        let a = budget.hold(100);
        let b = budget.clone().hold(50);
        assert_eq!(budget.current(), 150);
        drop(a);
        assert_eq!(budget.current(), 50);
        drop(b);
        assert_eq!(budget.current(), 0);
    }
}
