//! Jobs for operators: show one (row, ledger, why), list, retry, cancel.
//!
//! State changes are guarded in SQL, never read-then-write: retry only moves `failed` or
//! `cancelled` jobs, cancel only `queued` ones (a `running` job's request may be in flight;
//! cancelling it could not unsend it). When nothing matched, a second read says why (unknown
//! id, or which state the job is in).
//!
//! A retried job starts afresh: `state = queued`, `attempts = 0`, `run_at = now()`,
//! `finished_at = NULL`. Its `last_error` is kept, so `jobs show` still says what went wrong
//! until the next answer from X replaces it; `rate_limited_count` is history and is kept too.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgPool};

use super::why::{self, AccountFacts, AppStopFacts};
use crate::ids::UserId;

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

/// A job state, as stored in `follow_jobs.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}: expected queued, running, succeeded, failed or cancelled")]
pub struct JobStateError(String);

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl FromStr for JobState {
    type Err = JobStateError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == raw)
            .ok_or_else(|| JobStateError(raw.to_owned()))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `followq.follow_jobs` row.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub source_user_id: String,
    pub target_user_id: String,
    pub state: String,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: Option<i32>,
    pub rate_limited_count: i32,
    pub following: Option<bool>,
    pub pending_follow: Option<bool>,
    pub last_error: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub leased_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// `SELECT <every JobRow column> FROM followq.follow_jobs `, as a literal for `concat!`.
/// Jobs as operators see them: a job whose request is in flight (an unanswered ledger row
/// within its `answer_by`) shows as `running`, on the daemon that sent it, since it was sent,
/// with that attempt counted, though the table keeps it `queued` until its outcome is
/// recorded. (Daemons of the previous release marked the row `running` themselves.)
macro_rules! select_jobs {
    () => {
        "SELECT * FROM (\
         SELECT j.id, j.source_user_id::text AS source_user_id, \
                j.target_user_id::text AS target_user_id, \
                CASE WHEN f.worker_id IS NOT NULL THEN 'running' ELSE j.state END AS state, \
                j.priority, j.run_at, \
                j.attempts + CASE WHEN f.worker_id IS NOT NULL THEN 1 ELSE 0 END AS attempts, \
                j.max_attempts, j.rate_limited_count, j.following, j.pending_follow, \
                j.last_error, j.created_at, coalesce(f.sent_at, j.updated_at) AS updated_at, \
                j.finished_at, coalesce(f.worker_id, j.leased_by) AS leased_by, \
                coalesce(f.answer_by, j.lease_expires_at) AS lease_expires_at \
         FROM followq.follow_jobs AS j \
         LEFT JOIN LATERAL ( \
             SELECT t.worker_id, t.sent_at, t.answer_by FROM followq.attempts AS t \
             WHERE t.job_id = j.id AND j.state = 'queued' \
               AND t.outcome IS NULL AND t.answer_by > now() \
             ORDER BY t.id DESC LIMIT 1) AS f ON true \
         "
    };
}

/// One ledger row (`followq.attempts`): one HTTP request sent for the job.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct AttemptRow {
    pub id: i64,
    pub worker_id: String,
    pub sent_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<i32>,
    pub http_status: Option<i16>,
    pub outcome: Option<String>,
    pub rate_limit_limit: Option<i32>,
    pub rate_limit_remaining: Option<i32>,
    pub rate_limit_reset_at: Option<DateTime<Utc>>,
    pub error: Option<Value>,
}

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
    NotRetryable { id: JobId, state: String },
    #[error(
        "job {id} is running on daemon {worker}: its request may be in flight, so it cannot be cancelled; wait for its answer (it is back in the queue within one job lease at worst) and cancel it then"
    )]
    CancelRunning { id: JobId, worker: String },
    #[error("job {id} is {state}: only queued jobs can be cancelled")]
    NotCancellable { id: JobId, state: String },
    #[error(
        "job {id} cannot be retried: job {active} ({active_state}) already asks for {source_user_id} to follow {target_user_id}"
    )]
    PairActive {
        id: JobId,
        active: i64,
        active_state: String,
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

fn is_one_active_job_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.constraint())
        .is_some_and(|name| name == ONE_ACTIVE_JOB)
}

