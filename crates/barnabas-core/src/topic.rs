//! Kafka topic-name rules, checked before anything is sent so a bad name is a clear error
//! instead of a broker round trip (or, worse, a produce that waits for a topic that can never
//! exist).

use crate::Error;

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks `topic` against Kafka's rules: 1–249 characters from `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(topic: &str) -> Result<(), Error> {
    let invalid = |reason: &str| {
        Err(Error::InvalidTopic {
            topic: topic.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if topic.is_empty() {
        return invalid("topic name is empty");
    }
    if topic.len() > MAX_TOPIC_NAME_LEN {
        return invalid("longer than 249 characters");
    }
    if topic == "." || topic == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return invalid(&format!(
            "character {c:?} is not allowed (only a-z, A-Z, 0-9, '.', '_', '-')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_legal_names() {
        for t in ["telemetry", "casper.main", "a-b_c.D9", &"x".repeat(249)] {
            assert_eq!(validate_topic_name(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn rejects_illegal_names_with_a_reason() {
        for (t, why) in [
            ("", "empty"),
            (".", "not allowed"),
            ("..", "not allowed"),
            ("devices/1", "'/'"),
            ("a b", "' '"),
            ("été", "'é'"),
        ] {
            match validate_topic_name(t) {
                Err(Error::InvalidTopic { reason, .. }) => {
                    assert!(reason.contains(why), "{t}: {reason}")
                }
                other => panic!("{t}: expected InvalidTopic, got {other:?}"),
            }
        }
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
