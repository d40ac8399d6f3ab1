//! `followq status`: the queue, the recent throughput, what is paused and who is running, as
//! one serializable report built from a few short statements.
//!
//! The statements run in one read-only REPEATABLE READ transaction, so the numbers come from
//! one snapshot (and `now()` is one instant) and agree with each other. Nothing is written:
//! unlike the daemon, an expired app-wide stop is shown as over, not deleted.
//!
//! Finished jobs are counted over the last 24 hours only (through the `finished_at` index):
//! a total over the whole table would scan every row ever enqueued.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Transaction};

use crate::store::pauses;
pub use crate::store::pauses::AppPause;

/// How recent a heartbeat must be for a daemon to count as live.
pub const LIVE_HEARTBEAT_SECONDS: f64 = 120.0;

/// The throughput windows, in minutes.
pub const WINDOWS: [i32; 3] = [1, 5, 15];

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub generated_at: DateTime<Utc>,
    pub queue: QueueDepth,
    /// The ready job (of an account that may send) that has waited longest since its run_at.
    pub oldest_ready: Option<OldestReady>,
    pub throughput: Throughput,
    /// The app-wide stop in force, if any.
    pub app_pause: Option<AppPause>,
    pub paused_accounts: Vec<PausedAccount>,
    pub needs_reauth_accounts: Vec<BlockedAccount>,
    pub disabled_accounts: Vec<BlockedAccount>,
    pub daemons: Vec<LiveDaemon>,
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

/// Requests sent (ledger rows by `sent_at`) in the last 1, 5 and 15 minutes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Throughput {
    pub windows_minutes: [i32; 3],
    /// Every request, per window (`not_sent` rows excluded: nothing went out).
    pub total: [i64; 3],
    /// Per outcome (`succeeded`, `transient`, `rate_limited`, …; `in_flight` while no answer
    /// is recorded), per window.
    pub by_outcome: Vec<OutcomeCounts>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutcomeCounts {
    pub outcome: String,
    pub counts: [i64; 3],
}

#[derive(Debug, Clone, FromRow)]
struct OutcomeRow {
    outcome: String,
    last_1: i64,
    last_5: i64,
    last_15: i64,
}

#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct PausedAccount {
    pub user_id: String,
    pub pause_reason: Option<String>,
    pub paused_until: Option<DateTime<Utc>>,
    pub queued: i64,
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

#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct LiveDaemon {
    pub worker_id: String,
    /// `None` for a daemon seen only through a lease (not registered in followq.daemons).
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub accounts_leased: i64,
    pub jobs_running: i64,
}

/// Builds the report.
pub async fn report(pool: &PgPool) -> Result<StatusReport, sqlx::Error> {
    let mut tx = snapshot(pool).await?;
    let report = report_in(&mut tx, None).await?;
    tx.commit().await?;
    Ok(report)
}

/// Builds the report inside the caller's snapshot (see [`snapshot`]), each account list cut at
/// `list_limit` (`None`: whole).
pub async fn report_in(
    conn: &mut PgConnection,
    list_limit: Option<i64>,
) -> Result<StatusReport, sqlx::Error> {
    let generated_at = snapshot_time(conn).await?;
    let queue = queue_depth(conn).await?;
    let oldest_ready = oldest_ready(conn).await?;
    let throughput = recent_throughput(conn).await?;
    let app_pause = app_pause(conn).await?;
    let paused_accounts = paused_accounts(conn, list_limit).await?;
    let needs_reauth_accounts = blocked_accounts(conn, "needs_reauth", list_limit).await?;
    let disabled_accounts = blocked_accounts(conn, "disabled", list_limit).await?;
    let daemons = live_daemons(conn).await?;
    Ok(StatusReport {
        generated_at,
        queue,
        oldest_ready,
        throughput,
        app_pause,
        paused_accounts,
        needs_reauth_accounts,
        disabled_accounts,
        daemons,
    })
}

// The parts of the report, one statement each, public so that other read-only views (the
// ops listener's status page) show the same numbers computed the same way. Each runs on the
// caller's connection, inside the caller's snapshot.

/// A read-only REPEATABLE READ transaction: every statement run in it sees one snapshot, and
/// `now()` is one instant.
pub async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The snapshot's `now()`.
pub async fn snapshot_time(conn: &mut PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(conn).await
}

/// Jobs by state.
pub async fn queue_depth(conn: &mut PgConnection) -> Result<QueueDepth, sqlx::Error> {
    sqlx::query_as::<_, QueueDepth>(
        r#"
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
        "#,
    )
    .fetch_one(conn)
    .await
}

