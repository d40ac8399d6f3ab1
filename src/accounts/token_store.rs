//! The token store: loads an account's credentials into a [`RequestAuth`] (opening the sealed
//! tokens with the key ring), refreshes OAuth 2.0 tokens (ahead of expiry, or once after a
//! 401) with one refresh at a time per account across every process, persists the rotated
//! pair sealed, and parks an account as `needs_reauth` when X will not take its tokens any
//! more.
//!
//! # Single-flight refresh
//!
//! X's refresh tokens rotate and are single-use: two processes refreshing one account at the
//! same time would spend the token twice, and the loser's `invalid_request` may revoke the
//! whole token family. So a refresh is single-flight per account across all processes:
//! take the account's refresh claim ([`RefreshClaim`]: a committed claim on its credentials
//! row, which no other role can take), re-read the stored tokens (another process may have
//! refreshed them while we waited), refresh, persist the new pair, release, then use it.
//! No transaction and no connection is held across the token endpoint call.
//!
//! Persisting is a compare-and-set (its statement is in `store::credentials`) on the stored
//! refresh token just spent, compared as the sealed text that was read (each seal has a fresh
//! nonce, so equal tokens do not compare equal sealed): new tokens an operator stored
//! meanwhile (`accounts add`) are never overwritten by a pair from the old family.
//!
//! A stored value that cannot be opened (a key this process lacks, another key under the same
//! id, a value altered or copied from another row) is a transient error naming the key id:
//! the account is not parked, so fixing the key configuration is enough.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use super::credentials::Credentials;
use super::keyring::KeyRing;
use super::refresh_claim::{ClaimError, RefreshClaim};
use super::sealed::{TokenColumn, open, seal};
use crate::config::XApiSettings;
use crate::ids::UserId;
use crate::states::{AccountStatus, PauseReason};
use crate::store;
use crate::xapi::RequestAuth;
use crate::xapi::oauth2::{RefreshError, TokenClient, needs_refresh};

/// Extra room in a refresh claim's life beyond the holder's token call, for persisting.
const CLAIM_SLACK: Duration = Duration::from_secs(5);
/// Attempts to persist a freshly rotated pair: losing it spends the account's refresh token.
const PERSIST_ATTEMPTS: u32 = 3;
const PERSIST_RETRY_DELAY: Duration = Duration::from_millis(200);
/// `pause_reason` is for people; keep it short.
const MAX_REASON_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The account is marked `needs_reauth` in the database (with `pause_reason`); its jobs
    /// stay queued until a person stores new tokens.
    #[error("account needs re-authorization: {reason}")]
    NeedsReauth { reason: String },
    /// No account, or no usable credentials stored for it.
    #[error("no credentials stored for the account")]
    NoCredentials,
    /// The token endpoint failed (5xx, timeout, …), another process held the refresh too long,
    /// or the app's OAuth settings are missing or rejected: try later.
    /// Also: the stored tokens cannot be decrypted with the configured keys.
    #[error("could not get a usable token now: {0}")]
    Transient(String),
    #[error("database error while loading or storing credentials")]
    Database(#[from] sqlx::Error),
}

/// Loads credentials and refreshes OAuth 2.0 tokens. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TokenStore {
    pool: PgPool,
    tokens: TokenClient,
    keys: KeyRing,
    refresh_margin: Duration,
    /// How long a refresh claim lives: beyond the token call (at most `request_timeout`,
    /// twice for margin) and the persisting that follows.
    claim_ttl: Duration,
    /// How long a refresher waits for another one's claim: past its expiry.
    claim_wait: Duration,
    consumer_key: String,
    consumer_secret: Option<SecretString>,
}

/// What asked for a refresh; decides, after the lock, whether one is still needed.
enum Trigger<'a> {
    /// The stored token expires within the margin.
    Expiring,
    /// X answered 401 to this access token.
    Rejected(&'a SecretString),
}

