//! The token store: loads an account's credentials into a [`RequestAuth`], refreshes OAuth 2.0
//! tokens (ahead of expiry, or once after a 401) with one refresh at a time per account across
//! every process, persists the rotated pair, and parks an account as `needs_reauth` when X
//! will not take its tokens any more.
//!
//! # Why a session advisory lock on its own connection, polled with `pg_try_advisory_lock`
//!
//! X's refresh tokens rotate and are single-use: two processes refreshing one account at the
//! same time would spend the token twice, and the loser's `invalid_request` may revoke the
//! whole token family. So a refresh is single-flight per account across all processes:
//! take a lock, re-read the stored token (another process may have refreshed it while we
//! waited), refresh, persist the new pair, release, then use it.
//!
//! The lock cannot be a row lock (`SELECT … FOR UPDATE`): that needs a transaction held open
//! across the HTTP call to the token endpoint, which the project forbids. A committed claim
//! column would need a migration, an expiry for claims whose holder died, and a sweeper. A
//! session-level advisory lock needs none of that: it lives on one pooled connection, outside
//! any transaction, while every statement stays short (`pg_try_advisory_lock` is polled every
//! `LOCK_POLL` instead of blocking server-side, up to a deadline of twice the request
//! timeout plus 5 s, after which the caller gets [`AuthError::Transient`]).
//!
//! A session lock outlives a dropped future if its connection goes back to the pool, so the
//! connection is held by a guard (`RefreshLock`) whose `Drop`, unless the lock was released
//! normally, detaches the connection from the pool and drops it: the socket closes, Postgres
//! ends the session and frees the lock. The key is `hashtextextended('followq.oauth2_refresh:'
//! || user_id, 0)`: a user id of 19 digits does not fit a bigint, and a hash collision only
//! serialises two accounts' refreshes.
//!
//! Persisting is a compare-and-set on the refresh token just spent, so new tokens an operator
//! stored meanwhile (`accounts add`) are never overwritten by a pair from the old family.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::pool::PoolConnection;
use sqlx::{PgExecutor, PgPool, Postgres};

use super::credentials::Credentials;
use crate::config::XApiSettings;
use crate::ids::UserId;
use crate::xapi::RequestAuth;
use crate::xapi::oauth2::{RefreshError, TokenClient, needs_refresh};

/// How often a waiting refresher asks for the lock again.
const LOCK_POLL: Duration = Duration::from_millis(50);
/// Extra room in the lock wait beyond the holder's token call.
const LOCK_WAIT_SLACK: Duration = Duration::from_secs(5);
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
    refresh_margin: Duration,
    lock_wait: Duration,
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

/// An account row joined with its credentials. No `Debug`: it holds tokens.
#[derive(sqlx::FromRow)]
struct StoredRow {
    auth_kind: String,
    status: String,
    pause_reason: Option<String>,
    oauth2_access_token: Option<String>,
    oauth2_refresh_token: Option<String>,
    oauth2_expires_at: Option<DateTime<Utc>>,
    oauth1_token: Option<String>,
    oauth1_token_secret: Option<String>,
}

struct Stored {
    status: String,
    pause_reason: Option<String>,
    credentials: Credentials,
}

impl TokenStore {
    pub fn new(pool: PgPool, tokens: TokenClient, settings: &XApiSettings) -> TokenStore {
        TokenStore {
            pool,
            tokens,
            refresh_margin: settings.oauth2.refresh_margin,
            lock_wait: settings.request_timeout.saturating_mul(2) + LOCK_WAIT_SLACK,
            consumer_key: settings.oauth1.consumer_key.clone(),
            consumer_secret: settings.oauth1.consumer_secret.clone(),
        }
    }

    /// The credentials to sign `user`'s next request with. An OAuth 2.0 token that expires
    /// within `x_api.oauth2.refresh_margin` is refreshed first.
    pub async fn auth_for(&self, user: &UserId) -> Result<RequestAuth, AuthError> {
        let stored = load(&self.pool, user).await?;
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
                let stored = load(&self.pool, user).await?;
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
        super::pause::mark_needs_reauth(&self.pool, user.as_str(), reason).await
    }

