//! How a token is stored in `followq.account_credentials`: sealed with XChaCha20-Poly1305.
//!
//! A stored value reads `followq:v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>`:
//! - a fresh random 24-byte nonce per value (XChaCha's nonces are long enough to be random);
//! - the key id inside the value, so rows sealed under different keys can live side by side
//!   while keys rotate, and `credentials status` can count them with SQL alone;
//! - associated data `followq:v1:<key id>:<column>:<user id>`: a value copied to another
//!   account's row, or to another column of the same row, does not decrypt.
//!
//! A value without the prefix was stored in clear by an earlier version: it is read as it is,
//! and `followq credentials rekey` seals it. New tokens that start with the prefix are refused
//! (`credentials::check_token`), so the two forms cannot be confused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead as _, Generate as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use super::keyring::KeyRing;
use crate::ids::UserId;

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "followq:v1:";

/// XChaCha20's nonce length.
const NONCE_BYTES: usize = 24;

/// The four token columns of `followq.account_credentials`; each seals with its own name in
/// the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenColumn {
    OAuth2AccessToken,
    OAuth2RefreshToken,
    OAuth1Token,
    OAuth1TokenSecret,
}

impl TokenColumn {
    pub const ALL: [TokenColumn; 4] = [
        TokenColumn::OAuth2AccessToken,
        TokenColumn::OAuth2RefreshToken,
        TokenColumn::OAuth1Token,
        TokenColumn::OAuth1TokenSecret,
    ];

    /// The column's name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            TokenColumn::OAuth2AccessToken => "oauth2_access_token",
            TokenColumn::OAuth2RefreshToken => "oauth2_refresh_token",
            TokenColumn::OAuth1Token => "oauth1_token",
            TokenColumn::OAuth1TokenSecret => "oauth1_token_secret",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("could not encrypt a token (the system's random number generator failed)")]
    Random,
    #[error("could not encrypt a token")]
    Encrypt,
}

/// Why a stored value could not be read. Never holds any part of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the stored {column} is encrypted with key {key_id:?}, which is not configured: \
         set FOLLOWQ_CREDENTIALS__KEYS__{upper}",
        upper = key_id.to_uppercase()
    )]
    UnknownKey {
        column: &'static str,
        key_id: String,
    },
    #[error(
        "the stored {column} does not decrypt with key {key_id:?}: that id holds another key \
         here, or the value was altered or copied from another account or column; check the \
         key, or store new tokens with `followq accounts add`"
    )]
    Undecryptable {
        column: &'static str,
        key_id: String,
    },
    #[error("the stored {column} is not a well-formed encrypted value")]
    Malformed { column: &'static str },
}

/// Seals `token` for `user`'s `column` with the active key.
pub fn seal(
    keys: &KeyRing,
    user: &UserId,
    column: TokenColumn,
    token: &SecretString,
) -> Result<String, SealError> {
    let (key_id, cipher) = keys.active();
    let nonce = XNonce::try_generate().map_err(|_| SealError::Random)?;
    let aad = associated_data(key_id, column, user);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: token.expose_secret().as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| SealError::Encrypt)?;
    let mut payload = Vec::with_capacity(NONCE_BYTES + sealed.len());
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(&sealed);
    Ok(format!(
        "{SEALED_PREFIX}{key_id}:{}",
        STANDARD_NO_PAD.encode(payload)
    ))
}

/// Reads a stored value of `user`'s `column`: opens a sealed one, or takes a clear one (stored
/// by an earlier version) as it is.
pub fn open(
    keys: &KeyRing,
    user: &UserId,
    column: TokenColumn,
    stored: &str,
) -> Result<SecretString, OpenError> {
    let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else {
        return Ok(SecretString::from(stored));
    };
    let malformed = || OpenError::Malformed {
        column: column.name(),
    };
    let (key_id, payload) = sealed.split_once(':').ok_or_else(malformed)?;
    let cipher: &XChaCha20Poly1305 = keys.cipher(key_id).ok_or_else(|| OpenError::UnknownKey {
        column: column.name(),
        key_id: key_id.to_owned(),
    })?;
    let payload = STANDARD_NO_PAD.decode(payload).map_err(|_| malformed())?;
    if payload.len() < NONCE_BYTES {
        return Err(malformed());
    }
    let (nonce, ciphertext) = payload.split_at(NONCE_BYTES);
    let nonce = XNonce::try_from(nonce).map_err(|_| malformed())?;
    let aad = associated_data(key_id, column, user);
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Undecryptable {
                column: column.name(),
                key_id: key_id.to_owned(),
            })?,
    );
    let text = std::str::from_utf8(&plain).map_err(|_| malformed())?;
    Ok(SecretString::from(text))
}

/// The key id a stored value is sealed with; `None` for a clear value.
pub fn key_id_of(stored: &str) -> Option<&str> {
    let sealed = stored.strip_prefix(SEALED_PREFIX)?;
    Some(sealed.split_once(':').map_or(sealed, |(id, _)| id))
}

