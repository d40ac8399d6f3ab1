//! The credentials an account signs its requests with: an OAuth 2.0 user token pair or an
//! OAuth 1.0a token and secret, and what a token must look like to be stored. Every token is
//! a secret; nothing here can print one.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::sealed::SEALED_PREFIX;

/// The longest token accepted. X's tokens are around a hundred characters; the bound keeps a
/// pasted file or a runaway answer out of the database and out of every request header.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token cannot be stored. Says where and what, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{name} is empty")]
    Empty { name: &'static str },
    #[error("{name} is {len} bytes long; tokens are at most {MAX_TOKEN_BYTES}")]
    TooLong { name: &'static str, len: usize },
    #[error("{name} has {what} at character {position}: a token is printable ASCII without spaces")]
    BadCharacter {
        name: &'static str,
        what: &'static str,
        position: usize,
    },
    #[error("{name} is an encrypted value copied from the database, not a token")]
    Sealed { name: &'static str },
}

/// Checks that `token` can be stored and sent in a header: 1 to [`MAX_TOKEN_BYTES`] printable
/// ASCII characters (no space, newline or other control character), and not a sealed value.
pub fn check_token(name: &'static str, token: &SecretString) -> Result<(), TokenError> {
    let text = token.expose_secret();
    if text.is_empty() {
        return Err(TokenError::Empty { name });
    }
    if text.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong {
            name,
            len: text.len(),
        });
    }
    if let Some((index, c)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_graphic())
    {
        let what = match c {
            '\n' | '\r' => "a line break",
            ' ' | '\t' => "a space",
            c if c.is_control() => "a control character",
            _ => "a non-ASCII character",
        };
        return Err(TokenError::BadCharacter {
            name,
            what,
            position: index + 1,
        });
    }
    if text.starts_with(SEALED_PREFIX) {
        return Err(TokenError::Sealed { name });
    }
    Ok(())
}

/// Which scheme an account authenticates with (`followq.accounts.auth_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    OAuth2,
    OAuth1,
}

impl AuthKind {
    pub fn as_sql(self) -> &'static str {
        match self {
            AuthKind::OAuth2 => "oauth2",
            AuthKind::OAuth1 => "oauth1",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Credentials {
    /// OAuth 2.0 user context (Authorization Code with PKCE).
    OAuth2 {
        access_token: SecretString,
        /// Present when the app was granted `offline.access`.
        refresh_token: Option<SecretString>,
        /// When the access token stops working; `None` if unknown.
        expires_at: Option<DateTime<Utc>>,
    },
    /// OAuth 1.0a user context. These tokens do not expire.
    OAuth1 {
        token: SecretString,
        token_secret: SecretString,
    },
}

impl Credentials {
    pub fn kind(&self) -> AuthKind {
        match self {
            Credentials::OAuth2 { .. } => AuthKind::OAuth2,
            Credentials::OAuth1 { .. } => AuthKind::OAuth1,
        }
    }

    /// Checks every token with [`check_token`], named as in the token endpoint's answer.
    pub fn check(&self) -> Result<(), TokenError> {
        match self {
            Credentials::OAuth2 {
                access_token,
                refresh_token,
                ..
            } => {
                check_token("access_token", access_token)?;
                if let Some(refresh_token) = refresh_token {
                    check_token("refresh_token", refresh_token)?;
                }
                Ok(())
            }
            Credentials::OAuth1 {
                token,
                token_secret,
            } => {
                check_token("oauth_token", token)?;
                check_token("oauth_token_secret", token_secret)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_token() {
        let credentials = Credentials::OAuth2 {
            access_token: SecretString::from("access-SECRET-1"),
            refresh_token: Some(SecretString::from("refresh-SECRET-2")),
            expires_at: None,
        };
        let printed = format!("{credentials:?}");
        assert!(!printed.contains("SECRET"), "{printed}");
        let credentials = Credentials::OAuth1 {
            token: SecretString::from("token-SECRET-3"),
            token_secret: SecretString::from("secret-SECRET-4"),
        };
        let printed = format!("{credentials:?}");
        assert!(!printed.contains("SECRET"), "{printed}");
    }

    fn check(text: &str) -> Result<(), TokenError> {
        check_token("access_token", &SecretString::from(text))
    }

    #[test]
    fn usable_tokens_pass() {
        check("VGhpcyBpcyBhbiBleGFtcGxl:MTYxNjE3ODk3NzU3NDoxOjE6YXQ6MQ").unwrap();
        check("1234567890-AbCdEfGhIjKlMnOpQrStUvWxYz").unwrap();
        check(&"a".repeat(MAX_TOKEN_BYTES)).unwrap();
    }

    #[test]
    fn empty_long_multiline_and_sealed_tokens_are_refused_without_the_token() {
        assert_eq!(
            check(""),
            Err(TokenError::Empty {
                name: "access_token"
            })
        );
        let long = "S".repeat(3 * 1024 * 1024);
        let error = check(&long).unwrap_err();
        assert!(matches!(error, TokenError::TooLong { len, .. } if len == long.len()));
        for (token, what, position) in [
            ("SECRET\nmore", "a line break", 7),
            ("SECRET ", "a space", 7),
            ("SE\u{0}CRET", "a control character", 3),
            ("SECRÉT", "a non-ASCII character", 5),
        ] {
            let error = check(token).unwrap_err();
            assert_eq!(
                error,
                TokenError::BadCharacter {
                    name: "access_token",
                    what,
                    position
                }
            );
            assert!(!error.to_string().contains("SECRET"), "{error}");
        }
        assert!(matches!(
            check("followq:v1:k1:AAAA"),
            Err(TokenError::Sealed { .. })
        ));
    }
}
