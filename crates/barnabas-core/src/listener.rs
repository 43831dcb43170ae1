//! The accept loop every TCP front end shares: one task per connection, at most
//! `max_connections` at once (a new connection waits for a slot instead of exhausting file
//! descriptors), accept errors logged and retried, and an end on shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

/// Accepts connections on `listener` until `shutdown`, running `handle` for each in its own
/// task (so a panic in one connection's code ends only that connection). `protocol` names the
/// listener in logs.
pub async fn serve_connections<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    max_connections: usize,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(protocol, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tracing::trace!(protocol, %peer, "connection");
        let connection = handle(stream, peer);
        tokio::spawn(async move {
            let _permit = permit;
            connection.await;
        });
    }
}
