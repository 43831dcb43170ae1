//! A link on which the client sends: every transfer becomes a Kafka record, settled
//! `accepted` only after Kafka acknowledged it, or `rejected` with a condition saying why.
//!
//! Dispositions go out in the order transfers came in (records keep their order in Kafka
//! too). At most [`MAX_IN_FLIGHT`] transfers and about [`MAX_INFLIGHT_BYTES`] are in flight
//! (the link credit we grant by hand, see [`Credit`]), so a slow Kafka slows the sender
//! instead of filling memory.

use std::{future::Future, ops::ControlFlow, sync::Arc, time::Duration};

use barnabas_core::{
    Delivered, Error, ErrorKind, OrderedWindow, Principal, Record, MAX_INFLIGHT_BYTES,
};
use fe2o3_amqp::{
    link::{
        delivery::{Delivery, DeliveryInfo},
        RecvError,
    },
    types::{
        definitions::{self, AmqpError, LinkError},
        messaging::Body,
        primitives::Value,
    },
    Receiver,
};
use tokio_util::sync::CancellationToken;

use crate::{address::ProduceTo, convert, AmqpContext};

/// What Kafka answered for one transfer, with what its disposition needs.
type Answer = (DeliveryInfo, Result<Delivered, definitions::Error>);

/// Most transfers waiting for Kafka on one link, and the link credit granted: deep enough
/// for Kafka's batching to work for one busy sender (200, fe2o3-amqp's default, held one
/// link to a quarter of a direct producer's rate on the embedded broker).
const MAX_IN_FLIGHT: u32 = 1000;

/// The link credit, granted by hand so that what the client may send stays within both
/// bounds: at most `cap` transfers and about [`MAX_INFLIGHT_BYTES`] waiting for Kafka.
/// fe2o3-amqp takes every transfer the credit allows off the socket whether or not the link
/// reads it, so the credit is what bounds a link's memory. A transfer's size is not known
/// before it arrives: the credit assumes the largest size seen lately, at first the largest
/// a transfer may be — a sender of large messages gets a few transfers of credit at a time,
/// one of small messages the whole `cap` within a few batches. Limits of the estimate: the
/// 200 credits fe2o3-amqp's acceptor grants at attach are not sized (its builder has no
/// credit setting; they are used up before the first top-up), and a client that switches
/// from small to large messages overshoots once by up to the credit it holds — so the hard
/// bound stays `cap` × the largest transfer.
struct Credit {
    cap: u32,
    /// The size assumed for the next transfers: the largest seen, shrinking by a quarter per
    /// smaller transfer (from 1 MiB to 16 KiB within 15 transfers).
    size: usize,
}

impl Credit {
    fn new(cap: u32, largest: usize) -> Self {
        Self {
            cap,
            size: largest.max(1),
        }
    }

    /// A new link's credit. A rate-limited connection gets at most one second's worth of
    /// credit per link.
    fn for_link(settings: &crate::AmqpSettings) -> Self {
        let cap = match settings.publish_rate {
            0 => MAX_IN_FLIGHT,
            per_second => per_second.clamp(1, MAX_IN_FLIGHT),
        };
        Self::new(cap, settings.max_message_bytes)
    }

    /// A transfer of `bytes` arrived.
    fn received(&mut self, bytes: usize) {
        self.size = bytes.max(self.size - self.size / 4).max(1);
    }

    /// The credit to grant now, if the client's (`held`, as fe2o3-amqp counts it) is worth
    /// topping up, with `count` transfers and `bytes` waiting for Kafka. Never less than
    /// `held`.
    fn top_up(&self, held: u32, count: usize, bytes: usize) -> Option<u32> {
        let by_count = (self.cap as usize).saturating_sub(count);
        let by_bytes = MAX_INFLIGHT_BYTES.saturating_sub(bytes) / self.size;
        let mut want = u32::try_from(by_count.min(by_bytes)).unwrap_or(self.cap);
        if count == 0 {
            want = want.max(1); // a transfer above the byte bound still gets through alone
        }
        // Worth a flow frame: the client is out, or an eighth of the cap (half of a small
        // `want`) more can be granted — often enough to keep a busy link's pipeline full.
        let step = (self.cap / 8).min(want / 2).max(1);
        (want > held && (held == 0 || want - held >= step)).then_some(want)
    }
}

/// How long a stopping producer link waits for more in-flight transfers to release.
const RELEASE_WAIT: Duration = Duration::from_millis(200);

