//! The HTTP/1.1 connection loop behind both listeners (plain and TLS).
//!
//! `axum::serve` runs hyper without a timer, so hyper's header-read deadline never applies: a
//! client that opens a connection and sends nothing, or a few header bytes and then nothing
//! (slowloris), holds a task and a descriptor for as long as it likes. This loop serves each
//! connection with hyper's HTTP/1.1 server and a tokio timer, so a request's headers must
//! arrive within `header_read_timeout` (between requests on a kept-alive connection too: an
//! idle connection is closed after the same time). Request bodies, long polls and SSE streams
//! are not limited by it. The client's address (or its TLS identity) reaches handlers as
//! axum's `ConnectInfo`, as with `into_make_service_with_connect_info`.

use std::{convert::Infallible, time::Duration};

use axum::{extract::ConnectInfo, Router};
use hyper::{body::Incoming, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves every connection that arrives on `incoming` (a stream, what handlers see as its
/// `ConnectInfo`, and its slot under `limits.max_connections`, held until it closes) until
/// `shutdown`; then lets requests in progress finish and returns once every connection has
/// closed.
pub async fn serve_streams<I, C, P>(
    mut incoming: mpsc::Receiver<(I, C, P)>,
    router: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Clone + Send + Sync + 'static,
    P: Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let (io, info, slot) = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = incoming.recv() => match next {
                Some(c) => c,
                None => break,
            },
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (router, shutdown) = (router.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(info.clone()));
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(
                        router
                            .oneshot(request)
                            .await
                            .unwrap_or_else(|never| match never {}),
                    )
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
}

/// The answer to a connection over `limits.max_connections`: 503 with the JSON error body and
/// `Retry-After`, then the connection is closed (after reading what the client sent, so the
/// close does not reset the answer away).
pub async fn answer_busy<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let body =
        r#"{"error_code":503,"message":"The gateway is at its connection limit; retry later."}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}
