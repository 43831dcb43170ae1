//! SASL for AMQP connections: PLAIN and ANONYMOUS, remembering who authenticated.
//!
//! fe2o3-amqp's own PLAIN acceptor knows one fixed user and does not tell who logged in, so
//! this one accepts the mechanisms and records the principal (the PLAIN authcid, or
//! `anonymous`) for the connection it is cloned into. Credentials are checked by the security
//! work (users file); until then every well-formed login is accepted.

use std::sync::{Arc, Mutex};

use fe2o3_amqp::{
    acceptor::{sasl_acceptor::SaslServerFrame, SaslAcceptor},
    types::{
        primitives::{Array, Symbol},
        sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse},
    },
};

/// Principal of a client that used SASL ANONYMOUS.
pub const ANONYMOUS: &str = "anonymous";

/// A SASL acceptor for one connection; read [`principal`](Self::principal) after the open.
#[derive(Clone, Default)]
pub struct Login {
    principal: Arc<Mutex<Option<String>>>,
}

impl Login {
    /// Who authenticated, once SASL succeeded.
    pub fn principal(&self) -> Option<String> {
        self.principal.lock().ok().and_then(|p| p.clone())
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
        Array::from(vec![Symbol::from("PLAIN"), Symbol::from("ANONYMOUS")])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let who = match init.mechanism.as_str() {
            "ANONYMOUS" => Some(ANONYMOUS.to_owned()),
            // authzid NUL authcid NUL password
            "PLAIN" => init.initial_response.as_ref().and_then(|r| {
                let mut parts = r.split(|b| *b == 0);
                let (_authzid, authcid, _password) = (parts.next()?, parts.next()?, parts.next()?);
                let name = std::str::from_utf8(authcid).ok()?;
                (!name.is_empty()).then(|| name.to_owned())
            }),
            _ => None,
        };
        match (who, self.principal.lock()) {
            (Some(name), Ok(mut slot)) => {
                *slot = Some(name);
                outcome(SaslCode::Ok)
            }
            _ => outcome(SaslCode::Auth),
        }
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // Neither mechanism has a challenge round.
        outcome(SaslCode::Auth)
    }
}
