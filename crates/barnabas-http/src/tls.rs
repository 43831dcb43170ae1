//! HTTPS: the same router behind TLS. Handshakes run in their own tasks (under a deadline),
//! so one slow client cannot hold up the others; finished ones are handed to axum.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::connect_info::Connected,
    serve::{IncomingStream, Listener},
    Router,
};
use barnabas_core::tls::TlsAcceptor;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::server::TlsStream;
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

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Connections whose TLS handshake completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, TlsPeer)>,
    local: SocketAddr,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(TlsPeer {
            addr: self.local,
            cert_cn: None,
        })
    }
}

/// Serves `router` over TLS on an already bound listener until `shutdown`.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<TlsAcceptor>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let (tx, ready) = mpsc::channel(64);
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
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_DEADLINE, tls.accept(stream)).await {
                    Ok(Ok((stream, cert_cn))) => {
                        let _ = tx.send((stream, TlsPeer { addr, cert_cn })).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                }
            });
        }
    });
    axum::serve(
        TlsListener { ready, local },
        router.into_make_service_with_connect_info::<TlsPeer>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}
