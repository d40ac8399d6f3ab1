//! The simulator's tokens: OAuth 2.0 access and refresh tokens (issued, refreshed with
//! rotation, expired, revoked), app-only bearer tokens and OAuth 1.0a tokens, and who an
//! `Authorization` header's token names.

use std::time::Instant;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};

use super::state::{SimState, lock};

/// A fresh pair of user tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTokens {
    pub access_token: String,
    pub refresh_token: String,
}

/// Who an `Authorization` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No header, an unknown token, or an unparsable header.
    Unknown,
    /// A known user token that expired or was revoked.
    Expired { user_id: String },
    /// An app-only bearer token.
    AppOnly,
    /// A known user's OAuth 1.0a token with a signature that does not verify (wrong secret,
    /// another request's signature, an unknown consumer key, an unsupported method).
    BadSignature { user_id: String },
    /// A valid user token.
    User { user_id: String },
}

#[derive(Debug, Clone)]
enum Owner {
    User(String),
    AppOnly,
}

#[derive(Debug, Clone)]
pub(super) struct AccessToken {
    owner: Owner,
    expires_at: Option<Instant>,
    revoked: bool,
}

#[derive(Debug, Clone)]
pub(super) struct RefreshToken {
    user_id: String,
    spent: bool,
}

/// Why the token endpoint refused a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRefused {
    /// Never issued.
    Unknown,
    /// Already used or revoked; `revoked_family` when this reuse revoked the user's tokens.
    Reused {
        user_id: String,
        revoked_family: bool,
    },
}

fn random_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

impl SimState {
    /// Registers `user_id` (if new) and issues it a fresh token pair.
    pub fn add_user(&self, user_id: &str) -> SimTokens {
        let tokens = SimTokens {
            access_token: random_token(),
            refresh_token: random_token(),
        };
        self.add_user_with_tokens(user_id, &tokens.access_token, &tokens.refresh_token);
        tokens
    }

    /// Registers `user_id` (if new) with the given tokens; the access token lives
    /// `access_token_ttl` from now.
    pub fn add_user_with_tokens(&self, user_id: &str, access: &str, refresh: &str) {
        self.user(user_id);
        self.issue(user_id, access, refresh);
    }

    fn issue(&self, user_id: &str, access: &str, refresh: &str) {
        self.access_tokens.insert(
            access.to_owned(),
            AccessToken {
                owner: Owner::User(user_id.to_owned()),
                expires_at: Instant::now().checked_add(self.config.access_token_ttl),
                revoked: false,
            },
        );
        self.refresh_tokens.insert(
            refresh.to_owned(),
            RefreshToken {
                user_id: user_id.to_owned(),
                spent: false,
            },
        );
    }

    pub fn add_app_only_token(&self, token: &str) {
        self.access_tokens.insert(
            token.to_owned(),
            AccessToken {
                owner: Owner::AppOnly,
                expires_at: None,
                revoked: false,
            },
        );
    }

    /// Registers an OAuth 1.0a `oauth_token` and its secret for `user_id`.
    pub fn add_oauth1_user(&self, user_id: &str, token: &str, token_secret: &str) {
        self.user(user_id);
        self.oauth1_tokens.insert(
            token.to_owned(),
            (user_id.to_owned(), token_secret.to_owned()),
        );
    }

    /// Makes every access token of `user_id` expired from now on.
    pub fn expire_access_tokens(&self, user_id: &str) {
        let now = Instant::now();
        for mut token in self.access_tokens.iter_mut() {
            if matches!(&token.owner, Owner::User(u) if u == user_id) {
                token.expires_at = Some(now);
            }
        }
    }

    /// Who a bearer access token belongs to.
    pub fn bearer(&self, token: &str) -> Caller {
        let Some(entry) = self.access_tokens.get(token) else {
            return Caller::Unknown;
        };
        let expired = entry.revoked || entry.expires_at.is_some_and(|at| Instant::now() >= at);
        match (&entry.owner, expired) {
            (Owner::AppOnly, _) => Caller::AppOnly,
            (Owner::User(user_id), true) => Caller::Expired {
                user_id: user_id.clone(),
            },
            (Owner::User(user_id), false) => Caller::User {
                user_id: user_id.clone(),
            },
        }
    }

    /// The user and token secret of an OAuth 1.0a `oauth_token`.
    pub fn oauth1(&self, token: &str) -> Option<(String, String)> {
        self.oauth1_tokens.get(token).map(|entry| entry.clone())
    }

    /// Spends `refresh` and issues a new pair, or says why not. Exactly one of several
    /// concurrent refreshes with the same token succeeds: the check and the spend happen under
    /// the token's shard lock.
    pub fn refresh(&self, refresh: &str) -> Result<(String, SimTokens), RefreshRefused> {
        let (user_id, was_spent) = {
            let Some(mut entry) = self.refresh_tokens.get_mut(refresh) else {
                return Err(RefreshRefused::Unknown);
            };
            let was_spent = entry.spent;
            entry.spent = true;
            (entry.user_id.clone(), was_spent)
            // The guard drops here: issuing below writes to the same map.
        };
        let user = self.user(&user_id);
        if was_spent {
            lock(&user).stats.refresh_reuses += 1;
            let revoked_family = self.config.revoke_family_on_reuse;
            if revoked_family {
                self.revoke_all(&user_id);
            }
            return Err(RefreshRefused::Reused {
                user_id,
                revoked_family,
            });
        }
        let tokens = SimTokens {
            access_token: random_token(),
            refresh_token: random_token(),
        };
        self.issue(&user_id, &tokens.access_token, &tokens.refresh_token);
        lock(&user).stats.refreshes += 1;
        Ok((user_id, tokens))
    }

    /// Revokes every token of `user_id`: the user must authorize the app again.
    fn revoke_all(&self, user_id: &str) {
        for mut token in self.access_tokens.iter_mut() {
            if matches!(&token.owner, Owner::User(u) if u == user_id) {
                token.revoked = true;
            }
        }
        for mut token in self.refresh_tokens.iter_mut() {
            if token.user_id == user_id {
                token.spent = true;
            }
        }
    }
}
