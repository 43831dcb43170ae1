//! The mapping rules read backwards, for subscriptions: which Kafka topics a topic filter can
//! draw records from, and which protocol topic name a record read from Kafka was published to.
//!
//! Filters are given as protocol-neutral [`FilterLevel`]s (MQTT's `+` and `#` become
//! [`FilterLevel::AnyOne`] and [`FilterLevel::AnyRest`]) so this crate stays free of any one
//! protocol's syntax.

use std::collections::{BTreeSet, HashMap};

use super::{render, Compiled, Part, Segment, TopicMapper};
use crate::validate_topic_name;

/// One level of a topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterLevel<'a> {
    /// Exactly this level.
    Exact(&'a str),
    /// Any single level (MQTT `+`).
    AnyOne,
    /// This level and everything below it, or nothing (MQTT `#`, which also matches the
    /// parent level).
    AnyRest,
}

/// The Kafka topics a filter can draw records from: exact names, plus name templates for
/// rules whose Kafka topic depends on a level the filter leaves open (matched against the
/// cluster's topic list as topics appear).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    exact: BTreeSet<String>,
    templates: Vec<Vec<Part>>,
}

impl Sources {
    /// Whether records of `kafka_topic` may be for the filter.
    pub fn matches(&self, kafka_topic: &str) -> bool {
        self.exact.contains(kafka_topic)
            || self
                .templates
                .iter()
                .any(|t| match_parts(t, kafka_topic, &mut HashMap::new()))
    }

    /// Adds another filter's sources.
    pub fn extend(&mut self, other: &Sources) {
        self.exact.extend(other.exact.iter().cloned());
        for t in &other.templates {
            if !self.templates.contains(t) {
                self.templates.push(t.clone());
            }
        }
    }

    /// The topics named outright (not through a template).
    pub fn exact_topics(&self) -> impl Iterator<Item = &str> {
        self.exact.iter().map(String::as_str)
    }

    /// No topic can ever hold records for the filter.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.templates.is_empty()
    }
}

