//! SASL for AMQP connections: PLAIN and (when allowed) ANONYMOUS, checked against the
//! gateway's [`Authenticator`] and remembering who authenticated.
//!
//! fe2o3-amqp's own PLAIN acceptor knows one fixed user and does not tell who logged in, so
//! this one checks the credentials with the principal model every front end shares and
//! records the principal for the connection it is cloned into.

use std::sync::{Arc, Mutex};

use barnabas_core::{AuthError, Authenticator, Credentials, Principal};
use fe2o3_amqp::{
    acceptor::{sasl_acceptor::SaslServerFrame, SaslAcceptor},
    types::{
        primitives::{Array, Symbol},
        sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse},
    },
};

/// A SASL acceptor for one connection; read [`outcome`](Self::outcome) after the open.
#[derive(Clone)]
pub struct Login {
    auth: Arc<Authenticator>,
    /// Subject CN of the connection's verified TLS client certificate.
    cert_cn: Option<String>,
    outcome: Arc<Mutex<Option<Result<Principal, AuthError>>>>,
    /// The SASL PLAIN user name, for the log of a refused login.
    user: Arc<Mutex<Option<String>>>,
}

impl Login {
    /// A login checked by `auth`, on a connection whose TLS client certificate (if any) has
    /// this subject CN.
    pub fn new(auth: Arc<Authenticator>, cert_cn: Option<String>) -> Self {
        Self {
            auth,
            cert_cn,
            outcome: Arc::new(Mutex::new(None)),
            user: Arc::new(Mutex::new(None)),
        }
    }

    /// The user name a SASL PLAIN login gave, if any (never the password).
    pub fn user(&self) -> Option<String> {
        self.user.lock().ok().and_then(|u| u.clone())
    }

    /// Who authenticated (`Ok`), why SASL failed (`Err`), or `None` before SASL.
    pub fn outcome(&self) -> Option<Result<Principal, AuthError>> {
        self.outcome.lock().ok().and_then(|p| p.clone())
    }

    fn check(&self, credentials: Credentials<'_>) -> Result<Principal, AuthError> {
        if self.auth.is_cheap(credentials) {
            return self.auth.authenticate(credentials);
        }
        // argon2 takes tens of milliseconds of CPU; fe2o3-amqp asks synchronously, so move
        // the other tasks of this worker elsewhere meanwhile (multi-threaded runtime only).
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.auth.authenticate(credentials))
            }
            _ => self.auth.authenticate(credentials),
        }
    }
}

fn outcome(code: SaslCode) -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    })
}

impl SaslAcceptor for Login {
    fn mechanisms(&self) -> Array<Symbol> {
        let mut mechanisms = vec![Symbol::from("PLAIN")];
        if self.cert_cn.is_some() {
            mechanisms.insert(0, Symbol::from("EXTERNAL"));
        }
        if !self.auth.requires_credentials() || self.cert_cn.is_some() {
            mechanisms.push(Symbol::from("ANONYMOUS"));
        }
        Array::from(mechanisms)
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let result = match (init.mechanism.as_str(), self.cert_cn.clone()) {
            // The TLS client certificate is the credential.
            ("EXTERNAL" | "ANONYMOUS", Some(cn)) => self.check(Credentials::Certificate(&cn)),
            ("ANONYMOUS", None) => self.check(Credentials::None),
            // authzid NUL authcid NUL password
            ("PLAIN", _) => match init.initial_response.as_ref().and_then(|r| {
                let mut parts = r.split(|b| *b == 0);
                let (_authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
                let name = std::str::from_utf8(authcid).ok()?;
                (!name.is_empty()).then_some((name, password))
            }) {
                Some((user, password)) => {
                    if let Ok(mut slot) = self.user.lock() {
                        *slot = Some(user.to_owned());
                    }
                    self.check(Credentials::Password { user, password })
                }
                None => Err(AuthError::BadCredentials),
            },
            _ => Err(AuthError::NotAuthorized),
        };
        let code = match &result {
            Ok(_) => SaslCode::Ok,
            // Too many password checks at once: a temporary failure, not a wrong password.
            Err(AuthError::Busy) => SaslCode::SysTemp,
            Err(_) => SaslCode::Auth,
        };
        if let Ok(mut slot) = self.outcome.lock() {
            *slot = Some(result);
        }
        outcome(code)
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // Neither mechanism has a challenge round.
        outcome(SaslCode::Auth)
    }
}

/// The SASL side of a "server busy" answer (`limits.max_connections` reached): any login is
/// let through unchecked, because the connection is closed with
/// `amqp:resource-limit-exceeded` right after the open and serves nothing. This way the client
/// learns why (a SASL refusal would read as a wrong password), and no password is checked for
/// a connection that is turned away anyway.
#[derive(Clone, Copy)]
pub struct BusyLogin;

impl SaslAcceptor for BusyLogin {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![
            Symbol::from("PLAIN"),
            Symbol::from("ANONYMOUS"),
            Symbol::from("EXTERNAL"),
        ])
    }

    fn on_init(&mut self, _init: SaslInit) -> SaslServerFrame {
        outcome(SaslCode::Ok)
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        outcome(SaslCode::Ok)
    }
}
