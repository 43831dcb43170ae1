//! Who a client is ([`Principal`]) and what it may do ([`Acl`]), shared by every front end.
//!
//! Each protocol has its own way to present credentials (MQTT CONNECT username/password, AMQP
//! SASL PLAIN, HTTP Basic or Bearer, a TLS client certificate), but one user database, one
//! principal model and one set of topic ACLs apply to all of them, so a device is the same
//! principal whichever protocol it speaks. The [`Authenticator`] turns credentials into a
//! principal; the front end then asks it before every publish, subscription and group join.

mod acl;
mod login;
mod throttle;
mod users;

pub use acl::{Access, Acl, AclRule, BadGrant};
pub use login::LoginSource;
pub use throttle::FailureThrottle;
pub use users::{hash_password, sha256_hex, HashError, UserEntry, Users, UsersError, UsersFile};

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::internal::InternalTopics;

/// An authenticated (or anonymous) client identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// User name, client-certificate CN, or `anonymous`.
    pub name: Arc<str>,
    /// Connected without credentials.
    pub anonymous: bool,
    /// The password the client logged in with, kept only for identity passthrough
    /// (`kafka.identity = "passthrough"`): its writes reach Kafka logged in as this user.
    pub kafka_secret: Option<Secret>,
}

/// A password kept in memory for identity passthrough; never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Arc<str>);

impl Secret {
    /// The password itself, for the Kafka client's `sasl.password`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Principal {
    /// The principal of a client without credentials.
    pub fn anonymous() -> Self {
        Self {
            name: Arc::from(ANONYMOUS),
            anonymous: true,
            kafka_secret: None,
        }
    }

    /// A named principal.
    pub fn named(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            anonymous: false,
            kafka_secret: None,
        }
    }

    /// This principal, keeping `password` for identity passthrough (a Kafka password is
    /// text: bytes that are not UTF-8 are replaced, and Kafka will refuse the login).
    fn with_secret(mut self, password: &[u8]) -> Self {
        self.kafka_secret = Some(Secret(Arc::from(String::from_utf8_lossy(password))));
        self
    }
}

/// Name of the principal of clients without credentials.
pub const ANONYMOUS: &str = "anonymous";

/// What a client presented.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// Nothing.
    None,
    /// A user name and password (MQTT, SASL PLAIN, HTTP Basic).
    Password {
        /// User name.
        user: &'a str,
        /// Password, as sent.
        password: &'a [u8],
    },
    /// A bearer token (HTTP).
    Bearer(&'a str),
    /// A verified TLS client certificate's subject CN.
    Certificate(&'a str),
}

impl<'a> Credentials<'a> {
    /// A protocol login (MQTT CONNECT, SASL PLAIN): a user name with its password (empty
    /// when absent), or nothing without a user name.
    pub fn login(user: Option<&'a str>, password: &'a [u8]) -> Self {
        match user {
            Some(user) => Credentials::Password { user, password },
            None => Credentials::None,
        }
    }
}

/// [`Credentials`] that own their text, to move to a blocking thread.
#[derive(Debug, Clone)]
enum OwnedCredentials {
    None,
    Password(String, Vec<u8>),
    Bearer(String),
    Certificate(String),
}

impl From<Credentials<'_>> for OwnedCredentials {
    fn from(c: Credentials<'_>) -> Self {
        match c {
            Credentials::None => Self::None,
            Credentials::Password { user, password } => {
                Self::Password(user.to_owned(), password.to_vec())
            }
            Credentials::Bearer(t) => Self::Bearer(t.to_owned()),
            Credentials::Certificate(cn) => Self::Certificate(cn.to_owned()),
        }
    }
}

impl OwnedCredentials {
    fn borrow(&self) -> Credentials<'_> {
        match self {
            Self::None => Credentials::None,
            Self::Password(user, password) => Credentials::Password { user, password },
            Self::Bearer(t) => Credentials::Bearer(t),
            Self::Certificate(cn) => Credentials::Certificate(cn),
        }
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password or token (MQTT 0x86 / 4, HTTP 401).
    #[error("bad user name or password")]
    BadCredentials,
    /// No credentials where they are required (MQTT 0x87 / 5, HTTP 401).
    #[error("credentials required")]
    NotAuthorized,
    /// Too many password checks running at once: refused unchecked as "server busy" (MQTT
    /// 0x89 / 3, HTTP 503, AMQP SASL temporary failure), so a flood of logins cannot hold
    /// hundreds of blocking threads, each hashing with argon2's 19 MiB.
    #[error("server busy: too many password checks at once")]
    Busy,
}

