//! Topic and group ACLs: `allow = ["write:telemetry", "read:commands.*", "group:ops-*"]` per
//! principal (or `*`), matched on the Kafka names after mapping.

/// What a client wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Produce to this Kafka topic.
    Write(&'a str),
    /// Consume from this Kafka topic.
    Read(&'a str),
    /// Join (and commit for) this consumer group.
    Group(&'a str),
}

/// One `[[acl]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    /// A principal name, or `*` for every principal.
    pub principal: String,
    /// Grants like `write:TOPIC`, `read:TOPIC`, `group:GROUP`; `*` wildcards in the names.
    pub allow: Vec<String>,
}

/// Every rule; no rule at all means everything is allowed, otherwise no matching grant means
/// denied.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
}

/// A grant that is not `write:`, `read:` or `group:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("acl for {principal:?}: {grant:?} is not write:TOPIC, read:TOPIC or group:GROUP")]
pub struct BadGrant {
    /// The rule's principal.
    pub principal: String,
    /// The grant as written.
    pub grant: String,
}

impl Acl {
    /// The rules; a grant that is not `write:`, `read:` or `group:` is an error naming it.
    pub fn new(rules: Vec<AclRule>) -> Result<Self, BadGrant> {
        for rule in &rules {
            for grant in &rule.allow {
                if parse(grant).is_none() {
                    return Err(BadGrant {
                        principal: rule.principal.clone(),
                        grant: grant.clone(),
                    });
                }
            }
        }
        Ok(Self { rules })
    }

    /// Whether no rule is configured (everything allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `principal` may do `access`. `{principal}` in a grant stands for the principal's
    /// own name (`write:devices.{principal}`).
    pub fn allows(&self, principal: &str, access: Access<'_>) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let (kind, name) = match access {
            Access::Write(t) => ("write", t),
            Access::Read(t) => ("read", t),
            Access::Group(g) => ("group", g),
        };
        self.rules
            .iter()
            .filter(|r| r.principal == "*" || r.principal == principal)
            .flat_map(|r| r.allow.iter())
            .filter_map(|g| parse(g))
            .any(|(k, pattern)| k == kind && glob(&literal_parts(pattern, principal), name))
    }
}

fn parse(grant: &str) -> Option<(&str, &str)> {
    let (kind, name) = grant.split_once(':')?;
    matches!(kind, "write" | "read" | "group")
        .then_some((kind, name))
        .filter(|(_, n)| !n.is_empty())
}

/// The literal runs of a grant between its `*` wildcards, `{principal}` replaced by the
/// principal's name *after* splitting, so that a principal named `*` (or `a*`) stays literal
/// and cannot widen a grant.
fn literal_parts(pattern: &str, principal: &str) -> Vec<String> {
    pattern
        .split('*')
        .map(|part| part.replace("{principal}", principal))
        .collect()
}

/// `parts` are the literal runs of a pattern between `*` wildcards, each `*` matching any run
/// of characters (dots included).
fn glob(parts: &[String], name: &str) -> bool {
    let Some((first, parts)) = parts.split_first() else {
        return name.is_empty();
    };
    let Some(mut rest) = name.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part.as_str()) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn glob(pattern: &str, name: &str) -> bool {
        super::glob(&literal_parts(pattern, "p"), name)
    }

    #[test]
    fn a_principal_named_with_wildcards_stays_literal() {
        let acl = Acl::new(vec![AclRule {
            principal: "*".into(),
            allow: vec!["write:devices.{principal}".into()],
        }])
        .unwrap();
        assert!(acl.allows("*", Access::Write("devices.*")));
        assert!(!acl.allows("*", Access::Write("devices.device-1")));
        assert!(!acl.allows("a*", Access::Write("devices.ab")));
    }

    #[test]
    fn globs() {
        assert!(glob("telemetry", "telemetry"));
        assert!(!glob("telemetry", "telemetry2"));
        assert!(glob("commands.*", "commands.d1"));
        assert!(!glob("commands.*", "command"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c"));
        assert!(glob("ops-*", "ops-"));
    }

    #[test]
    fn rules_per_principal_and_wildcard() {
        let acl = Acl::new(vec![
            AclRule {
                principal: "device-1".into(),
                allow: vec!["write:telemetry".into(), "read:commands.*".into()],
            },
            AclRule {
                principal: "*".into(),
                allow: vec!["group:ops-*".into(), "write:devices.{principal}".into()],
            },
        ])
        .unwrap();
        assert!(acl.allows("device-1", Access::Write("telemetry")));
        assert!(!acl.allows("device-1", Access::Read("telemetry")));
        assert!(acl.allows("device-1", Access::Read("commands.reboot")));
        assert!(!acl.allows("device-2", Access::Write("telemetry")));
        assert!(acl.allows("device-2", Access::Group("ops-1")));
        assert!(acl.allows("device-2", Access::Write("devices.device-2")));
        assert!(!acl.allows("device-2", Access::Write("devices.device-1")));
        assert!(Acl::default().allows("x", Access::Write("y")));
        assert!(Acl::new(vec![AclRule {
            principal: "*".into(),
            allow: vec!["produce:x".into()]
        }])
        .is_err());
    }
}
