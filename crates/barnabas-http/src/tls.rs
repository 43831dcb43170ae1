//! HTTPS: the same router behind TLS. Handshakes run in their own tasks (under a deadline),
//! so one slow client cannot hold up the others; finished ones go to the connection loop
//! ([`crate::server`]).

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use barnabas_core::tls::TlsAcceptor;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;

/// Longest TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Who is on the other end of an HTTPS connection.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Subject CN of its verified client certificate, if it sent one.
    pub cert_cn: Option<String>,
}

/// Serves `router` over TLS on an already bound listener until `shutdown`; a request's
/// headers must arrive within `header_read_timeout` after the handshake; a connection beyond
/// `max_connections` is closed.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<TlsAcceptor>,
    header_read_timeout: Duration,
    max_connections: usize,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let (tx, ready) = mpsc::channel(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (stream, addr) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Over limits.max_connections: closed before the handshake it would cost.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%addr, "over limits.max_connections; closed");
                continue;
            };
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_DEADLINE, tls.accept(stream)).await {
                    Ok(Ok((stream, cert_cn))) => {
                        let _ = tx.send((stream, TlsPeer { addr, cert_cn }, slot)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                }
            });
        }
    });
    crate::server::serve_streams(ready, router, header_read_timeout, shutdown).await;
    Ok(())
}