/// The ready job (of an account that may send) that has waited longest since its run_at.
pub async fn oldest_ready(conn: &mut PgConnection) -> Result<Option<OldestReady>, sqlx::Error> {
    sqlx::query_as::<_, OldestReady>(
        r#"
        SELECT j.id AS job_id, j.source_user_id, j.created_at, j.run_at,
               extract(epoch FROM now() - j.run_at)::float8 AS ready_for_seconds,
               extract(epoch FROM now() - j.created_at)::float8 AS age_seconds
        FROM followq.follow_jobs AS j
        JOIN followq.accounts AS a ON a.user_id = j.source_user_id
        WHERE j.state = 'queued' AND j.run_at <= now()
          AND (a.status = 'active' OR (a.status = 'paused' AND a.paused_until <= now()))
        ORDER BY j.run_at, j.id
        LIMIT 1
        "#,
    )
    .fetch_optional(conn)
    .await
}

/// Requests sent in the last 1, 5 and 15 minutes, per outcome.
pub async fn recent_throughput(conn: &mut PgConnection) -> Result<Throughput, sqlx::Error> {
    let outcomes = sqlx::query_as::<_, OutcomeRow>(
        r#"
        SELECT coalesce(outcome, 'in_flight') AS outcome,
               count(*) FILTER (WHERE sent_at > now() - interval '1 minute') AS last_1,
               count(*) FILTER (WHERE sent_at > now() - interval '5 minutes') AS last_5,
               count(*) AS last_15
        FROM followq.attempts
        WHERE sent_at > now() - interval '15 minutes'
        GROUP BY 1
        ORDER BY 1
        "#,
    )
    .fetch_all(conn)
    .await?;
    Ok(throughput(outcomes))
}

/// The app-wide stop in force, if any.
pub async fn app_pause(conn: &mut PgConnection) -> Result<Option<AppPause>, sqlx::Error> {
    pauses::app_pause_in_force(conn).await
}

/// Paused accounts, the soonest to resume first; at most `limit` (`None`: all).
pub async fn paused_accounts(
    conn: &mut PgConnection,
    limit: Option<i64>,
) -> Result<Vec<PausedAccount>, sqlx::Error> {
    sqlx::query_as::<_, PausedAccount>(
        r#"
        SELECT a.user_id, a.pause_reason, a.paused_until,
               (SELECT count(*) FROM followq.follow_jobs AS j
                WHERE j.source_user_id = a.user_id AND j.state = 'queued') AS queued
        FROM followq.accounts AS a
        WHERE a.status = 'paused'
        ORDER BY a.paused_until, a.user_id
        LIMIT $1
        "#,
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Accounts of `status` (`needs_reauth` or `disabled`), the longest in it first; at most
/// `limit` (`None`: all).
pub async fn blocked_accounts(
    conn: &mut PgConnection,
    status: &str,
    limit: Option<i64>,
) -> Result<Vec<BlockedAccount>, sqlx::Error> {
    sqlx::query_as::<_, BlockedAccount>(
        r#"
        SELECT a.user_id, a.pause_reason AS reason, a.updated_at AS since,
               (SELECT count(*) FROM followq.follow_jobs AS j
                WHERE j.source_user_id = a.user_id AND j.state = 'queued') AS queued
        FROM followq.accounts AS a
        WHERE a.status = $1
        ORDER BY a.updated_at, a.user_id
        LIMIT $2
        "#,
    )
    .bind(status)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Registered daemons with a recent heartbeat, plus any worker holding a live lease (a
/// daemon whose registration failed still sends).
pub async fn live_daemons(conn: &mut PgConnection) -> Result<Vec<LiveDaemon>, sqlx::Error> {
    sqlx::query_as::<_, LiveDaemon>(
        r#"
        WITH live AS (
            SELECT worker_id FROM followq.daemons
            WHERE heartbeat_at > now() - make_interval(secs => $1)
            UNION
            SELECT leased_by FROM followq.accounts
            WHERE leased_by IS NOT NULL AND lease_expires_at > now()
        )
        SELECT l.worker_id, d.started_at, d.heartbeat_at,
               (SELECT count(*) FROM followq.accounts AS a
                WHERE a.leased_by = l.worker_id AND a.lease_expires_at > now()) AS accounts_leased,
               (SELECT count(*) FROM followq.jobs_in_flight AS f
                WHERE f.worker_id = l.worker_id) AS jobs_running
        FROM live AS l
        LEFT JOIN followq.daemons AS d ON d.worker_id = l.worker_id
        ORDER BY l.worker_id
        "#,
    )
    .bind(LIVE_HEARTBEAT_SECONDS)
    .fetch_all(conn)
    .await
}

fn throughput(rows: Vec<OutcomeRow>) -> Throughput {
    let mut total = [0i64; 3];
    let by_outcome = rows
        .into_iter()
        .map(|row| {
            let counts = [row.last_1, row.last_5, row.last_15];
            // A `not_sent` row is a claim that found no usable token: no request went out.
            if row.outcome != "not_sent" {
                for (sum, n) in total.iter_mut().zip(counts) {
                    *sum += n;
                }
            }
            OutcomeCounts {
                outcome: row.outcome,
                counts,
            }
        })
        .collect();
    Throughput {
        windows_minutes: WINDOWS,
        total,
        by_outcome,
    }
}
