//! Jobs for operators: show one (row, ledger, why), list, retry, cancel.
//!
//! The statements are in `store::admin_jobs`. State changes are guarded in SQL, never
//! read-then-write: retry only moves `failed` or `cancelled` jobs, cancel only `queued` ones
//! (a `running` job's request may be in flight; cancelling it could not unsend it). When
//! nothing matched, a second read says why (unknown id, or which state the job is in).
//!
//! A retried job starts afresh: `state = queued`, `attempts = 0`, `run_at = now()`,
//! `finished_at = NULL`. Its `last_error` is kept, so `jobs show` still says what went wrong
//! until the next answer from X replaces it; `rate_limited_count` is history and is kept too.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use sqlx::PgPool;

use super::why;
use crate::ids::UserId;
use crate::store::admin_jobs as store;
pub use crate::store::admin_jobs::{AttemptRow, JobRow};
use crate::store::finished::announce_finished;

/// The name of the index that allows one active job per (source, target).
const ONE_ACTIVE_JOB: &str = "follow_jobs_one_active_job_per_source_and_target";

/// A job id: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct JobId(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job id {0:?} must be a positive integer")]
pub struct JobIdError(String);

impl JobId {
    pub fn new(id: i64) -> Result<JobId, JobIdError> {
        if id > 0 {
            Ok(JobId(id))
        } else {
            Err(JobIdError(id.to_string()))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl FromStr for JobId {
    type Err = JobIdError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        // Digits only: no sign, no spaces, no "0x".
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(JobIdError(raw.to_owned()));
        }
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(JobId)
            .ok_or_else(|| JobIdError(raw.to_owned()))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

pub use crate::states::{JobState, JobStateError};

/// `jobs show`: the row, its ledger, and why it is where it is.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    pub job: JobRow,
    pub attempts: Vec<AttemptRow>,
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error("job {id} is {state}: only failed or cancelled jobs can be retried")]
    NotRetryable { id: JobId, state: JobState },
    #[error(
        "job {id} is running on daemon {worker}: its request may be in flight, so it cannot be cancelled; wait for its answer (at worst it is ready again when its answer deadline passes, a few seconds after it was sent) and cancel it then"
    )]
    CancelRunning { id: JobId, worker: String },
    #[error("job {id} is {state}: only queued jobs can be cancelled")]
    NotCancellable { id: JobId, state: JobState },
    #[error(
        "job {id} cannot be retried: job {active} ({active_state}) already asks for {source_user_id} to follow {target_user_id}"
    )]
    PairActive {
        id: JobId,
        active: i64,
        active_state: JobState,
        source_user_id: String,
        target_user_id: String,
    },
    #[error(
        "another job for one of these (source, target) pairs became active meanwhile; run the command again"
    )]
    PairRace,
    #[error("--state {0}: only failed or cancelled jobs can be retried")]
    BadRetryState(JobState),
    #[error("account {0} is not registered")]
    UnknownAccount(UserId),
    #[error("--limit must be between 1 and {max}, not {given}")]
    BadLimit { given: i64, max: i64 },
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

///
/// On Citus the error comes from the worker that holds the shard: it names the index in its
/// message only, with the shard's number appended (`…_and_target_102017`).
fn is_one_active_job_violation(error: &sqlx::Error) -> bool {
    let Some(error) = error.as_database_error() else {
        return false;
    };
    match error.constraint() {
        Some(name) => name == ONE_ACTIVE_JOB,
        None => {
            error.code().as_deref() == Some("23505")
                && error
                    .message()
                    .contains(&format!("unique constraint \"{ONE_ACTIVE_JOB}_"))
        }
    }
}

async fn fetch_job(pool: &PgPool, id: JobId) -> Result<Option<JobRow>, sqlx::Error> {
    store::job(pool, id.get()).await
}

