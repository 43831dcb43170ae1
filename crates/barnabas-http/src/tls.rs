//! HTTPS: the same router behind TLS. Handshakes run in their own tasks (under a deadline),
//! so one slow client cannot hold up the others; finished ones go to the connection loop
//! ([`crate::server`]).

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use barnabas_core::tls::TlsAcceptor;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;

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
/// `max_connections` is answered 503 over TLS ([`crate::server::answer_busy`]).
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<TlsAcceptor>,
    header_read_timeout: Duration,
    max_connections: usize,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let (tx, ready) = mpsc::channel(64);
    let busy_tls = tls.clone();
    tokio::spawn(barnabas_core::accept_connections(
        listener,
        "https",
        max_connections,
        shutdown.clone(),
        move |stream, addr, slot| {
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some((stream, cert_cn)) = tls.accept_within(stream, addr).await {
                    let _ = tx.send((stream, TlsPeer { addr, cert_cn }, slot)).await;
                }
            });
            std::future::ready(true)
        },
        // Over limits.max_connections: the handshake, then 503 (the busy answers' own bounds,
        // `barnabas_core::BUSY_ANSWERS` at once under `BUSY_DEADLINE`, cap what that costs).
        move |stream| {
            let tls = busy_tls.clone();
            async move {
                if let Ok((stream, _)) = tls.accept(stream).await {
                    crate::server::answer_busy(stream).await;
                }
            }
        },
    ));
    crate::server::serve_streams(ready, router, header_read_timeout, shutdown).await;
    Ok(())
}
