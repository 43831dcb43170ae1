//! What is left when a connection ends: the publishes already read are still written, the
//! session is kept (or dropped) and let go to a connection taking it over, and the will is
//! published — at once, or after its delay unless the client is back in time.

use std::{sync::Arc, time::Duration};

use barnabas_core::{Header, Principal};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{publish::authorize_write, MqttSession, SessionEnd};
use crate::{
    convert::{self, Message},
    packet::Will,
    store::StoredSession,
    MqttContext,
};

/// Longest v5 Will Delay honoured (one day): a delayed will holds its payload in memory
/// until then, and a client must not park one for 136 years.
const MAX_WILL_DELAY_SECS: u32 = 86_400;

/// How long a will's write may wait for Kafka.
const WILL_WRITE_WAIT: Duration = Duration::from_secs(10);

impl<T: AsyncRead + AsyncWrite + Unpin> MqttSession<T> {
    /// Ends the session the way `end` says: the will published unless the client
    /// disconnected without one, a delayed will left to its timer.
    pub(super) async fn end(mut self, end: SessionEnd) {
        // Publishes read before the connection ended are still written (each bounded by the
        // produce timeout); nobody is left to acknowledge them.
        while let Some((ack, result)) = self.incoming.window.next().await {
            self.incoming.settled(ack, result.is_ok());
        }
        self.ctx.metrics.connections.dec();
        let expiry = end.session_expiry().unwrap_or(self.info.session_expiry);
        let will = self.info.will.take().filter(|_| end.publishes_will());
        let delayed = will
            .as_ref()
            .is_some_and(|w| w.delay_secs > 0 && expiry > 0);
        let shutdown = matches!(end, SessionEnd::Shutdown);
        // A delayed will is registered before the session is let go: a connection taking the
        // session over waits for `finish`, then cancels it (the client is back in time).
        let client_id = self.info.client_id.clone();
        let cancelled = (delayed && !shutdown).then(|| self.ctx.sessions.delay_will(&client_id));
        self.finish(expiry).await;
        let Some(will) = will else { return };
        let (ctx, principal) = (self.ctx.clone(), self.info.principal.clone());
        if delayed && shutdown {
            tracing::debug!("delayed will dropped at shutdown");
            return;
        }
        let Some(cancelled) = cancelled else {
            return publish_will(&ctx, &principal, *will).await;
        };
        let delay = Duration::from_secs(u64::from(
            will.delay_secs.min(expiry).min(MAX_WILL_DELAY_SECS),
        ));
        tokio::spawn(async move {
            tokio::select! {
                _ = cancelled.cancelled() => tracing::debug!("client back before its will delay; will dropped"),
                _ = tokio::time::sleep(delay) => {
                    ctx.sessions.will_done(&client_id, &cancelled);
                    publish_will(&ctx, &principal, *will).await;
                }
            }
        });
    }

    /// Lets the session go: keeps a persistent one's subscriptions (and the QoS 2 packet ids
    /// awaiting PUBREL), commits and closes its consumers, records the end in Kafka, and lets
    /// a connection taking the session over go on.
    pub(super) async fn finish(&mut self, expiry: u32) {
        let (ctx, handle) = (&self.ctx, &self.handle);
        let client_id = self.info.client_id.as_str();
        let awaiting_pubrel = self.incoming.awaiting_pubrel();
        // A session taken over belongs to its new connection, which records it from now on.
        let taken_over = handle.kick.is_cancelled();
        let subscribed = self.subscribed();
        if let Some(subs) = self.subs.as_mut() {
            subs.close().await;
        }
        if expiry > 0 {
            let stored = StoredSession::new(subscribed.clone(), expiry, handle.principal.clone());
            ctx.stored.put(
                client_id,
                StoredSession {
                    awaiting_pubrel: awaiting_pubrel.clone(),
                    ..stored
                },
            );
        }
        if !taken_over {
            let saved = if expiry > 0 {
                let saved = ctx.state.save_session(
                    client_id,
                    handle,
                    crate::state::Presence::Disconnected,
                    &subscribed,
                    expiry,
                    &awaiting_pubrel,
                );
                saved.await
            } else {
                ctx.stored.remove(client_id);
                ctx.state.drop_session(client_id).await
            };
            if let Err(e) = saved {
                tracing::warn!(error = %e, "session end not recorded in Kafka");
            }
        }
        ctx.sessions.unregister(client_id, handle);
        handle.finished.cancel();
    }
}

/// Writes the last will (bounded wait); its failure is logged, there is no one left to tell.
async fn publish_will(ctx: &Arc<MqttContext>, principal: &Principal, will: Will) {
    // A will's Message Expiry Interval counts from when it is published (3.1.3.2.4).
    let expires_at = will
        .headers
        .iter()
        .find(|(k, _)| k == convert::EXPIRY_HEADER)
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
        .and_then(|secs| {
            std::time::SystemTime::now().checked_add(Duration::from_secs(u64::from(secs)))
        });
    let mut headers = convert::origin_headers(&will.topic, will.qos, will.retain);
    headers.extend(will.headers.into_iter().map(|(k, v)| Header::new(k, v)));
    let retained = will.retain.then(|| Message {
        topic: will.topic.clone(),
        payload: will.payload.clone(),
        qos: will.qos,
        retain: true,
        headers: headers.clone(),
        origin_client: None,
        expires_at,
    });
    let record = match convert::to_record(&ctx.mapper, &will.topic, will.payload, headers)
        .and_then(|r| authorize_write(ctx, principal, r))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, topic = %will.topic, "will not published");
            return;
        }
    };
    let written = ctx.publisher.publish_one_as(principal, record);
    match tokio::time::timeout(WILL_WRITE_WAIT, written).await {
        Ok(Ok(d)) => {
            tracing::debug!(offset = d.offset, topic = %will.topic, "will published");
            if let Some(message) =
                retained.filter(|m| ctx.retained.admits(&m.topic, m.payload.len()))
            {
                match ctx.state.retain(&message).await {
                    Ok(()) => ctx.retained.set(message),
                    Err(e) => tracing::warn!(error = %e, "retained will not stored"),
                }
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, topic = %will.topic, "will not published"),
        Err(_) => tracing::warn!(topic = %will.topic, "will not published: Kafka did not answer"),
    }
}
