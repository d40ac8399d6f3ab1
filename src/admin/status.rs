//! `followq status`: the queue, the recent throughput, what is paused, who is running and what
//! was spent at X, as one serializable report built from the short statements of
//! [`crate::store::status`] and [`crate::store::billing`], all run in one read-only snapshot
//! ([`crate::store::status::snapshot`]) so that the numbers agree with each other. Nothing is written: an expired app-wide stop is shown as over, not deleted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use rust_decimal::Decimal;

use crate::store::billing::{self, Requests, Spend};
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
    /// What was spent at X: the last hour, the UTC day, the calendar month.
    pub spend: SpendReport,
}

/// Requests X billed (answered 2xx) and possibly billed (may have acted, no final answer),
/// with what they cost at `billing.price_per_request`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpendReport {
    /// X's price of one request; zero turns the money figures off (they are then `null`).
    pub price_per_request: Decimal,
    pub last_hour: PeriodSpend,
    /// Since the last midnight, UTC.
    pub day: PeriodSpend,
    /// Since the first of the month, UTC.
    pub month: PeriodSpend,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeriodSpend {
    pub since: DateTime<Utc>,
    pub billed_requests: i64,
    pub possibly_billed_requests: i64,
    pub billed_cost: Option<Decimal>,
    pub possibly_billed_cost: Option<Decimal>,
}

/// A sum of money to the price's own precision (at least cents), for display.
pub fn amount(sum: Decimal, price: Decimal) -> String {
    sum.round_dp(price.normalize().scale().max(2)).to_string()
}

impl SpendReport {
    fn new(spend: Spend, price: Decimal, now: DateTime<Utc>) -> SpendReport {
        let period = |since: DateTime<Utc>, requests: Requests| {
            let cost = |n: i64| (!price.is_zero()).then(|| price * Decimal::from(n));
            PeriodSpend {
                since,
                billed_requests: requests.billed,
                possibly_billed_requests: requests.possibly_billed,
                billed_cost: cost(requests.billed),
                possibly_billed_cost: cost(requests.possibly_billed),
            }
        };
        SpendReport {
            price_per_request: price,
            last_hour: period(now - chrono::TimeDelta::hours(1), spend.last_hour),
            day: period(spend.day_starts_at, spend.day),
            month: period(spend.month_starts_at, spend.month),
        }
    }
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

/// Builds the report, its money figures at `price` per request.
pub async fn report(pool: &PgPool, price: Decimal) -> Result<StatusReport, sqlx::Error> {
    let mut tx = store::snapshot(pool).await?;
    let report = report_in(&mut tx, None, price).await?;
    tx.commit().await?;
    Ok(report)
}

/// Builds the report inside the caller's snapshot (see [`store::snapshot`]), each account list
/// cut at `list_limit` (`None`: whole).
pub async fn report_in(
    conn: &mut PgConnection,
    list_limit: Option<i64>,
    price: Decimal,
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
    let spend = SpendReport::new(billing::spend(&mut *conn).await?, price, generated_at);
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
        spend,
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
