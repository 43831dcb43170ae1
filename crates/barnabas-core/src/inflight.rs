//! Bytes held by writes Kafka has not answered yet, counted per connection or link, so a
//! front end stops reading input while too much is waiting (memory stays bounded whatever
//! the message sizes, beside the count window each protocol has).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use futures::{stream::FuturesOrdered, StreamExt};

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

/// Writes waiting for Kafka, answered in the order they arrived (MQTT PUBACK/PUBREC, AMQP
/// dispositions) whatever order Kafka answers them in, with the payload bytes they hold: a
/// front end reads no more input while [`has_room`](Self::has_room) says no, so a slow Kafka
/// slows the client instead of filling memory. `A` is what a write answers (its outcome and
/// whatever the front end needs to send the answer).
pub struct OrderedWindow<A> {
    writes: FuturesOrdered<Pin<Box<dyn Future<Output = A> + Send>>>,
    bytes: InFlightBytes,
}

impl<A> Default for OrderedWindow<A> {
    fn default() -> Self {
        Self {
            writes: FuturesOrdered::new(),
            bytes: InFlightBytes::default(),
        }
    }
}

impl<A: 'static> OrderedWindow<A> {
    /// Queues `write`, holding `bytes` until it is answered.
    pub fn push(&mut self, bytes: usize, write: impl Future<Output = A> + Send + 'static) {
        let held = self.bytes.hold(bytes);
        self.writes.push_back(Box::pin(async move {
            let answer = write.await;
            drop(held);
            answer
        }));
    }

    /// The oldest write's answer once it (and every write before it) is answered; `None`
    /// when nothing waits. Cancel-safe: an answer not taken stays first.
    pub async fn next(&mut self) -> Option<A> {
        self.writes.next().await
    }

    /// The oldest write's answer if it (and every write before it) is answered already,
    /// without waiting: for a front end that answers everything ready in one write to its
    /// client. It polls without the caller's waker, so the caller waits on
    /// [`next`](Self::next) before it sleeps (as a loop that came here from `next` does).
    pub fn ready(&mut self) -> Option<A> {
        futures::FutureExt::now_or_never(self.writes.next()).flatten()
    }

    /// Whether one more write may be read: fewer than `max_writes` waiting, and less than
    /// [`MAX_INFLIGHT_BYTES`] held.
    pub fn has_room(&self, max_writes: usize) -> bool {
        self.writes.len() < max_writes && self.bytes.current() < MAX_INFLIGHT_BYTES
    }

    /// Writes waiting.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Payload bytes the waiting writes hold.
    pub fn bytes(&self) -> usize {
        self.bytes.current()
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

    /// Answers come out in the order the writes went in, even when a later write is answered
    /// first; the bytes are held until each write is answered, and bound the room.
    #[tokio::test]
    async fn a_window_answers_in_arrival_order_and_bounds_count_and_bytes() {
        let mut window = OrderedWindow::default();
        let (first_done, first) = tokio::sync::oneshot::channel::<()>();
        window.push(10, async move {
            let _ = first.await;
            "first"
        });
        window.push(MAX_INFLIGHT_BYTES, async { "second" });
        assert_eq!((window.len(), window.bytes()), (2, 10 + MAX_INFLIGHT_BYTES));
        assert!(!window.has_room(10), "the byte bound is reached");
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), window.next());
        assert!(
            early.await.is_err(),
            "the second write may not overtake the first"
        );
        first_done.send(()).ok();
        assert_eq!(window.next().await, Some("first"));
        assert_eq!(window.next().await, Some("second"));
        assert_eq!((window.is_empty(), window.bytes()), (true, 0));
        assert!(window.has_room(1) && !window.has_room(0));
        assert_eq!(window.next().await, None);
    }
}
