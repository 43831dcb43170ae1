//! A login, the same on every protocol: the credentials checked, and the outcome recorded —
//! a refusal counted (`barnabas_auth_failures_total{protocol,reason}`), logged with the peer
//! and the user name (never the secret), and answered later the more often its address
//! fails; a success clears the address's failures.

use std::{net::IpAddr, sync::Arc, time::Duration};

use prometheus_client::metrics::{counter::Counter, family::Family};

use super::{AuthError, Authenticator, Credentials, Principal};
use crate::metrics::{AuthFailureLabels, GatewayMetrics};

/// Refused logins by protocol and reason.
pub(super) type FailureCounts = Family<AuthFailureLabels, Counter>;

impl Authenticator {
    /// The same authenticator, counting refused logins in the process's shared metrics.
    pub fn counting_failures_in(mut self, metrics: &GatewayMetrics) -> Self {
        self.failures = metrics.auth_failures.clone();
        self
    }

    /// Who `credentials` prove, on `protocol` (`http`, `mqtt`, `amqp`) from `peer`, the
    /// outcome recorded; a refusal of bad credentials is answered after the delay its address
    /// earned. Password checks run off the event loop
    /// ([`authenticate_off_loop`](Self::authenticate_off_loop)).
    pub async fn login(
        self: &Arc<Self>,
        protocol: &'static str,
        peer: Option<IpAddr>,
        credentials: Credentials<'_>,
    ) -> Result<Principal, AuthError> {
        let user = match credentials {
            Credentials::Password { user, .. } => Some(user),
            _ => None,
        };
        let outcome = self.authenticate_off_loop(credentials).await;
        let delay = self.record_login(protocol, peer, user, &outcome);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        outcome
    }

    /// Records a login decided elsewhere (AMQP decides inside its SASL exchange), as
    /// [`login`](Self::login) does; returns how long a refusal's answer should wait.
    pub fn record_login(
        &self,
        protocol: &'static str,
        peer: Option<IpAddr>,
        user: Option<&str>,
        outcome: &Result<Principal, AuthError>,
    ) -> Duration {
        match (outcome, peer) {
            (Ok(principal), Some(ip)) if !principal.anonymous => {
                self.throttle.succeeded(ip);
                Duration::ZERO
            }
            (Ok(_), _) => Duration::ZERO,
            (Err(error), _) => {
                self.count_failure(protocol, *error);
                let label = protocol.to_ascii_uppercase();
                tracing::info!(peer = ?peer, user = ?user, %error, "{label} login refused");
                match (error, peer) {
                    (AuthError::BadCredentials, Some(ip)) => self.throttle.failed(ip),
                    _ => Duration::ZERO,
                }
            }
        }
    }

    /// How long an address that failed lately waits before it may try again.
    pub fn penalty(&self, peer: IpAddr) -> Duration {
        self.throttle.penalty(peer)
    }

    fn count_failure(&self, protocol: &str, error: AuthError) {
        let reason = match error {
            AuthError::BadCredentials => "bad_credentials",
            AuthError::NotAuthorized => "no_credentials",
            AuthError::Busy => "busy",
        };
        self.failures
            .get_or_create(&AuthFailureLabels {
                protocol: protocol.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        auth::{Acl, AuthMode, Users},
        MetricsRegistry,
    };

    /// The outcome of every protocol's login lands in one place: counted by protocol and
    /// reason, the address slowed down from its third bad password on, and cleared by a
    /// success.
    #[test]
    fn refusals_are_counted_and_slow_their_address_down_until_a_success() {
        let registry = MetricsRegistry::new();
        let metrics = GatewayMetrics::new(&registry);
        let auth = Authenticator::new(AuthMode::Users, Users::default(), false, Acl::default())
            .counting_failures_in(&metrics);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let refused = Err(AuthError::BadCredentials);
        let delays: Vec<Duration> = (0..3)
            .map(|_| auth.record_login("mqtt", Some(ip), Some("u"), &refused))
            .collect();
        assert_eq!(delays[..2], [Duration::ZERO; 2]);
        assert!(delays[2] > Duration::ZERO, "{delays:?}");
        assert!(auth.penalty(ip) > Duration::ZERO);
        let missing = Err(AuthError::NotAuthorized);
        assert_eq!(
            auth.record_login("http", Some(ip), None, &missing),
            Duration::ZERO,
            "no credentials earn no delay"
        );
        let text = registry.encode();
        for line in [
            r#"barnabas_auth_failures_total{protocol="mqtt",reason="bad_credentials"} 3"#,
            r#"barnabas_auth_failures_total{protocol="http",reason="no_credentials"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        auth.record_login("amqp", Some(ip), Some("u"), &Ok(Principal::named("u")));
        assert_eq!(
            auth.penalty(ip),
            Duration::ZERO,
            "a success clears the address"
        );
    }
}
