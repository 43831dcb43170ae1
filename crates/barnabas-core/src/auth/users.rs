//! The users file (`[[user]] name, password_hash, tokens_sha256`): argon2id password hashes
//! and SHA-256 digests of static bearer tokens, so the file never holds a usable secret.

use std::collections::HashMap;

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `users.toml` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// The users.
    #[serde(default)]
    pub user: Vec<UserEntry>,
}

/// One `[[user]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// User name (the principal).
    pub name: String,
    /// `$argon2id$…` from `barnabas hash-password`; absent = no password login.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Hex SHA-256 digests of the user's static bearer tokens.
    #[serde(default)]
    pub tokens_sha256: Vec<String>,
}

/// The loaded user database.
#[derive(Debug, Clone, Default)]
pub struct Users {
    passwords: HashMap<String, Option<String>>,
    /// token digest → user name.
    tokens: HashMap<[u8; 32], String>,
    /// A valid hash to verify against for unknown users, so that their refusal takes as long
    /// as a wrong password (no user-name probing by timing).
    decoy: Option<String>,
}

/// What is wrong with a users file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    /// Not TOML of the users file's shape.
    #[error("{0}")]
    Toml(String),
    /// A `[[user]]` without `name`.
    #[error("a [[user]] without a name")]
    NoName,
    /// A `password_hash` argon2 cannot read.
    #[error("user {user:?}: password_hash is not a PHC string ({reason})")]
    BadHash {
        /// The user.
        user: String,
        /// What argon2 said.
        reason: String,
    },
    /// A `tokens_sha256` entry that is not 64 hex digits.
    #[error("user {user:?}: {token:?} is not a hex SHA-256 digest")]
    BadToken {
        /// The user.
        user: String,
        /// The entry as written.
        token: String,
    },
    /// The same name twice.
    #[error("user {0:?} is listed twice")]
    Twice(String),
}

/// A password argon2 could not hash (a salt too short or too long).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

impl Users {
    /// Checks and indexes a users file; the error names the user and the problem.
    pub fn from_file(file: UsersFile) -> Result<Self, UsersError> {
        let mut users = Users::default();
        for u in file.user {
            if u.name.is_empty() {
                return Err(UsersError::NoName);
            }
            if let Some(h) = &u.password_hash {
                PasswordHash::new(h).map_err(|e| UsersError::BadHash {
                    user: u.name.clone(),
                    reason: e.to_string(),
                })?;
                users.decoy.get_or_insert_with(|| h.clone());
            }
            for t in &u.tokens_sha256 {
                let digest = decode_hex32(t).ok_or_else(|| UsersError::BadToken {
                    user: u.name.clone(),
                    token: t.clone(),
                })?;
                users.tokens.insert(digest, u.name.clone());
            }
            if users
                .passwords
                .insert(u.name.clone(), u.password_hash)
                .is_some()
            {
                return Err(UsersError::Twice(u.name));
            }
        }
        Ok(users)
    }

    /// Parses the TOML text of a users file.
    pub fn from_toml(text: &str) -> Result<Self, UsersError> {
        let file: UsersFile = toml::from_str(text).map_err(|e| UsersError::Toml(e.to_string()))?;
        Self::from_file(file)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.passwords.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty()
    }

    /// Whether `password` is `user`'s: `Some(answer)` once argon2 ran — against the user's
    /// hash, or for a user without one against the decoy (a real hash, so that a refusal
    /// takes as long whether or not the user exists) — and `None` when there was no hash to
    /// run (no user has a password), which is a refusal too.
    pub fn verify_password(&self, user: &str, password: &[u8]) -> Option<bool> {
        let (hash, known) = match self.passwords.get(user) {
            Some(Some(h)) => (h.as_str(), true),
            _ => (self.decoy.as_deref()?, false),
        };
        let parsed = PasswordHash::new(hash).ok()?;
        let ok = Argon2::default().verify_password(password, &parsed).is_ok();
        Some(ok && known)
    }

    /// The user owning this bearer token.
    pub fn user_of_token(&self, token: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.tokens
            .iter()
            .find(|(d, _)| bool::from(d.ct_eq(&digest)))
            .map(|(_, user)| user.as_str())
    }
}

/// The argon2id PHC string of `password` with `salt` (at least 8 random bytes).
pub fn hash_password(password: &[u8], salt: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(salt).map_err(|e| HashError(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Hex SHA-256 of `data` (what `tokens_sha256` holds).
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The file holds the token's digest only; a presented token is hashed and its digest
    /// looked up, so neither the file's text nor a near miss gets in.
    #[test]
    fn a_bearer_token_is_known_by_its_digest_only() {
        let token = "tok-0123456789abcdef";
        let digest = hex(&Sha256::digest(token.as_bytes()));
        let users = Users::from_file(UsersFile {
            user: vec![UserEntry {
                name: "sensor".into(),
                password_hash: None,
                tokens_sha256: vec![digest.clone()],
            }],
        })
        .unwrap();
        assert_eq!(users.user_of_token(token), Some("sensor"));
        assert_eq!(users.user_of_token("tok-0123456789abcdeF"), None);
        assert_eq!(users.user_of_token("tok-0123456789abcde"), None);
        assert_eq!(
            users.user_of_token(&digest),
            None,
            "the file's text is no token"
        );
        assert_eq!(users.user_of_token(""), None);
    }
}
