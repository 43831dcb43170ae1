//! Link addresses (Strimzi AMQP bridge forms) and start-position filters.
//!
//! - A producer link (the client sends) targets `T` or `T/partitions/P`.
//! - A consumer link (the client receives) has source `T/group.id/G`.
//! - A consumer may start elsewhere than its group's committed offset with an Event Hubs
//!   style selector filter on the offset: `amqp.annotation.x-opt-offset > '42'` (or `>=`).

use barnabas_core::validate_topic_name;

/// A link address or selector filter the gateway cannot serve; the attach is refused with
/// `amqp:invalid-field` and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// A partition that is not a number ≥ 0.
    #[error("'{partition}' in '{address}' is not a partition number")]
    BadPartition {
        /// The partition as written.
        partition: String,
        /// The whole address.
        address: String,
    },
    /// A target of another shape.
    #[error("target '{0}' is neither TOPIC nor TOPIC/partitions/N")]
    NotATarget(String),
    /// A source of another shape.
    #[error("source '{0}' is not of the form TOPIC/group.id/GROUP")]
    NotASource(String),
    /// An Event Hubs source of another shape.
    #[error("source '{0}' is not of the form TOPIC/ConsumerGroups/GROUP/Partitions/N")]
    NotAnEventHubsSource(String),
    /// A source without a group.
    #[error("source '{0}' names no consumer group")]
    NoGroup(String),
    /// A topic name Kafka cannot hold.
    #[error("{0}")]
    BadTopic(String),
    /// A selector filter of another shape (`form` says which was expected).
    #[error("filter '{expr}' is not of the form {form} (or >=)")]
    BadFilter {
        /// The filter as written.
        expr: String,
        /// The form expected.
        form: &'static str,
    },
}

/// [`validate_topic_name`] as an [`AddressError`].
fn valid_topic(topic: &str) -> Result<(), AddressError> {
    validate_topic_name(topic).map_err(|e| AddressError::BadTopic(e.to_string()))
}

/// A partition number ≥ 0.
fn partition(p: &str, address: &str) -> Result<i32, AddressError> {
    p.parse()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| AddressError::BadPartition {
            partition: p.to_owned(),
            address: address.to_owned(),
        })
}

/// Where a producer link writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTo {
    /// Kafka topic.
    pub topic: String,
    /// Fixed partition, from `T/partitions/P`.
    pub partition: Option<i32>,
}

/// What a consumer link reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeFrom {
    /// Kafka topic.
    pub topic: String,
    /// Kafka consumer group.
    pub group: String,
    /// One partition, read without joining the group (the Event Hubs form
    /// `T/ConsumerGroups/G/Partitions/P`).
    pub partition: Option<i32>,
}

/// Where a consumer link starts, from its selector filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At this offset (the first record delivered has it).
    Offset(i64),
    /// After the last record: only what is written from now on (`@latest`).
    Latest,
    /// At the first record whose Kafka timestamp is at or after this time (ms).
    Time(i64),
}

/// The address without leading slashes nor an `amqp://host[:port]/` or `amqps://…/` prefix
/// (the Event Hubs SDK puts the whole URL in its link addresses).
fn trimmed(address: &str) -> &str {
    let path = ["amqps://", "amqp://", "sb://"]
        .iter()
        .find_map(|scheme| address.strip_prefix(scheme))
        .map_or(address, |rest| {
            rest.split_once('/').map_or("", |(_, path)| path)
        });
    path.trim_start_matches('/')
}

/// Parses a producer link's target address.
pub fn parse_target(address: &str) -> Result<ProduceTo, AddressError> {
    let address = trimmed(address);
    let split = address
        .split_once("/partitions/")
        .or_else(|| address.split_once("/Partitions/"));
    let (topic, partition) = match split {
        Some((topic, p)) => (topic, Some(partition(p, address)?)),
        None => (address, None),
    };
    if topic.contains('/') {
        return Err(AddressError::NotATarget(address.to_owned()));
    }
    valid_topic(topic)?;
    Ok(ProduceTo {
        topic: topic.to_owned(),
        partition,
    })
}

/// Parses a consumer link's source address.
pub fn parse_source(address: &str) -> Result<ConsumeFrom, AddressError> {
    let address = trimmed(address);
    if let Some((topic, rest)) = address.split_once("/ConsumerGroups/") {
        let (group, p) = rest
            .split_once("/Partitions/")
            .ok_or_else(|| AddressError::NotAnEventHubsSource(address.to_owned()))?;
        valid_topic(topic)?;
        if group.is_empty() || group.contains('/') {
            return Err(AddressError::NoGroup(address.to_owned()));
        }
        return Ok(ConsumeFrom {
            topic: topic.to_owned(),
            group: group.to_owned(),
            partition: Some(partition(p, address)?),
        });
    }
    let (topic, group) = address
        .split_once("/group.id/")
        .ok_or_else(|| AddressError::NotASource(address.to_owned()))?;
    valid_topic(topic)?;
    if group.is_empty() {
        return Err(AddressError::NoGroup(address.to_owned()));
    }
    Ok(ConsumeFrom {
        topic: topic.to_owned(),
        group: group.to_owned(),
        partition: None,
    })
}

