//! MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`): the WebSocket's binary messages
//! become a byte stream, and the same session code runs over it.

use std::io;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{
    handshake::server::{ErrorResponse, Request, Response},
    http::{HeaderValue, StatusCode},
    Message,
};
use tokio_util::io::{CopyToBytes, SinkWriter, StreamReader};

/// The only path MQTT over WebSocket is served on.
pub const PATH: &str = "/mqtt";

/// Whether a handshake may proceed: with `allowed` origins configured, a request carrying an
/// `Origin` header (every browser sends one) must name one of them, so a web page elsewhere
/// cannot use a visitor's browser to reach the broker. Clients without the header (devices,
/// command-line tools) are not browsers and pass.
fn origin_allowed(req: &Request, allowed: &[String]) -> bool {
    if allowed.is_empty() || allowed.iter().any(|o| o == "*") {
        return true;
    }
    match req.headers().get("origin").map(|v| v.to_str()) {
        None => true,
        Some(Ok(origin)) => allowed.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        Some(Err(_)) => false,
    }
}

/// Why a WebSocket upgrade did not give an MQTT byte stream.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The HTTP upgrade failed or was refused (wrong path, Origin not allowed, not
    /// WebSocket).
    #[error("{0}")]
    Handshake(Box<tokio_tungstenite::tungstenite::Error>),
    /// Not done within the CONNECT deadline.
    #[error("timed out")]
    TimedOut,
}

/// Completes the WebSocket handshake (path `/mqtt`, answering subprotocol `mqtt` when the
/// client offers it, `Origin` one of `allowed_origins` when any are set) and returns the
/// connection as a byte stream for the MQTT codec.
pub async fn upgrade<S>(
    stream: S,
    max_message_bytes: usize,
    allowed_origins: Vec<String>,
) -> Result<impl AsyncRead + AsyncWrite + Unpin, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    #[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
    let check = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != PATH {
            let mut refusal = ErrorResponse::new(Some(format!("MQTT is served on {PATH}\n")));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        if !origin_allowed(req, &allowed_origins) {
            let mut refusal = ErrorResponse::new(Some(
                "this Origin may not use MQTT over WebSocket (mqtt.ws_allowed_origins)\n".into(),
            ));
            *refusal.status_mut() = StatusCode::FORBIDDEN;
            return Err(refusal);
        }
        let offers_mqtt = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
        if offers_mqtt {
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        }
        Ok(resp)
    };
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(max_message_bytes.saturating_add(128 * 1024));
    config.max_frame_size = config.max_message_size;
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config))
        .await
        .map_err(|e| UpgradeError::Handshake(Box::new(e)))?;
    let (sink, source) = ws.split();
    let reader = StreamReader::new(source.filter_map(|m| {
        futures::future::ready(match m {
            Ok(Message::Binary(b)) => Some(Ok::<Bytes, io::Error>(b)),
            // Text frames are not MQTT: end the byte stream, which closes the session.
            Ok(Message::Text(_)) => Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "MQTT over WebSocket uses binary frames",
            ))),
            Ok(_) => None,
            Err(e) => Some(Err(io::Error::other(e))),
        })
    }));
    let writer = SinkWriter::new(CopyToBytes::new(sink.sink_map_err(io::Error::other).with(
        |b: Bytes| futures::future::ready(Ok::<Message, io::Error>(Message::Binary(b))),
    )));
    Ok(tokio::io::join(reader, writer))
}