struct Stored {
    status: AccountStatus,
    pause_reason: Option<PauseReason>,
    credentials: Credentials,
    /// The refresh token as stored (sealed): what the compare-and-set compares.
    stored_refresh_token: Option<String>,
}

impl TokenStore {
    pub fn new(
        pool: PgPool,
        tokens: TokenClient,
        settings: &XApiSettings,
        keys: KeyRing,
    ) -> TokenStore {
        let claim_ttl = settings.request_timeout.saturating_mul(2) + CLAIM_SLACK;
        TokenStore {
            pool,
            tokens,
            keys,
            refresh_margin: settings.oauth2.refresh_margin,
            claim_ttl,
            claim_wait: claim_ttl + CLAIM_SLACK,
            consumer_key: settings.oauth1.consumer_key.clone(),
            consumer_secret: settings.oauth1.consumer_secret.clone(),
        }
    }

    /// The credentials to sign `user`'s next request with. An OAuth 2.0 token that expires
    /// within `x_api.oauth2.refresh_margin` is refreshed first.
    pub async fn auth_for(&self, user: &UserId) -> Result<RequestAuth, AuthError> {
        let stored = self.load(user).await?;
        refuse_if_parked(&stored)?;
        match stored.credentials {
            Credentials::OAuth2 {
                access_token,
                expires_at,
                ..
            } => {
                if needs_refresh(expires_at, self.refresh_margin, Utc::now()) {
                    self.refresh(user, Trigger::Expiring).await
                } else {
                    Ok(RequestAuth::Bearer(access_token))
                }
            }
            Credentials::OAuth1 {
                token,
                token_secret,
            } => self.oauth1(token, token_secret),
        }
    }

    /// After X answered 401 to `rejected`: refresh once (single-flight), or use the token
    /// another process stored meanwhile. An OAuth 1.0a account, or one without a refresh
    /// token, cannot recover by itself: it is marked `needs_reauth`.
    pub async fn refresh_after_unauthorized(
        &self,
        user: &UserId,
        rejected: &RequestAuth,
    ) -> Result<RequestAuth, AuthError> {
        match rejected {
            RequestAuth::Bearer(token) => self.refresh(user, Trigger::Rejected(token)).await,
            RequestAuth::OAuth1 {
                token: rejected_token,
                ..
            } => {
                let stored = self.load(user).await?;
                refuse_if_parked(&stored)?;
                if let Credentials::OAuth1 {
                    token,
                    token_secret,
                } = stored.credentials
                    && token.expose_secret() != rejected_token.expose_secret()
                {
                    // New tokens were stored since this request was signed: try those.
                    return self.oauth1(token, token_secret);
                }
                Err(self
                    .park(user, "X rejected the OAuth 1.0a token (401)")
                    .await?)
            }
        }
    }

    /// Marks the account `needs_reauth` with `reason`; its jobs stay queued.
    pub async fn mark_needs_reauth(&self, user: &UserId, reason: &str) -> Result<(), sqlx::Error> {
        store::pauses::mark_needs_reauth(&self.pool, user.as_str(), reason).await
    }

    async fn park(&self, user: &UserId, reason: &str) -> Result<AuthError, AuthError> {
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        store::pauses::mark_needs_reauth(&self.pool, user.as_str(), &reason).await?;
        tracing::warn!(account = %user, reason = %reason, "account marked needs_reauth");
        Ok(AuthError::NeedsReauth { reason })
    }

    fn oauth1(
        &self,
        token: SecretString,
        token_secret: SecretString,
    ) -> Result<RequestAuth, AuthError> {
        match &self.consumer_secret {
            Some(consumer_secret) if !self.consumer_key.is_empty() => Ok(RequestAuth::OAuth1 {
                consumer_key: self.consumer_key.clone(),
                consumer_secret: consumer_secret.clone(),
                token,
                token_secret,
            }),
            // The app's settings, not the account, are wrong: do not park the account.
            _ => Err(AuthError::Transient(String::from(
                "x_api.oauth1.consumer_key and consumer_secret must be set for OAuth 1.0a accounts",
            ))),
        }
    }