/// `jobs show ID`. `default_max_attempts` is `retry.max_attempts`, for jobs without their own.
pub async fn show(
    pool: &PgPool,
    id: JobId,
    default_max_attempts: u32,
) -> Result<JobDetail, JobsError> {
    let job = fetch_job(pool, id).await?.ok_or(JobsError::NotFound(id))?;
    let attempts = store::attempts_of_job(pool, id.get()).await?;
    let account = store::account_facts(pool, &job.source_user_id).await?;
    let app = store::app_stop(pool).await?;
    let (ahead, now) = store::jobs_ahead(pool, &job).await?;
    let why = why::explain(&why::Facts {
        job: &job,
        account: account.as_ref(),
        app: app.as_ref(),
        ahead,
        default_max_attempts,
        now,
    });
    Ok(JobDetail { job, attempts, why })
}

/// `jobs list` filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<JobState>,
    pub source: Option<UserId>,
    /// 1 to [`MAX_LIST_LIMIT`].
    pub limit: i64,
    /// Only ids greater than this (paging: pass the last id seen).
    pub after: Option<JobId>,
}

pub const DEFAULT_LIST_LIMIT: i64 = 50;
pub const MAX_LIST_LIMIT: i64 = 10_000;

/// `jobs list`: matching jobs in id order.
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<Vec<JobRow>, JobsError> {
    if !(1..=MAX_LIST_LIMIT).contains(&filter.limit) {
        return Err(JobsError::BadLimit {
            given: filter.limit,
            max: MAX_LIST_LIMIT,
        });
    }
    let rows = store::list_jobs(
        pool,
        filter.state.map(JobState::as_str),
        filter.source.as_ref().map(UserId::as_str),
        filter.after.map_or(0, JobId::get),
        filter.limit,
    )
    .await?;
    Ok(rows)
}

/// A job that changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub id: JobId,
    pub from: JobState,
    pub to: JobState,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}: {} -> {}", self.id, self.from, self.to)
    }
}

/// `jobs retry ID`: a failed or cancelled job back to the queue, to run now with a fresh
/// attempt count.
pub async fn retry(pool: &PgPool, id: JobId) -> Result<Transition, JobsError> {
    let Some(source) = store::job_source(pool, id.get()).await? else {
        return Err(JobsError::NotFound(id));
    };
    let updated = store::retry_job(pool, id.get(), &source).await;
    match updated {
        Ok(Some(from)) => Ok(Transition {
            id,
            from,
            to: JobState::Queued,
        }),
        Ok(None) => match fetch_job(pool, id).await? {
            None => Err(JobsError::NotFound(id)),
            Some(job) => Err(JobsError::NotRetryable {
                id,
                state: job.state,
            }),
        },
        Err(e) if is_one_active_job_violation(&e) => Err(pair_active(pool, id).await?),
        Err(e) => Err(e.into()),
    }
}

/// Names the active job that keeps `id` from being retried.
async fn pair_active(pool: &PgPool, id: JobId) -> Result<JobsError, sqlx::Error> {
    let active = store::active_job_of_pair(pool, id.get()).await?;
    Ok(match active {
        Some((active, active_state, source_user_id, target_user_id)) => JobsError::PairActive {
            id,
            active,
            active_state,
            source_user_id,
            target_user_id,
        },
        // The other job finished between the two statements.
        None => JobsError::PairRace,
    })
}

/// What a bulk retry did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkRetry {
    pub state: JobState,
    pub retried: i64,
    /// Jobs left in `state` because their (source, target) already has an active job, or
    /// a newer job of the same pair in `state` was retried instead.
    pub skipped: i64,
}

