//! Account leases: which daemon alone may send for an account, and for how long.
//!
//! governor keeps its buckets in process memory, so two daemons pacing one account would
//! allow twice its quota. A lease makes the holder's limiter the only one: a daemon leases
//! accounts that have ready jobs, renews its leases in one statement per heartbeat, and
//! releases them when the account runs dry or the daemon stops. Claiming a job re-checks the
//! lease in the same statement (see `queue::claim`), so a daemon whose lease lapsed cannot
//! send. A new holder seeds its limiter from the ledger ([`ledger_seeds`]) before sending.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

/// A freshly leased account, with what its limiter needs.
#[derive(Debug, Clone, FromRow)]
pub struct LeasedAccount {
    pub user_id: String,
    pub quota_requests: Option<i32>,
    pub quota_period_seconds: Option<i32>,
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Leases up to `limit` accounts that have a job ready now and that no other daemon holds
/// (or whose holder's lease ran out). Paused accounts whose pause has ended are included.
pub async fn acquire(
    pool: &PgPool,
    worker_id: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<LeasedAccount>, sqlx::Error> {
    acquire_where(pool, worker_id, lease, limit, None).await
}

/// Leases the named accounts that are free (or already this daemon's) and have a ready job:
/// the NOTIFY path, for a burst of notifications at once.
pub async fn acquire_named(
    pool: &PgPool,
    worker_id: &str,
    accounts: &[String],
    lease: Duration,
) -> Result<Vec<LeasedAccount>, sqlx::Error> {
    let limit = i64::try_from(accounts.len()).unwrap_or(i64::MAX);
    acquire_where(pool, worker_id, lease, limit, Some(accounts)).await
}

/// The one lease statement: among `named` accounts (or any), those that are free, or this
/// daemon's own when named, with a ready job.
async fn acquire_where(
    pool: &PgPool,
    worker_id: &str,
    lease: Duration,
    limit: i64,
    named: Option<&[String]>,
) -> Result<Vec<LeasedAccount>, sqlx::Error> {
    sqlx::query_as::<_, LeasedAccount>(
        r#"
        WITH candidates AS MATERIALIZED (
            SELECT a.user_id
            FROM followq.accounts AS a
            WHERE ($4::text[] IS NULL OR a.user_id = ANY($4))
              AND (a.leased_by IS NULL
                   OR a.lease_expires_at < now()
                   OR ($4::text[] IS NOT NULL AND a.leased_by = $1))
              AND (a.status = 'active' OR (a.status = 'paused' AND a.paused_until <= now()))
              AND EXISTS (
                  SELECT 1 FROM followq.follow_jobs AS j
                  WHERE j.source_user_id = a.user_id
                    AND j.state = 'queued'
                    AND j.run_at <= now())
            LIMIT $3
            FOR UPDATE OF a SKIP LOCKED
        )
        UPDATE followq.accounts AS a
        SET leased_by = $1,
            lease_expires_at = now() + make_interval(secs => $2)
        FROM candidates
        WHERE a.user_id = candidates.user_id
        RETURNING a.user_id, a.quota_requests, a.quota_period_seconds
        "#,
    )
    .bind(worker_id)
    .bind(seconds(lease))
    .bind(limit)
    .bind(named)
    .fetch_all(pool)
    .await
}

/// Extends every lease this daemon still holds among `held`; returns the ones it kept.
/// An account missing from the answer was lost (the lease lapsed and another daemon took it).
pub async fn renew(
    pool: &PgPool,
    worker_id: &str,
    held: &[String],
    lease: Duration,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        UPDATE followq.accounts
        SET lease_expires_at = now() + make_interval(secs => $3)
        WHERE user_id = ANY($2) AND leased_by = $1
        RETURNING user_id
        "#,
    )
    .bind(worker_id)
    .bind(held)
    .bind(seconds(lease))
    .fetch_all(pool)
    .await
}

/// Gives accounts back (parked, or shutting down). Returns the ones released.
pub async fn release(
    pool: &PgPool,
    worker_id: &str,
    accounts: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        UPDATE followq.accounts
        SET leased_by = NULL, lease_expires_at = NULL
        WHERE user_id = ANY($2) AND leased_by = $1
        RETURNING user_id
        "#,
    )
    .bind(worker_id)
    .bind(accounts)
    .fetch_all(pool)
    .await
}

