//! Accounts for operators: list, show, pause, resume, disable.
//!
//! Tokens are never read here: `show` asks `followq.account_credentials` only whether
//! credentials exist, of which kind, whether a refresh token is stored and when the access
//! token expires.
//!
//! Allowed changes (anything else is refused with the account's current state):
//!
//! | command | from | to |
//! | --- | --- | --- |
//! | pause | active, paused, disabled | paused (`operator`) until a time, or indefinitely |
//! | resume | paused, disabled | active |
//! | resume | needs_reauth, with credentials stored | active |
//! | disable | active, paused, needs_reauth | disabled |
//!
//! Each change locks the account row `FOR NO KEY UPDATE`, which does not wait for the
//! key-share locks an enqueuing service's foreign-key checks hold until it commits.
//!
//! `pause` refuses a needs_reauth account: the pause would hide that it needs new tokens.
//! `pause` and `disable` also drop the account's lease, so the daemon holding it lets go at
//! its next heartbeat instead of asking for jobs it may not claim; no daemon leases it again
//! until it is resumed (or the pause ends). A request already in flight still completes and
//! is recorded.

use std::fmt;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};

use crate::ids::UserId;

/// What an indefinite operator pause stores in `paused_until` (the schema needs a time).
pub fn indefinitely() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// An account status, as stored in `accounts.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Paused,
    NeedsReauth,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown account status {0:?}: expected active, paused, needs_reauth or disabled")]
pub struct AccountStatusError(String);

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Paused => "paused",
            AccountStatus::NeedsReauth => "needs_reauth",
            AccountStatus::Disabled => "disabled",
        }
    }
}

impl std::str::FromStr for AccountStatus {
    type Err = AccountStatusError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        [
            AccountStatus::Active,
            AccountStatus::Paused,
            AccountStatus::NeedsReauth,
            AccountStatus::Disabled,
        ]
        .into_iter()
        .find(|status| status.as_str() == raw)
        .ok_or_else(|| AccountStatusError(raw.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("account {0} is not registered")]
    NotFound(UserId),
    #[error("account {user_id} is {status}: {hint}")]
    WrongState {
        user_id: UserId,
        status: String,
        hint: &'static str,
    },
    #[error(
        "account {0} needs re-authorization and has no credentials stored: store tokens with `followq accounts add --user-id {0}`"
    )]
    NoCredentials(UserId),
    #[error("the pause must end in the future (got {0})")]
    PauseInPast(DateTime<Utc>),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// One line of `accounts list`.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct AccountSummary {
    pub user_id: String,
    pub auth_kind: String,
    pub status: String,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
    /// The daemon holding the account's lease, while the lease runs.
    pub leased_by: Option<String>,
    pub queued: i64,
    pub running: i64,
}

/// `accounts list [--status S]`, in user id order.
pub async fn list(
    pool: &PgPool,
    status: Option<AccountStatus>,
) -> Result<Vec<AccountSummary>, AccountsError> {
    let rows = sqlx::query_as::<_, AccountSummary>(
        r#"
        SELECT a.user_id, a.auth_kind, a.status, a.paused_until, a.pause_reason,
               CASE WHEN a.lease_expires_at > now() THEN a.leased_by END AS leased_by,
               coalesce(j.queued, 0) AS queued, coalesce(j.running, 0) AS running
        FROM followq.accounts AS a
        LEFT JOIN LATERAL (
            -- A job in flight stays queued in the table: counted as running, not queued.
            SELECT count(*) - count(f.job_id) AS queued, count(f.job_id) AS running
            FROM followq.follow_jobs AS j
            LEFT JOIN followq.jobs_in_flight AS f ON f.job_id = j.id
            WHERE j.source_user_id = a.user_id AND j.state IN ('queued', 'running')
        ) AS j ON true
        WHERE $1::text IS NULL OR a.status = $1
        ORDER BY length(a.user_id), a.user_id
        "#,
    )
    .bind(status.map(AccountStatus::as_str))
    .fetch_all(pool)
    .await?;
    Ok(rows)
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

/// The account row as operators see it.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct AccountRow {
    pub user_id: String,
    pub auth_kind: String,
    pub status: String,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
    pub quota_requests: Option<i32>,
    pub quota_period_seconds: Option<i32>,
    pub leased_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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

/// Requests the ledger holds for the account.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct AccountRequests {
    pub last_15_minutes: i64,
    pub last_24_hours: i64,
    pub last_sent_at: Option<DateTime<Utc>>,
}

/// `accounts show ID`.
#[derive(Debug, Clone, Serialize)]
pub struct AccountDetail {
    pub account: AccountRow,
    /// `None`: no credentials stored.
    pub credentials: Option<CredentialsInfo>,
    pub jobs: AccountJobs,
    pub requests: AccountRequests,
}

