//! What operators watch, read-only: the statements of the `followq status` report, and the
//! queue depth and paused accounts that the `/metrics` gauges (and the demo) read.
//!
//! The report's statements run in one read-only REPEATABLE READ transaction ([`snapshot`]),
//! so the numbers come from one snapshot (and `now()` is one instant) and agree with each
//! other. Each runs on the caller's connection, inside the caller's snapshot, so that other
//! read-only views (the ops listener's status page) show the same numbers computed the same
//! way. Nothing is written: unlike the daemon, an expired app-wide stop is shown as over, not
//! deleted.
//!
//! Finished jobs are counted over the last 24 hours only (through the `finished_at` index):
//! a total over the whole table would scan every row ever enqueued.
//!
//! The queue is counted two ways, on purpose. [`queue_depth`] splits the queued jobs by what
//! holds them, so it looks at each queued job and its account and leaves out the jobs in
//! flight by id; [`queued_and_in_flight`] only needs the two totals, so it subtracts one count
//! from another and never joins. Both count the jobs in flight (`followq.jobs_in_flight`) as
//! running, and they agree while every row of that view is one job still queued or marked
//! running; they part only on a job that has two rows there, or one after it finished.

use super::Statement;
use crate::states::PauseReason;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool, Postgres, Transaction};

const SNAPSHOT: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// A read-only REPEATABLE READ transaction: every statement run in it sees one snapshot, and
/// `now()` is one instant.
pub async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(SNAPSHOT).execute(&mut *tx).await?;
    Ok(tx)
}

const SNAPSHOT_TIME: &str = "SELECT now()";

/// The snapshot's `now()`.
pub async fn snapshot_time(conn: &mut PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(SNAPSHOT_TIME).fetch_one(conn).await
}

/// Jobs by state. Queued jobs are split by what holds them.
#[derive(Debug, Clone, Default, FromRow, Serialize, PartialEq, Eq)]
pub struct QueueDepth {
    /// Queued, run_at reached, account free to send (active, or its pause is over).
    pub queued_ready: i64,
    /// Queued with run_at ahead (enqueue delay, retry backoff, 429 reset).
    pub queued_scheduled: i64,
    /// Queued behind an account that is paused, needs_reauth or disabled.
    pub queued_blocked: i64,
    pub running: i64,
    pub succeeded_last_24h: i64,
    pub failed_last_24h: i64,
    pub cancelled_last_24h: i64,
}

const QUEUE_DEPTH: &str = r#"
        WITH queued AS (
            SELECT j.run_at <= now() AS due,
                   (a.status IN ('needs_reauth', 'disabled')
                    OR (a.status = 'paused' AND a.paused_until > now())) AS blocked
            FROM followq.follow_jobs AS j
            JOIN followq.accounts AS a ON a.user_id = j.source_user_id
            WHERE j.state = 'queued'
              -- A job in flight stays queued in the table; it is counted as running.
              AND j.id NOT IN (SELECT job_id FROM followq.jobs_in_flight)
        ),
        finished AS (
            SELECT state FROM followq.follow_jobs
            WHERE finished_at > now() - interval '24 hours'
        )
        SELECT
            (SELECT count(*) FROM queued WHERE due AND NOT blocked) AS queued_ready,
            (SELECT count(*) FROM queued WHERE NOT due AND NOT blocked) AS queued_scheduled,
            (SELECT count(*) FROM queued WHERE blocked) AS queued_blocked,
            (SELECT count(*) FROM followq.jobs_in_flight) AS running,
            (SELECT count(*) FROM finished WHERE state = 'succeeded') AS succeeded_last_24h,
            (SELECT count(*) FROM finished WHERE state = 'failed') AS failed_last_24h,
            (SELECT count(*) FROM finished WHERE state = 'cancelled') AS cancelled_last_24h
        "#;

/// Jobs by state, the queued ones split by what holds them (the report's queue; the gauges'
/// totals are [`queued_and_in_flight`]).
pub async fn queue_depth(conn: &mut PgConnection) -> Result<QueueDepth, sqlx::Error> {
    sqlx::query_as::<_, QueueDepth>(QUEUE_DEPTH)
        .fetch_one(conn)
        .await
}