/// Gives back the idle accounts among `accounts` that still have no ready job; returns the
/// ones released. One whose job arrived meanwhile stays leased (its NOTIFY may have been
/// handled while it looked idle).
pub async fn release_idle(
    pool: &PgPool,
    worker_id: &str,
    accounts: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        UPDATE followq.accounts AS a
        SET leased_by = NULL, lease_expires_at = NULL
        WHERE a.user_id = ANY($2) AND a.leased_by = $1
          AND NOT EXISTS (
              SELECT 1 FROM followq.follow_jobs AS j
              WHERE j.source_user_id = a.user_id AND j.state = 'queued' AND j.run_at <= now())
        RETURNING a.user_id
        "#,
    )
    .bind(worker_id)
    .bind(accounts)
    .fetch_all(pool)
    .await
}

/// Gives back every lease this daemon holds.
pub async fn release_all(pool: &PgPool, worker_id: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE followq.accounts SET leased_by = NULL, lease_expires_at = NULL WHERE leased_by = $1",
    )
    .bind(worker_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The ledger's view of one account's recent past, as stored (wall-clock times).
#[derive(Debug, Clone, FromRow)]
pub struct LedgerRow {
    pub account_user_id: String,
    /// Requests sent within the account's quota period (in flight ones included).
    pub requests_in_period: i64,
    /// The latest response's window, if its reset is still ahead.
    pub last_limit: Option<i32>,
    pub last_remaining: Option<i32>,
    pub last_reset_at: Option<DateTime<Utc>>,
    /// Follows made in the last 24 hours, oldest first.
    pub follows_last_24h: Vec<DateTime<Utc>>,
}

/// Reads what the ledger says about `accounts` (each with its quota period in seconds):
/// one statement for a whole batch of newly leased accounts.
pub async fn ledger_seeds(
    pool: &PgPool,
    accounts: &[String],
    periods_seconds: &[f64],
) -> Result<Vec<LedgerRow>, sqlx::Error> {
    sqlx::query_as::<_, LedgerRow>(
        r#"
        SELECT acc.user_id AS account_user_id,
               recent.requests_in_period,
               last.rate_limit_limit AS last_limit,
               last.rate_limit_remaining AS last_remaining,
               last.rate_limit_reset_at AS last_reset_at,
               coalesce(follows.at, '{}') AS follows_last_24h
        FROM UNNEST($1::text[], $2::float8[]) AS acc(user_id, period_seconds)
        CROSS JOIN LATERAL (
            SELECT count(*) AS requests_in_period
            FROM followq.attempts AS t
            WHERE t.account_user_id = acc.user_id
              AND t.sent_at > now() - make_interval(secs => acc.period_seconds)
        ) AS recent
        LEFT JOIN LATERAL (
            SELECT t.rate_limit_limit, t.rate_limit_remaining, t.rate_limit_reset_at
            FROM followq.attempts AS t
            WHERE t.account_user_id = acc.user_id
              AND t.sent_at > now() - make_interval(secs => acc.period_seconds)
              AND t.rate_limit_reset_at > now()
            ORDER BY t.sent_at DESC
            LIMIT 1
        ) AS last ON true
        LEFT JOIN LATERAL (
            SELECT array_agg(t.completed_at ORDER BY t.completed_at) AS at
            FROM followq.attempts AS t
            WHERE t.account_user_id = acc.user_id
              AND t.sent_at > now() - interval '24 hours'
              AND t.outcome = 'succeeded'
        ) AS follows ON true
        "#,
    )
    .bind(accounts)
    .bind(periods_seconds)
    .fetch_all(pool)
    .await
}