fn associated_data(key_id: &str, column: TokenColumn, user: &UserId) -> String {
    format!("{SEALED_PREFIX}{key_id}:{}:{user}", column.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::keyring::{fresh_settings, new_key};
    use crate::config::CredentialsSettings;

    fn ring(active: &str, keys: &[(&str, &SecretString)]) -> KeyRing {
        KeyRing::from_settings(&CredentialsSettings {
            active_key: Some(active.to_owned()),
            keys: keys
                .iter()
                .map(|(id, key)| ((*id).to_owned(), (*key).clone()))
                .collect(),
        })
        .unwrap()
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn token(text: &str) -> SecretString {
        SecretString::from(text)
    }

    #[test]
    fn a_sealed_token_opens_and_does_not_contain_the_token() {
        let keys = KeyRing::from_settings(&fresh_settings("k1").unwrap()).unwrap();
        let column = TokenColumn::OAuth2AccessToken;
        let stored = seal(&keys, &user("100"), column, &token("AT-SECRET")).unwrap();
        assert!(stored.starts_with("followq:v1:k1:"), "{stored}");
        assert!(!stored.contains("AT-SECRET"));
        assert_eq!(key_id_of(&stored), Some("k1"));
        let opened = open(&keys, &user("100"), column, &stored).unwrap();
        assert_eq!(opened.expose_secret(), "AT-SECRET");
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let keys = KeyRing::from_settings(&fresh_settings("k1").unwrap()).unwrap();
        let column = TokenColumn::OAuth1Token;
        let a = seal(&keys, &user("100"), column, &token("same")).unwrap();
        let b = seal(&keys, &user("100"), column, &token("same")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_value_moved_to_another_account_or_column_does_not_open() {
        let keys = KeyRing::from_settings(&fresh_settings("k1").unwrap()).unwrap();
        let stored = seal(
            &keys,
            &user("100"),
            TokenColumn::OAuth2RefreshToken,
            &token("RT"),
        )
        .unwrap();
        let other_account = open(
            &keys,
            &user("101"),
            TokenColumn::OAuth2RefreshToken,
            &stored,
        );
        assert!(matches!(
            other_account,
            Err(OpenError::Undecryptable { .. })
        ));
        let other_column = open(&keys, &user("100"), TokenColumn::OAuth2AccessToken, &stored);
        assert!(matches!(other_column, Err(OpenError::Undecryptable { .. })));
    }

    #[test]
    fn a_retired_key_still_opens_and_an_unknown_one_is_named() {
        let (old, new) = (new_key().unwrap(), new_key().unwrap());
        let before = ring("old", &[("old", &old)]);
        let column = TokenColumn::OAuth1TokenSecret;
        let stored = seal(&before, &user("7"), column, &token("S")).unwrap();
        let rotated = ring("new", &[("old", &old), ("new", &new)]);
        assert_eq!(
            open(&rotated, &user("7"), column, &stored)
                .unwrap()
                .expose_secret(),
            "S"
        );
        let resealed = seal(&rotated, &user("7"), column, &token("S")).unwrap();
        assert_eq!(key_id_of(&resealed), Some("new"));
        let without_old = ring("new", &[("new", &new)]);
        let error = open(&without_old, &user("7"), column, &stored).unwrap_err();
        assert_eq!(
            error,
            OpenError::UnknownKey {
                column: "oauth1_token_secret",
                key_id: "old".into()
            }
        );
        assert!(error.to_string().contains("FOLLOWQ_CREDENTIALS__KEYS__OLD"));
    }

    #[test]
    fn another_key_under_the_same_id_does_not_open() {
        let (a, b) = (new_key().unwrap(), new_key().unwrap());
        let column = TokenColumn::OAuth2AccessToken;
        let stored = seal(&ring("k", &[("k", &a)]), &user("1"), column, &token("T")).unwrap();
        let error = open(&ring("k", &[("k", &b)]), &user("1"), column, &stored).unwrap_err();
        assert!(matches!(error, OpenError::Undecryptable { .. }), "{error}");
    }

    #[test]
    fn a_clear_value_from_an_earlier_version_is_read_as_it_is() {
        let keys = KeyRing::from_settings(&fresh_settings("k1").unwrap()).unwrap();
        let opened = open(
            &keys,
            &user("1"),
            TokenColumn::OAuth2AccessToken,
            "legacy-clear-token",
        )
        .unwrap();
        assert_eq!(opened.expose_secret(), "legacy-clear-token");
        assert_eq!(key_id_of("legacy-clear-token"), None);
    }

    #[test]
    fn damaged_values_are_errors_that_quote_nothing() {
        let keys = KeyRing::from_settings(&fresh_settings("k1").unwrap()).unwrap();
        let column = TokenColumn::OAuth2AccessToken;
        let good = seal(&keys, &user("1"), column, &token("T")).unwrap();
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for damaged in [
            "followq:v1:k1",
            "followq:v1:k1:!!!not-base64!!!",
            "followq:v1:k1:QUJD",
            good.get(..good.len() - 8).unwrap(),
            flipped.as_str(),
        ] {
            let error = open(&keys, &user("1"), column, damaged).unwrap_err();
            let text = error.to_string();
            let payload = damaged.trim_start_matches("followq:v1:k1:");
            assert!(
                payload.len() < 4 || !text.contains(payload),
                "{damaged}: {text}"
            );
        }
    }
}
