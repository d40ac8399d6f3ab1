//! What `followq demo` reads of its scratch database for its progress and its closing report:
//! the jobs by outcome, the failures by reason, how long the run took as the database
//! recorded it, and, on Citus, how the jobs were spread over the workers.

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

/// One worker's share of the jobs on Citus.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct WorkerShare {
    pub host: String,
    pub port: i32,
    /// Accounts whose rows this worker holds (an account's rows are all on one shard).
    pub accounts: i64,
    /// Jobs of those accounts, whatever their state.
    pub jobs: i64,
}

// Jobs are counted per account first (a statement Citus runs on every shard, grouped by the
// distribution column), then each account is placed on the coordinator: its shard, the
// shard's placement, the placement's node. A worker without any of the accounts is listed
// with zeros.
const JOBS_PER_WORKER: &str = r#"
        WITH per_account AS (
            SELECT source_user_id AS account, count(*) AS jobs
            FROM followq.follow_jobs GROUP BY source_user_id
        ), placed AS (
            SELECT a.jobs, p.groupid
            FROM per_account AS a
            JOIN pg_dist_placement AS p
              ON p.shardid = get_shard_id_for_distribution_column('followq.follow_jobs', a.account)
        )
        SELECT n.nodename::text AS host, n.nodeport AS port,
               count(placed.groupid) AS accounts, coalesce(sum(placed.jobs), 0)::bigint AS jobs
        FROM pg_dist_node AS n
        LEFT JOIN placed ON placed.groupid = n.groupid
        WHERE n.groupid <> 0 AND n.noderole = 'primary'
        GROUP BY n.nodename, n.nodeport
        ORDER BY n.nodename, n.nodeport
        "#;

/// On Citus: each primary worker with the accounts and the jobs it holds.
pub async fn jobs_per_worker(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<WorkerShare>, sqlx::Error> {
    sqlx::query_as(JOBS_PER_WORKER).fetch_all(executor).await
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

/// The statements that read Citus's catalog, prepared by the statement test on Citus.
pub const CITUS_STATEMENTS: &[Statement] = &[Statement {
    name: "demo_report::jobs_per_worker",
    sql: JOBS_PER_WORKER,
}];
