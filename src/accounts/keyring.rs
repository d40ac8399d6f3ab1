//! The keys that encrypt stored tokens (`[credentials]`): which key ids exist, which one
//! encrypts, and making new keys.
//!
//! Every configured key decrypts; only the active one encrypts. Rotating is therefore: add a
//! new key beside the old one, make it active, run `followq credentials rekey`, and drop the
//! old key once `followq credentials status` shows no row under it.
//!
//! A key is 32 random bytes, written as base64 in `FOLLOWQ_CREDENTIALS__KEYS__<ID>`. Key ids
//! are lowercase (figment lowercases the environment variable's name): letters, digits and
//! `_`, at most [`MAX_KEY_ID_CHARS`]. Nothing here ever prints a key: errors name the id only.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chacha20poly1305::aead::Generate as _;
use chacha20poly1305::{Key, KeyInit as _, XChaCha20Poly1305};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use crate::config::CredentialsSettings;

/// The longest key id: it is written into every stored value.
pub const MAX_KEY_ID_CHARS: usize = 32;

/// How to make a key, for every error that means "there is none".
const HOW_TO_MAKE_ONE: &str = "make one with `followq credentials new-key`, then set \
FOLLOWQ_CREDENTIALS__KEYS__K1=<the key> and FOLLOWQ_CREDENTIALS__ACTIVE_KEY=k1 \
(any id of lowercase letters, digits and _ will do)";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no credentials key is configured: tokens are stored encrypted; {HOW_TO_MAKE_ONE}")]
    NoKeys,
    #[error(
        "credentials.active_key is not set: name the key that encrypts (one of: {known}); \
         FOLLOWQ_CREDENTIALS__ACTIVE_KEY=<id>"
    )]
    NoActiveKey { known: String },
    #[error(
        "credentials.active_key is {id:?} but no FOLLOWQ_CREDENTIALS__KEYS__{upper} is set \
         (configured keys: {known})",
        upper = id.to_uppercase()
    )]
    UnknownActiveKey { id: String, known: String },
    #[error(
        "credentials key id {id:?} must be 1 to {MAX_KEY_ID_CHARS} lowercase letters, digits or _"
    )]
    BadKeyId { id: String },
    #[error(
        "credentials.keys.{id}: not the base64 of 32 bytes; make a key with `followq credentials new-key`"
    )]
    BadKey { id: String },
    #[error("the system's random number generator failed")]
    Random,
}

/// The configured keys, ready to encrypt and decrypt. Cheap to clone. Its `Debug` shows the
/// key ids only.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    active: String,
    /// Each key's cipher; `XChaCha20Poly1305` wipes its key when dropped.
    ciphers: BTreeMap<String, XChaCha20Poly1305>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.inner.active)
            .field("keys", &self.inner.ciphers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// Reads `[credentials]`: at least one key, every key well formed, the active one present.
    pub fn from_settings(settings: &CredentialsSettings) -> Result<KeyRing, KeyError> {
        if settings.keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        let mut ciphers = BTreeMap::new();
        for (id, encoded) in &settings.keys {
            let id = normalise_id(id)?;
            let cipher = XChaCha20Poly1305::new(&decode_key(&id, encoded)?);
            ciphers.insert(id, cipher);
        }
        let known = ciphers.keys().cloned().collect::<Vec<_>>().join(", ");
        let active = match settings.active_key.as_deref().map(str::trim) {
            None | Some("") => return Err(KeyError::NoActiveKey { known }),
            Some(active) => normalise_id(active)?,
        };
        if !ciphers.contains_key(&active) {
            return Err(KeyError::UnknownActiveKey { id: active, known });
        }
        Ok(KeyRing {
            inner: Arc::new(Inner { active, ciphers }),
        })
    }

    /// The id of the key that encrypts.
    pub fn active_id(&self) -> &str {
        &self.inner.active
    }

    /// The active key's cipher.
    pub(crate) fn active(&self) -> (&str, &XChaCha20Poly1305) {
        let id = self.inner.active.as_str();
        // `from_settings` checked that the active id has a cipher; the map never changes.
        let cipher = &self.inner.ciphers[id];
        (id, cipher)
    }

    /// The cipher of key `id`, if configured.
    pub(crate) fn cipher(&self, id: &str) -> Option<&XChaCha20Poly1305> {
        self.inner.ciphers.get(id)
    }

    /// Whether key `id` is configured.
    pub fn knows(&self, id: &str) -> bool {
        self.inner.ciphers.contains_key(id)
    }

    /// The configured key ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.inner.ciphers.keys().map(String::as_str)
    }
}

