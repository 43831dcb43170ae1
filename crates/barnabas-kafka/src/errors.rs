//! The one place where librdkafka errors become `barnabas_core::Error`s.

use std::time::Duration;

use barnabas_core::Error;
use rdkafka::{error::KafkaError, types::RDKafkaErrorCode as Code};

/// Classifies an error code the broker or librdkafka returned for an operation on `topic`.
pub(crate) fn from_code(code: Code, topic: Option<&str>, partition: Option<i32>) -> Error {
    let topic_name = || topic.unwrap_or("?").to_owned();
    match code {
        Code::UnknownTopicOrPartition | Code::UnknownTopic => match partition {
            Some(p) if topic.is_some() => Error::UnknownPartition {
                topic: topic_name(),
                partition: p,
            },
            _ => Error::UnknownTopic(topic_name()),
        },
        Code::UnknownPartition => Error::UnknownPartition {
            topic: topic_name(),
            partition: partition.unwrap_or(-1),
        },
        Code::InvalidTopic => Error::InvalidTopic {
            topic: topic_name(),
            reason: "rejected by Kafka".into(),
        },
        Code::MessageSizeTooLarge | Code::InvalidMessageSize => {
            Error::TooLargeForKafka(format!("{code}"))
        }
        Code::QueueFull => Error::Overloaded,
        Code::MessageTimedOut | Code::RequestTimedOut | Code::OperationTimedOut => {
            Error::Unavailable(format!("{code}"))
        }
        Code::BrokerTransportFailure
        | Code::AllBrokersDown
        | Code::BrokerNotAvailable
        | Code::LeaderNotAvailable
        | Code::NotLeaderForPartition
        | Code::NotEnoughReplicas
        | Code::NotEnoughReplicasAfterAppend
        | Code::NetworkException
        | Code::NotCoordinator
        | Code::CoordinatorNotAvailable => Error::Unavailable(format!("{code}")),
        Code::TopicAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::ClusterAuthorizationFailed => Error::Unauthorized(format!("{code}")),
        Code::Authentication | Code::SaslAuthenticationFailed => {
            Error::Unauthorized(format!("Kafka refused the login: {code}"))
        }
        Code::State => Error::IllegalState(format!("{code}")),
        Code::InvalidArgument | Code::InvalidConfig => Error::Invalid(format!("{code}")),
        other => Error::Kafka {
            code: format!("{other:?}"),
            message: format!("{other}"),
        },
    }
}

/// Classifies a whole `KafkaError` (which may or may not carry a code).
pub(crate) fn from_kafka(err: &KafkaError, topic: Option<&str>, partition: Option<i32>) -> Error {
    match err.rdkafka_error_code() {
        Some(code) => from_code(code, topic, partition),
        None => match err {
            KafkaError::ClientConfig(_, description, key, value) => Error::Config(format!(
                "librdkafka rejects property \"{key}\" = \"{value}\": {description}"
            )),
            other => Error::Kafka {
                code: "Client".into(),
                message: other.to_string(),
            },
        },
    }
}

/// Turns a join error of a blocking librdkafka call into a gateway error.
pub(crate) fn from_join(err: tokio::task::JoinError) -> Error {
    Error::Kafka {
        code: "Internal".into(),
        message: format!("blocking Kafka call failed: {err}"),
    }
}

/// Shorthand for a timeout error.
pub(crate) fn timeout(after: Duration) -> Error {
    Error::Timeout(after)
}