/// `[auth] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Everyone is the principal `anonymous`.
    #[default]
    None,
    /// Clients authenticate against the users file.
    Users,
}

/// Authentication and authorization for every front end.
#[derive(Debug)]
pub struct Authenticator {
    mode: AuthMode,
    users: Users,
    allow_anonymous: bool,
    acl: Acl,
    /// Recently verified passwords (by digest of user and password), so that HTTP Basic,
    /// which sends them with every request, costs one argon2 verification per
    /// [`VERIFIED_FOR`], not one per request.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Keep the password of a password login in its principal (identity passthrough).
    keep_passwords: bool,
    /// Topics no client may write or read, whatever the ACL says.
    internal: InternalTopics,
    /// Slots for argon2 verifications running at once (see [`AuthError::Busy`]).
    password_checks: Arc<Semaphore>,
    /// Failed logins per address, and the delay they earn ([`Authenticator::login`]).
    throttle: FailureThrottle,
    /// Refused logins, by protocol and reason.
    failures: login::FailureCounts,
    /// argon2 verifications run (`barnabas_password_checks_total`).
    password_checks_run: Counter,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self {
            mode: AuthMode::default(),
            users: Users::default(),
            allow_anonymous: false,
            acl: Acl::default(),
            verified: Mutex::new(HashMap::new()),
            keep_passwords: false,
            internal: InternalTopics::default(),
            password_checks: Arc::new(Semaphore::new(default_password_checks())),
            throttle: FailureThrottle::default(),
            failures: login::FailureCounts::default(),
            password_checks_run: Counter::default(),
        }
    }
}

/// Concurrent password checks by default: two per core, enough to keep every core busy with
/// honest logins while a flood is refused instead of queued on blocking threads.
pub fn default_password_checks() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

/// How long a verified user/password pair is trusted without verifying it again.
const VERIFIED_FOR: Duration = Duration::from_secs(300);
/// Verified pairs remembered at most.
const MAX_VERIFIED: usize = 10_000;

impl Authenticator {
    /// No authentication, no ACLs: everyone is `anonymous` and may do anything.
    pub fn open() -> Self {
        Self::default()
    }

    /// An authenticator in `mode`; `allow_anonymous` lets clients without credentials in
    /// (as `anonymous`) when `mode` is [`AuthMode::Users`].
    pub fn new(mode: AuthMode, users: Users, allow_anonymous: bool, acl: Acl) -> Self {
        Self {
            mode,
            users,
            allow_anonymous,
            acl,
            ..Self::default()
        }
    }

    /// The topics no client may touch (`kafka.internal_prefix`).
    pub fn with_internal_topics(mut self, internal: InternalTopics) -> Self {
        self.internal = internal;
        self
    }

    /// At most `n` password checks at once (`auth.max_password_checks`; 0 = the default,
    /// [`default_password_checks`]); more are refused with [`AuthError::Busy`].
    pub fn with_max_password_checks(mut self, n: usize) -> Self {
        let n = if n == 0 { default_password_checks() } else { n };
        self.password_checks = Arc::new(Semaphore::new(n));
        self
    }

    /// Whether any `[[acl]]` rule is configured (without, everything not internal is allowed).
    pub fn has_acl(&self) -> bool {
        !self.acl.is_empty()
    }

    /// Whether `topic` belongs to the gateway or to Kafka (no client writes or reads it).
    pub fn is_internal(&self, topic: &str) -> bool {
        self.internal.contains(topic)
    }

    /// The name a principal's resources (consumer instances, SSE streams) are owned by and
    /// counted against. With `mode = "none"` nothing is verified, so a Basic user name or an
    /// MQTT user name is whatever the client invents: every client is `anonymous` here, or
    /// inventing names would bypass `limits.max_consumers_per_principal`.
    pub fn owner_name(&self, principal: &Principal) -> Arc<str> {
        match self.mode {
            AuthMode::None => Arc::from(ANONYMOUS),
            AuthMode::Users => principal.name.clone(),
        }
    }

