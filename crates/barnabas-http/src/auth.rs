//! Who is calling: HTTP Basic or `Authorization: Bearer` → a [`Principal`] in the request's
//! extensions, or 401 JSON with `WWW-Authenticate`; and the ACL checks handlers make with it.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use barnabas_core::{Access, AuthError, Credentials, LoginSource, Principal};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};

use crate::{error::ApiError, AppState, TlsPeer};

/// The challenge sent with every 401.
const CHALLENGE: &str = r#"Basic realm="barnabas", Bearer realm="barnabas""#;

/// Route layer of every route except the probes and `/metrics`: authenticates the caller and
/// stores its [`Principal`] for the handlers.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let basic = header.as_deref().and_then(basic_pair);
    let tls_peer = request
        .extensions()
        .get::<ConnectInfo<TlsPeer>>()
        .map(|c| c.0.clone());
    let credentials = credentials(header.as_deref(), basic.as_deref(), tls_peer.as_ref());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or(tls_peer.as_ref().map(|p| p.addr.ip()));
    let outcome = match credentials {
        Ok(c) => state.auth.login(LoginSource::new("http", peer), c).await,
        // An Authorization header that is not Basic or Bearer: bad credentials.
        Err(()) => {
            let refused = Err(AuthError::BadCredentials);
            let delay = state
                .auth
                .record_login(LoginSource::new("http", peer), None, &refused);
            tokio::time::sleep(delay).await;
            refused
        }
    };
    match outcome {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => unauthorized(e),
    }
}

/// The decoded `user:password` of a Basic `Authorization` header; `None` for another scheme
/// or a value that is not base64.
fn basic_pair(header: &str) -> Option<Vec<u8>> {
    let (scheme, rest) = header.split_once(' ')?;
    let encoded = scheme
        .eq_ignore_ascii_case("basic")
        .then_some(rest.trim())?;
    B64.decode(encoded).ok()
}

/// What the caller presents: the `Authorization` header (`basic`, its decoded pair when it is
/// Basic), else a verified client certificate, else nothing. `Err` for a header that is neither
/// a Basic `user:password` nor a Bearer token, which is refused as bad credentials.
fn credentials<'a>(
    header: Option<&'a str>,
    basic: Option<&'a [u8]>,
    tls_peer: Option<&'a TlsPeer>,
) -> Result<Credentials<'a>, ()> {
    match (header, basic) {
        // A verified client certificate names the principal when no header does.
        (None, _) => Ok(match tls_peer.and_then(|p| p.cert_cn.as_deref()) {
            Some(cn) => Credentials::Certificate(cn),
            None => Credentials::None,
        }),
        (Some(_), Some(pair)) => match pair.iter().position(|b| *b == b':') {
            Some(at) => std::str::from_utf8(&pair[..at])
                .map(|user| Credentials::Password {
                    user,
                    password: &pair[at + 1..],
                })
                .map_err(|_| ()),
            None => Err(()),
        },
        (Some(h), None) => match h.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Ok(Credentials::Bearer(token.trim()))
            }
            _ => Err(()),
        },
    }
}

fn unauthorized(e: AuthError) -> Response {
    let message = match e {
        AuthError::BadCredentials => "Invalid credentials.",
        AuthError::NotAuthorized => {
            "Authentication required: HTTP Basic (user:password) or a Bearer token."
        }
        AuthError::Busy => return busy(),
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    response
}

/// 503 with `Retry-After: 1`: too many password checks at once (`auth.max_password_checks`).
fn busy() -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Server busy: too many logins are being checked; retry shortly.",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// 403 unless `principal` may do `access`.
pub fn check(state: &AppState, principal: &Principal, access: Access<'_>) -> Result<(), ApiError> {
    if state.auth.allows(principal, access) {
        return Ok(());
    }
    let (verb, name) = match access {
        Access::Write(t) => ("write to topic", t),
        Access::Read(t) => ("read from topic", t),
        Access::Group(g) => ("use consumer group", g),
    };
    tracing::info!(principal = %principal.name, verb, name, "denied by ACL");
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!("Principal '{}' may not {verb} '{name}'.", principal.name),
    ))
}