async fn fetch_job(pool: &PgPool, id: JobId) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as::<_, JobRow>(concat!(select_jobs!(), "WHERE j.id = $1) AS v"))
        .bind(id.get())
        .fetch_optional(pool)
        .await
}

/// `jobs show ID`. `default_max_attempts` is `retry.max_attempts`, for jobs without their own.
pub async fn show(
    pool: &PgPool,
    id: JobId,
    default_max_attempts: u32,
) -> Result<JobDetail, JobsError> {
    let job = fetch_job(pool, id).await?.ok_or(JobsError::NotFound(id))?;
    let attempts = sqlx::query_as::<_, AttemptRow>(
        r#"
        SELECT id, worker_id, sent_at, completed_at, latency_ms, http_status, outcome,
               rate_limit_limit, rate_limit_remaining, rate_limit_reset_at, error
        FROM followq.attempts WHERE job_id = $1 ORDER BY id
        "#,
    )
    .bind(id.get())
    .fetch_all(pool)
    .await?;
    let account = sqlx::query_as::<_, AccountFacts>(
        r#"
        SELECT user_id, status, paused_until, pause_reason, leased_by, lease_expires_at
        FROM followq.accounts WHERE user_id = $1
        "#,
    )
    .bind(&job.source_user_id)
    .fetch_optional(pool)
    .await?;
    let app = sqlx::query_as::<_, AppStopFacts>(
        "SELECT reason, paused_until FROM followq.app_pause WHERE scope = 'app'",
    )
    .fetch_optional(pool)
    .await?;
    // The account's ready jobs that the claim's ORDER BY puts before this one.
    let (ahead, now): (i64, DateTime<Utc>) = sqlx::query_as(
        r#"
        SELECT count(*), now()
        FROM followq.follow_jobs AS j
        WHERE j.source_user_id = $1 AND j.state = 'queued' AND j.run_at <= now() AND j.id <> $4
          AND (j.priority > $2
               OR (j.priority = $2 AND (j.run_at, j.id) < ($3, $4)))
        "#,
    )
    .bind(&job.source_user_id)
    .bind(job.priority)
    .bind(job.run_at)
    .bind(job.id)
    .fetch_one(pool)
    .await?;
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
    let rows = sqlx::query_as::<_, JobRow>(concat!(
        select_jobs!(),
        "WHERE ($2::text IS NULL OR j.source_user_id = $2) \
           AND j.id > $3 \
           AND ($1::text IS DISTINCT FROM 'running' OR j.state = 'running' \
                OR j.id IN (SELECT job_id FROM followq.jobs_in_flight))) AS v \
         WHERE $1::text IS NULL OR v.state = $1 \
         ORDER BY v.id LIMIT $4"
    ))
    .bind(filter.state.map(JobState::as_str))
    .bind(filter.source.as_ref().map(UserId::as_str))
    .bind(filter.after.map_or(0, JobId::get))
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// A job that changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub id: JobId,
    pub from: String,
    pub to: String,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}: {} -> {}", self.id, self.from, self.to)
    }
}

