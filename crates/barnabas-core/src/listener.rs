//! The accept loop every TCP front end shares: one task per connection, at most
//! `max_connections` at once (one more gets the protocol's "server busy" answer instead of
//! exhausting file descriptors), accept errors logged and retried, and an end on shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;

/// Most "server busy" answers given at once, and the longest one may take: beyond them a
/// connection over the limit is closed without an answer, so a flood costs nothing more.
pub const BUSY_ANSWERS: usize = 64;
/// See [`BUSY_ANSWERS`].
pub const BUSY_DEADLINE: Duration = Duration::from_secs(2);

/// The "server busy" answers being given: at most [`BUSY_ANSWERS`] at once, each in its own
/// task under [`BUSY_DEADLINE`].
#[derive(Clone)]
struct BusyAnswers(Arc<Semaphore>);

impl Default for BusyAnswers {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(BUSY_ANSWERS)))
    }
}

impl BusyAnswers {
    /// Runs `answer` (bounded by [`BUSY_DEADLINE`]) in its own task if a slot is free;
    /// otherwise drops the connection at once.
    fn answer<Fut>(&self, answer: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        if let Ok(slot) = self.0.clone().try_acquire_owned() {
            tokio::spawn(async move {
                let _slot = slot;
                let _ = tokio::time::timeout(BUSY_DEADLINE, answer).await;
            });
        }
    }
}

/// Accepts connections on `listener` until `shutdown`, running `handle` for each in its own
/// task (so a panic in one connection's code ends only that connection), then waits for
/// those tasks to end (each sees `shutdown` too; the caller bounds the wait, as mini-redis's
/// listener does — connection tasks are never left detached). `protocol` names the
/// listener in logs. A connection beyond `max_connections` gets `busy` instead (the
/// protocol's "server busy" answer, under [`BUSY_DEADLINE`], at most [`BUSY_ANSWERS`] at once,
/// else closed at once): the client learns why, and retries later or elsewhere.
pub async fn serve_connections<F, Fut, B, BFut>(
    listener: TcpListener,
    protocol: &'static str,
    max_connections: usize,
    shutdown: CancellationToken,
    handle: F,
    busy: B,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    B: Fn(TcpStream) -> BFut,
    BFut: Future<Output = ()> + Send + 'static,
{
    let connections = tokio_util::task::TaskTracker::new();
    accept_connections(
        listener,
        protocol,
        max_connections,
        shutdown,
        |stream, peer, slot| {
            let _ = stream.set_nodelay(true);
            tracing::trace!(protocol, %peer, "connection");
            let connection = handle(stream, peer);
            connections.spawn(async move {
                let _slot = slot;
                connection.await;
            });
            std::future::ready(true)
        },
        |stream| {
            let _ = stream.set_nodelay(true);
            busy(stream)
        },
    )
    .await;
    connections.close();
    connections.wait().await;
}

/// The accept loop under the connection limit that every listener shares: accept errors
/// logged and retried, a connection over `max_connections` given to `busy` (see
/// [`serve_connections`]), every other one given to `accepted` with its slot, which the
/// connection holds until it ends. `accepted` answers whether to go on accepting. For
/// listeners that hand connections on themselves (the HTTP server's connection loop);
/// [`serve_connections`] is the usual way.
pub async fn accept_connections<A, AFut, B, BFut>(
    listener: TcpListener,
    protocol: &'static str,
    max_connections: usize,
    shutdown: CancellationToken,
    mut accepted: A,
    busy: B,
) where
    A: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit) -> AFut,
    AFut: Future<Output = bool>,
    B: Fn(TcpStream) -> BFut,
    BFut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    let answers = BusyAnswers::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => {
                connections_ended(&slots, max_connections, protocol).await;
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(protocol, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(protocol, %peer, max_connections, "over limits.max_connections; answered busy");
            answers.answer(busy(stream));
            continue;
        };
        if !accepted(stream, peer, slot).await {
            return;
        }
    }
}

/// Resolves when every connection has given its slot back, i.e. ended. The listener's task
/// (which the gateway's shutdown awaits, under its drain grace) so ends only after its
/// connections did: they see the same shutdown token, finish what is in flight and drop their
/// Kafka clients before the gateway closes its own and stops an embedded broker.
async fn connections_ended(slots: &Semaphore, max_connections: usize, protocol: &'static str) {
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if slots.available_permits() < max_connections {
        tracing::debug!(
            protocol,
            open = max_connections - slots.available_permits(),
            "waiting for connections to end"
        );
    }
    let _ = slots.acquire_many(all).await;
}