#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct OldestReady {
    pub job_id: i64,
    pub source_user_id: String,
    pub created_at: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
    /// Seconds since run_at: how long it has been ready but not sent.
    pub ready_for_seconds: f64,
    /// Seconds since it was enqueued.
    pub age_seconds: f64,
}

const OLDEST_READY: &str = r#"
        SELECT j.id AS job_id, j.source_user_id, j.created_at, j.run_at,
               extract(epoch FROM now() - j.run_at)::float8 AS ready_for_seconds,
               extract(epoch FROM now() - j.created_at)::float8 AS age_seconds
        FROM followq.follow_jobs AS j
        JOIN followq.accounts AS a ON a.user_id = j.source_user_id
        WHERE j.state = 'queued' AND j.run_at <= now()
          AND (a.status = 'active' OR (a.status = 'paused' AND a.paused_until <= now()))
        ORDER BY j.run_at, j.id
        LIMIT 1
        "#;

/// The ready job (of an account that may send) that has waited longest since its run_at.
pub async fn oldest_ready(conn: &mut PgConnection) -> Result<Option<OldestReady>, sqlx::Error> {
    sqlx::query_as::<_, OldestReady>(OLDEST_READY)
        .fetch_optional(conn)
        .await
}

/// Requests sent with one outcome (`in_flight` while no answer is recorded) in the last 1, 5
/// and 15 minutes.
#[derive(Debug, Clone, FromRow)]
pub struct OutcomeRow {
    pub outcome: String,
    pub last_1: i64,
    pub last_5: i64,
    pub last_15: i64,
}

const RECENT_THROUGHPUT: &str = r#"
        SELECT coalesce(outcome, 'in_flight') AS outcome,
               count(*) FILTER (WHERE sent_at > now() - interval '1 minute') AS last_1,
               count(*) FILTER (WHERE sent_at > now() - interval '5 minutes') AS last_5,
               count(*) AS last_15
        FROM followq.attempts
        WHERE sent_at > now() - interval '15 minutes'
        GROUP BY 1
        ORDER BY 1
        "#;

/// Ledger rows sent in the last 1, 5 and 15 minutes, per outcome, in outcome order.
pub async fn recent_throughput(conn: &mut PgConnection) -> Result<Vec<OutcomeRow>, sqlx::Error> {
    sqlx::query_as::<_, OutcomeRow>(RECENT_THROUGHPUT)
        .fetch_all(conn)
        .await
}

#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct PausedAccount {
    pub user_id: String,
    pub pause_reason: Option<PauseReason>,
    pub paused_until: Option<DateTime<Utc>>,
    pub queued: i64,
}

/// The queued jobs of account `a` not in flight, for the account lists below: a job in
/// flight stays queued in the table and is counted as running.
macro_rules! queued_of_account {
    () => {
        r#"(SELECT count(*) FROM followq.follow_jobs AS j
            WHERE j.source_user_id = a.user_id AND j.state = 'queued'
              AND j.id NOT IN (SELECT f.job_id FROM followq.jobs_in_flight AS f
                               WHERE f.source_user_id = a.user_id)) AS queued"#
    };
}

const PAUSED_ACCOUNTS: &str = concat!(
    r#"
        SELECT a.user_id, a.pause_reason, a.paused_until, "#,
    queued_of_account!(),
    r#"
        FROM followq.accounts AS a
        WHERE a.status = 'paused'
        ORDER BY a.paused_until, a.user_id
        LIMIT $1
        "#
);

/// Paused accounts, the soonest to resume first; at most `limit` (`None`: all).
pub async fn paused_accounts(
    conn: &mut PgConnection,
    limit: Option<i64>,
) -> Result<Vec<PausedAccount>, sqlx::Error> {
    sqlx::query_as::<_, PausedAccount>(PAUSED_ACCOUNTS)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// A needs_reauth or disabled account.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct BlockedAccount {
    pub user_id: String,
    /// For needs_reauth: why the tokens were refused.
    pub reason: Option<String>,
    /// When the status was set (the row's updated_at).
    pub since: DateTime<Utc>,
    pub queued: i64,
}