    /// A slot for one argon2 verification, if one is free.
    fn password_slot(&self) -> Result<OwnedSemaphorePermit, AuthError> {
        self.password_checks
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                tracing::warn!(
                    "password check refused: too many at once (auth.max_password_checks)"
                );
                AuthError::Busy
            })
    }

    /// Keeps each password login's password in its principal, for identity passthrough
    /// (`kafka.identity = "passthrough"`). With `mode = "none"` the user name and password
    /// are then taken unverified: Kafka verifies them when the client's writes log in.
    pub fn keeping_passwords(mut self) -> Self {
        self.keep_passwords = true;
        self
    }

    /// The principal of a password login: the user, with the password when kept.
    fn password_principal(&self, user: &str, password: &[u8]) -> Principal {
        let p = Principal::named(user);
        if self.keep_passwords {
            p.with_secret(password)
        } else {
            p
        }
    }

    /// Whether `mode` is `users` (credentials are checked).
    pub fn checks_credentials(&self) -> bool {
        self.mode == AuthMode::Users
    }

    /// Whether a password check can be answered from the cache of recent verifications
    /// (then [`authenticate`](Self::authenticate) is cheap, no need for a blocking thread).
    pub fn is_cheap(&self, credentials: Credentials<'_>) -> bool {
        match credentials {
            Credentials::Password { user, password } if self.mode == AuthMode::Users => self
                .verified
                .lock()
                .map(|m| {
                    m.get(&pair_digest(user, password))
                        .is_some_and(|at| at.elapsed() < VERIFIED_FOR)
                })
                .unwrap_or(false),
            _ => true,
        }
    }

    /// Checks a password (from the cache of recent verifications when it is there), under
    /// `slot` or one taken here.
    fn verify_password(
        &self,
        user: &str,
        password: &[u8],
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<bool, AuthError> {
        let digest = pair_digest(user, password);
        if let Ok(map) = self.verified.lock() {
            if map
                .get(&digest)
                .is_some_and(|at| at.elapsed() < VERIFIED_FOR)
            {
                return Ok(true);
            }
        }
        let _slot = match slot {
            Some(s) => s,
            None => self.password_slot()?,
        };
        let checked = self.users.verify_password(user, password);
        if checked.is_some() {
            self.password_checks_run.inc();
        }
        let ok = checked == Some(true);
        if ok {
            if let Ok(mut map) = self.verified.lock() {
                if map.len() >= MAX_VERIFIED {
                    map.retain(|_, at| at.elapsed() < VERIFIED_FOR);
                    if map.len() >= MAX_VERIFIED {
                        map.clear();
                    }
                }
                map.insert(digest, Instant::now());
            }
        }
        Ok(ok)
    }

    /// Whether clients must authenticate (so front ends ask for credentials).
    pub fn requires_credentials(&self) -> bool {
        self.mode == AuthMode::Users && !self.allow_anonymous
    }

    /// The principal these credentials prove. CPU-heavy for passwords (argon2): call it from
    /// a blocking-capable context ([`tokio::task::spawn_blocking`]).
    pub fn authenticate(&self, credentials: Credentials<'_>) -> Result<Principal, AuthError> {
        self.authenticate_in(credentials, None)
    }

    /// [`authenticate`](Self::authenticate) with a password-check slot already held.
    fn authenticate_in(
        &self,
        credentials: Credentials<'_>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(match credentials {
                Credentials::Password { user, password } if !user.is_empty() => {
                    self.password_principal(user, password)
                }
                Credentials::Certificate(cn) => Principal::named(cn),
                _ => Principal::anonymous(),
            });
        }
        match credentials {
            Credentials::None if self.allow_anonymous => Ok(Principal::anonymous()),
            Credentials::None => Err(AuthError::NotAuthorized),
            Credentials::Password { user, password } => self
                .verify_password(user, password, slot)?
                .then(|| self.password_principal(user, password))
                .ok_or(AuthError::BadCredentials),
            Credentials::Bearer(token) => self
                .users
                .user_of_token(token)
                .map(Principal::named)
                .ok_or(AuthError::BadCredentials),
            Credentials::Certificate(cn) => Ok(Principal::named(cn)),
        }
    }

    /// [`authenticate`](Self::authenticate) for async callers: answered in place when it is
    /// cheap (no password, or one verified lately), otherwise on a blocking thread, since
    /// argon2 takes tens of milliseconds of CPU that must not stall the event loop.
    pub async fn authenticate_off_loop(
        self: &Arc<Self>,
        credentials: Credentials<'_>,
    ) -> Result<Principal, AuthError> {
        if self.is_cheap(credentials) {
            return self.authenticate(credentials);
        }
        // The slot is taken before the blocking thread: a refused check costs no thread.
        let slot = self.password_slot()?;
        let auth = self.clone();
        let owned = OwnedCredentials::from(credentials);
        tokio::task::spawn_blocking(move || auth.authenticate_in(owned.borrow(), Some(slot)))
            .await
            .unwrap_or(Err(AuthError::BadCredentials))
    }

    /// Whether `principal` may do `access` (always, when no ACL rule is configured). The
    /// gateway's and Kafka's internal topics and groups ([`InternalTopics`]) are refused to
    /// every client whatever the ACL says: this is the one gate every front end's produce,
    /// subscription, receiver link and consumer goes through.
    pub fn allows(&self, principal: &Principal, access: Access<'_>) -> bool {
        let name = match access {
            Access::Write(n) | Access::Read(n) | Access::Group(n) => n,
        };
        if self.internal.contains(name) {
            tracing::info!(principal = %principal.name, name, "internal topic or group refused to a client");
            return false;
        }
        self.acl.allows(&principal.name, access)
    }
}

