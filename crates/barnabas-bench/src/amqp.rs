//! The AMQP client side the scenarios share: a connection with one session, opened and
//! closed the same way by the throughput sender and the latency sender and receiver.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use fe2o3_amqp::{
    connection::ConnectionHandle, sasl_profile::SaslProfile, session::SessionHandle, Connection,
    Session,
};

/// An AMQP connection with one session, where the bench's links attach.
pub struct AmqpSession {
    connection: ConnectionHandle<()>,
    /// The session links attach to.
    pub session: SessionHandle<()>,
}

impl AmqpSession {
    /// Connects to the gateway's AMQP listener at `addr` as `container_id` (SASL ANONYMOUS,
    /// as the gateway accepts by default) and begins a session.
    pub async fn open(addr: SocketAddr, container_id: impl Into<String>) -> Result<Self> {
        let mut connection = Connection::builder()
            .container_id(container_id)
            .sasl_profile(SaslProfile::Anonymous)
            .open(format!("amqp://{addr}").as_str())
            .await
            .context("AMQP connection")?;
        let session = Session::begin(&mut connection)
            .await
            .context("AMQP session")?;
        Ok(Self {
            connection,
            session,
        })
    }

    /// Ends the session, then the connection (after the caller closed its links). Errors
    /// are ignored: what was measured is in, and the gateway cleans up after a dropped peer.
    pub async fn close(mut self) {
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}