    /// The single-flight refresh: claim, re-read, decide, refresh, persist, release.
    async fn refresh(&self, user: &UserId, trigger: Trigger<'_>) -> Result<RequestAuth, AuthError> {
        let claim = RefreshClaim::acquire(&self.pool, user, self.claim_ttl, self.claim_wait)
            .await
            .map_err(|e| match e {
                ClaimError::NoCredentials => AuthError::NoCredentials,
                ClaimError::TimedOut => AuthError::Transient(e.to_string()),
                ClaimError::Database(e) => AuthError::Database(e),
            })?;
        let result = self.refresh_claimed(user, trigger).await;
        claim.release().await;
        result
    }

    async fn refresh_claimed(
        &self,
        user: &UserId,
        trigger: Trigger<'_>,
    ) -> Result<RequestAuth, AuthError> {
        let stored = self.load(user).await?;
        refuse_if_parked(&stored)?;
        let stored_refresh_token = stored.stored_refresh_token;
        let (access_token, refresh_token, expires_at) = match stored.credentials {
            Credentials::OAuth2 {
                access_token,
                refresh_token,
                expires_at,
            } => (access_token, refresh_token, expires_at),
            // Re-registered as OAuth 1.0a meanwhile.
            Credentials::OAuth1 {
                token,
                token_secret,
            } => return self.oauth1(token, token_secret),
        };
        // Another process may have refreshed while this one waited for the claim.
        let still_needed = match trigger {
            Trigger::Expiring => needs_refresh(expires_at, self.refresh_margin, Utc::now()),
            Trigger::Rejected(rejected) => access_token.expose_secret() == rejected.expose_secret(),
        };
        if !still_needed {
            tracing::debug!(account = %user, "token already refreshed by another worker");
            return Ok(RequestAuth::Bearer(access_token));
        }
        let (Some(refresh_token), Some(spent)) = (refresh_token, stored_refresh_token) else {
            return Err(self
                .park(
                    user,
                    "the OAuth 2.0 access token expired or was rejected and no refresh token is stored",
                )
                .await?);
        };

        tracing::info!(account = %user, "refreshing OAuth 2.0 access token");
        match self.tokens.refresh(&refresh_token).await {
            Ok(pair) => {
                let new_refresh = pair.refresh_token.unwrap_or_else(|| refresh_token.clone());
                let stored = self
                    .persist(
                        user,
                        &spent,
                        &pair.access_token,
                        &new_refresh,
                        pair.expires_at,
                    )
                    .await?;
                if !stored {
                    // Someone stored other credentials meanwhile: they win over this pair.
                    tracing::warn!(account = %user, "credentials changed during the refresh; using the stored ones");
                    let current = self.load(user).await?;
                    refuse_if_parked(&current)?;
                    return match current.credentials {
                        Credentials::OAuth2 { access_token, .. } => {
                            Ok(RequestAuth::Bearer(access_token))
                        }
                        Credentials::OAuth1 {
                            token,
                            token_secret,
                        } => self.oauth1(token, token_secret),
                    };
                }
                tracing::info!(account = %user, expires_at = ?pair.expires_at, "OAuth 2.0 access token refreshed");
                Ok(RequestAuth::Bearer(pair.access_token))
            }
            Err(RefreshError::Rejected { error, description }) => {
                let reason = match description {
                    Some(description) => {
                        format!("token refresh rejected by X: {error}: {description}")
                    }
                    None => format!("token refresh rejected by X: {error}"),
                };
                Err(self.park(user, &reason).await?)
            }
            Err(e @ RefreshError::ClientRejected { .. }) => {
                tracing::error!(account = %user, error = %e, "token endpoint rejected the app's OAuth 2.0 client");
                Err(AuthError::Transient(e.to_string()))
            }
            Err(RefreshError::Transient(message)) => {
                let still_valid = matches!(trigger, Trigger::Expiring)
                    && expires_at.is_some_and(|at| at > Utc::now());
                tracing::warn!(account = %user, error = %message, still_valid, "token refresh failed; will retry");
                if still_valid {
                    // It expires soon but not yet: use it, and refresh on a later call.
                    Ok(RequestAuth::Bearer(access_token))
                } else {
                    Err(AuthError::Transient(message))
                }
            }
        }
    }

