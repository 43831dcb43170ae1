//! Topic-mapping rules: which Kafka topic and key a protocol-side topic name maps to.
//!
//! A rule's `pattern` is a `/`-separated topic name where `{name}` binds one level and
//! `{name*}` (last only) binds the rest; its Kafka topic and key are templates over those
//! names. Rules are tried in order and the first match wins; a name no rule matches goes to
//! the default topic (if any) keyed by the name itself. Resolution results are cached, since
//! devices publish to the same few topic names over and over.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

mod reverse;

pub use reverse::{FilterLevel, Sources};

use crate::{validate_topic_name, Error};

/// Most distinct topic names whose resolution is cached before the cache starts over.
const CACHE_LIMIT: usize = 10_000;

/// One rule as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRule {
    /// Protocol topic pattern, e.g. `devices/{device}/telemetry`.
    pub pattern: String,
    /// Kafka topic template, e.g. `telemetry` or `telemetry.{device}`.
    pub kafka_topic: String,
    /// Record key template; `None` = the protocol topic name.
    pub key: Option<String>,
}

/// Where a protocol topic name goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Kafka topic (a valid Kafka topic name).
    pub kafka_topic: String,
    /// Record key.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One(String),
    Rest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

#[derive(Debug, Clone)]
struct Compiled {
    segments: Vec<Segment>,
    topic: Vec<Part>,
    key: Option<Vec<Part>>,
}

/// Compiled rules plus the default topic, with a resolution cache. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct TopicMapper {
    rules: Arc<Vec<Compiled>>,
    default_topic: Option<String>,
    cache: Arc<Mutex<HashMap<String, Result<Resolved, Error>>>>,
}

fn invalid(rule: usize, what: String) -> Error {
    Error::Invalid(format!("mapping[{rule}]: {what}"))
}

fn parse_template(rule: usize, field: &str, text: &str) -> Result<Vec<Part>, Error> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| invalid(rule, format!("{field} '{text}' has an unclosed '{{'")))?;
        let name = rest[open + 1..close].trim_end_matches('*');
        if name.is_empty() {
            return Err(invalid(
                rule,
                format!("{field} '{text}' has an empty '{{}}'"),
            ));
        }
        parts.push(Part::Var(name.to_owned()));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn parse_pattern(rule: usize, pattern: &str) -> Result<Vec<Segment>, Error> {
    let levels: Vec<&str> = pattern.split('/').collect();
    let mut out = Vec::with_capacity(levels.len());
    for (i, level) in levels.iter().enumerate() {
        let segment = match level.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
            Some(name) => match name.strip_suffix('*') {
                Some(rest) if i + 1 == levels.len() && !rest.is_empty() => {
                    Segment::Rest(rest.to_owned())
                }
                Some(_) => {
                    return Err(invalid(
                        rule,
                        format!("pattern '{pattern}': {{name*}} must be the last level"),
                    ))
                }
                None if !name.is_empty() => Segment::One(name.to_owned()),
                None => {
                    return Err(invalid(
                        rule,
                        format!("pattern '{pattern}' has an empty '{{}}'"),
                    ))
                }
            },
            None if level.contains(['{', '}', '+', '#']) => {
                return Err(invalid(
                    rule,
                    format!(
                    "pattern '{pattern}': a level is either literal or one {{name}}; no wildcards"
                ),
                ))
            }
            None => Segment::Literal((*level).to_owned()),
        };
        out.push(segment);
    }
    Ok(out)
}

fn render(parts: &[Part], bound: &HashMap<&str, String>) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.as_str(),
            Part::Var(v) => bound.get(v.as_str()).map_or("", String::as_str),
        })
        .collect()
}

impl Compiled {
    fn bind<'a>(&'a self, topic: &str) -> Option<HashMap<&'a str, String>> {
        let levels: Vec<&str> = topic.split('/').collect();
        let mut bound = HashMap::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(l) => {
                    if levels.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::One(name) => {
                    bound.insert(name.as_str(), (*levels.get(i)?).to_owned());
                }
                Segment::Rest(name) => {
                    if levels.len() <= i {
                        return None;
                    }
                    bound.insert(name.as_str(), levels[i..].join("/"));
                    return Some(bound);
                }
            }
        }
        (levels.len() == self.segments.len()).then_some(bound)
    }
}

