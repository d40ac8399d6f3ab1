//! The demo's closing report: what became of the jobs, what the simulator saw, how the run
//! compares with the fastest the quota allows, what it would have cost at X's price, and
//! where it ran (one Postgres, or Citus with the jobs each worker held).

use std::fmt;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use super::DemoOptions;
use crate::admin::status::amount;
use crate::sim::SimStats;
use crate::store::{demo_report, schema};

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
    /// On Citus, how the jobs were spread over the workers; `None` on one Postgres.
    pub citus: Option<CitusSpread>,
}

/// Where the jobs of a run on Citus were: every primary worker, with its share.
#[derive(Debug, Clone, Serialize)]
pub struct CitusSpread {
    pub workers: Vec<WorkerShare>,
}

/// One worker's share of the run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerShare {
    /// `host:port`, as the coordinator reaches it.
    pub node: String,
    /// Accounts whose rows the worker holds.
    pub accounts: i64,
    /// Their jobs.
    pub jobs: i64,
}

/// How the jobs were spread, when the database is on Citus.
async fn citus_spread(pool: &PgPool) -> Result<Option<CitusSpread>, sqlx::Error> {
    if !schema::citus_installed(pool).await? {
        return Ok(None);
    }
    let workers = demo_report::jobs_per_worker(pool)
        .await?
        .into_iter()
        .map(|share| WorkerShare {
            node: format!("{}:{}", share.host, share.port),
            accounts: share.accounts,
            jobs: share.jobs,
        })
        .collect();
    Ok(Some(CitusSpread { workers }))
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
    let citus = citus_spread(pool).await?;
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
        citus,
    })
}

/// `1 job`, `2 jobs`.
fn counted(count: i64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
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
        match &self.citus {
            None => row(f, "ran on", "one Postgres".to_owned())?,
            Some(spread) => {
                row(
                    f,
                    "ran on",
                    format!("Citus, {} workers", spread.workers.len()),
                )?;
                for worker in &spread.workers {
                    row(
                        f,
                        &format!("  {}", worker.node),
                        format!(
                            "{} of {}",
                            counted(worker.jobs, "job"),
                            counted(worker.accounts, "account")
                        ),
                    )?;
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(citus: Option<CitusSpread>) -> DemoReport {
        DemoReport {
            completed: true,
            jobs: 90,
            following: 80,
            pending: 10,
            failed: 0,
            failed_by_reason: Vec::new(),
            still_queued: 0,
            requests: 95,
            rate_limited: 0,
            token_refreshes: 1,
            quota: 20,
            window_seconds: 2.0,
            max_requests_in_window: 20,
            max_requests_per_account: 32,
            achieved_seconds: 3.1,
            ideal_seconds: 2.0,
            billed_requests: 90,
            possibly_billed_requests: 0,
            price_per_request: Decimal::ZERO,
            cost: None,
            citus,
        }
    }

    #[test]
    fn on_one_postgres_the_report_says_so_and_nothing_of_citus() {
        let text = report(None).to_string();
        assert!(
            text.contains("ran on") && text.contains("one Postgres"),
            "{text}"
        );
        assert!(!text.contains("Citus"), "{text}");
    }

    #[test]
    fn on_citus_the_report_lists_every_workers_share() {
        let text = report(Some(CitusSpread {
            workers: vec![
                WorkerShare {
                    node: "127.0.0.1:9701".into(),
                    accounts: 2,
                    jobs: 60,
                },
                WorkerShare {
                    node: "127.0.0.1:9702".into(),
                    accounts: 1,
                    jobs: 30,
                },
            ],
        }))
        .to_string();
        assert!(text.contains("Citus, 2 workers"), "{text}");
        assert!(
            text.contains("127.0.0.1:9701") && text.contains("60 jobs of 2 accounts"),
            "{text}"
        );
        assert!(text.contains("30 jobs of 1 account\n"), "{text}");
    }
}
