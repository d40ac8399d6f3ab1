//! Registering an account, or storing new tokens for one already registered.
//!
//! Storing new credentials is how an operator repairs an account the daemon parked as
//! `needs_reauth`: it returns to `active`. Paused and disabled accounts keep their state.
//! Tokens are checked (`credentials::check_token`) and sealed with the active key before
//! any statement runs (they are in `store::credentials`): only ciphertext is ever bound to a
//! statement.

use sqlx::PgPool;

use super::credentials::{Credentials, TokenError};
use super::keyring::KeyRing;
use super::sealed::{SealError, TokenColumn, seal};
use crate::ids::UserId;
use crate::store;
use crate::store::credentials::SealedTokens;

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
    let tokens = match &account.credentials {
        Credentials::OAuth2 {
            access_token,
            refresh_token,
            expires_at,
        } => SealedTokens {
            oauth2_access_token: Some(sealed(TokenColumn::OAuth2AccessToken, access_token)?),
            oauth2_refresh_token: refresh_token
                .as_ref()
                .map(|t| sealed(TokenColumn::OAuth2RefreshToken, t))
                .transpose()?,
            oauth2_expires_at: *expires_at,
            oauth1_token: None,
            oauth1_token_secret: None,
        },
        Credentials::OAuth1 {
            token,
            token_secret,
        } => SealedTokens {
            oauth2_access_token: None,
            oauth2_refresh_token: None,
            oauth2_expires_at: None,
            oauth1_token: Some(sealed(TokenColumn::OAuth1Token, token)?),
            oauth1_token_secret: Some(sealed(TokenColumn::OAuth1TokenSecret, token_secret)?),
        },
    };
    let user_id = account.user_id.as_str();
    let mut tx = pool.begin().await?;
    let previous_status = store::credentials::account_status_for_update(&mut tx, user_id).await?;
    let status = store::credentials::upsert_account(
        &mut tx,
        user_id,
        account.credentials.kind().as_sql(),
        quota_requests,
        quota_period,
    )
    .await?;
    store::credentials::upsert_credentials(&mut tx, user_id, &tokens).await?;
    tx.commit().await?;
    Ok(match previous_status {
        None => Registered::Created,
        Some(previous_status) => Registered::Updated {
            previous_status,
            status,
        },
    })
}
