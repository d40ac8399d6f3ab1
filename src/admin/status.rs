//! `followq status`: the queue, the recent throughput, what is paused and who is running, as
//! one serializable report built from the short statements of [`crate::store::status`], all run
//! in one read-only snapshot ([`crate::store::status::snapshot`]) so that the numbers agree with
//! each other. Nothing is written: an expired app-wide stop is shown as over, not deleted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::store::pauses;
pub use crate::store::pauses::AppPause;
use crate::store::status::{self as store, OutcomeRow};
// The report's row types, part of this module's public API as they have always been.
pub use crate::store::status::{
    BlockedAccount, LiveDaemon, OldestReady, PausedAccount, QueueDepth,
};

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

/// Builds the report.
pub async fn report(pool: &PgPool) -> Result<StatusReport, sqlx::Error> {
    let mut tx = store::snapshot(pool).await?;
    let report = report_in(&mut tx, None).await?;
    tx.commit().await?;
    Ok(report)
}

/// Builds the report inside the caller's snapshot (see [`store::snapshot`]), each account list
/// cut at `list_limit` (`None`: whole).
pub async fn report_in(
    conn: &mut PgConnection,
    list_limit: Option<i64>,
) -> Result<StatusReport, sqlx::Error> {
    let generated_at = store::snapshot_time(conn).await?;
    let queue = store::queue_depth(conn).await?;
    let oldest_ready = store::oldest_ready(conn).await?;
    let throughput = throughput(store::recent_throughput(conn).await?);
    let app_pause = app_pause(conn).await?;
    let paused_accounts = store::paused_accounts(conn, list_limit).await?;
    let needs_reauth_accounts = store::blocked_accounts(conn, "needs_reauth", list_limit).await?;
    let disabled_accounts = store::blocked_accounts(conn, "disabled", list_limit).await?;
    let daemons = store::live_daemons(conn, LIVE_HEARTBEAT_SECONDS).await?;
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

/// The app-wide stop in force, if any.
pub async fn app_pause(conn: &mut PgConnection) -> Result<Option<AppPause>, sqlx::Error> {
    pauses::app_pause_in_force(conn).await
}

/// Totals the ledger rows by outcome into the report's throughput.
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
