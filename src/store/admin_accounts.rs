//! What operators read and change of accounts (`followq accounts list|show|pause|resume|
//! disable`, through `admin::accounts`): the account row, whether credentials are stored, its
//! job counts and recent requests, and the guarded status changes.
//!
//! Tokens are never read here: [`credentials_info`] asks `followq.account_credentials` only
//! whether credentials exist, of which kind, whether a refresh token is stored and when the
//! access token expires.
//!
//! Each status change is one `UPDATE … WHERE <allowed states>` that locks the account row
//! `FOR NO KEY UPDATE` (which does not wait for the key-share locks an enqueuing service's
//! foreign-key checks hold until it commits) and returns the status it found; no row means the
//! account is not there or not in an allowed state, and the caller reads the row to say which.

use super::Statement;
use crate::states::{AccountStatus, PauseReason};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

/// One line of `accounts list`.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct AccountSummary {
    pub user_id: String,
    pub auth_kind: String,
    pub status: AccountStatus,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<PauseReason>,
    /// The daemon holding the account's lease, while the lease runs.
    pub leased_by: Option<String>,
    pub queued: i64,
    pub running: i64,
}

const LIST_ACCOUNTS: &str = r#"
        SELECT a.user_id, a.auth_kind, a.status, a.paused_until, a.pause_reason,
               CASE WHEN a.lease_expires_at > now() THEN a.leased_by END AS leased_by,
               coalesce(j.queued, 0) AS queued, coalesce(j.running, 0) AS running
        FROM followq.accounts AS a
        LEFT JOIN LATERAL (
            -- A job in flight stays queued in the table: counted as running, not queued.
            SELECT count(*) - count(f.job_id) AS queued, count(f.job_id) AS running
            FROM followq.follow_jobs AS j
            LEFT JOIN followq.jobs_in_flight AS f ON f.job_id = j.id
            WHERE j.source_user_id = a.user_id AND j.state = 'queued'
        ) AS j ON true
        WHERE $1::text IS NULL OR a.status = $1
        ORDER BY length(a.user_id), a.user_id
        "#;

/// Every account, or those of one `status` (as stored in `accounts.status`), in user id
/// order, with its queued and running jobs.
pub async fn list_accounts(
    executor: impl PgExecutor<'_>,
    status: Option<&str>,
) -> Result<Vec<AccountSummary>, sqlx::Error> {
    sqlx::query_as::<_, AccountSummary>(LIST_ACCOUNTS)
        .bind(status)
        .fetch_all(executor)
        .await
}

/// The account row as operators see it.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct AccountRow {
    pub user_id: String,
    pub auth_kind: String,
    pub status: AccountStatus,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<PauseReason>,
    pub quota_requests: Option<i32>,
    pub quota_period_seconds: Option<i32>,
    pub leased_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ACCOUNT: &str = r#"
        SELECT user_id, auth_kind, status, paused_until, pause_reason, quota_requests,
               quota_period_seconds, leased_by, lease_expires_at, created_at, updated_at
        FROM followq.accounts WHERE user_id = $1
        "#;

/// The account's row; `None` when it is not registered.
pub async fn account(
    executor: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as::<_, AccountRow>(ACCOUNT)
        .bind(user_id)
        .fetch_optional(executor)
        .await
}

/// What is known about the account's credentials, never the tokens themselves.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct CredentialsInfo {
    /// `oauth2` or `oauth1`: which tokens are stored.
    pub kind: String,
    pub has_refresh_token: bool,
    pub oauth2_expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const CREDENTIALS_INFO: &str = r#"
        SELECT CASE WHEN oauth2_access_token IS NOT NULL THEN 'oauth2' ELSE 'oauth1' END AS kind,
               oauth2_refresh_token IS NOT NULL AS has_refresh_token,
               oauth2_expires_at, updated_at
        FROM followq.account_credentials WHERE user_id = $1
        "#;