fn pair_digest(user: &str, password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update([0]);
    h.update(password);
    h.finalize().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn users() -> Users {
        let hash = hash_password(b"s3cret", b"0123456789abcdef").unwrap();
        Users::from_file(UsersFile {
            user: vec![UserEntry {
                name: "device-1".into(),
                password_hash: Some(hash),
                tokens_sha256: vec![sha256_hex(b"tok-1")],
            }],
        })
        .unwrap()
    }

    #[test]
    fn users_mode_checks_passwords_and_tokens() {
        let auth = Authenticator::new(AuthMode::Users, users(), false, Acl::default());
        let ok = auth.authenticate(Credentials::Password {
            user: "device-1",
            password: b"s3cret",
        });
        assert_eq!(ok, Ok(Principal::named("device-1")));
        let wrong = auth.authenticate(Credentials::Password {
            user: "device-1",
            password: b"nope",
        });
        assert_eq!(wrong, Err(AuthError::BadCredentials));
        let unknown = auth.authenticate(Credentials::Password {
            user: "who",
            password: b"s3cret",
        });
        assert_eq!(unknown, Err(AuthError::BadCredentials));
        assert_eq!(
            auth.authenticate(Credentials::Bearer("tok-1")),
            Ok(Principal::named("device-1"))
        );
        assert_eq!(
            auth.authenticate(Credentials::Bearer("tok-2")),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            auth.authenticate(Credentials::None),
            Err(AuthError::NotAuthorized)
        );
    }

    /// A verified pair is remembered for 5 minutes (`VERIFIED_FOR`), then verified again:
    /// the second login runs no argon2 check, one whose remembered verification is 5 minutes
    /// old runs one (and is remembered afresh), as does every wrong password.
    #[test]
    fn a_verified_pair_is_remembered_for_five_minutes() {
        let auth = Authenticator::new(AuthMode::Users, users(), false, Acl::default());
        let right = Credentials::Password {
            user: "device-1",
            password: b"s3cret",
        };
        let checks_of = |credentials| {
            let before = auth.password_checks_run.get();
            let answer = auth.authenticate(credentials).is_ok();
            (answer, auth.password_checks_run.get() - before)
        };
        assert_eq!(checks_of(right), (true, 1), "the first login is checked");
        assert!(auth.is_cheap(right));
        assert_eq!(checks_of(right), (true, 0), "then remembered");
        let wrong = Credentials::Password {
            user: "device-1",
            password: b"nope",
        };
        assert_eq!(
            checks_of(wrong),
            (false, 1),
            "a wrong password is always checked"
        );
        // Age the remembered verification to exactly 5 minutes.
        let aged = Instant::now().checked_sub(VERIFIED_FOR).unwrap();
        for at in auth.verified.lock().unwrap().values_mut() {
            *at = aged;
        }
        assert!(!auth.is_cheap(right));
        assert_eq!(checks_of(right), (true, 1), "checked again after 5 minutes");
        assert_eq!(checks_of(right), (true, 0), "and remembered afresh");
    }

    #[test]
    fn anonymous_clients_only_when_allowed() {
        let auth = Authenticator::new(AuthMode::Users, users(), true, Acl::default());
        assert_eq!(
            auth.authenticate(Credentials::None),
            Ok(Principal::anonymous())
        );
        let open = Authenticator::open();
        assert_eq!(
            open.authenticate(Credentials::None),
            Ok(Principal::anonymous())
        );
        assert!(!open.requires_credentials());
    }
}