    /// Stores the rotated pair, sealed, if the stored refresh token is still the one just
    /// spent (`spent` is its sealed text as read). Returns whether it was stored. Retried:
    /// losing the new pair would strand the account.
    async fn persist(
        &self,
        user: &UserId,
        spent: &str,
        access: &SecretString,
        refresh: &SecretString,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<bool, AuthError> {
        let sealed = |column, token| {
            seal(&self.keys, user, column, token).map_err(|e| AuthError::Transient(e.to_string()))
        };
        let access = sealed(TokenColumn::OAuth2AccessToken, access)?;
        let refresh = sealed(TokenColumn::OAuth2RefreshToken, refresh)?;
        let mut last_error = None;
        for attempt in 1..=PERSIST_ATTEMPTS {
            if let Some(error) = &last_error {
                tracing::warn!(account = %user, error = %error, attempt, "storing the refreshed token pair failed; retrying");
                tokio::time::sleep(PERSIST_RETRY_DELAY).await;
            }
            match store::credentials::store_refreshed_pair(
                &self.pool,
                user.as_str(),
                spent,
                &access,
                &refresh,
                expires_at,
            )
            .await
            {
                Ok(stored) => return Ok(stored),
                Err(e) => last_error = Some(e),
            }
        }
        let error = last_error.unwrap_or(sqlx::Error::PoolClosed);
        tracing::error!(account = %user, error = %error, "could not store the refreshed token pair; the account will need re-authorization");
        Err(AuthError::Database(error))
    }

    /// The account's status and credentials, the tokens opened with the key ring.
    async fn load(&self, user: &UserId) -> Result<Stored, AuthError> {
        let row = store::credentials::load_credentials(&self.pool, user.as_str()).await?;
        let row = row.ok_or(AuthError::NoCredentials)?;
        let open = |column: TokenColumn, stored: &str| {
            open(&self.keys, user, column, stored).map_err(|e| {
                tracing::error!(account = %user, error = %e, "stored credentials cannot be decrypted");
                AuthError::Transient(e.to_string())
            })
        };
        let credentials = match row.auth_kind.as_str() {
            "oauth2" => {
                let access = row
                    .oauth2_access_token
                    .as_deref()
                    .ok_or(AuthError::NoCredentials)?;
                Credentials::OAuth2 {
                    access_token: open(TokenColumn::OAuth2AccessToken, access)?,
                    refresh_token: row
                        .oauth2_refresh_token
                        .as_deref()
                        .map(|stored| open(TokenColumn::OAuth2RefreshToken, stored))
                        .transpose()?,
                    expires_at: row.oauth2_expires_at,
                }
            }
            "oauth1" => match (
                row.oauth1_token.as_deref(),
                row.oauth1_token_secret.as_deref(),
            ) {
                (Some(token), Some(secret)) => Credentials::OAuth1 {
                    token: open(TokenColumn::OAuth1Token, token)?,
                    token_secret: open(TokenColumn::OAuth1TokenSecret, secret)?,
                },
                _ => return Err(AuthError::NoCredentials),
            },
            _ => return Err(AuthError::NoCredentials),
        };
        Ok(Stored {
            status: row.status,
            pause_reason: row.pause_reason,
            credentials,
            stored_refresh_token: row.oauth2_refresh_token,
        })
    }
}

fn refuse_if_parked(stored: &Stored) -> Result<(), AuthError> {
    if stored.status == AccountStatus::NeedsReauth {
        return Err(AuthError::NeedsReauth {
            reason: stored
                .pause_reason
                .as_ref()
                .map_or_else(|| "marked needs_reauth".to_owned(), |r| r.to_string()),
        });
    }
    Ok(())
}
