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

/// Where a login comes from: its protocol and address (for the metric, the log line and the
/// address's throttle) and, where the protocol names its clients, the client's own name (the
/// MQTT client id), so that a refusal's log line says which device it was.
#[derive(Debug, Clone, Copy)]
pub struct LoginSource<'a> {
    /// `http`, `mqtt`, `amqp`.
    pub protocol: &'static str,
    /// The client's address, when known.
    pub peer: Option<IpAddr>,
    /// The client's name in its protocol, if it gave one.
    pub client_id: Option<&'a str>,
}

impl<'a> LoginSource<'a> {
    /// A login on `protocol` from `peer`.
    pub fn new(protocol: &'static str, peer: Option<IpAddr>) -> Self {
        Self {
            protocol,
            peer,
            client_id: None,
        }
    }

    /// The same, from the client that calls itself `client_id`.
    pub fn client_id(self, client_id: &'a str) -> Self {
        Self {
            client_id: Some(client_id),
            ..self
        }
    }
}

impl Authenticator {
    /// The same authenticator, counting refused logins and the password checks it runs in
    /// the process's shared metrics.
    pub fn counting_in(mut self, metrics: &GatewayMetrics) -> Self {
        self.failures = metrics.auth_failures.clone();
        self.password_checks_run = metrics.password_checks.clone();
        self
    }

    /// Who `credentials` prove, the outcome recorded against its `source`; a refusal of bad
    /// credentials is answered after the delay its address earned. Password checks run off
    /// the event loop
    /// ([`authenticate_off_loop`](Self::authenticate_off_loop)).
    pub async fn login(
        self: &Arc<Self>,
        source: LoginSource<'_>,
        credentials: Credentials<'_>,
    ) -> Result<Principal, AuthError> {
        let user = match credentials {
            Credentials::Password { user, .. } => Some(user),
            _ => None,
        };
        let outcome = self.authenticate_off_loop(credentials).await;
        let delay = self.record_login(source, user, &outcome);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        outcome
    }

    /// Records a login decided elsewhere (AMQP decides inside its SASL exchange), as
    /// [`login`](Self::login) does; returns how long a refusal's answer should wait.
    pub fn record_login(
        &self,
        source: LoginSource<'_>,
        user: Option<&str>,
        outcome: &Result<Principal, AuthError>,
    ) -> Duration {
        let LoginSource {
            protocol,
            peer,
            client_id,
        } = source;
        match (outcome, peer) {
            (Ok(principal), Some(ip)) if !principal.anonymous => {
                self.throttle.succeeded(ip);
                Duration::ZERO
            }
            (Ok(_), _) => Duration::ZERO,
            (Err(error), _) => {
                self.count_failure(protocol, *error);
                let label = protocol.to_ascii_uppercase();
                tracing::info!(peer = ?peer, client_id = ?client_id, user = ?user, %error, "{label} login refused");
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
            .counting_in(&metrics);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let refused = Err(AuthError::BadCredentials);
        let delays: Vec<Duration> = (0..3)
            .map(|_| auth.record_login(LoginSource::new("mqtt", Some(ip)), Some("u"), &refused))
            .collect();
        assert_eq!(delays[..2], [Duration::ZERO; 2]);
        assert!(delays[2] > Duration::ZERO, "{delays:?}");
        assert!(auth.penalty(ip) > Duration::ZERO);
        let missing = Err(AuthError::NotAuthorized);
        assert_eq!(
            auth.record_login(LoginSource::new("http", Some(ip)), None, &missing),
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
        auth.record_login(
            LoginSource::new("amqp", Some(ip)),
            Some("u"),
            &Ok(Principal::named("u")),
        );
        assert_eq!(
            auth.penalty(ip),
            Duration::ZERO,
            "a success clears the address"
        );
    }
}