/// `jobs retry ID`: a failed or cancelled job back to the queue, to run now with a fresh
/// attempt count.
pub async fn retry(pool: &PgPool, id: JobId) -> Result<Transition, JobsError> {
    let updated: Result<Option<String>, sqlx::Error> = sqlx::query_scalar(
        r#"
        UPDATE followq.follow_jobs AS j
        SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
            following = NULL, pending_follow = NULL, updated_at = now()
        FROM (SELECT id, state FROM followq.follow_jobs WHERE id = $1 FOR UPDATE) AS before
        WHERE j.id = before.id AND j.state IN ('failed', 'cancelled')
        RETURNING before.state
        "#,
    )
    .bind(id.get())
    .fetch_optional(pool)
    .await;
    match updated {
        Ok(Some(from)) => Ok(Transition {
            id,
            from,
            to: "queued".into(),
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
    let active: Option<(i64, String, String, String)> = sqlx::query_as(
        r#"
        SELECT o.id, o.state, o.source_user_id, o.target_user_id
        FROM followq.follow_jobs AS j
        JOIN followq.follow_jobs AS o
          ON o.source_user_id = j.source_user_id AND o.target_user_id = j.target_user_id
        WHERE j.id = $1 AND o.id <> j.id AND o.state IN ('queued', 'running')
        "#,
    )
    .bind(id.get())
    .fetch_optional(pool)
    .await?;
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
    let counted: Result<(i64, i64), sqlx::Error> = sqlx::query_as(
        r#"
        WITH candidates AS (
            SELECT DISTINCT ON (source_user_id, target_user_id) id
            FROM followq.follow_jobs AS f
            WHERE f.state = $1 AND ($2::text IS NULL OR f.source_user_id = $2)
              AND NOT EXISTS (
                  SELECT 1 FROM followq.follow_jobs AS o
                  WHERE o.source_user_id = f.source_user_id
                    AND o.target_user_id = f.target_user_id
                    AND o.state IN ('queued', 'running'))
            ORDER BY source_user_id, target_user_id, id DESC
        ),
        retried AS (
            UPDATE followq.follow_jobs AS j
            SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
                following = NULL, pending_follow = NULL, updated_at = now()
            FROM candidates AS c
            WHERE j.id = c.id AND j.state = $1
            RETURNING j.id
        )
        SELECT (SELECT count(*) FROM retried),
               (SELECT count(*) FROM followq.follow_jobs
                WHERE state = $1 AND ($2::text IS NULL OR source_user_id = $2))
                 - (SELECT count(*) FROM retried)
        "#,
    )
    .bind(state.as_str())
    .bind(source)
    .fetch_one(pool)
    .await;
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
/// row); the second, with a fresh snapshot, then sees that claim's ledger row.
pub async fn cancel(pool: &PgPool, id: JobId) -> Result<Transition, JobsError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM followq.follow_jobs WHERE id = $1 FOR UPDATE")
        .bind(id.get())
        .fetch_optional(&mut *tx)
        .await?;
    let cancelled: Option<i64> = sqlx::query_scalar(
        r#"
        UPDATE followq.follow_jobs AS j
        SET state = 'cancelled', finished_at = now(), updated_at = now()
        WHERE j.id = $1 AND j.state = 'queued'
          AND NOT EXISTS (SELECT 1 FROM followq.jobs_in_flight AS f WHERE f.job_id = j.id)
        RETURNING j.id
        "#,
    )
    .bind(id.get())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    if cancelled.is_some() {
        return Ok(Transition {
            id,
            from: "queued".into(),
            to: "cancelled".into(),
        });
    }
    match fetch_job(pool, id).await? {
        None => Err(JobsError::NotFound(id)),
        Some(job) if job.state == "running" => Err(JobsError::CancelRunning {
            id,
            worker: job.leased_by.unwrap_or_else(|| "(unknown)".into()),
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
/// short transaction (locked first, then cancelled with a fresh snapshot, as [`cancel`]).
pub async fn cancel_source(pool: &PgPool, source: &UserId) -> Result<BulkCancel, JobsError> {
    ensure_account(pool, source).await?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT 1 FROM followq.follow_jobs WHERE source_user_id = $1 AND state = 'queued' \
         ORDER BY id FOR UPDATE",
    )
    .bind(source.as_str())
    .fetch_all(&mut *tx)
    .await?;
    let (cancelled, running): (i64, i64) = sqlx::query_as(
        r#"
        WITH in_flight AS (
            SELECT f.job_id FROM followq.jobs_in_flight AS f WHERE f.source_user_id = $1
        ),
        cancelled AS (
            UPDATE followq.follow_jobs AS j
            SET state = 'cancelled', finished_at = now(), updated_at = now()
            WHERE j.source_user_id = $1 AND j.state = 'queued'
              AND j.id NOT IN (SELECT job_id FROM in_flight)
            RETURNING j.id
        )
        SELECT (SELECT count(*) FROM cancelled), (SELECT count(*) FROM in_flight)
        "#,
    )
    .bind(source.as_str())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(BulkCancel {
        source: source.to_string(),
        cancelled,
        running,
    })
}

async fn ensure_account(pool: &PgPool, user_id: &UserId) -> Result<(), JobsError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM followq.accounts WHERE user_id = $1)")
            .bind(user_id.as_str())
            .fetch_one(pool)
            .await?;
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