    async fn park(&self, user: &UserId, reason: &str) -> Result<AuthError, AuthError> {
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        super::pause::mark_needs_reauth(&self.pool, user.as_str(), &reason).await?;
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

    /// The single-flight refresh: lock, re-read, decide, refresh, persist, unlock.
    async fn refresh(&self, user: &UserId, trigger: Trigger<'_>) -> Result<RequestAuth, AuthError> {
        let mut lock = RefreshLock::acquire(&self.pool, user, self.lock_wait).await?;
        let result = self.refresh_locked(&mut lock, user, trigger).await;
        lock.release(user).await;
        result
    }

    async fn refresh_locked(
        &self,
        lock: &mut RefreshLock,
        user: &UserId,
        trigger: Trigger<'_>,
    ) -> Result<RequestAuth, AuthError> {
        let stored = load(lock.connection()?, user).await?;
        refuse_if_parked(&stored)?;
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
        // Another process may have refreshed while this one waited for the lock.
        let still_needed = match trigger {
            Trigger::Expiring => needs_refresh(expires_at, self.refresh_margin, Utc::now()),
            Trigger::Rejected(rejected) => access_token.expose_secret() == rejected.expose_secret(),
        };
        if !still_needed {
            tracing::debug!(account = %user, "token already refreshed by another worker");
            return Ok(RequestAuth::Bearer(access_token));
        }
        let Some(refresh_token) = refresh_token else {
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
                        lock,
                        user,
                        &refresh_token,
                        &pair.access_token,
                        &new_refresh,
                        pair.expires_at,
                    )
                    .await?;
                if !stored {
                    // Someone stored other credentials meanwhile: they win over this pair.
                    tracing::warn!(account = %user, "credentials changed during the refresh; using the stored ones");
                    let current = load(&self.pool, user).await?;
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

    /// Stores the rotated pair if the stored refresh token is still the one just spent.
    /// Returns whether it was stored. Retried: losing the new pair would strand the account.
    async fn persist(
        &self,
        lock: &mut RefreshLock,
        user: &UserId,
        spent: &SecretString,
        access: &SecretString,
        refresh: &SecretString,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<bool, AuthError> {
        let first = match lock.connection() {
            Ok(conn) => store_pair(conn, user, spent, access, refresh, expires_at).await,
            Err(e) => Err(e),
        };
        let mut last_error = match first {
            Ok(stored) => return Ok(stored),
            Err(e) => e,
        };
        for attempt in 2..=PERSIST_ATTEMPTS {
            tracing::warn!(account = %user, error = %last_error, attempt, "storing the refreshed token pair failed; retrying");
            tokio::time::sleep(PERSIST_RETRY_DELAY).await;
            // The lock's connection may be the broken part: retry through the pool.
            match store_pair(&self.pool, user, spent, access, refresh, expires_at).await {
                Ok(stored) => return Ok(stored),
                Err(e) => last_error = e,
            }
        }
        tracing::error!(account = %user, error = %last_error, "could not store the refreshed token pair; the account will need re-authorization");
        Err(AuthError::Database(last_error))
    }
}

fn refuse_if_parked(stored: &Stored) -> Result<(), AuthError> {
    if stored.status == "needs_reauth" {
        return Err(AuthError::NeedsReauth {
            reason: stored
                .pause_reason
                .clone()
                .unwrap_or_else(|| String::from("marked needs_reauth")),
        });
    }
    Ok(())
}

async fn load<'e>(executor: impl PgExecutor<'e>, user: &UserId) -> Result<Stored, AuthError> {
    let row: Option<StoredRow> = sqlx::query_as(
        r#"
        SELECT a.auth_kind, a.status, a.pause_reason,
               c.oauth2_access_token, c.oauth2_refresh_token, c.oauth2_expires_at,
               c.oauth1_token, c.oauth1_token_secret
        FROM followq.accounts AS a
        LEFT JOIN followq.account_credentials AS c ON c.user_id = a.user_id
        WHERE a.user_id = $1
        "#,
    )
    .bind(user.as_str())
    .fetch_optional(executor)
    .await?;
    let row = row.ok_or(AuthError::NoCredentials)?;
    let credentials = match row.auth_kind.as_str() {
        "oauth2" => Credentials::OAuth2 {
            access_token: row
                .oauth2_access_token
                .map(SecretString::from)
                .ok_or(AuthError::NoCredentials)?,
            refresh_token: row.oauth2_refresh_token.map(SecretString::from),
            expires_at: row.oauth2_expires_at,
        },
        "oauth1" => match (row.oauth1_token, row.oauth1_token_secret) {
            (Some(token), Some(secret)) => Credentials::OAuth1 {
                token: SecretString::from(token),
                token_secret: SecretString::from(secret),
            },
            _ => return Err(AuthError::NoCredentials),
        },
        _ => return Err(AuthError::NoCredentials),
    };
    Ok(Stored {
        status: row.status,
        pause_reason: row.pause_reason,
        credentials,
    })
}

async fn store_pair<'e>(
    executor: impl PgExecutor<'e>,
    user: &UserId,
    spent: &SecretString,
    access: &SecretString,
    refresh: &SecretString,
    expires_at: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        r#"
        UPDATE followq.account_credentials
        SET oauth2_access_token = $2,
            oauth2_refresh_token = $3,
            oauth2_expires_at = $4,
            updated_at = now()
        WHERE user_id = $1 AND oauth2_refresh_token = $5
        "#,
    )
    .bind(user.as_str())
    .bind(access.expose_secret())
    .bind(refresh.expose_secret())
    .bind(expires_at)
    .bind(spent.expose_secret())
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A session advisory lock held on one pooled connection; see the module doc.
struct RefreshLock {
    conn: Option<PoolConnection<Postgres>>,
    key: String,
    /// True from the moment a lock request is sent until the lock is known not to be held:
    /// a request cancelled in flight may still have been granted.
    maybe_held: bool,
}

impl RefreshLock {
    async fn acquire(
        pool: &PgPool,
        user: &UserId,
        wait: Duration,
    ) -> Result<RefreshLock, AuthError> {
        let deadline = Instant::now() + wait;
        let mut lock = RefreshLock {
            conn: Some(pool.acquire().await?),
            key: format!("followq.oauth2_refresh:{user}"),
            maybe_held: false,
        };
        let key = lock.key.clone();
        loop {
            lock.maybe_held = true;
            let granted: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(&key)
                    .fetch_one(lock.connection()?)
                    .await?;
            if granted {
                return Ok(lock);
            }
            lock.maybe_held = false;
            if Instant::now() >= deadline {
                return Err(AuthError::Transient(String::from(
                    "another worker has been refreshing this account's token for too long",
                )));
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    fn connection(&mut self) -> Result<&mut sqlx::PgConnection, sqlx::Error> {
        // `conn` is only taken in `Drop`.
        self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// Unlocks and returns the connection to the pool; on failure `Drop` closes it instead.
    async fn release(mut self, user: &UserId) {
        let key = self.key.clone();
        let unlocked = match self.connection() {
            Ok(conn) => {
                sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                    .bind(&key)
                    .fetch_one(conn)
                    .await
                    .unwrap_or(false)
            }
            Err(_) => false,
        };
        if unlocked {
            self.maybe_held = false;
        } else {
            tracing::warn!(account = %user, "could not release the refresh lock; closing its connection");
        }
    }
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        if self.maybe_held
            && let Some(conn) = self.conn.take()
        {
            // Out of the pool and closed: the server ends the session and frees the lock.
            drop(conn.detach());
        }
    }
}
