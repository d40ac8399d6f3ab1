//! Accounts for operators: list, show, pause, resume, disable.
//!
//! The statements are in `store::admin_accounts`; this file decides what is allowed and says
//! why a change was refused. Tokens are never read: `show` learns only whether credentials
//! exist, of which kind, whether a refresh token is stored and when the access token expires.
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
//! Each change is one guarded statement that locks the account row `FOR NO KEY UPDATE`,
//! which does not wait for the key-share locks an enqueuing service's foreign-key checks hold
//! until it commits.
//!
//! `pause` refuses a needs_reauth account: the pause would hide that it needs new tokens.
//! `pause` and `disable` also drop the account's lease, so the daemon holding it lets go at
//! its next heartbeat instead of asking for jobs it may not claim; no daemon leases it again
//! until it is resumed (or the pause ends). A request already in flight still completes and
//! is recorded.

use std::fmt;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::ids::UserId;
use crate::store::admin_accounts as store;
pub use crate::store::admin_accounts::{
    AccountJobs, AccountRequests, AccountRow, AccountSummary, CredentialsInfo,
};

/// What an indefinite operator pause stores in `paused_until` (the schema needs a time).
pub fn indefinitely() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

use crate::states::PauseReason;
pub use crate::states::{AccountStatus, AccountStatusError};

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("account {0} is not registered")]
    NotFound(UserId),
    #[error("account {user_id} is {status}: {hint}")]
    WrongState {
        user_id: UserId,
        status: AccountStatus,
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

/// `accounts list [--status S]`, in user id order.
pub async fn list(
    pool: &PgPool,
    status: Option<AccountStatus>,
) -> Result<Vec<AccountSummary>, AccountsError> {
    let rows = store::list_accounts(pool, status.map(AccountStatus::as_str)).await?;
    Ok(rows)
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
    store::account(pool, user_id.as_str())
        .await?
        .ok_or_else(|| AccountsError::NotFound(user_id.clone()))
}

async fn fetch_credentials(
    pool: &PgPool,
    user_id: &UserId,
) -> Result<Option<CredentialsInfo>, sqlx::Error> {
    store::credentials_info(pool, user_id.as_str()).await
}

/// `accounts show ID`.
pub async fn show(pool: &PgPool, user_id: &UserId) -> Result<AccountDetail, AccountsError> {
    let account = fetch_account(pool, user_id).await?;
    let credentials = fetch_credentials(pool, user_id).await?;
    let jobs = store::account_jobs(pool, user_id.as_str()).await?;
    let requests = store::account_requests(pool, user_id.as_str()).await?;
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
    pub from: AccountStatus,
    pub to: AccountStatus,
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

/// The previous status a guarded status change returned; when it matched nothing, says why
/// from the current row.
async fn guarded(
    pool: &PgPool,
    user_id: &UserId,
    updated: Option<AccountStatus>,
    hint: &'static str,
) -> Result<AccountStatus, AccountsError> {
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
    let updated = store::pause(pool, user_id.as_str(), until).await?;
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
        to: AccountStatus::Paused,
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

/// `accounts resume ID`: a paused or disabled account becomes active; a needs_reauth one too
/// when credentials are stored (the note says whether they were stored after it was parked).
pub async fn resume(pool: &PgPool, user_id: &UserId) -> Result<StatusChange, AccountsError> {
    let credentials = fetch_credentials(pool, user_id).await?;
    let updated = store::resume(pool, user_id.as_str(), credentials.is_some()).await?;
    let Some(store::ResumedFrom {
        status: from,
        updated_at: parked_at,
        paused_until,
        pause_reason,
        now,
    }) = updated
    else {
        let account = fetch_account(pool, user_id).await?;
        if account.status == AccountStatus::NeedsReauth {
            return Err(AccountsError::NoCredentials(user_id.clone()));
        }
        return Err(AccountsError::WrongState {
            user_id: user_id.clone(),
            status: account.status,
            hint: "nothing to resume",
        });
    };
    // The row's updated_at is when the daemon parked it; tokens stored since are new ones.
    let note = match (from, credentials) {
        // Ending the daemon's own pause early: X's window has not reset yet.
        (AccountStatus::Paused, _)
            if pause_reason
                .as_ref()
                .is_some_and(|r| *r != PauseReason::Operator)
                && paused_until.is_some_and(|at| at > now) =>
        {
            Some(format!(
                "it was paused by the daemon ({}) until {}: X may refuse requests until then",
                pause_reason.as_ref().map_or("-", PauseReason::as_str),
                paused_until.map_or_else(String::new, |at| at
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string())
            ))
        }
        (AccountStatus::NeedsReauth, Some(c)) if c.updated_at > parked_at => Some(format!(
            "needs_reauth cleared: {} credentials were stored at {}, after the account was parked",
            c.kind,
            c.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        (AccountStatus::NeedsReauth, Some(c)) => Some(format!(
            "needs_reauth cleared, but its {} credentials were stored at {}, before the account was parked: if X refused them, the daemon parks it again; store new ones with `followq accounts add`",
            c.kind,
            c.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        _ => None,
    };
    Ok(StatusChange {
        user_id: user_id.to_string(),
        from,
        to: AccountStatus::Active,
        until: None,
        note,
    })
}

/// `accounts disable ID`: the account's jobs stay queued and are never sent until it is
/// resumed.
pub async fn disable(pool: &PgPool, user_id: &UserId) -> Result<StatusChange, AccountsError> {
    let updated = store::disable(pool, user_id.as_str()).await?;
    let from = guarded(pool, user_id, updated, "already disabled").await?;
    let queued = store::queued_jobs(pool, user_id.as_str()).await?;
    Ok(StatusChange {
        user_id: user_id.to_string(),
        from,
        to: AccountStatus::Disabled,
        until: None,
        note: Some(format!(
            "its {queued} queued job(s) stay queued and are not sent until `followq accounts resume {user_id}`"
        )),
    })
}