/// What is known about the account's credentials; `None` when none are stored. Only
/// `IS NOT NULL` tests on the token columns: no token leaves the database.
pub async fn credentials_info(
    executor: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Option<CredentialsInfo>, sqlx::Error> {
    sqlx::query_as::<_, CredentialsInfo>(CREDENTIALS_INFO)
        .bind(user_id)
        .fetch_optional(executor)
        .await
}

/// Job counts of one account.
#[derive(Debug, Clone, Default, FromRow, Serialize, PartialEq, Eq)]
pub struct AccountJobs {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

const ACCOUNT_JOBS: &str = r#"
        SELECT count(*) FILTER (WHERE state = 'queued') - count(f.job_id) AS queued,
               count(f.job_id) AS running,
               count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE state = 'failed') AS failed,
               count(*) FILTER (WHERE state = 'cancelled') AS cancelled
        FROM followq.follow_jobs AS j
        LEFT JOIN followq.jobs_in_flight AS f ON f.job_id = j.id
        WHERE j.source_user_id = $1
        "#;

/// The account's jobs by state; a job in flight counts as running, not queued.
pub async fn account_jobs(
    executor: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<AccountJobs, sqlx::Error> {
    sqlx::query_as::<_, AccountJobs>(ACCOUNT_JOBS)
        .bind(user_id)
        .fetch_one(executor)
        .await
}

/// Requests the ledger holds for the account.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct AccountRequests {
    pub last_15_minutes: i64,
    pub last_24_hours: i64,
    pub last_sent_at: Option<DateTime<Utc>>,
}

const ACCOUNT_REQUESTS: &str = r#"
        SELECT count(*) FILTER (WHERE sent_at > now() - interval '15 minutes') AS last_15_minutes,
               count(*) AS last_24_hours,
               max(sent_at) AS last_sent_at
        FROM followq.attempts
        WHERE account_user_id = $1 AND sent_at > now() - interval '24 hours'
        "#;

/// The requests the ledger holds for the account in the last 15 minutes and 24 hours.
pub async fn account_requests(
    executor: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<AccountRequests, sqlx::Error> {
    sqlx::query_as::<_, AccountRequests>(ACCOUNT_REQUESTS)
        .bind(user_id)
        .fetch_one(executor)
        .await
}

const PAUSE: &str = r#"
        UPDATE followq.accounts AS a
        SET status = 'paused', paused_until = $2, pause_reason = 'operator',
            leased_by = NULL, lease_expires_at = NULL, updated_at = now()
        FROM (SELECT user_id, status FROM followq.accounts WHERE user_id = $1 FOR NO KEY UPDATE) AS before
        WHERE a.user_id = before.user_id AND a.status IN ('active', 'paused', 'disabled')
        RETURNING before.status
        "#;

/// An operator's pause until `until`, from active, paused or disabled, which also drops the
/// account's lease. Returns the status before; `None` when nothing matched.
pub async fn pause(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    until: DateTime<Utc>,
) -> Result<Option<AccountStatus>, sqlx::Error> {
    sqlx::query_scalar(PAUSE)
        .bind(user_id)
        .bind(until)
        .fetch_optional(executor)
        .await
}

/// The row before [`resume`] changed it.
#[derive(Debug, FromRow)]
pub struct ResumedFrom {
    pub status: AccountStatus,
    pub updated_at: DateTime<Utc>,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<PauseReason>,
    pub now: DateTime<Utc>,
}

const RESUME: &str = r#"
        UPDATE followq.accounts AS a
        SET status = 'active', paused_until = NULL, pause_reason = NULL, updated_at = now()
        FROM (SELECT user_id, status, updated_at, paused_until, pause_reason
              FROM followq.accounts WHERE user_id = $1 FOR NO KEY UPDATE) AS before
        WHERE a.user_id = before.user_id
          AND (a.status IN ('paused', 'disabled')
               OR (a.status = 'needs_reauth' AND $2))
        RETURNING before.status, before.updated_at, before.paused_until, before.pause_reason,
                  -- now(), as set above: Citus refuses a function that is not immutable here.
                  a.updated_at AS now
        "#;

/// Makes a paused or disabled account active, and a needs_reauth one when
/// `has_credentials`. Returns the row before; `None` when nothing matched.
pub async fn resume(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    has_credentials: bool,
) -> Result<Option<ResumedFrom>, sqlx::Error> {
    sqlx::query_as(RESUME)
        .bind(user_id)
        .bind(has_credentials)
        .fetch_optional(executor)
        .await
}

const DISABLE: &str = r#"
        UPDATE followq.accounts AS a
        SET status = 'disabled', paused_until = NULL, pause_reason = NULL,
            leased_by = NULL, lease_expires_at = NULL, updated_at = now()
        FROM (SELECT user_id, status FROM followq.accounts WHERE user_id = $1 FOR NO KEY UPDATE) AS before
        WHERE a.user_id = before.user_id AND a.status IN ('active', 'paused', 'needs_reauth')
        RETURNING before.status
        "#;

/// Disables an active, paused or needs_reauth account and drops its lease. Returns the
/// status before; `None` when nothing matched.
pub async fn disable(
    executor: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Option<AccountStatus>, sqlx::Error> {
    sqlx::query_scalar(DISABLE)
        .bind(user_id)
        .fetch_optional(executor)
        .await
}

const QUEUED_JOBS: &str =
    "SELECT count(*) FROM followq.follow_jobs WHERE source_user_id = $1 AND state = 'queued'";

/// How many of the account's jobs are queued.
pub async fn queued_jobs(executor: impl PgExecutor<'_>, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(QUEUED_JOBS)
        .bind(user_id)
        .fetch_one(executor)
        .await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "admin_accounts::list_accounts",
        sql: LIST_ACCOUNTS,
    },
    Statement {
        name: "admin_accounts::account",
        sql: ACCOUNT,
    },
    Statement {
        name: "admin_accounts::credentials_info",
        sql: CREDENTIALS_INFO,
    },
    Statement {
        name: "admin_accounts::account_jobs",
        sql: ACCOUNT_JOBS,
    },
    Statement {
        name: "admin_accounts::account_requests",
        sql: ACCOUNT_REQUESTS,
    },
    Statement {
        name: "admin_accounts::pause",
        sql: PAUSE,
    },
    Statement {
        name: "admin_accounts::resume",
        sql: RESUME,
    },
    Statement {
        name: "admin_accounts::disable",
        sql: DISABLE,
    },
    Statement {
        name: "admin_accounts::queued_jobs",
        sql: QUEUED_JOBS,
    },
];
