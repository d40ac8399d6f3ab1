//! What `followq demo` reads of its scratch database for its progress and its closing report:
//! the jobs by outcome, the failures by reason, and how long the run took as the database
//! recorded it.

use super::Statement;
use super::status::{self, QueuedAndInFlight};
use sqlx::{FromRow, PgExecutor, PgPool};

/// The demo's jobs by where they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobCounts {
    pub queued: i64,
    pub running: i64,
    pub following: i64,
    pub pending: i64,
    pub failed: i64,
}

impl JobCounts {
    /// Jobs finished, whatever their outcome.
    pub fn finished(&self) -> u64 {
        u64::try_from(self.following + self.pending + self.failed).unwrap_or(0)
    }
}

/// The finished jobs by outcome.
#[derive(Debug, Clone, Copy, Default, FromRow)]
pub struct FinishedCounts {
    /// Succeeded: the follow is made.
    pub following: i64,
    /// Succeeded: the target is protected, the follow awaits its approval.
    pub pending: i64,
    pub failed: i64,
}

const FINISHED_COUNTS: &str = r#"
        SELECT count(*) FILTER (WHERE state = 'succeeded' AND NOT pending_follow) AS following,
               count(*) FILTER (WHERE state = 'succeeded' AND pending_follow) AS pending,
               count(*) FILTER (WHERE state = 'failed') AS failed
        FROM followq.follow_jobs
        "#;

/// The finished jobs by outcome.
pub async fn finished_counts(executor: impl PgExecutor<'_>) -> Result<FinishedCounts, sqlx::Error> {
    sqlx::query_as::<_, FinishedCounts>(FINISHED_COUNTS)
        .fetch_one(executor)
        .await
}

/// Jobs by state: the queue as the gauges count it ([`status::queued_and_in_flight`]) and the
/// finished jobs by outcome, read in one snapshot so that a job finishing meanwhile is counted
/// once.
pub async fn job_counts(pool: &PgPool) -> Result<JobCounts, sqlx::Error> {
    let mut tx = status::snapshot(pool).await?;
    let QueuedAndInFlight { queued, running } = status::queued_and_in_flight(&mut *tx).await?;
    let finished = finished_counts(&mut *tx).await?;
    tx.commit().await?;
    Ok(JobCounts {
        queued,
        running,
        following: finished.following,
        pending: finished.pending,
        failed: finished.failed,
    })
}

const FAILED_BY_REASON: &str = r#"
        SELECT concat_ws(' ', last_error->>'kind', last_error->>'status') AS reason, count(*)
        FROM followq.follow_jobs WHERE state = 'failed'
        GROUP BY 1 ORDER BY 2 DESC, 1
        "#;

/// Failed jobs by reason (`kind status`, e.g. `permanent 404`), the most common first.
pub async fn failed_by_reason(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(FAILED_BY_REASON).fetch_all(executor).await
}

const FIRST_SENT_TO_LAST_FINISHED: &str = r#"
        SELECT extract(epoch FROM
            (SELECT max(finished_at) FROM followq.follow_jobs)
            - (SELECT min(sent_at) FROM followq.attempts))::float8
        "#;

/// Seconds from the first request out to the last job finished, as the database recorded
/// them; `None` before a request went out or a job finished.
pub async fn first_sent_to_last_finished(
    executor: impl PgExecutor<'_>,
) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(FIRST_SENT_TO_LAST_FINISHED)
        .fetch_one(executor)
        .await
}

const BILLED_REQUESTS: &str = concat!(
    "SELECT count(*) FILTER (WHERE ",
    super::ledger::billed_sql!("t"),
    ") AS billed, count(*) FILTER (WHERE ",
    super::ledger::possibly_billed_sql!("t"),
    ") AS possibly_billed FROM followq.attempts AS t"
);

/// The run's requests X billed (2xx) and possibly billed (may have acted, no final answer),
/// over the whole (scratch) ledger.
pub async fn billed_requests(
    executor: impl PgExecutor<'_>,
) -> Result<super::billing::Requests, sqlx::Error> {
    sqlx::query_as(BILLED_REQUESTS).fetch_one(executor).await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "demo_report::billed_requests",
        sql: BILLED_REQUESTS,
    },
    Statement {
        name: "demo_report::finished_counts",
        sql: FINISHED_COUNTS,
    },
    Statement {
        name: "demo_report::failed_by_reason",
        sql: FAILED_BY_REASON,
    },
    Statement {
        name: "demo_report::first_sent_to_last_finished",
        sql: FIRST_SENT_TO_LAST_FINISHED,
    },
];