const BLOCKED_ACCOUNTS: &str = concat!(
    r#"
        SELECT a.user_id, a.pause_reason AS reason, a.updated_at AS since, "#,
    queued_of_account!(),
    r#"
        FROM followq.accounts AS a
        WHERE a.status = $1
        ORDER BY a.updated_at, a.user_id
        LIMIT $2
        "#
);

/// Accounts of `status` (`needs_reauth` or `disabled`), the longest in it first; at most
/// `limit` (`None`: all).
pub async fn blocked_accounts(
    conn: &mut PgConnection,
    status: &str,
    limit: Option<i64>,
) -> Result<Vec<BlockedAccount>, sqlx::Error> {
    sqlx::query_as::<_, BlockedAccount>(BLOCKED_ACCOUNTS)
        .bind(status)
        .bind(limit)
        .fetch_all(conn)
        .await
}

#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct LiveDaemon {
    pub worker_id: String,
    /// `None` for a daemon seen only through a lease (not registered in followq.daemons).
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub accounts_leased: i64,
    pub jobs_running: i64,
}

const LIVE_DAEMONS: &str = r#"
        WITH registered AS MATERIALIZED (
            SELECT worker_id, started_at, heartbeat_at FROM followq.daemons
        ),
        -- Counted per daemon once each, not in subqueries per daemon: Citus plans no
        -- subquery over a distributed table correlated with another table.
        leased AS MATERIALIZED (
            SELECT a.leased_by AS worker_id, count(*) AS accounts
            FROM followq.accounts AS a
            WHERE a.leased_by IS NOT NULL AND a.lease_expires_at > now()
            GROUP BY a.leased_by
        ),
        running AS MATERIALIZED (
            SELECT f.worker_id, count(*) AS jobs
            FROM followq.jobs_in_flight AS f
            GROUP BY f.worker_id
        ),
        live AS (
            SELECT worker_id FROM registered
            WHERE heartbeat_at > now() - make_interval(secs => $1)
            UNION
            SELECT worker_id FROM leased
        )
        SELECT l.worker_id, d.started_at, d.heartbeat_at,
               coalesce(le.accounts, 0) AS accounts_leased,
               coalesce(r.jobs, 0) AS jobs_running
        FROM live AS l
        LEFT JOIN registered AS d ON d.worker_id = l.worker_id
        LEFT JOIN leased AS le ON le.worker_id = l.worker_id
        LEFT JOIN running AS r ON r.worker_id = l.worker_id
        ORDER BY l.worker_id
        "#;

/// Registered daemons with a heartbeat in the last `heartbeat_within_seconds`, plus any
/// worker holding a live lease (a daemon whose registration failed still sends).
pub async fn live_daemons(
    conn: &mut PgConnection,
    heartbeat_within_seconds: f64,
) -> Result<Vec<LiveDaemon>, sqlx::Error> {
    sqlx::query_as::<_, LiveDaemon>(LIVE_DAEMONS)
        .bind(heartbeat_within_seconds)
        .fetch_all(conn)
        .await
}

/// The queue's two totals, as the `followq_queue_jobs` gauge and the demo's progress count
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueuedAndInFlight {
    /// Jobs not finished and not in flight.
    pub queued: i64,
    /// Jobs in flight (`followq.jobs_in_flight`).
    pub running: i64,
}

const QUEUED_AND_IN_FLIGHT: &str = r#"
        WITH in_flight AS (SELECT count(*) AS n FROM followq.jobs_in_flight)
        -- A job in flight stays queued in the table: counted as running, not queued.
        SELECT (SELECT count(*) FROM followq.follow_jobs WHERE state IN ('queued', 'running'))
                   - (SELECT n FROM in_flight),
               (SELECT n FROM in_flight)
        "#;

