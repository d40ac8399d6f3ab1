//! Taking jobs back from a daemon that can no longer finish them. A daemon of this release
//! never marks a job `running` (its claim writes only the ledger row), so its jobs are back in
//! the queue by construction once their requests' `answer_by` has passed; what is left here is
//! rescuing jobs that daemons of the previous release marked `running` (their job lease ran
//! out), and noting in `last_error` why a daemon's request went unanswered (it stopped past its
//! grace period, or a turn panicked).
//!
//! A job taken back is never failed here, whatever its attempts: the request it was running
//! may well have reached X and made the follow, and failing the job would report a follow that
//! may exist as failed. It goes back to the queue and is sent again (the endpoint is
//! idempotent) through the account's limiter like any other request, unless its late answer
//! arrives first and finishes it (see `store::record`).
//!
//! The ledger row of the request keeps counting: a successor counts every row without an
//! answer until its `answer_by`, whether it is marked `abandoned` (by the rescuer, for
//! operators to see) or left without an outcome.

use super::Statement;
use crate::states::{ErrorKind, JobState};
use sqlx::{FromRow, PgPool};

/// A job the rescuer took back.
#[derive(Debug, Clone, FromRow)]
pub struct RescuedJob {
    pub id: i64,
    pub state: JobState,
    pub source_user_id: String,
    pub target_user_id: String,
    pub attempts: i32,
    /// The daemon that had been running it.
    pub worker_id: Option<String>,
}

const RESCUE_ORPHANS: &str = r#"
        WITH orphans AS MATERIALIZED (
            SELECT j.id, j.leased_by
            FROM followq.follow_jobs AS j
            WHERE j.state = 'running' AND j.lease_expires_at < now()
            ORDER BY j.lease_expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ),
        rescued AS (
            UPDATE followq.follow_jobs AS j
            SET state = 'queued',
                last_error = jsonb_build_object(
                    'kind', 'abandoned',
                    'detail', 'the daemon that sent the request stopped before recording its answer',
                    'worker_id', o.leased_by),
                run_at = now(),
                leased_by = NULL,
                lease_expires_at = NULL,
                updated_at = now()
            FROM orphans AS o
            WHERE j.id = o.id
            RETURNING j.id, j.state, j.source_user_id, j.target_user_id, j.attempts,
                      o.leased_by AS worker_id
        ),
        ledger AS (
            UPDATE followq.attempts AS t
            SET outcome = 'abandoned', completed_at = now()
            FROM rescued AS r
            WHERE t.job_id = r.id AND t.outcome IS NULL
        )
        SELECT * FROM rescued
        "#;

/// Takes back up to `limit` orphaned jobs: running jobs whose job lease ran out.
pub async fn rescue_orphans(pool: &PgPool, limit: i64) -> Result<Vec<RescuedJob>, sqlx::Error> {
    sqlx::query_as::<_, RescuedJob>(RESCUE_ORPHANS)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Which of a daemon's running jobs [`return_jobs`] puts back.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    /// All of them (shutdown past the grace period, a scheduler that panicked).
    All,
    /// These jobs (a turn that panicked).
    Jobs(&'a [i64]),
    /// The jobs of these accounts (a claim batch that panicked).
    Accounts(&'a [String]),
}

const RETURN_JOBS: &str = r#"
        UPDATE followq.follow_jobs AS j
        SET state = 'queued', leased_by = NULL, lease_expires_at = NULL,
            run_at = now(), updated_at = now(),
            last_error = jsonb_build_object('kind', $5::text, 'detail', $3::text)
        WHERE ($2::bigint[] IS NULL OR j.id = ANY($2))
          AND ($4::text[] IS NULL OR j.source_user_id = ANY($4))
          AND ((j.state = 'running' AND j.leased_by = $1)
               OR (j.state = 'queued'
                   AND j.id IN (SELECT f.job_id FROM followq.jobs_in_flight AS f
                                WHERE f.worker_id = $1)))
        "#;

/// Says why the jobs whose requests `worker_id` left without an answer went back (their
/// `last_error`), and puts back any it had marked `running` (a daemon of the previous release
/// did). Jobs in flight stay `queued` anyway; their ledger rows are left without an answer: the
/// request may have gone out, and whoever sends for the account next counts it until its
/// `answer_by`. Returns how many jobs were touched.
pub async fn return_jobs(
    pool: &PgPool,
    worker_id: &str,
    which: Which<'_>,
    why: &str,
) -> Result<u64, sqlx::Error> {
    let (jobs, accounts) = match which {
        Which::All => (None, None),
        Which::Jobs(ids) => (Some(ids), None),
        Which::Accounts(accounts) => (None, Some(accounts)),
    };
    let done = sqlx::query(RETURN_JOBS)
        .bind(worker_id)
        .bind(jobs)
        .bind(why)
        .bind(accounts)
        .bind(ErrorKind::Abandoned.as_str())
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "rescue::rescue_orphans",
        sql: RESCUE_ORPHANS,
    },
    Statement {
        name: "rescue::return_jobs",
        sql: RETURN_JOBS,
    },
];