/// `jobs retry --state failed|cancelled [--source S]`: one UPDATE. At most one job per
/// (source, target) is retried (the newest), and none whose pair is already active, so the
/// partial unique index cannot fire on a quiet queue.
pub async fn retry_state(
    pool: &PgPool,
    state: JobState,
    source: Option<&UserId>,
) -> Result<BulkRetry, JobsError> {
    if !matches!(state, JobState::Failed | JobState::Cancelled) {
        return Err(JobsError::BadRetryState(state));
    }
    if let Some(source) = source {
        ensure_account(pool, source).await?;
    }
    let source = source.map(UserId::as_str);
    let counted = store::retry_state(pool, state.as_str(), source).await;
    match counted {
        Ok((retried, skipped)) => Ok(BulkRetry {
            state,
            retried,
            skipped,
        }),
        Err(e) if is_one_active_job_violation(&e) => Err(JobsError::PairRace),
        Err(e) => Err(e.into()),
    }
}

/// `jobs cancel ID`: a queued job is cancelled (never sent). A job whose request is in flight
/// is refused: the request may reach X whatever the row says.
///
/// Two statements in one short transaction: the first locks the row, so a claim of the job
/// that is under way commits first (a claim locks the job row and writes only its ledger
/// row); the second, with a fresh snapshot, then sees that claim's ledger row. On Citus a
/// third announces the cancelled job (`followq_job_finished`; on one Postgres the trigger
/// does, and that statement sends nothing).
///
/// The job's account is looked up first: the two statements name it (on Citus, a row lock is
/// taken only in a statement that reaches one shard).
pub async fn cancel(pool: &PgPool, id: JobId) -> Result<Transition, JobsError> {
    let Some(source) = store::job_source(pool, id.get()).await? else {
        return Err(JobsError::NotFound(id));
    };
    let mut tx = pool.begin().await?;
    store::lock_job(&mut tx, id.get(), &source).await?;
    let cancelled = store::cancel_queued_job(&mut tx, id.get(), &source).await?;
    if let Some(job) = &cancelled {
        announce_finished(&mut *tx, std::slice::from_ref(job)).await?;
    }
    tx.commit().await?;
    if cancelled.is_some() {
        return Ok(Transition {
            id,
            from: JobState::Queued,
            to: JobState::Cancelled,
        });
    }
    match fetch_job(pool, id).await? {
        None => Err(JobsError::NotFound(id)),
        Some(job) if job.state == JobState::Running => Err(JobsError::CancelRunning {
            id,
            worker: job.sent_by.unwrap_or_else(|| "(unknown)".into()),
        }),
        Some(job) => Err(JobsError::NotCancellable {
            id,
            state: job.state,
        }),
    }
}

/// What a bulk cancel did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkCancel {
    pub source: String,
    pub cancelled: i64,
    /// Jobs of the account running right now: left alone (their requests may be in flight).
    pub running: i64,
}

/// `jobs cancel --source S`: every queued job of the account that is not in flight, in one
/// short transaction (locked first, then cancelled with a fresh snapshot, then announced on
/// Citus, as [`cancel`]).
pub async fn cancel_source(pool: &PgPool, source: &UserId) -> Result<BulkCancel, JobsError> {
    ensure_account(pool, source).await?;
    let mut tx = pool.begin().await?;
    store::lock_queued_jobs_of_source(&mut tx, source.as_str()).await?;
    let (cancelled, running) =
        store::cancel_queued_jobs_of_source(&mut tx, source.as_str()).await?;
    announce_finished(&mut *tx, &cancelled).await?;
    tx.commit().await?;
    Ok(BulkCancel {
        source: source.to_string(),
        cancelled: i64::try_from(cancelled.len()).unwrap_or(i64::MAX),
        running,
    })
}

async fn ensure_account(pool: &PgPool, user_id: &UserId) -> Result<(), JobsError> {
    let exists = store::account_exists(pool, user_id.as_str()).await?;
    if exists {
        Ok(())
    } else {
        Err(JobsError::UnknownAccount(user_id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_positive_integers() {
        assert_eq!("42".parse::<JobId>().map(JobId::get), Ok(42));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?} accepted");
        }
        assert!(JobId::new(0).is_err());
    }

    #[test]
    fn states_parse_by_their_sql_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("done".parse::<JobState>().is_err());
    }
}
