//! The per-account refresh claim: a committed claim on the account's row of
//! `followq.account_credentials` (`refresh_claimed_by`, `refresh_claimed_until`), taken and
//! released with one short compare-and-set statement each (in `store::credentials`), so that
//! one process at a time refreshes an account's OAuth 2.0 tokens.
//!
//! # Why a claim column, and not an advisory lock or a row lock
//!
//! A row lock (`SELECT … FOR UPDATE`) needs a transaction held open across the call to the
//! token endpoint, which the project forbids. An advisory lock is open to every role: a
//! service that may only enqueue could take an account's refresh lock and stall the daemon,
//! each waiting refresh holding a pooled connection. The claim is an `UPDATE` of a table the
//! enqueuing role has no privilege on, so no other role can hold it, and nobody waits on a
//! connection: a waiter polls with a fresh short statement every [`POLL`].
//!
//! A claim carries its expiry, so a claimer that died frees the account by itself after the
//! claim's time to live (the token store sets it beyond the longest token call). A claim
//! whose future is dropped is released by a task spawned from `Drop`.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::ids::UserId;
use crate::store;

/// How often a waiting refresher asks for the claim again.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The account has no row in `followq.account_credentials`.
    #[error("no credentials stored for the account")]
    NoCredentials,
    #[error("another worker has been refreshing this account's token for too long")]
    TimedOut,
    #[error("database error while claiming the refresh")]
    Database(#[from] sqlx::Error),
}

/// A held refresh claim. Release it with [`RefreshClaim::release`]; dropping it releases it
/// in the background.
pub struct RefreshClaim {
    pool: PgPool,
    user: UserId,
    holder: String,
    released: bool,
}

impl RefreshClaim {
    /// Takes `user`'s claim for `ttl`, waiting up to `wait` for another holder's claim to be
    /// released or to expire.
    pub async fn acquire(
        pool: &PgPool,
        user: &UserId,
        ttl: Duration,
        wait: Duration,
    ) -> Result<RefreshClaim, ClaimError> {
        let deadline = Instant::now() + wait;
        let holder = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        loop {
            let tried =
                store::credentials::try_refresh_claim(pool, user.as_str(), &holder, ttl).await?;
            if tried.granted {
                return Ok(RefreshClaim {
                    pool: pool.clone(),
                    user: user.clone(),
                    holder,
                    released: false,
                });
            }
            if !tried.credentials_exist {
                return Err(ClaimError::NoCredentials);
            }
            if Instant::now() >= deadline {
                return Err(ClaimError::TimedOut);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Gives the claim back (if it is still this holder's: it may have expired and been taken).
    pub async fn release(mut self) {
        self.released = true;
        if let Err(e) = release(&self.pool, &self.user, &self.holder).await {
            tracing::warn!(account = %self.user, error = %e, "could not release the refresh claim; it expires by itself");
        }
    }
}

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Cancelled mid-refresh: release from a task, as the future that held it is gone.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (pool, user, holder) = (self.pool.clone(), self.user.clone(), self.holder.clone());
            runtime.spawn(async move {
                if let Err(e) = release(&pool, &user, &holder).await {
                    tracing::warn!(account = %user, error = %e, "could not release a cancelled refresh claim; it expires by itself");
                }
            });
        }
    }
}

async fn release(pool: &PgPool, user: &UserId, holder: &str) -> Result<(), sqlx::Error> {
    store::credentials::release_refresh_claim(pool, user.as_str(), holder).await
}
