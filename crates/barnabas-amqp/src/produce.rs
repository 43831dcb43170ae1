//! A link on which the client sends: every transfer becomes a Kafka record, settled
//! `accepted` only after Kafka acknowledged it, or `rejected` with a condition saying why.
//!
//! Dispositions go out in the order transfers came in (records keep their order in Kafka
//! too). At most [`MAX_IN_FLIGHT`] transfers (the link credit we grant, renewed by
//! fe2o3-amqp as transfers are settled) and [`MAX_INFLIGHT_BYTES`] are in flight, so a slow
//! Kafka slows the sender instead of filling memory.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use barnabas_core::{
    Delivered, Error, ErrorKind, GatewayMetrics, InFlightBytes, Principal, MAX_INFLIGHT_BYTES,
};
use fe2o3_amqp::{
    link::{delivery::DeliveryInfo, RecvError},
    types::{
        definitions::{self, AmqpError, LinkError},
        messaging::Body,
        primitives::Value,
    },
    Receiver,
};
use futures::{stream::FuturesOrdered, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::{address::ProduceTo, convert, AmqpContext};

type Pending =
    Pin<Box<dyn Future<Output = (DeliveryInfo, Result<Delivered, definitions::Error>)> + Send>>;

/// Most transfers waiting for Kafka on one link, and the link credit granted: deep enough
/// for Kafka's batching to work for one busy sender (200, fe2o3-amqp's default, held one
/// link to a quarter of a direct producer's rate on the embedded broker).
const MAX_IN_FLIGHT: u32 = 1000;

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
    let mut inflight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let inflight_bytes = InFlightBytes::default();
    // A rate-limited connection gets at most one second's worth of credit per link.
    let credit = match ctx.settings.publish_rate {
        0 => MAX_IN_FLIGHT,
        per_second => per_second.clamp(1, MAX_IN_FLIGHT),
    };
    if let Err(e) = receiver.set_credit(credit).await {
        tracing::debug!(error = ?e, "could not grant the link credit");
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((info, result)) = inflight.next(), if !inflight.is_empty() => {
                if settle(&receiver, &ctx, info, result).await.is_err() {
                    break;
                }
            }
            received = receiver.recv::<Body<Value>>(), if inflight.len() < credit as usize
                && inflight_bytes.current() < MAX_INFLIGHT_BYTES => {
                match received {
                    Ok(delivery) => {
                        // Over `limits.publish_rate`: hold this transfer (and so its
                        // settlement and the credit renewed with it) until its token is there.
                        let wait = wait_for_token(&rate);
                        if !wait.is_zero() {
                            ctx.metrics.throttled.inc();
                            tokio::time::sleep(wait).await;
                        }
                        let info = DeliveryInfo::from(&delivery);
                        let format = *delivery.message_format();
                        inflight.push_back(produce(&ctx, &to, &principal, delivery.message(), format, info, &inflight_bytes));
                    }
                    Err(RecvError::MessageDecode(e)) => {
                        let err = definitions::Error::new(AmqpError::DecodeError, Some(e.source.to_string()), None);
                        let _ = receiver.reject(e.info, err).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = ?e, "producer link ended");
                        break;
                    }
                }
            }
        }
    }
    // What was received is answered before the link goes: those writes were accepted.
    while let Some((info, result)) = inflight.next().await {
        let _ = settle(&receiver, &ctx, info, result).await;
    }
    if shutdown.is_cancelled() {
        // Transfers already on their way when the stop began are answered `released` (not
        // written; the client may send them again elsewhere) instead of left without an
        // outcome when the link closes. Drained, not set to credit 0: transfers the client sent
        // within the credit it had stay valid (at credit 0 fe2o3-amqp refuses them as over the
        // limit and ends the link), and in manual mode releasing them grants no new credit.
        receiver.set_credit_mode(fe2o3_amqp::link::CreditMode::Manual);
        let _ = receiver.drain().await;
        while let Ok(Ok(delivery)) =
            tokio::time::timeout(RELEASE_WAIT, receiver.recv::<Body<Value>>()).await
        {
            let _ = receiver.release(&delivery).await;
        }
    }
    ctx.metrics
        .links
        .get_or_create(&crate::DirectionLabel::produce())
        .dec();
    let _ = tokio::time::timeout(crate::CLOSE_WAIT, receiver.close()).await;
}

async fn settle(
    receiver: &Receiver,
    ctx: &AmqpContext,
    info: DeliveryInfo,
    result: Result<Delivered, definitions::Error>,
) -> Result<(), ()> {
    let sent = match result {
        Ok(_) => receiver.accept(info).await,
        Err(condition) => {
            ctx.metrics.rejected.inc();
            receiver.reject(info, condition).await
        }
    };
    sent.map_err(|e| tracing::debug!(error = ?e, "disposition not sent"))
}

fn produce(
    ctx: &Arc<AmqpContext>,
    to: &ProduceTo,
    principal: &Principal,
    message: &fe2o3_amqp::types::messaging::Message<Body<Value>>,
    message_format: Option<u32>,
    info: DeliveryInfo,
    inflight_bytes: &InFlightBytes,
) -> Pending {
    let records = convert::to_records(message, message_format, &to.topic, to.partition);
    let held = inflight_bytes.hold(records.as_ref().map_or(0, |rs| {
        rs.iter()
            .fold(0usize, |n, r| n.saturating_add(r.payload_size()))
    }));
    let ctx = ctx.clone();
    let principal = principal.clone();
    Box::pin(async move {
        let _held = held;
        let records = match records {
            Ok(r) => r,
            Err(convert::BadMessage(why)) => {
                return (
                    info,
                    Err(definitions::Error::new(
                        AmqpError::DecodeError,
                        Some(why),
                        None,
                    )),
                )
            }
        };
        if let Some(record) = records
            .iter()
            .find(|r| r.payload_size() > ctx.settings.max_message_bytes)
        {
            let why = format!(
                "message of {} bytes is above the limit of {} bytes",
                record.payload_size(),
                ctx.settings.max_message_bytes
            );
            return (
                info,
                Err(definitions::Error::new(
                    LinkError::MessageSizeExceeded,
                    Some(why),
                    None,
                )),
            );
        }
        let started = Instant::now();
        let results = ctx.publisher.publish_as(&principal, records).await;
        let label = GatewayMetrics::label("amqp");
        ctx.gateway_metrics
            .produce_latency
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        // The transfer is accepted when every record of it was written; else the first
        // failure is its outcome.
        let (mut first_error, mut last_written) = (None, None);
        for result in results {
            match result {
                Ok(d) => {
                    ctx.gateway_metrics.records_in.get_or_create(&label).inc();
                    last_written = Some(d);
                }
                Err(e) => {
                    ctx.gateway_metrics
                        .records_failed
                        .get_or_create(&label)
                        .inc();
                    first_error.get_or_insert(e);
                }
            }
        }
        let outcome = match (first_error, last_written) {
            (Some(e), _) => Err(condition_for(&e)),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(definitions::Error::new(
                AmqpError::DecodeError,
                Some("the batch holds no message".into()),
                None,
            )),
        };
        (info, outcome)
    })
}
