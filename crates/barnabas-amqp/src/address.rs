//! Link addresses (Strimzi AMQP bridge forms) and start-position filters.
//!
//! - A producer link (the client sends) targets `T` or `T/partitions/P`.
//! - A consumer link (the client receives) has source `T/group.id/G`.
//! - A consumer may start elsewhere than its group's committed offset with an Event Hubs
//!   style selector filter on the offset: `amqp.annotation.x-opt-offset > '42'` (or `>=`).

use barnabas_core::validate_topic_name;

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
pub fn parse_target(address: &str) -> Result<ProduceTo, String> {
    let address = trimmed(address);
    let split = address
        .split_once("/partitions/")
        .or_else(|| address.split_once("/Partitions/"));
    let (topic, partition) = match split {
        Some((topic, p)) => {
            let p: i32 = p
                .parse()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or_else(|| format!("'{p}' in '{address}' is not a partition number"))?;
            (topic, Some(p))
        }
        None => (address, None),
    };
    if topic.contains('/') {
        return Err(format!(
            "target '{address}' is neither TOPIC nor TOPIC/partitions/N"
        ));
    }
    validate_topic_name(topic).map_err(|e| e.to_string())?;
    Ok(ProduceTo {
        topic: topic.to_owned(),
        partition,
    })
}

/// Parses a consumer link's source address.
pub fn parse_source(address: &str) -> Result<ConsumeFrom, String> {
    let address = trimmed(address);
    let (topic, group) = address
        .split_once("/group.id/")
        .ok_or_else(|| format!("source '{address}' is not of the form TOPIC/group.id/GROUP"))?;
    validate_topic_name(topic).map_err(|e| e.to_string())?;
    if group.is_empty() {
        return Err(format!("source '{address}' names no consumer group"));
    }
    Ok(ConsumeFrom {
        topic: topic.to_owned(),
        group: group.to_owned(),
    })
}

/// Parses an offset selector filter into the first offset to deliver.
pub fn parse_offset_filter(expr: &str) -> Result<i64, String> {
    let bad =
        || format!("filter '{expr}' is not of the form amqp.annotation.x-opt-offset > 'N' (or >=)");
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
    Ok(if inclusive { n } else { n + 1 }.max(0))
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
                group: "audit".into()
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
        assert!(parse_offset_filter("amqp.annotation.x-opt-offset > 'x'").is_err());
    }
}
