//! Registering an account, or storing new tokens for one already registered.
//!
//! Storing new credentials is how an operator repairs an account the daemon parked as
//! `needs_reauth`: it returns to `active`. Paused and disabled accounts keep their state.
//! Tokens are checked (`credentials::check_token`) and sealed with the active key before
//! any SQL runs: only ciphertext is ever bound to a statement.

use sqlx::PgPool;

use super::credentials::{Credentials, TokenError};
use super::keyring::KeyRing;
use super::sealed::{SealError, TokenColumn, seal};
use crate::ids::UserId;

/// A per-account quota override (X's tiers differ: 50, 5 or 1 per 15 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub requests: u32,
    pub period_seconds: u32,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub user_id: UserId,
    pub credentials: Credentials,
    /// `None` keeps the configured quota (or, for an existing account, its current override).
    pub quota: Option<Quota>,
}

/// What [`register`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new account.
    Created,
    /// The account existed; its credentials were replaced. `previous_status` is what it was
    /// before, `status` what it is now (needs_reauth becomes active).
    Updated {
        previous_status: String,
        status: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("quota must be at least 1 request per at least 1 second")]
    BadQuota,
    #[error("quota value {0} is too large")]
    QuotaTooLarge(u32),
    #[error(transparent)]
    BadToken(#[from] TokenError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("database error while registering the account")]
    Database(#[from] sqlx::Error),
}

fn quota_columns(quota: Option<Quota>) -> Result<(Option<i32>, Option<i32>), AccountError> {
    let Some(quota) = quota else {
        return Ok((None, None));
    };
    if quota.requests == 0 || quota.period_seconds == 0 {
        return Err(AccountError::BadQuota);
    }
    let to_i32 = |v: u32| i32::try_from(v).map_err(|_| AccountError::QuotaTooLarge(v));
    Ok((
        Some(to_i32(quota.requests)?),
        Some(to_i32(quota.period_seconds)?),
    ))
}

/// Creates the account or replaces its credentials, in one short transaction.
pub async fn register(
    pool: &PgPool,
    keys: &KeyRing,
    account: &NewAccount,
) -> Result<Registered, AccountError> {
    let (quota_requests, quota_period) = quota_columns(account.quota)?;
    account.credentials.check()?;
    let user = &account.user_id;
    let sealed = |column, token| seal(keys, user, column, token);
    let (access, refresh, expires_at, token, token_secret) = match &account.credentials {
        Credentials::OAuth2 {
            access_token,
            refresh_token,
            expires_at,
        } => (
            Some(sealed(TokenColumn::OAuth2AccessToken, access_token)?),
            refresh_token
                .as_ref()
                .map(|t| sealed(TokenColumn::OAuth2RefreshToken, t))
                .transpose()?,
            *expires_at,
            None,
            None,
        ),
        Credentials::OAuth1 {
            token,
            token_secret,
        } => (
            None,
            None,
            None,
            Some(sealed(TokenColumn::OAuth1Token, token)?),
            Some(sealed(TokenColumn::OAuth1TokenSecret, token_secret)?),
        ),
    };
    let mut tx = pool.begin().await?;

    // FOR NO KEY UPDATE: it does not wait for the key-share locks that enqueueing services'
    // foreign-key checks take on the account row.
    let previous_status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM followq.accounts WHERE user_id = $1 FOR NO KEY UPDATE",
    )
    .bind(account.user_id.as_str())
    .fetch_optional(&mut *tx)
    .await?;

    let status: String = sqlx::query_scalar(
        r#"
        INSERT INTO followq.accounts AS a (user_id, auth_kind, quota_requests, quota_period_seconds)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (user_id) DO UPDATE SET
            auth_kind = EXCLUDED.auth_kind,
            quota_requests = coalesce(EXCLUDED.quota_requests, a.quota_requests),
            quota_period_seconds = coalesce(EXCLUDED.quota_period_seconds, a.quota_period_seconds),
            status = CASE WHEN a.status = 'needs_reauth' THEN 'active' ELSE a.status END,
            paused_until = CASE WHEN a.status = 'needs_reauth' THEN NULL ELSE a.paused_until END,
            pause_reason = CASE WHEN a.status = 'needs_reauth' THEN NULL ELSE a.pause_reason END,
            updated_at = now()
        RETURNING a.status
        "#,
    )
    .bind(account.user_id.as_str())
    .bind(account.credentials.kind().as_sql())
    .bind(quota_requests)
    .bind(quota_period)
    .fetch_one(&mut *tx)
    .await?;

    // The parameters again rather than EXCLUDED.*: reading EXCLUDED needs SELECT on the token
    // columns, which the registering role (deploy/roles.sql) does not have.
    sqlx::query(
        r#"
        INSERT INTO followq.account_credentials AS c
            (user_id, oauth2_access_token, oauth2_refresh_token, oauth2_expires_at,
             oauth1_token, oauth1_token_secret)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (user_id) DO UPDATE SET
            oauth2_access_token = $2,
            oauth2_refresh_token = $3,
            oauth2_expires_at = $4,
            oauth1_token = $5,
            oauth1_token_secret = $6,
            updated_at = now()
        "#,
    )
    .bind(account.user_id.as_str())
    .bind(access)
    .bind(refresh)
    .bind(expires_at)
    .bind(token)
    .bind(token_secret)
    .execute(&mut *tx)
    .await?;

    tx.commit().await?;
    Ok(match previous_status {
        None => Registered::Created,
        Some(previous_status) => Registered::Updated {
            previous_status,
            status,
        },
    })
}
