//! What operators read and change of jobs (`followq jobs show|list|retry|cancel`, through
//! `admin::jobs`): jobs as operators see them, a job's ledger, the account and app-wide facts
//! that say why it waits, and the guarded retries and cancels.
//!
//! Every change is guarded in SQL, never read-then-write: retry only moves `failed` or
//! `cancelled` jobs, cancel only `queued` ones that are not in flight. A change that matched
//! nothing returns nothing, and the caller reads the job to say why.
//!
//! A retried job starts afresh: `state = queued`, `attempts = 0`, `run_at = now()`,
//! `finished_at = NULL`. Its `last_error` is kept, so `jobs show` still says what went wrong
//! until the next answer from X replaces it; `rate_limited_count` is history and is kept too.

use super::Statement;
use super::finished::FinishedJob;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::states::{AccountStatus, AppStopReason, JobState, PauseReason};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgExecutor};

/// A `followq.follow_jobs` row.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct JobRow {
    pub id: i64,
    /// As stored: a row written before the id rules held may break them, and operators
    /// must still see it.
    pub source_user_id: String,
    pub target_user_id: String,
    pub state: JobState,
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
    /// While its request is in flight: the daemon that sent it ...
    pub sent_by: Option<String>,
    /// ... and until when the request may still reach X.
    pub answer_by: Option<DateTime<Utc>>,
}

/// `SELECT <every JobRow column> FROM followq.follow_jobs `, as a literal for `concat!`.
/// Jobs as operators see them: a job whose request is in flight (a ledger row without a final
/// answer within its `answer_by`) shows as `running`, on the daemon that sent it, since it was
/// sent, with that attempt counted, though the table keeps it `queued` until its outcome is
/// recorded.
macro_rules! select_jobs {
    () => {
        concat!(
            "SELECT * FROM (\
         SELECT j.id, j.source_user_id::text AS source_user_id, \
                j.target_user_id::text AS target_user_id, \
                CASE WHEN f.worker_id IS NOT NULL THEN 'running' ELSE j.state END AS state, \
                j.priority, j.run_at, \
                j.attempts + CASE WHEN f.worker_id IS NOT NULL THEN 1 ELSE 0 END AS attempts, \
                j.max_attempts, j.rate_limited_count, j.following, j.pending_follow, \
                j.last_error, j.created_at, coalesce(f.sent_at, j.updated_at) AS updated_at, \
                j.finished_at, f.worker_id AS sent_by, f.answer_by \
         FROM followq.follow_jobs AS j \
         LEFT JOIN LATERAL ( \
             SELECT t.worker_id, t.sent_at, t.answer_by FROM followq.attempts AS t \
             WHERE t.job_id = j.id AND t.account_user_id = j.source_user_id \
               AND j.state = 'queued' AND ",
            $crate::store::ledger::unanswered_sql!("t"),
            " AND t.answer_by > now() \
             ORDER BY t.id DESC LIMIT 1) AS f ON true \
         "
        )
    };
}

const JOB: &str = concat!(select_jobs!(), "WHERE j.id = $1) AS v");

/// The job as operators see it; `None` when there is no such job.
pub async fn job(executor: impl PgExecutor<'_>, id: i64) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as::<_, JobRow>(JOB)
        .bind(id)
        .fetch_optional(executor)
        .await
}

const LIST_JOBS: &str = concat!(
    select_jobs!(),
    "WHERE ($2::text IS NULL OR j.source_user_id = $2) \
       AND j.id > $3 \
       AND ($1::text IS DISTINCT FROM 'running' \
            OR j.id IN (SELECT job_id FROM followq.jobs_in_flight))) AS v \
     WHERE $1::text IS NULL OR v.state = $1 \
     ORDER BY v.id LIMIT $4"
);