/// A connection's publish-rate budget (`limits.publish_rate`), shared by its sender links;
/// `None` = no limit.
pub type SharedRate = Option<Arc<std::sync::Mutex<barnabas_core::rate::TokenBucket>>>;

/// The budget for a new connection allowed `per_second` transfers (0 = no limit).
pub fn shared_rate(per_second: u32) -> SharedRate {
    barnabas_core::rate::TokenBucket::per_second(per_second)
        .map(|b| Arc::new(std::sync::Mutex::new(b)))
}

/// How long the next transfer must wait for its token (zero when it is there).
fn wait_for_token(rate: &SharedRate) -> Duration {
    rate.as_ref().map_or(Duration::ZERO, |bucket| {
        bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    })
}

/// The AMQP error condition for a write Kafka refused.
pub fn condition_for(e: &Error) -> definitions::Error {
    let condition: definitions::ErrorCondition = match e.kind() {
        ErrorKind::Overloaded => AmqpError::ResourceLimitExceeded.into(),
        ErrorKind::NotFound => AmqpError::NotFound.into(),
        ErrorKind::Invalid => AmqpError::InvalidField.into(),
        ErrorKind::Unauthorized => AmqpError::UnauthorizedAccess.into(),
        // Kafka's own limit (the broker's or topic's `max.message.bytes`) below the gateway's:
        // the same answer as a transfer above `limits.max_message_bytes`.
        ErrorKind::TooLarge => LinkError::MessageSizeExceeded.into(),
        _ => AmqpError::InternalError.into(),
    };
    definitions::Error::new(condition, Some(e.to_string()), None)
}

/// Serves the link until the client detaches or the gateway shuts down.
pub async fn run(
    mut receiver: Receiver,
    to: ProduceTo,
    ctx: Arc<AmqpContext>,
    principal: Principal,
    rate: SharedRate,
    shutdown: CancellationToken,
) {
    receiver.set_credit_mode(fe2o3_amqp::link::CreditMode::Manual);
    let mut link = ProducerLink {
        receiver,
        inflight: OrderedWindow::default(),
        credit: Credit::for_link(&ctx.settings),
        rate,
        to,
        principal,
        ctx,
        shutdown,
    };
    link.run().await;
    link.close().await;
}

/// A sender link: takes transfers in within the credit it grants, and answers them in order
/// as Kafka acknowledges their records.
struct ProducerLink {
    receiver: Receiver,
    /// Transfers waiting for Kafka, answered in the order they came in.
    inflight: OrderedWindow<Answer>,
    credit: Credit,
    /// The connection's publish-rate budget.
    rate: SharedRate,
    /// Where the records go, and as whom they are written.
    to: ProduceTo,
    principal: Principal,
    ctx: Arc<AmqpContext>,
    shutdown: CancellationToken,
}