/// A fresh key from the operating system's random source, as base64 (what
/// `FOLLOWQ_CREDENTIALS__KEYS__<ID>` takes).
pub fn new_key() -> Result<SecretString, KeyError> {
    let key = Zeroizing::new(<[u8; 32]>::try_generate().map_err(|_| KeyError::Random)?);
    Ok(SecretString::from(STANDARD.encode(key.as_slice())))
}

/// `[credentials]` holding one fresh key `id`, active: for the demo, the bench and tests,
/// which encrypt with a key of their own.
pub fn fresh_settings(id: &str) -> Result<CredentialsSettings, KeyError> {
    let id = normalise_id(id)?;
    Ok(CredentialsSettings {
        active_key: Some(id.clone()),
        keys: BTreeMap::from([(id, new_key()?)]),
    })
}

fn normalise_id(id: &str) -> Result<String, KeyError> {
    let id = id.trim().to_ascii_lowercase();
    let valid = !id.is_empty()
        && id.len() <= MAX_KEY_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(id)
    } else {
        Err(KeyError::BadKeyId {
            id: id.chars().take(MAX_KEY_ID_CHARS).collect(),
        })
    }
}

fn decode_key(id: &str, encoded: &SecretString) -> Result<Key, KeyError> {
    let text = encoded.expose_secret().trim();
    let bytes = Zeroizing::new(
        STANDARD
            .decode(text)
            .or_else(|_| STANDARD_NO_PAD.decode(text))
            .map_err(|_| KeyError::BadKey { id: id.to_owned() })?,
    );
    Key::try_from(bytes.as_slice()).map_err(|_| KeyError::BadKey { id: id.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(active: Option<&str>, keys: &[(&str, &str)]) -> CredentialsSettings {
        CredentialsSettings {
            active_key: active.map(str::to_owned),
            keys: keys
                .iter()
                .map(|(id, key)| ((*id).to_owned(), SecretString::from(*key)))
                .collect(),
        }
    }

    fn key() -> String {
        new_key().unwrap().expose_secret().to_owned()
    }

    #[test]
    fn a_new_key_is_32_random_bytes_in_base64() {
        let (a, b) = (key(), key());
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn the_active_key_encrypts_and_ids_are_case_insensitive() {
        let ring = KeyRing::from_settings(&settings(Some("K2"), &[("k1", &key()), ("k2", &key())]))
            .unwrap();
        assert_eq!(ring.active_id(), "k2");
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k1", "k2"]);
        assert!(ring.knows("k1"));
        assert!(!ring.knows("k3"));
    }

    #[test]
    fn missing_or_bad_keys_are_explained_without_the_key() {
        let message = |s: CredentialsSettings| KeyRing::from_settings(&s).unwrap_err().to_string();
        let text = message(settings(Some("k1"), &[]));
        assert!(text.contains("followq credentials new-key"), "{text}");
        let text = message(settings(None, &[("k1", &key())]));
        assert!(text.contains("FOLLOWQ_CREDENTIALS__ACTIVE_KEY"), "{text}");
        let text = message(settings(Some("k9"), &[("k1", &key())]));
        assert!(text.contains("FOLLOWQ_CREDENTIALS__KEYS__K9"), "{text}");
        let short = STANDARD.encode([7u8; 16]);
        let text = message(settings(Some("k1"), &[("k1", &short)]));
        assert!(text.contains("credentials.keys.k1"), "{text}");
        assert!(!text.contains(&short), "{text}");
        let text = message(settings(Some("k1"), &[("k1", "not base64 SECRET-VALUE")]));
        assert!(!text.contains("SECRET-VALUE"), "{text}");
        let text = message(settings(Some("k-1"), &[("k-1", &key())]));
        assert!(text.contains("lowercase letters"), "{text}");
    }

    #[test]
    fn debug_output_shows_ids_only() {
        let secret = key();
        let ring = KeyRing::from_settings(&settings(Some("k1"), &[("k1", &secret)])).unwrap();
        let printed = format!("{ring:?}");
        assert!(printed.contains("k1"), "{printed}");
        assert!(!printed.contains(&secret), "{printed}");
    }

    #[test]
    fn fresh_settings_make_a_usable_ring() {
        let ring = KeyRing::from_settings(&fresh_settings("Demo").unwrap()).unwrap();
        assert_eq!(ring.active_id(), "demo");
    }
}
