//! The demo's closing report: what became of the jobs, what the simulator saw, how the run
//! compares with the fastest the quota allows, and what it would have cost at X's price.

use std::fmt;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use super::DemoOptions;
use crate::admin::status::amount;
use crate::sim::SimStats;
use crate::store::demo_report;

#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub completed: bool,
    pub jobs: u64,
    pub following: i64,
    pub pending: i64,
    pub failed: i64,
    /// Failed jobs by reason (`kind status`, e.g. `permanent 404`).
    pub failed_by_reason: Vec<(String, i64)>,
    pub still_queued: i64,
    pub requests: u64,
    pub rate_limited: u64,
    pub token_refreshes: u64,
    pub quota: u32,
    pub window_seconds: f64,
    /// The most requests any account had in one window (must not exceed the quota).
    pub max_requests_in_window: u64,
    /// The most requests one account needed (jobs plus retries).
    pub max_requests_per_account: u64,
    /// From the first request sent to the last job finished.
    pub achieved_seconds: f64,
    /// The fastest the quota allows: the busiest account's last window cannot open before
    /// (windows needed - 1) windows after its first request.
    pub ideal_seconds: f64,
    /// Requests X would have billed (answered 2xx) and possibly billed.
    pub billed_requests: i64,
    pub possibly_billed_requests: i64,
    /// X's price of one request (`billing.price_per_request`), and what the run would have
    /// cost at it (billed requests only; zero price: no money figure).
    pub price_per_request: Decimal,
    pub cost: Option<Decimal>,
}

pub async fn build(
    pool: &PgPool,
    stats: &SimStats,
    options: &DemoOptions,
    achieved: Duration,
    completed: bool,
    price: Decimal,
) -> Result<DemoReport, sqlx::Error> {
    let billed = demo_report::billed_requests(pool).await?;
    let counts = demo_report::job_counts(pool).await?;
    let failed_by_reason = demo_report::failed_by_reason(pool).await?;
    // From the first request out to the last job finished, as the database recorded them (the
    // progress loop only looks once a second).
    let measured = demo_report::first_sent_to_last_finished(pool).await?;
    let achieved = match measured {
        Some(seconds) if completed && seconds > 0.0 => Duration::from_secs_f64(seconds),
        _ => achieved,
    };
    let max_requests_per_account = stats.users.values().map(|u| u.requests).max().unwrap_or(0);
    let windows_needed = max_requests_per_account.div_ceil(u64::from(options.quota.max(1)));
    let ideal = options.window.as_secs_f64() * windows_needed.saturating_sub(1) as f64;
    Ok(DemoReport {
        completed,
        jobs: u64::from(options.jobs),
        following: counts.following,
        pending: counts.pending,
        failed: counts.failed,
        failed_by_reason,
        still_queued: counts.queued + counts.running,
        requests: stats.totals.all_users.requests,
        rate_limited: stats.totals.all_users.rate_limited,
        token_refreshes: stats.totals.all_users.refreshes,
        quota: options.quota,
        window_seconds: options.window.as_secs_f64(),
        max_requests_in_window: stats
            .users
            .values()
            .map(|u| u.max_requests_in_window)
            .max()
            .unwrap_or(0),
        max_requests_per_account,
        achieved_seconds: achieved.as_secs_f64(),
        ideal_seconds: ideal,
        billed_requests: billed.billed,
        possibly_billed_requests: billed.possibly_billed,
        price_per_request: price,
        cost: (!price.is_zero()).then(|| price * Decimal::from(billed.billed)),
    })
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, label: &str, value: String| {
            writeln!(f, "  {label:<38} {value}")
        };
        writeln!(f)?;
        writeln!(
            f,
            "followq demo: {}",
            if self.completed {
                "done"
            } else {
                "interrupted"
            }
        )?;
        row(f, "jobs", self.jobs.to_string())?;
        row(f, "  following", self.following.to_string())?;
        row(f, "  pending (protected targets)", self.pending.to_string())?;
        row(f, "  failed", self.failed.to_string())?;
        for (reason, count) in &self.failed_by_reason {
            row(f, &format!("    {reason}"), count.to_string())?;
        }
        if self.still_queued > 0 {
            row(
                f,
                "  still queued or running",
                self.still_queued.to_string(),
            )?;
        }
        row(f, "requests sent", self.requests.to_string())?;
        row(f, "answered 429", self.rate_limited.to_string())?;
        row(f, "token refreshes", self.token_refreshes.to_string())?;
        row(
            f,
            "most requests in one window",
            format!(
                "{} (quota {} per {:.0} s)",
                self.max_requests_in_window, self.quota, self.window_seconds
            ),
        )?;
        let efficiency = if self.achieved_seconds > 0.0 {
            100.0 * self.ideal_seconds / self.achieved_seconds
        } else {
            0.0
        };
        row(
            f,
            "time",
            format!(
                "{:.1} s achieved, {:.1} s ideal ({efficiency:.1}% of ideal; busiest account sent {} requests)",
                self.achieved_seconds, self.ideal_seconds, self.max_requests_per_account
            ),
        )?;
        let billed = format!(
            "{} billed (answered 2xx), {} possibly billed",
            self.billed_requests, self.possibly_billed_requests
        );
        match self.cost {
            Some(cost) => row(
                f,
                "cost at X's price",
                format!(
                    "{} ({} × {} per request; {billed})",
                    amount(cost, self.price_per_request),
                    self.billed_requests,
                    self.price_per_request.normalize()
                ),
            ),
            None => row(f, "requests X bills", billed),
        }
    }
}