/// The jobs not finished, split into those in flight and the rest, without looking at any
/// job or account one by one (see the top of this file for how it differs from
/// [`queue_depth`]).
pub async fn queued_and_in_flight(
    executor: impl PgExecutor<'_>,
) -> Result<QueuedAndInFlight, sqlx::Error> {
    let (queued, running) = sqlx::query_as(QUEUED_AND_IN_FLIGHT)
        .fetch_one(executor)
        .await?;
    Ok(QueuedAndInFlight { queued, running })
}

const DAEMON_GAUGES: &str = r#"
        SELECT (SELECT count(*) FROM followq.accounts
                WHERE leased_by = $1 AND lease_expires_at > now()) AS accounts_held,
               (SELECT reason FROM followq.app_pause
                WHERE paused_until IS NULL OR paused_until > now()
                LIMIT 1) AS app_stop_reason,
               -- As oldest_ready reads it, through the same index.
               (SELECT extract(epoch FROM now() - j.run_at)::float8
                FROM followq.follow_jobs AS j
                JOIN followq.accounts AS a ON a.user_id = j.source_user_id
                WHERE j.state = 'queued' AND j.run_at <= now()
                  AND (a.status = 'active' OR (a.status = 'paused' AND a.paused_until <= now()))
                ORDER BY j.run_at, j.id
                LIMIT 1) AS oldest_ready_seconds
        "#;

/// What the gauges read besides the queue and the pauses.
#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct DaemonGauges {
    /// Accounts `worker_id` holds a live lease on.
    pub accounts_held: i64,
    /// The reason of the app-wide stop in force, if any.
    pub app_stop_reason: Option<String>,
    /// How long the oldest ready job (of an account that may send) has been ready.
    pub oldest_ready_seconds: Option<f64>,
}

/// How many accounts `worker_id` holds a live lease on, the app-wide stop in force, and how
/// long the oldest ready job has waited: one statement.
pub async fn daemon_gauges(
    executor: impl PgExecutor<'_>,
    worker_id: &str,
) -> Result<DaemonGauges, sqlx::Error> {
    sqlx::query_as(DAEMON_GAUGES)
        .bind(worker_id)
        .fetch_one(executor)
        .await
}

const PAUSED_ACCOUNTS_BY_REASON: &str = r#"
        SELECT CASE WHEN status = 'paused' THEN coalesce(pause_reason, 'other') ELSE status END,
               count(*)
        FROM followq.accounts
        WHERE status IN ('needs_reauth', 'disabled')
           OR (status = 'paused' AND paused_until > now())
        GROUP BY 1
        "#;

/// The accounts that cannot send now, counted by why: a pause by its reason (`other` when it
/// has none; an expired pause is not counted), and `needs_reauth` and `disabled` by their
/// status. In no particular order.
pub async fn paused_accounts_by_reason(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(PAUSED_ACCOUNTS_BY_REASON)
        .fetch_all(executor)
        .await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "status::snapshot",
        sql: SNAPSHOT,
    },
    Statement {
        name: "status::snapshot_time",
        sql: SNAPSHOT_TIME,
    },
    Statement {
        name: "status::queue_depth",
        sql: QUEUE_DEPTH,
    },
    Statement {
        name: "status::oldest_ready",
        sql: OLDEST_READY,
    },
    Statement {
        name: "status::recent_throughput",
        sql: RECENT_THROUGHPUT,
    },
    Statement {
        name: "status::paused_accounts",
        sql: PAUSED_ACCOUNTS,
    },
    Statement {
        name: "status::blocked_accounts",
        sql: BLOCKED_ACCOUNTS,
    },
    Statement {
        name: "status::live_daemons",
        sql: LIVE_DAEMONS,
    },
    Statement {
        name: "status::queued_and_in_flight",
        sql: QUEUED_AND_IN_FLIGHT,
    },
    Statement {
        name: "status::daemon_gauges",
        sql: DAEMON_GAUGES,
    },
    Statement {
        name: "status::paused_accounts_by_reason",
        sql: PAUSED_ACCOUNTS_BY_REASON,
    },
];