async fn fetch_account(pool: &PgPool, user_id: &UserId) -> Result<AccountRow, AccountsError> {
    sqlx::query_as::<_, AccountRow>(
        r#"
        SELECT user_id, auth_kind, status, paused_until, pause_reason, quota_requests,
               quota_period_seconds, leased_by, lease_expires_at, created_at, updated_at
        FROM followq.accounts WHERE user_id = $1
        "#,
    )
    .bind(user_id.as_str())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| AccountsError::NotFound(user_id.clone()))
}

async fn fetch_credentials(
    pool: &PgPool,
    user_id: &UserId,
) -> Result<Option<CredentialsInfo>, sqlx::Error> {
    // Only IS NOT NULL tests on the token columns: no token leaves the database.
    sqlx::query_as::<_, CredentialsInfo>(
        r#"
        SELECT CASE WHEN oauth2_access_token IS NOT NULL THEN 'oauth2' ELSE 'oauth1' END AS kind,
               oauth2_refresh_token IS NOT NULL AS has_refresh_token,
               oauth2_expires_at, updated_at
        FROM followq.account_credentials WHERE user_id = $1
        "#,
    )
    .bind(user_id.as_str())
    .fetch_optional(pool)
    .await
}

/// `accounts show ID`.
pub async fn show(pool: &PgPool, user_id: &UserId) -> Result<AccountDetail, AccountsError> {
    let account = fetch_account(pool, user_id).await?;
    let credentials = fetch_credentials(pool, user_id).await?;
    let jobs = sqlx::query_as::<_, AccountJobs>(
        r#"
        SELECT count(*) FILTER (WHERE state IN ('queued', 'running')) - count(f.job_id) AS queued,
               count(f.job_id) AS running,
               count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE state = 'failed') AS failed,
               count(*) FILTER (WHERE state = 'cancelled') AS cancelled
        FROM followq.follow_jobs AS j
        LEFT JOIN followq.jobs_in_flight AS f ON f.job_id = j.id
        WHERE j.source_user_id = $1
        "#,
    )
    .bind(user_id.as_str())
    .fetch_one(pool)
    .await?;
    let requests = sqlx::query_as::<_, AccountRequests>(
        r#"
        SELECT count(*) FILTER (WHERE sent_at > now() - interval '15 minutes') AS last_15_minutes,
               count(*) AS last_24_hours,
               max(sent_at) AS last_sent_at
        FROM followq.attempts
        WHERE account_user_id = $1 AND sent_at > now() - interval '24 hours'
        "#,
    )
    .bind(user_id.as_str())
    .fetch_one(pool)
    .await?;
    Ok(AccountDetail {
        account,
        credentials,
        jobs,
        requests,
    })
}

/// An account whose status changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusChange {
    pub user_id: String,
    pub from: String,
    pub to: String,
    /// For a pause: until when.
    pub until: Option<DateTime<Utc>>,
    /// Something the operator should know about the change.
    pub note: Option<String>,
}

impl fmt::Display for StatusChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account {}: {} -> {}", self.user_id, self.from, self.to)?;
        if let Some(until) = self.until {
            if super::why::is_indefinite(until) {
                write!(f, " until resumed")?;
            } else {
                write!(f, " until {}", until.format("%Y-%m-%d %H:%M:%S UTC"))?;
            }
        }
        if let Some(note) = &self.note {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

/// Runs a guarded status UPDATE (`$1` the user id, plus its own binds) that returns the
/// previous status; on no match, says why from the current row.
async fn guarded(
    pool: &PgPool,
    user_id: &UserId,
    updated: Option<String>,
    hint: &'static str,
) -> Result<String, AccountsError> {
    match updated {
        Some(from) => Ok(from),
        None => {
            let account = fetch_account(pool, user_id).await?;
            Err(AccountsError::WrongState {
                user_id: user_id.clone(),
                status: account.status,
                hint,
            })
        }
    }
}

/// `accounts pause ID [--for D | --until T]`: an operator pause, which also stops the
/// daemon holding the account from claiming more jobs. `None` pauses until resumed.
pub async fn pause(
    pool: &PgPool,
    user_id: &UserId,
    until: Option<DateTime<Utc>>,
) -> Result<StatusChange, AccountsError> {
    let until = until.unwrap_or_else(indefinitely);
    if until <= Utc::now() {
        return Err(AccountsError::PauseInPast(until));
    }
    let updated: Option<String> = sqlx::query_scalar(
        r#"
        UPDATE followq.accounts AS a
        SET status = 'paused', paused_until = $2, pause_reason = 'operator',
            leased_by = NULL, lease_expires_at = NULL, updated_at = now()
        FROM (SELECT user_id, status FROM followq.accounts WHERE user_id = $1 FOR NO KEY UPDATE) AS before
        WHERE a.user_id = before.user_id AND a.status IN ('active', 'paused', 'disabled')
        RETURNING before.status
        "#,
    )
    .bind(user_id.as_str())
    .bind(until)
    .fetch_optional(pool)
    .await?;
    let from = guarded(
        pool,
        user_id,
        updated,
        "store new tokens with `followq accounts add` first; a pause would hide that it needs them",
    )
    .await?;
    Ok(StatusChange {
        user_id: user_id.to_string(),
        from,
        to: "paused".into(),
        until: Some(until),
        note: None,
    })
}

/// `accounts pause ID --for D`: until now + `duration`.
pub fn until_after(duration: std::time::Duration) -> Option<DateTime<Utc>> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| Utc::now().checked_add_signed(delta))
}