/// Parses an Event Hubs selector filter into where to start: `amqp.annotation.x-opt-offset`
/// or `amqp.annotation.x-opt-sequence-number` (a Kafka offset is both) `>` or `>=` `'N'`;
/// `> '-1'` is the beginning, `> '@latest'` the end; `amqp.annotation.x-opt-enqueued-time`
/// `> 'MS'` the first record with a Kafka timestamp after that time.
pub fn parse_position_filter(expr: &str) -> Result<StartAt, AddressError> {
    let trimmed = expr.trim();
    if let Some(rest) = trimmed.strip_prefix("amqp.annotation.x-opt-enqueued-time") {
        let bad = || AddressError::BadFilter {
            expr: expr.to_owned(),
            form: "amqp.annotation.x-opt-enqueued-time > 'MS'",
        };
        let rest = rest.trim_start();
        let (inclusive, value) = match rest.strip_prefix(">=") {
            Some(v) => (true, v),
            None => (false, rest.strip_prefix('>').ok_or_else(bad)?),
        };
        let ms: i64 = value.trim().trim_matches('\'').parse().map_err(|_| bad())?;
        let at = if inclusive {
            Some(ms)
        } else {
            ms.checked_add(1)
        };
        return Ok(StartAt::Time(at.ok_or_else(bad)?.max(0)));
    }
    let rest = trimmed
        .strip_prefix("amqp.annotation.x-opt-sequence-number")
        .or_else(|| trimmed.strip_prefix("amqp.annotation.x-opt-offset"));
    let Some(rest) = rest else {
        return parse_offset_filter(expr).map(StartAt::Offset);
    };
    let rest = rest.trim_start();
    let value = rest
        .strip_prefix(">=")
        .or_else(|| rest.strip_prefix('>'))
        .map(|v| v.trim().trim_matches('\''));
    if value == Some("@latest") {
        return Ok(StartAt::Latest);
    }
    parse_offset_filter(&format!("amqp.annotation.x-opt-offset {rest}")).map(StartAt::Offset)
}

/// Parses an offset selector filter into the first offset to deliver.
pub fn parse_offset_filter(expr: &str) -> Result<i64, AddressError> {
    let bad = || AddressError::BadFilter {
        expr: expr.to_owned(),
        form: "amqp.annotation.x-opt-offset > 'N'",
    };
    let rest = expr
        .trim()
        .strip_prefix("amqp.annotation.x-opt-offset")
        .ok_or_else(bad)?
        .trim_start();
    let (inclusive, value) = if let Some(v) = rest.strip_prefix(">=") {
        (true, v)
    } else if let Some(v) = rest.strip_prefix('>') {
        (false, v)
    } else {
        return Err(bad());
    };
    let value = value.trim().trim_matches('\'');
    let n: i64 = value.parse().map_err(|_| bad())?;
    let first = if inclusive { Some(n) } else { n.checked_add(1) };
    Ok(first.ok_or_else(bad)?.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_the_strimzi_forms() {
        assert_eq!(
            parse_target("orders"),
            Ok(ProduceTo {
                topic: "orders".into(),
                partition: None
            })
        );
        assert_eq!(
            parse_target("/orders/partitions/2"),
            Ok(ProduceTo {
                topic: "orders".into(),
                partition: Some(2)
            })
        );
        assert!(parse_target("orders/partitions/x").is_err());
        assert!(parse_target("a/b").is_err());
        assert!(parse_target("bad topic").is_err());
        assert_eq!(
            parse_source("orders/group.id/audit"),
            Ok(ConsumeFrom {
                topic: "orders".into(),
                group: "audit".into(),
                partition: None,
            })
        );
        assert!(parse_source("orders").is_err());
        assert!(parse_source("orders/group.id/").is_err());
    }

    #[test]
    fn offset_filters() {
        assert_eq!(
            parse_offset_filter("amqp.annotation.x-opt-offset > '42'"),
            Ok(43)
        );
        assert_eq!(
            parse_offset_filter("amqp.annotation.x-opt-offset >= '42'"),
            Ok(42)
        );
        assert!(parse_offset_filter("amqp.annotation.x-opt-sequence-number > '4'").is_err());
        assert_eq!(
            parse_position_filter("amqp.annotation.x-opt-sequence-number > '4'"),
            Ok(StartAt::Offset(5))
        );
        assert_eq!(
            parse_position_filter("amqp.annotation.x-opt-offset > '-1'"),
            Ok(StartAt::Offset(0))
        );
        assert_eq!(
            parse_position_filter("amqp.annotation.x-opt-offset > '@latest'"),
            Ok(StartAt::Latest)
        );
        assert_eq!(
            parse_position_filter("amqp.annotation.x-opt-enqueued-time > '1000'"),
            Ok(StartAt::Time(1001))
        );
        assert!(parse_position_filter("amqp.annotation.x-opt-enqueued-time > 'x'").is_err());
        assert_eq!(
            parse_source("amqps://host:5671/hub/ConsumerGroups/$Default/Partitions/3"),
            Ok(ConsumeFrom {
                topic: "hub".into(),
                group: "$Default".into(),
                partition: Some(3),
            })
        );
        assert!(parse_offset_filter("amqp.annotation.x-opt-offset > 'x'").is_err());
    }
}
