//! MQTT topic filters: validation, matching (with the `$`-topic rule) and the shared
//! subscription form `$share/{group}/{filter}`.

use barnabas_core::FilterLevel;

/// A valid SUBSCRIBE filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The filter without any `$share/{group}/` prefix.
    pub filter: String,
    /// The share group of a shared subscription.
    pub share: Option<String>,
}

impl Filter {
    /// Parses and validates a filter as the client sent it; `None` when malformed
    /// (empty, `#` not last or not alone in its level, `+` not alone, a bad share group).
    pub fn parse(raw: &str) -> Option<Self> {
        let (share, filter) = match raw.strip_prefix("$share/") {
            Some(rest) => {
                let (group, filter) = rest.split_once('/')?;
                if group.is_empty() || group.contains(['+', '#']) {
                    return None;
                }
                (Some(group.to_owned()), filter)
            }
            None => (None, raw),
        };
        if filter.is_empty() || filter.contains('\0') {
            return None;
        }
        let levels: Vec<&str> = filter.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            let wild_ok = match *level {
                "#" => i + 1 == levels.len(),
                "+" => true,
                l => !l.contains(['+', '#']),
            };
            if !wild_ok {
                return None;
            }
        }
        Some(Self {
            filter: filter.to_owned(),
            share,
        })
    }

    /// The filter as protocol-neutral levels, for the reverse mapping.
    pub fn levels(&self) -> Vec<FilterLevel<'_>> {
        self.filter
            .split('/')
            .map(|l| match l {
                "+" => FilterLevel::AnyOne,
                "#" => FilterLevel::AnyRest,
                l => FilterLevel::Exact(l),
            })
            .collect()
    }
}

/// Whether topic name `topic` matches `filter` (MQTT 3.1.1 §4.7, 5.0 §4.7): `+` one level,
/// `#` this level and below including the parent, and a filter starting with a wildcard
/// never matches a topic starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_the_spec_says() {
        for (filter, topic, expected) in [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/x", true),
            ("+", "a/b", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/c", false),
        ] {
            assert_eq!(matches(filter, topic), expected, "{filter} vs {topic}");
        }
    }

    #[test]
    fn malformed_filters_are_refused() {
        for bad in [
            "",
            "a/#/b",
            "a#",
            "a/b+",
            "$share/",
            "$share/g",
            "$share/g+/a",
            "$share//a",
        ] {
            assert_eq!(Filter::parse(bad), None, "{bad}");
        }
        let shared = Filter::parse("$share/g1/devices/+/x");
        assert_eq!(
            shared,
            Some(Filter {
                filter: "devices/+/x".into(),
                share: Some("g1".into())
            })
        );
    }
}