/// The row before `resume` changed it.
#[derive(Debug, FromRow)]
struct ResumedFrom {
    status: String,
    updated_at: DateTime<Utc>,
    paused_until: Option<DateTime<Utc>>,
    pause_reason: Option<String>,
    now: DateTime<Utc>,
}

/// `accounts resume ID`: a paused or disabled account becomes active; a needs_reauth one too
/// when credentials are stored (the note says whether they were stored after it was parked).
pub async fn resume(pool: &PgPool, user_id: &UserId) -> Result<StatusChange, AccountsError> {
    let credentials = fetch_credentials(pool, user_id).await?;
    let updated: Option<ResumedFrom> = sqlx::query_as(
        r#"
        UPDATE followq.accounts AS a
        SET status = 'active', paused_until = NULL, pause_reason = NULL, updated_at = now()
        FROM (SELECT user_id, status, updated_at, paused_until, pause_reason
              FROM followq.accounts WHERE user_id = $1 FOR NO KEY UPDATE) AS before
        WHERE a.user_id = before.user_id
          AND (a.status IN ('paused', 'disabled')
               OR (a.status = 'needs_reauth' AND $2))
        RETURNING before.status, before.updated_at, before.paused_until, before.pause_reason,
                  now() AS now
        "#,
    )
    .bind(user_id.as_str())
    .bind(credentials.is_some())
    .fetch_optional(pool)
    .await?;
    let Some(ResumedFrom {
        status: from,
        updated_at: parked_at,
        paused_until,
        pause_reason,
        now,
    }) = updated
    else {
        let account = fetch_account(pool, user_id).await?;
        if account.status == "needs_reauth" {
            return Err(AccountsError::NoCredentials(user_id.clone()));
        }
        return Err(AccountsError::WrongState {
            user_id: user_id.clone(),
            status: account.status,
            hint: "nothing to resume",
        });
    };
    // The row's updated_at is when the daemon parked it; tokens stored since are new ones.
    let note = match (&*from, credentials) {
        // Ending the daemon's own pause early: X's window has not reset yet.
        ("paused", _)
            if pause_reason.as_deref().is_some_and(|r| r != "operator")
                && paused_until.is_some_and(|at| at > now) =>
        {
            Some(format!(
                "it was paused by the daemon ({}) until {}: X may refuse requests until then",
                pause_reason.as_deref().unwrap_or("-"),
                paused_until.map_or_else(String::new, |at| at
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string())
            ))
        }
        ("needs_reauth", Some(c)) if c.updated_at > parked_at => Some(format!(
            "needs_reauth cleared: {} credentials were stored at {}, after the account was parked",
            c.kind,
            c.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        ("needs_reauth", Some(c)) => Some(format!(
            "needs_reauth cleared, but its {} credentials were stored at {}, before the account was parked: if X refused them, the daemon parks it again; store new ones with `followq accounts add`",
            c.kind,
            c.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        _ => None,
    };
    Ok(StatusChange {
        user_id: user_id.to_string(),
        from,
        to: "active".into(),
        until: None,
        note,
    })
}

/// `accounts disable ID`: the account's jobs stay queued and are never sent until it is
/// resumed.
pub async fn disable(pool: &PgPool, user_id: &UserId) -> Result<StatusChange, AccountsError> {
    let updated: Option<String> = sqlx::query_scalar(
        r#"
        UPDATE followq.accounts AS a
        SET status = 'disabled', paused_until = NULL, pause_reason = NULL,
            leased_by = NULL, lease_expires_at = NULL, updated_at = now()
        FROM (SELECT user_id, status FROM followq.accounts WHERE user_id = $1 FOR NO KEY UPDATE) AS before
        WHERE a.user_id = before.user_id AND a.status IN ('active', 'paused', 'needs_reauth')
        RETURNING before.status
        "#,
    )
    .bind(user_id.as_str())
    .fetch_optional(pool)
    .await?;
    let from = guarded(pool, user_id, updated, "already disabled").await?;
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM followq.follow_jobs WHERE source_user_id = $1 AND state = 'queued'",
    )
    .bind(user_id.as_str())
    .fetch_one(pool)
    .await?;
    Ok(StatusChange {
        user_id: user_id.to_string(),
        from,
        to: "disabled".into(),
        until: None,
        note: Some(format!(
            "its {queued} queued job(s) stay queued and are not sent until `followq accounts resume {user_id}`"
        )),
    })
}