impl TopicMapper {
    /// Compiles the rules. Fails (a configuration error) when a pattern is malformed, a
    /// template names a variable its pattern does not bind, or a Kafka topic that does not
    /// depend on the topic name is not a valid Kafka topic name.
    pub fn new(rules: &[MappingRule], default_topic: &str) -> Result<Self, Error> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let segments = parse_pattern(i, &rule.pattern)?;
            let names: Vec<&str> = segments
                .iter()
                .filter_map(|s| match s {
                    Segment::One(n) | Segment::Rest(n) => Some(n.as_str()),
                    Segment::Literal(_) => None,
                })
                .collect();
            let topic = parse_template(i, "kafka_topic", &rule.kafka_topic)?;
            let key = rule
                .key
                .as_deref()
                .map(|k| parse_template(i, "key", k))
                .transpose()?;
            for part in topic.iter().chain(key.iter().flatten()) {
                if let Part::Var(v) = part {
                    if !names.contains(&v.as_str()) {
                        return Err(invalid(
                            i,
                            format!("'{{{v}}}' is not bound by pattern '{}'", rule.pattern),
                        ));
                    }
                }
            }
            if topic.iter().all(|p| matches!(p, Part::Text(_))) {
                validate_topic_name(&rule.kafka_topic)
                    .map_err(|e| invalid(i, format!("kafka_topic: {e}")))?;
            }
            compiled.push(Compiled {
                segments,
                topic,
                key,
            });
        }
        let default_topic = if default_topic.is_empty() {
            None
        } else {
            validate_topic_name(default_topic)?;
            Some(default_topic.to_owned())
        };
        Ok(Self {
            rules: Arc::new(compiled),
            default_topic,
            cache: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Where `topic` goes: `Ok(Some)`, `Ok(None)` when nothing matches and there is no default
    /// topic (the protocol refuses the publish), or `Err(InvalidTopic)` when the matching rule
    /// yields a name Kafka cannot hold.
    pub fn resolve(&self, topic: &str) -> Result<Option<Resolved>, Error> {
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(topic).cloned()) {
            return hit.map(Some);
        }
        let resolved = self.resolve_uncached(topic);
        if let Some(result) = &resolved.clone().transpose() {
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(topic.to_owned(), result.clone());
            }
        }
        resolved
    }

    fn resolve_uncached(&self, topic: &str) -> Result<Option<Resolved>, Error> {
        for rule in self.rules.iter() {
            if let Some(bound) = rule.bind(topic) {
                let kafka_topic = render(&rule.topic, &bound);
                validate_topic_name(&kafka_topic)?;
                let key = rule
                    .key
                    .as_ref()
                    .map_or_else(|| topic.to_owned(), |k| render(k, &bound));
                return Ok(Some(Resolved { kafka_topic, key }));
            }
        }
        Ok(self.default_topic.as_ref().map(|t| Resolved {
            kafka_topic: t.clone(),
            key: topic.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, kafka_topic: &str, key: Option<&str>) -> MappingRule {
        MappingRule {
            pattern: pattern.into(),
            kafka_topic: kafka_topic.into(),
            key: key.map(Into::into),
        }
    }

    fn to(topic: &str, key: &str) -> Option<Resolved> {
        Some(Resolved {
            kafka_topic: topic.into(),
            key: key.into(),
        })
    }

    #[test]
    fn first_match_wins_and_binds_names() -> Result<(), Error> {
        let m = TopicMapper::new(
            &[
                rule("devices/{device}/telemetry", "telemetry", Some("{device}")),
                rule("devices/{device}/{kind}", "devices.{kind}", None),
                rule("site/{site}/{path*}", "site-{site}", Some("{path}")),
            ],
            "mqtt",
        )?;
        assert_eq!(m.resolve("devices/d1/telemetry")?, to("telemetry", "d1"));
        assert_eq!(
            m.resolve("devices/d1/status")?,
            to("devices.status", "devices/d1/status")
        );
        assert_eq!(
            m.resolve("site/berlin/floor/3/temp")?,
            to("site-berlin", "floor/3/temp")
        );
        // No match: the default topic, keyed by the MQTT topic.
        assert_eq!(m.resolve("devices/d1")?, to("mqtt", "devices/d1"));
        assert_eq!(m.resolve("site/berlin")?, to("mqtt", "site/berlin"));
        assert_eq!(m.resolve("other/x/y/z")?, to("mqtt", "other/x/y/z"));
        // Cached answers are the same answers.
        assert_eq!(m.resolve("devices/d1/telemetry")?, to("telemetry", "d1"));
        Ok(())
    }

    #[test]
    fn without_a_default_topic_unmatched_names_resolve_to_nothing() -> Result<(), Error> {
        let m = TopicMapper::new(&[rule("a/{x}", "a", None)], "")?;
        assert_eq!(m.resolve("b/1")?, None);
        assert_eq!(m.resolve("a/1")?, to("a", "a/1"));
        Ok(())
    }

    #[test]
    fn a_dynamic_topic_kafka_cannot_hold_is_an_error_at_resolution() -> Result<(), Error> {
        let m = TopicMapper::new(&[rule("t/{x}", "t.{x}", None)], "")?;
        assert!(matches!(
            m.resolve("t/bad name"),
            Err(Error::InvalidTopic { .. })
        ));
        assert!(
            matches!(m.resolve("t/bad name"), Err(Error::InvalidTopic { .. })),
            "cached too"
        );
        assert_eq!(m.resolve("t/ok")?, to("t.ok", "t/ok"));
        Ok(())
    }

    #[test]
    fn bad_rules_are_configuration_errors() {
        for (rules, default, why) in [
            (
                vec![rule("a/{x}", "has space", None)],
                "mqtt",
                "kafka_topic",
            ),
            (
                vec![rule("a/{x}", "t.{y}", None)],
                "mqtt",
                "'{y}' is not bound",
            ),
            (
                vec![rule("a/{x}", "t", Some("{z}"))],
                "mqtt",
                "'{z}' is not bound",
            ),
            (
                vec![rule("a/{rest*}/b", "t", None)],
                "mqtt",
                "must be the last level",
            ),
            (vec![rule("a/+/b", "t", None)], "mqtt", "no wildcards"),
            (vec![rule("a/x{y}", "t", None)], "mqtt", "no wildcards"),
            (vec![rule("a/{}", "t", None)], "mqtt", "empty"),
            (vec![rule("a/{x}", "t.{x", None)], "mqtt", "unclosed"),
        ] {
            match TopicMapper::new(&rules, default) {
                Err(Error::Invalid(msg)) => {
                    assert!(msg.contains(why) && msg.starts_with("mapping[0]"), "{msg}")
                }
                other => panic!("{rules:?}: expected a config error about {why}, got {other:?}"),
            }
        }
        assert!(
            TopicMapper::new(&[], "not valid/").is_err(),
            "default topic is checked too"
        );
    }
}
