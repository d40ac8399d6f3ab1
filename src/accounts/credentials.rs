//! The credentials an account signs its requests with: an OAuth 2.0 user token pair or an
//! OAuth 1.0a token and secret. Every token is a secret; nothing here can print one.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

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
}