impl TopicMapper {
    /// The Kafka topics records for `filter` can be in: every rule whose pattern overlaps the
    /// filter, plus the default topic unless one rule takes every name the filter matches.
    pub fn sources(&self, filter: &[FilterLevel<'_>]) -> Sources {
        let mut sources = Sources::default();
        let mut covered = false;
        for rule in self.rules.iter() {
            let Some(bound) = overlap(&rule.segments, filter) else {
                continue;
            };
            covered |= covers(&rule.segments, filter);
            let open = rule
                .topic
                .iter()
                .any(|p| matches!(p, Part::Var(v) if !bound.contains_key(v.as_str())));
            if open {
                let template: Vec<Part> = rule
                    .topic
                    .iter()
                    .map(|p| match p {
                        Part::Var(v) => bound
                            .get(v.as_str())
                            .map_or_else(|| p.clone(), |value| Part::Text(value.clone())),
                        Part::Text(_) => p.clone(),
                    })
                    .collect();
                if !sources.templates.contains(&template) {
                    sources.templates.push(template);
                }
            } else {
                let borrowed = bound.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                let name = render(&rule.topic, &borrowed);
                if validate_topic_name(&name).is_ok() {
                    sources.exact.insert(name);
                }
            }
        }
        if let (Some(default), false) = (&self.default_topic, covered) {
            sources.exact.insert(default.clone());
        }
        sources
    }

    /// The protocol topic name a record without a name header was published to, worked out
    /// from the rule that would have put it where it is: `None` when no rule (nor the default
    /// topic) explains this Kafka topic and key.
    pub fn reverse(&self, kafka_topic: &str, key: Option<&[u8]>) -> Option<String> {
        let key = key.and_then(|k| std::str::from_utf8(k).ok());
        for rule in self.rules.iter() {
            let mut bound = HashMap::new();
            if !match_parts(&rule.topic, kafka_topic, &mut bound) {
                continue;
            }
            let candidate = match (&rule.key, key) {
                (None, Some(key)) => Some(key.to_owned()),
                (Some(template), Some(key)) if match_parts(template, key, &mut bound) => {
                    compose(rule, &bound)
                }
                _ => None,
            };
            // The rule must be the one that maps the name here (first match wins).
            if let Some(name) = candidate {
                if let Ok(Some(resolved)) = self.resolve(&name) {
                    if resolved.kafka_topic == kafka_topic && Some(resolved.key.as_str()) == key {
                        return Some(name);
                    }
                }
            }
        }
        match (&self.default_topic, key) {
            (Some(default), Some(key)) if default == kafka_topic => Some(key.to_owned()),
            _ => None,
        }
    }
}

/// Whether some name matches both the pattern and the filter; if so, the pattern's variables
/// the filter fixes to one value.
fn overlap(segments: &[Segment], filter: &[FilterLevel<'_>]) -> Option<HashMap<String, String>> {
    let mut bound = HashMap::new();
    for (i, segment) in segments.iter().enumerate() {
        let level = filter.get(i)?;
        match (segment, level) {
            (_, FilterLevel::AnyRest) => return Some(bound),
            (Segment::Literal(l), FilterLevel::Exact(f)) if l != f => return None,
            (Segment::One(name), FilterLevel::Exact(f)) => {
                bound.insert(name.clone(), (*f).to_owned());
            }
            (Segment::Rest(name), _) => {
                let rest: Option<Vec<&str>> = filter[i..]
                    .iter()
                    .map(|l| match l {
                        FilterLevel::Exact(f) => Some(*f),
                        _ => None,
                    })
                    .collect();
                if let Some(rest) = rest {
                    bound.insert(name.clone(), rest.join("/"));
                }
                return Some(bound);
            }
            _ => {}
        }
    }
    match filter.get(segments.len()) {
        None | Some(FilterLevel::AnyRest) => Some(bound),
        Some(_) => None,
    }
}

/// Whether every name the filter matches also matches the pattern.
fn covers(segments: &[Segment], filter: &[FilterLevel<'_>]) -> bool {
    for (i, segment) in segments.iter().enumerate() {
        match (segment, filter.get(i)) {
            (Segment::Rest(_), Some(FilterLevel::Exact(_) | FilterLevel::AnyOne)) => return true,
            (Segment::Literal(l), Some(FilterLevel::Exact(f))) if l == f => {}
            (Segment::One(_), Some(FilterLevel::Exact(_) | FilterLevel::AnyOne)) => {}
            _ => return false,
        }
    }
    filter.len() == segments.len()
}

/// The protocol topic name of a rule's pattern with every variable bound, if all are.
fn compose(rule: &Compiled, bound: &HashMap<String, String>) -> Option<String> {
    let mut levels = Vec::with_capacity(rule.segments.len());
    for segment in &rule.segments {
        levels.push(match segment {
            Segment::Literal(l) => l.clone(),
            Segment::One(n) => bound.get(n).filter(|v| !v.contains('/'))?.clone(),
            Segment::Rest(n) => bound.get(n)?.clone(),
        });
    }
    Some(levels.join("/"))
}

/// Matches a template (text and `{var}`s, each var non-empty and consistent with what is
/// already bound) against `text`, binding the variables.
fn match_parts(parts: &[Part], text: &str, bound: &mut HashMap<String, String>) -> bool {
    match parts.split_first() {
        None => text.is_empty(),
        Some((Part::Text(t), rest)) => text
            .strip_prefix(t.as_str())
            .is_some_and(|r| match_parts(rest, r, bound)),
        Some((Part::Var(v), rest)) => {
            if let Some(value) = bound.get(v).cloned() {
                return text
                    .strip_prefix(value.as_str())
                    .is_some_and(|r| !value.is_empty() && match_parts(rest, r, bound));
            }
            for end in (1..=text.len()).filter(|i| text.is_char_boundary(*i)) {
                bound.insert(v.clone(), text[..end].to_owned());
                if match_parts(rest, &text[end..], bound) {
                    return true;
                }
                bound.remove(v);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FilterLevel::{AnyOne, AnyRest, Exact};
    use super::*;
    use crate::{Error, MappingRule};

    fn mapper(default: &str) -> Result<TopicMapper, Error> {
        TopicMapper::new(
            &[
                MappingRule {
                    pattern: "devices/{device}/telemetry".into(),
                    kafka_topic: "telemetry".into(),
                    key: Some("{device}".into()),
                },
                MappingRule {
                    pattern: "devices/{device}/commands".into(),
                    kafka_topic: "commands".into(),
                    key: Some("{device}".into()),
                },
                MappingRule {
                    pattern: "site/{site}/{path*}".into(),
                    kafka_topic: "site.{site}".into(),
                    key: Some("{path}".into()),
                },
            ],
            default,
        )
    }

    fn exact(s: &Sources) -> Vec<&str> {
        s.exact.iter().map(String::as_str).collect()
    }

    #[test]
    fn a_filter_draws_from_the_rules_it_overlaps() -> Result<(), Error> {
        let m = mapper("mqtt")?;
        // Fully covered by one rule: no need for the default topic.
        let s = m.sources(&[Exact("devices"), AnyOne, Exact("commands")]);
        assert_eq!(exact(&s), ["commands"]);
        // `devices/+/+` also matches names no rule takes (devices/x/status).
        let s = m.sources(&[Exact("devices"), AnyOne, AnyOne]);
        assert_eq!(exact(&s), ["commands", "mqtt", "telemetry"]);
        // A rule whose Kafka topic depends on an open level gives a template.
        let s = m.sources(&[AnyRest]);
        assert_eq!(exact(&s), ["commands", "mqtt", "telemetry"]);
        assert!(s.matches("site.berlin") && !s.matches("other"));
        // ... and a concrete name when the filter fixes that level.
        let s = m.sources(&[Exact("site"), Exact("berlin"), AnyRest]);
        assert_eq!(exact(&s), ["mqtt", "site.berlin"]);
        assert!(s.templates.is_empty());
        // Disjoint from every rule: only the default topic, or nothing without one.
        assert_eq!(exact(&m.sources(&[Exact("x"), AnyOne])), ["mqtt"]);
        assert!(mapper("")?.sources(&[Exact("x"), AnyOne]).is_empty());
        Ok(())
    }

    #[test]
    fn records_map_back_to_the_name_they_were_published_to() -> Result<(), Error> {
        let m = mapper("mqtt")?;
        assert_eq!(
            m.reverse("commands", Some(b"d7")).as_deref(),
            Some("devices/d7/commands")
        );
        assert_eq!(
            m.reverse("site.berlin", Some(b"floor/3/temp")).as_deref(),
            Some("site/berlin/floor/3/temp")
        );
        assert_eq!(
            m.reverse("mqtt", Some(b"a/b")).as_deref(),
            Some("a/b"),
            "default topic: the key is the name"
        );
        // A key a one-level variable cannot hold, no key, an unknown topic: no name.
        assert_eq!(m.reverse("commands", Some(b"a/b")), None);
        assert_eq!(m.reverse("commands", None), None);
        assert_eq!(m.reverse("elsewhere", Some(b"k")), None);
        Ok(())
    }
}
