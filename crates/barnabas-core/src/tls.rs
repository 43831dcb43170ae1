//! TLS for every listener (rustls: TLS 1.2 and 1.3 only, no OpenSSL on the edge), with the
//! certificate reloadable without dropping connections, and the principal of a client
//! certificate (its subject CN) for mutual TLS.
//!
//! One server certificate serves HTTPS, MQTT over TLS and WSS, and AMQPS, so one
//! [`TlsAcceptor`] is shared by all listeners: a SIGHUP reloads it once for all of them.
//! Connections already established keep the configuration they started with.

use std::{
    io,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

/// Where the certificate, its key and the optional client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates; `None` = no client certificates.
    pub client_ca: Option<PathBuf>,
}

/// A TLS server handshake, reloadable.
pub struct TlsAcceptor {
    files: TlsFiles,
    current: RwLock<tokio_rustls::TlsAcceptor>,
    /// How long a handshake may take on any TLS listener (`tls.handshake_timeout_ms`).
    handshake_deadline: std::time::Duration,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Loads the files; the error names the file and what is wrong with it. Every handshake
    /// gets `handshake_deadline` ([`Self::accept_within`]).
    pub fn load(
        files: TlsFiles,
        handshake_deadline: std::time::Duration,
    ) -> Result<Arc<Self>, TlsError> {
        let acceptor = build(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(acceptor),
            handshake_deadline,
        }))
    }

    /// Reads the files again (SIGHUP). New handshakes use the new certificate; on an error
    /// the previous one stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = build(&self.files)?;
        match self.current.write() {
            Ok(mut current) => *current = acceptor,
            Err(poisoned) => *poisoned.into_inner() = acceptor,
        }
        Ok(())
    }

    /// [`Self::accept`] bounded by the handshake deadline, the way every TLS listener runs
    /// it: `None` when the handshake failed or took too long (logged at debug with `peer`;
    /// the connection is then dropped), so a client that never finishes cannot hold a slot.
    pub async fn accept_within<IO>(
        &self,
        io: IO,
        peer: std::net::SocketAddr,
    ) -> Option<(TlsStream<IO>, Option<String>)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.handshake_deadline, self.accept(io)).await {
            Ok(Ok(accepted)) => Some(accepted),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// The server handshake on `io` (the caller bounds it with the handshake deadline, see
    /// [`Self::accept_within`]); also returns the subject CN of a verified client
    /// certificate, if the client sent one.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<(TlsStream<IO>, Option<String>)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = match self.current.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let stream = acceptor.accept(io).await?;
        let cn = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| subject_cn(leaf.as_ref()));
        Ok((stream, cn))
    }
}

/// Why a TLS configuration could not be loaded; it names the setting and file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file a setting names could not be read or used.
    #[error("{setting} {}: {reason}", path.display())]
    File {
        /// The setting (`tls.cert_file`, `tls.key_file`, `tls.client_ca_file`).
        setting: &'static str,
        /// The file it names.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the protocol versions (not expected with its safe defaults).
    #[error("TLS: {0}")]
    Protocol(String),
}

impl TlsError {
    fn file(setting: &'static str, path: &std::path::Path, reason: impl ToString) -> Self {
        TlsError::File {
            setting,
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }
}

fn build(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let cert_error = |e: &dyn std::fmt::Display| TlsError::file("tls.cert_file", &files.cert, e);
    let key_error = |e: &dyn std::fmt::Display| TlsError::file("tls.key_file", &files.key, e);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| cert_error(&e))?;
    if certs.is_empty() {
        return Err(cert_error(&"no PEM certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| key_error(&e))?;
    // Named explicitly: with both of rustls' providers compiled in (other crates enable
    // ring), there is no process default to fall back on.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Protocol(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let ca_error = |e: &dyn std::fmt::Display| TlsError::file("tls.client_ca_file", ca, e);
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| ca_error(&e))? {
                let cert = cert.map_err(|e| ca_error(&e))?;
                roots.add(cert).map_err(|e| ca_error(&e))?;
            }
            // Clients without a certificate may still log in with a password; a certificate
            // that is sent must verify.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| ca_error(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| key_error(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The subject common name of a DER certificate (OID 2.5.4.3), if it has one.
pub fn subject_cn(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?, serial, signature,
    // issuer, validity, subject, … } … }
    let (_, cert, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(cert)?;
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xA0 {
        tbs = rest; // explicit version
    }
    // serial, signature algorithm, issuer, validity
    for _ in 0..4 {
        tbs = tlv(tbs)?.2;
    }
    let (_, subject, _) = tlv(tbs)?;
    // Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value }
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, rest) = tlv(rdns)?;
        rdns = rest;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (_, attr, rest) = tlv(attrs)?;
            attrs = rest;
            let (oid_tag, oid, value) = tlv(attr)?;
            if oid_tag == 0x06 && oid == [0x55, 0x04, 0x03] {
                let (_, text, _) = tlv(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// One DER element: (tag, contents, what follows).
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_has_no_cn() {
        assert_eq!(subject_cn(&[]), None);
        assert_eq!(subject_cn(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject_cn(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }
}