impl ProducerLink {
    /// Takes transfers in and answers them until the client detaches, the link fails or
    /// the gateway stops.
    async fn run(&mut self) {
        loop {
            if self.grant_credit().await.is_break() {
                break;
            }
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => ControlFlow::Break(()),
                Some(answer) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.settle_ready(answer).await
                }
                received = self.receiver.recv::<Body<Value>>() => self.on_received(received).await,
            };
            if step.is_break() {
                break;
            }
        }
    }

    /// Settles `first` and every transfer after it that Kafka has answered already, in order:
    /// consecutive `accepted` ones in one disposition (a range of delivery ids), each
    /// `rejected` one on its own. A disposition per transfer was a frame through
    /// fe2o3-amqp's session and connection tasks and a socket write each.
    async fn settle_ready(&mut self, first: Answer) -> ControlFlow<()> {
        let mut accepted = Vec::new();
        let mut answer = Some(first);
        while let Some((info, result)) = answer {
            match result {
                Ok(_) => accepted.push(info),
                Err(condition) => {
                    accept_all(&self.receiver, std::mem::take(&mut accepted)).await?;
                    settle(&self.receiver, &self.ctx, info, Err(condition)).await?;
                }
            }
            answer = self.inflight.ready();
        }
        accept_all(&self.receiver, accepted).await
    }

    /// Tops the client's credit up when [`Credit::top_up`] says it is worth a flow frame;
    /// breaks when it cannot be granted (the link is gone).
    async fn grant_credit(&mut self) -> ControlFlow<()> {
        let held = self.receiver.credit();
        let grant = self
            .credit
            .top_up(held, self.inflight.len(), self.inflight.bytes());
        if let Some(grant) = grant {
            if let Err(e) = self.receiver.set_credit(grant).await {
                tracing::debug!(error = ?e, "could not grant the link credit");
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// A transfer arrived: its write joins the window, or it is rejected with
    /// `amqp:decode-error` when it does not decode; breaks on any other receive error (the
    /// link ended).
    async fn on_received(
        &mut self,
        received: Result<Delivery<Body<Value>>, RecvError>,
    ) -> ControlFlow<()> {
        match received {
            Ok(delivery) => self.take_in(delivery).await,
            Err(RecvError::MessageDecode(e)) => {
                self.credit.received(0);
                let err = rejection(AmqpError::DecodeError, e.source.to_string());
                let _ = self.receiver.reject(e.info, err).await;
            }
            Err(e) => {
                tracing::debug!(error = ?e, "producer link ended");
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Starts writing a transfer's records, once the publish rate lets it in.
    async fn take_in(&mut self, delivery: Delivery<Body<Value>>) {
        // Over `limits.publish_rate`: hold this transfer (and so its settlement and the
        // credit topped up after it) until its token is there.
        let wait = wait_for_token(&self.rate);
        if !wait.is_zero() {
            self.ctx.metrics.throttled.inc();
            tokio::time::sleep(wait).await;
        }
        let info = DeliveryInfo::from(&delivery);
        let format = *delivery.message_format();
        let (bytes, write) = produce(
            &self.ctx,
            &self.to,
            &self.principal,
            delivery.message(),
            format,
            info,
        );
        self.inflight.push(bytes, write);
        self.credit.received(bytes);
    }

    /// Answers what is in flight and closes the link.
    async fn close(mut self) {
        // What was received is answered before the link goes: those writes were accepted.
        while let Some((info, result)) = self.inflight.next().await {
            let _ = settle(&self.receiver, &self.ctx, info, result).await;
        }
        if self.shutdown.is_cancelled() {
            self.release_arriving().await;
        }
        self.ctx
            .metrics
            .links
            .get_or_create(&crate::DirectionLabel::produce())
            .dec();
        let _ = tokio::time::timeout(crate::CLOSE_WAIT, self.receiver.close()).await;
    }

    /// Transfers already on their way when the stop began are answered `released` (not
    /// written; the client may send them again elsewhere) instead of left without an outcome
    /// when the link closes. Drained, not set to credit 0: transfers the client sent within
    /// the credit it had stay valid (at credit 0 fe2o3-amqp refuses them as over the limit
    /// and ends the link), and the credit is manual: releasing them grants none.
    async fn release_arriving(&mut self) {
        let _ = self.receiver.drain().await;
        while let Ok(Ok(delivery)) =
            tokio::time::timeout(RELEASE_WAIT, self.receiver.recv::<Body<Value>>()).await
        {
            let _ = self.receiver.release(&delivery).await;
        }
    }
}

/// Sends a transfer's disposition: `accepted`, or `rejected` with its condition (counted);
/// breaks when it cannot be sent (the link is gone).
async fn settle(
    receiver: &Receiver,
    ctx: &AmqpContext,
    info: DeliveryInfo,
    result: Result<Delivered, definitions::Error>,
) -> ControlFlow<()> {
    let sent = match result {
        Ok(_) => receiver.accept(info).await,
        Err(condition) => {
            ctx.metrics.rejected.inc();
            receiver.reject(info, condition).await
        }
    };
    match sent {
        Ok(_) => ControlFlow::Continue(()),
        Err(e) => {
            tracing::debug!(error = ?e, "disposition not sent");
            ControlFlow::Break(())
        }
    }
}

/// `accepted` for these transfers (none: nothing sent); breaks when it cannot be sent.
async fn accept_all(receiver: &Receiver, infos: Vec<DeliveryInfo>) -> ControlFlow<()> {
    if infos.is_empty() {
        return ControlFlow::Continue(());
    }
    match receiver.accept_all(infos).await {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            tracing::debug!(error = ?e, "disposition not sent");
            ControlFlow::Break(())
        }
    }
}

/// A `rejected` outcome's error: `condition`, and why.
fn rejection(condition: impl Into<definitions::ErrorCondition>, why: String) -> definitions::Error {
    definitions::Error::new(condition, Some(why), None)
}

/// A transfer's records and their write: the payload bytes it holds, and the future that
/// resolves once Kafka answered every record.
fn produce(
    ctx: &Arc<AmqpContext>,
    to: &ProduceTo,
    principal: &Principal,
    message: &fe2o3_amqp::types::messaging::Message<Body<Value>>,
    message_format: Option<u32>,
    info: DeliveryInfo,
) -> (usize, impl Future<Output = Answer> + Send + 'static) {
    let records = convert::to_records(message, message_format, &to.topic, to.partition);
    let bytes = records.as_ref().map_or(0, |rs| {
        rs.iter()
            .fold(0usize, |n, r| n.saturating_add(r.payload_size()))
    });
    let ctx = ctx.clone();
    let principal = principal.clone();
    let write = async move {
        let outcome = match records {
            Ok(records) => write(&ctx, &principal, records).await,
            Err(convert::BadMessage(why)) => Err(rejection(AmqpError::DecodeError, why)),
        };
        (info, outcome)
    };
    (bytes, write)
}

/// Writes a transfer's records, unless one is above `limits.max_message_bytes`
/// (`amqp:link:message-size-exceeded`, nothing written). The transfer is accepted when every
/// record of it was written; else the first failure is its outcome.
async fn write(
    ctx: &AmqpContext,
    principal: &Principal,
    records: Vec<Record>,
) -> Result<Delivered, definitions::Error> {
    let limit = ctx.settings.max_message_bytes;
    if let Some(record) = records.iter().find(|r| r.payload_size() > limit) {
        let why = format!(
            "message of {} bytes is above the limit of {limit} bytes",
            record.payload_size(),
        );
        return Err(rejection(LinkError::MessageSizeExceeded, why));
    }
    let results = ctx.publisher.publish_as(principal, records).await;
    let (mut first_error, mut last_written) = (None, None);
    for result in results {
        match result {
            Ok(d) => last_written = Some(d),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (first_error, last_written) {
        (Some(e), _) => Err(condition_for(&e)),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(rejection(
            AmqpError::DecodeError,
            "the batch holds no message".into(),
        )),
    }
}

#[cfg(test)]
mod condition_tests {
    use super::*;

    /// Each kind of refusal keeps its own condition; what has none of its own is internal.
    #[test]
    fn each_refusal_gets_its_condition() {
        let cases: [(Error, definitions::ErrorCondition); 8] = [
            (Error::Overloaded, AmqpError::ResourceLimitExceeded.into()),
            (Error::UnknownTopic("t".into()), AmqpError::NotFound.into()),
            (Error::Invalid("bad".into()), AmqpError::InvalidField.into()),
            (
                Error::Unauthorized("no".into()),
                AmqpError::UnauthorizedAccess.into(),
            ),
            (
                Error::TooLargeForKafka("20000".into()),
                LinkError::MessageSizeExceeded.into(),
            ),
            (
                Error::Unavailable("down".into()),
                AmqpError::InternalError.into(),
            ),
            (
                Error::Timeout(Duration::from_secs(1)),
                AmqpError::InternalError.into(),
            ),
            (
                Error::IllegalState("x".into()),
                AmqpError::InternalError.into(),
            ),
        ];
        for (error, condition) in cases {
            let got = condition_for(&error);
            assert_eq!(got.condition, condition, "{error}");
            assert_eq!(got.description, Some(error.to_string()));
        }
    }
}

#[cfg(test)]
mod credit_tests {
    use super::*;

    /// Large transfers get credit by the byte bound, small ones the count cap after a few
    /// batches; nothing is granted while the bounds are used up or the client holds enough,
    /// and a lone transfer above the byte bound still gets one.
    #[test]
    fn credit_follows_both_bounds() {
        let mut credit = Credit::new(1000, 1024 * 1024);
        assert_eq!(
            credit.top_up(0, 0, 0),
            Some(16),
            "16 MiB of 1 MiB transfers"
        );
        assert_eq!(credit.top_up(16, 0, 0), None, "still held: no top-up");
        assert_eq!(
            credit.top_up(200, 0, 0),
            None,
            "never less than the client holds"
        );
        let (mut held, mut largest_grant) = (16, 16);
        for _ in 0..100 {
            credit.received(100);
            held -= 1;
            if let Some(grant) = credit.top_up(held, 0, 0) {
                held = grant;
                largest_grant = largest_grant.max(grant);
            }
        }
        assert_eq!(largest_grant, 1000, "small transfers: the whole cap");
        let full = Credit::new(1000, 100);
        assert_eq!(full.top_up(0, 1000, 0), None, "1 000 waiting: no credit");
        assert_eq!(
            full.top_up(0, 0, MAX_INFLIGHT_BYTES),
            Some(1),
            "bytes used up, none waiting"
        );
        let huge = Credit::new(1000, 2 * MAX_INFLIGHT_BYTES);
        assert_eq!(
            huge.top_up(0, 0, 0),
            Some(1),
            "a transfer above the bound alone"
        );
        assert_eq!(huge.top_up(0, 1, 0), None);
    }
}
