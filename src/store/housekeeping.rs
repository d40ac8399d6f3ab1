//! What the daemon's summary line reads: the depth of the queue, and the accounts paused, in
//! need of re-authorisation or disabled, counted by reason.
//!
//! The loops themselves, and the wording of the summary, stay in `worker::housekeeping`; the
//! rescuer's statement is in [`super::rescue`].

use super::Statement;
use sqlx::PgExecutor;

const QUEUE_DEPTH: &str = "WITH in_flight AS (SELECT count(*) AS n FROM followq.jobs_in_flight) \
         SELECT (SELECT count(*) FROM followq.follow_jobs WHERE state IN ('queued', 'running')) \
                - (SELECT n FROM in_flight), \
                (SELECT n FROM in_flight)";

/// The active jobs: how many wait in the queue, and how many have a request in flight.
pub async fn queue_depth(executor: impl PgExecutor<'_>) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(QUEUE_DEPTH).fetch_one(executor).await
}

const PAUSED_BY_REASON: &str = r#"
        SELECT CASE WHEN status = 'needs_reauth' THEN 'needs_reauth'
                    ELSE coalesce(pause_reason, status) END AS reason,
               count(*)
        FROM followq.accounts
        WHERE status IN ('needs_reauth', 'disabled')
           OR (status = 'paused' AND paused_until > now())
        GROUP BY 1 ORDER BY 1
        "#;

/// `(reason, count)` for the accounts that cannot send now, by reason: `needs_reauth`, the
/// `pause_reason` of a pause still in force, or `disabled`. Sorted by reason.
pub async fn paused_by_reason(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(PAUSED_BY_REASON).fetch_all(executor).await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "housekeeping::queue_depth",
        sql: QUEUE_DEPTH,
    },
    Statement {
        name: "housekeeping::paused_by_reason",
        sql: PAUSED_BY_REASON,
    },
];
