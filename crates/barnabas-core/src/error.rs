//! One error type for everything a front end can be told by the Kafka side.
//!
//! Front ends do not match on the variants to pick a protocol answer; they match on
//! [`Error::kind`], a short classification that maps one-to-one onto MQTT reason codes, AMQP
//! error conditions and HTTP statuses, each in one function per protocol.

use std::time::Duration;

/// Result alias used across the gateway's libraries.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a front end and Kafka.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The topic does not exist (and the gateway was not allowed to create it).
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// The partition does not exist in the topic.
    #[error("unknown partition {partition} of topic '{topic}'")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// The partition that was asked for.
        partition: i32,
    },
    /// The topic name is not a legal Kafka topic name.
    #[error("invalid topic name '{topic}': {reason}")]
    InvalidTopic {
        /// The offending name.
        topic: String,
        /// Why it is not legal.
        reason: String,
    },
    /// The record is larger than the gateway or the broker accepts.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of what was sent.
        size: usize,
        /// The limit it broke.
        max: usize,
    },
    /// Kafka refused the record as too large: its own limit (the broker's
    /// `message.max.bytes`, the topic's `max.message.bytes`) is below the gateway's. Kafka
    /// does not say the limit, so no sizes are given.
    #[error("Kafka refused the record as too large ({0}): the broker's or topic's limit is below the gateway's limits.max_message_bytes")]
    TooLargeForKafka(String),
    /// The request itself is malformed or not allowed in the current state.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A client setting the Kafka library refuses (e.g. an unknown librdkafka property).
    #[error("{0}")]
    Config(String),
    /// A consumer is not in the state the operation needs (e.g. seek on an unassigned partition).
    #[error("illegal state: {0}")]
    IllegalState(String),
    /// The Kafka cluster could not be reached or did not answer in time.
    #[error("Kafka unavailable: {0}")]
    Unavailable(String),
    /// The gateway's send queue towards Kafka is full: back off and retry.
    #[error("Kafka producer queue full, retry later")]
    Overloaded,
    /// The operation did not complete within its deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Kafka (or the gateway) refused the operation for this principal.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// Something else the Kafka cluster reported, with its error name.
    #[error("Kafka error {code}: {message}")]
    Kafka {
        /// Kafka/librdkafka error name (e.g. `NotEnoughReplicas`).
        code: String,
        /// Human-readable detail.
        message: String,
    },
}

/// A coarse classification of [`Error`] that protocol front ends map to their own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Topic or partition missing (HTTP 404, AMQP `amqp:not-found`).
    NotFound,
    /// Bad input (HTTP 400/422, MQTT 0x99/0x90, AMQP `amqp:invalid-field`).
    Invalid,
    /// Too large (HTTP 413, MQTT 0x95, AMQP `amqp:link:message-size-exceeded`).
    TooLarge,
    /// Wrong state for the operation (HTTP 409, AMQP `amqp:illegal-state`).
    Conflict,
    /// Kafka not reachable or too slow (HTTP 503, MQTT 0x80, AMQP `amqp:resource-limit-exceeded`).
    Unavailable,
    /// Back-pressure (HTTP 429, MQTT 0x97 quota exceeded).
    Overloaded,
    /// Not allowed (HTTP 403, MQTT 0x87, AMQP `amqp:unauthorized-access`).
    Unauthorized,
    /// Anything else (HTTP 500, MQTT 0x80, AMQP `amqp:internal-error`).
    Internal,
}

impl Error {
    /// The classification front ends map to protocol codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownTopic(_) | Error::UnknownPartition { .. } => ErrorKind::NotFound,
            Error::InvalidTopic { .. } | Error::Invalid(_) | Error::Config(_) => ErrorKind::Invalid,
            Error::TooLarge { .. } | Error::TooLargeForKafka(_) => ErrorKind::TooLarge,
            Error::IllegalState(_) => ErrorKind::Conflict,
            Error::Unavailable(_) | Error::Timeout(_) => ErrorKind::Unavailable,
            Error::Overloaded => ErrorKind::Overloaded,
            Error::Unauthorized(_) => ErrorKind::Unauthorized,
            Error::Kafka { .. } => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_kind_and_a_readable_message() {
        let cases = [
            (Error::UnknownTopic("t".into()), ErrorKind::NotFound),
            (
                Error::UnknownPartition {
                    topic: "t".into(),
                    partition: 3,
                },
                ErrorKind::NotFound,
            ),
            (Error::TooLarge { size: 10, max: 5 }, ErrorKind::TooLarge),
            (Error::TooLargeForKafka("x".into()), ErrorKind::TooLarge),
            (Error::Overloaded, ErrorKind::Overloaded),
            (
                Error::Timeout(Duration::from_secs(1)),
                ErrorKind::Unavailable,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            assert!(!err.to_string().is_empty());
        }
        assert_eq!(
            Error::UnknownPartition {
                topic: "t".into(),
                partition: 3
            }
            .to_string(),
            "unknown partition 3 of topic 't'"
        );
    }
}
