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

impl Acl {
    /// The rules; a grant that is not `write:`, `read:` or `group:` is an error naming it.
    pub fn new(rules: Vec<AclRule>) -> Result<Self, String> {
        for rule in &rules {
            for grant in &rule.allow {
                if parse(grant).is_none() {
                    return Err(format!(
                        "acl for {:?}: {grant:?} is not write:TOPIC, read:TOPIC or group:GROUP",
                        rule.principal
                    ));
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
            .any(|(k, pattern)| k == kind && glob(&pattern.replace("{principal}", principal), name))
    }
}

fn parse(grant: &str) -> Option<(&str, &str)> {
    let (kind, name) = grant.split_once(':')?;
    matches!(kind, "write" | "read" | "group")
        .then_some((kind, name))
        .filter(|(_, n)| !n.is_empty())
}

/// `*` matches any run of characters (dots included); everything else literally.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return pattern == name;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