/// Up to `limit` jobs with ids above `after`, in id order, optionally only those in `state`
/// (as operators see it: a job in flight is `running`) and/or of the account `source`.
pub async fn list_jobs(
    executor: impl PgExecutor<'_>,
    state: Option<&str>,
    source: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as::<_, JobRow>(LIST_JOBS)
        .bind(state)
        .bind(source)
        .bind(after)
        .bind(limit)
        .fetch_all(executor)
        .await
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

const ATTEMPTS_OF_JOB: &str = r#"
        SELECT id, worker_id, sent_at, completed_at, latency_ms, http_status, outcome,
               rate_limit_limit, rate_limit_remaining, rate_limit_reset_at, error
        FROM followq.attempts WHERE job_id = $1 ORDER BY id
        "#;

/// Every request the ledger holds for the job, oldest first.
pub async fn attempts_of_job(
    executor: impl PgExecutor<'_>,
    job_id: i64,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as::<_, AttemptRow>(ATTEMPTS_OF_JOB)
        .bind(job_id)
        .fetch_all(executor)
        .await
}

/// The parts of the job's account that can hold it back.
#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct AccountFacts {
    /// As stored (see [`JobRow`]).
    pub user_id: String,
    pub status: AccountStatus,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<PauseReason>,
    pub leased_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

const ACCOUNT_FACTS: &str = r#"
        SELECT user_id, status, paused_until, pause_reason, leased_by, lease_expires_at
        FROM followq.accounts WHERE user_id = $1
        "#;

/// What of the account `user_id` can hold its jobs back; `None` when it is not registered.
pub async fn account_facts(
    executor: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Option<AccountFacts>, sqlx::Error> {
    sqlx::query_as::<_, AccountFacts>(ACCOUNT_FACTS)
        .bind(user_id)
        .fetch_optional(executor)
        .await
}

/// The app-wide stop (`followq.app_pause`), if a row is there.
#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct AppStopFacts {
    pub reason: AppStopReason,
    pub paused_until: Option<DateTime<Utc>>,
}

const APP_STOP: &str = "SELECT reason, paused_until FROM followq.app_pause WHERE scope = 'app'";

/// The app-wide stop, if a row is there (it may have ended).
pub async fn app_stop(executor: impl PgExecutor<'_>) -> Result<Option<AppStopFacts>, sqlx::Error> {
    sqlx::query_as::<_, AppStopFacts>(APP_STOP)
        .fetch_optional(executor)
        .await
}

const JOBS_AHEAD: &str = r#"
        SELECT count(*), now()
        FROM followq.follow_jobs AS j
        WHERE j.source_user_id = $1 AND j.state = 'queued' AND j.run_at <= now() AND j.id <> $4
          AND (j.priority > $2
               OR (j.priority = $2 AND (j.run_at, j.id) < ($3, $4)))
        "#;

/// The account's ready jobs that the claim's ORDER BY puts before `job`, and the database's
/// `now()`.
pub async fn jobs_ahead(
    executor: impl PgExecutor<'_>,
    job: &JobRow,
) -> Result<(i64, DateTime<Utc>), sqlx::Error> {
    sqlx::query_as(JOBS_AHEAD)
        .bind(&job.source_user_id)
        .bind(job.priority)
        .bind(job.run_at)
        .bind(job.id)
        .fetch_one(executor)
        .await
}

const JOB_SOURCE: &str = "SELECT source_user_id FROM followq.follow_jobs WHERE id = $1";

/// The account of job `id` (it never changes), for the statements that lock the job: they
/// name it, so that on Citus they reach the one shard that holds the job (a row lock is
/// refused in a statement over every shard). `None` when there is no such job.
pub async fn job_source(
    executor: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(JOB_SOURCE)
        .bind(id)
        .fetch_optional(executor)
        .await
}

const RETRY_JOB: &str = r#"
        UPDATE followq.follow_jobs AS j
        SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
            following = NULL, pending_follow = NULL, updated_at = now()
        FROM (SELECT id, source_user_id, state FROM followq.follow_jobs
              WHERE id = $1 AND source_user_id = $2 FOR UPDATE) AS before
        WHERE j.id = before.id AND j.source_user_id = $2 AND j.state IN ('failed', 'cancelled')
        RETURNING before.state
        "#;

/// A failed or cancelled job of account `source` back to the queue, to run now with a fresh
/// attempt count. Returns the state before; `None` when nothing matched. Fails on the partial
/// unique index when another job of the same (source, target) is active.
pub async fn retry_job(
    executor: impl PgExecutor<'_>,
    id: i64,
    source: &str,
) -> Result<Option<JobState>, sqlx::Error> {
    sqlx::query_scalar(RETRY_JOB)
        .bind(id)
        .bind(source)
        .fetch_optional(executor)
        .await
}

const ACTIVE_JOB_OF_PAIR: &str = r#"
        SELECT o.id, o.state, o.source_user_id, o.target_user_id
        FROM followq.follow_jobs AS j
        JOIN followq.follow_jobs AS o
          ON o.source_user_id = j.source_user_id AND o.target_user_id = j.target_user_id
        WHERE j.id = $1 AND o.id <> j.id AND o.state = 'queued'
        "#;

/// The active job (id, state, source, target) of the same (source, target) as job `id`, if
/// there is one.
pub async fn active_job_of_pair(
    executor: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<(i64, JobState, String, String)>, sqlx::Error> {
    sqlx::query_as(ACTIVE_JOB_OF_PAIR)
        .bind(id)
        .fetch_optional(executor)
        .await
}

const RETRY_STATE: &str = r#"
        WITH candidates AS (
            SELECT DISTINCT ON (source_user_id, target_user_id) id
            FROM followq.follow_jobs AS f
            WHERE f.state = $1 AND ($2::text IS NULL OR f.source_user_id = $2)
              AND NOT EXISTS (
                  SELECT 1 FROM followq.follow_jobs AS o
                  WHERE o.source_user_id = f.source_user_id
                    AND o.target_user_id = f.target_user_id
                    AND o.state = 'queued')
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
        -- The jobs left: those in the state that were not retried. (Not the count in the
        -- state less the count retried: Citus runs a CTE that writes before the rest of the
        -- statement, which then sees its rows changed.)
        SELECT (SELECT count(*) FROM retried),
               (SELECT count(*) FROM followq.follow_jobs
                WHERE state = $1 AND ($2::text IS NULL OR source_user_id = $2)
                  AND id NOT IN (SELECT id FROM retried))
        "#;

/// Every job in `state` (optionally of the account `source`) back to the queue, in one
/// UPDATE. At most one job per (source, target) is retried (the newest), and none whose pair
/// is already active, so the partial unique index cannot fire on a quiet queue. Returns how
/// many were retried and how many were left in `state`.
pub async fn retry_state(
    executor: impl PgExecutor<'_>,
    state: &str,
    source: Option<&str>,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(RETRY_STATE)
        .bind(state)
        .bind(source)
        .fetch_one(executor)
        .await
}

const LOCK_JOB: &str =
    "SELECT 1 FROM followq.follow_jobs WHERE id = $1 AND source_user_id = $2 FOR UPDATE";

/// Locks the row of job `id` of account `source` until the transaction ends, so a claim of
/// it that is under way (a claim locks the job row and writes only its ledger row) commits
/// first.
pub async fn lock_job(conn: &mut PgConnection, id: i64, source: &str) -> Result<(), sqlx::Error> {
    sqlx::query(LOCK_JOB)
        .bind(id)
        .bind(source)
        .fetch_optional(conn)
        .await?;
    Ok(())
}

const CANCEL_QUEUED_JOB: &str = r#"
        UPDATE followq.follow_jobs AS j
        SET state = 'cancelled', finished_at = now(), updated_at = now()
        WHERE j.id = $1 AND j.source_user_id = $2 AND j.state = 'queued'
          AND NOT EXISTS (SELECT 1 FROM followq.jobs_in_flight AS f
                          WHERE f.job_id = j.id AND f.source_user_id = $2)
        RETURNING j.target_user_id::text
        "#;

/// Cancels job `id` of account `source` if it is queued and not in flight. Returns the job,
/// for its announcement; `None` when nothing matched.
pub async fn cancel_queued_job(
    conn: &mut PgConnection,
    id: i64,
    source: &str,
) -> Result<Option<FinishedJob>, sqlx::Error> {
    let target: Option<String> = sqlx::query_scalar(CANCEL_QUEUED_JOB)
        .bind(id)
        .bind(source)
        .fetch_optional(conn)
        .await?;
    Ok(target.map(|target_user_id| FinishedJob {
        id,
        state: JobState::Cancelled,
        source_user_id: source.to_owned(),
        target_user_id,
    }))
}

const LOCK_QUEUED_JOBS_OF_SOURCE: &str = concat!(
    "SELECT 1 FROM followq.follow_jobs WHERE source_user_id = $1 AND state = 'queued' ",
    "ORDER BY id FOR UPDATE"
);

/// Locks the account's queued job rows, in id order, until the transaction ends (as
/// [`lock_job`]).
pub async fn lock_queued_jobs_of_source(
    conn: &mut PgConnection,
    source: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(LOCK_QUEUED_JOBS_OF_SOURCE)
        .bind(source)
        .fetch_all(conn)
        .await?;
    Ok(())
}

const CANCEL_QUEUED_JOBS_OF_SOURCE: &str = r#"
        WITH in_flight AS (
            SELECT f.job_id FROM followq.jobs_in_flight AS f WHERE f.source_user_id = $1
        ),
        cancelled AS (
            UPDATE followq.follow_jobs AS j
            SET state = 'cancelled', finished_at = now(), updated_at = now()
            WHERE j.source_user_id = $1 AND j.state = 'queued'
              AND j.id NOT IN (SELECT job_id FROM in_flight)
            RETURNING j.id, j.target_user_id
        )
        SELECT (SELECT coalesce(array_agg(id), '{}') FROM cancelled),
               (SELECT coalesce(array_agg(target_user_id::text), '{}') FROM cancelled),
               (SELECT count(*) FROM in_flight)
        "#;

/// Cancels every queued job of the account that is not in flight. Returns the jobs cancelled
/// (for their announcement) and how many are in flight (left alone).
pub async fn cancel_queued_jobs_of_source(
    conn: &mut PgConnection,
    source: &str,
) -> Result<(Vec<FinishedJob>, i64), sqlx::Error> {
    let (ids, targets, in_flight): (Vec<i64>, Vec<String>, i64) =
        sqlx::query_as(CANCEL_QUEUED_JOBS_OF_SOURCE)
            .bind(source)
            .fetch_one(conn)
            .await?;
    let cancelled = ids
        .into_iter()
        .zip(targets)
        .map(|(id, target_user_id)| FinishedJob {
            id,
            state: JobState::Cancelled,
            source_user_id: source.to_owned(),
            target_user_id,
        })
        .collect();
    Ok((cancelled, in_flight))
}

const ACCOUNT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM followq.accounts WHERE user_id = $1)";

/// Whether the account `user_id` is registered.
pub async fn account_exists(
    executor: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(ACCOUNT_EXISTS)
        .bind(user_id)
        .fetch_one(executor)
        .await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "admin_jobs::job",
        sql: JOB,
    },
    Statement {
        name: "admin_jobs::list_jobs",
        sql: LIST_JOBS,
    },
    Statement {
        name: "admin_jobs::attempts_of_job",
        sql: ATTEMPTS_OF_JOB,
    },
    Statement {
        name: "admin_jobs::account_facts",
        sql: ACCOUNT_FACTS,
    },
    Statement {
        name: "admin_jobs::app_stop",
        sql: APP_STOP,
    },
    Statement {
        name: "admin_jobs::jobs_ahead",
        sql: JOBS_AHEAD,
    },
    Statement {
        name: "admin_jobs::job_source",
        sql: JOB_SOURCE,
    },
    Statement {
        name: "admin_jobs::retry_job",
        sql: RETRY_JOB,
    },
    Statement {
        name: "admin_jobs::active_job_of_pair",
        sql: ACTIVE_JOB_OF_PAIR,
    },
    Statement {
        name: "admin_jobs::retry_state",
        sql: RETRY_STATE,
    },
    Statement {
        name: "admin_jobs::lock_job",
        sql: LOCK_JOB,
    },
    Statement {
        name: "admin_jobs::cancel_queued_job",
        sql: CANCEL_QUEUED_JOB,
    },
    Statement {
        name: "admin_jobs::lock_queued_jobs_of_source",
        sql: LOCK_QUEUED_JOBS_OF_SOURCE,
    },
    Statement {
        name: "admin_jobs::cancel_queued_jobs_of_source",
        sql: CANCEL_QUEUED_JOBS_OF_SOURCE,
    },
    Statement {
        name: "admin_jobs::account_exists",
        sql: ACCOUNT_EXISTS,
    },
];
