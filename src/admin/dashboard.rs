//! The status page's data (`GET /` and `GET /api/status` on the ops listener): the report of
//! `followq status` plus what only the page shows — requests per minute over the last hour,
//! the accounts with work ordered by what needs attention, and the most recent failures with
//! their one-sentence why.
//!
//! Everything comes from one read-only REPEATABLE READ snapshot, opened and committed in
//! [`snapshot`]: the queue, the app-wide stop and the daemons through `admin::status`'s own
//! report (so the page and `followq status` always agree on how a number is computed), and the
//! rest through the statements of [`crate::store::dashboard`], the only SQL the page adds.
//!
//! Every statement is bounded whatever the number of accounts (see
//! [`crate::store::dashboard`]); the bounds are chosen here: at most [`ACCOUNTS_SHOWN`]
//! accounts, the ledger read for the last hour at most, failures looked for among the last
//! [`FAILURE_SCAN`] finished jobs only. Nothing reads `followq.account_credentials`: no token
//! can reach the page.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::status::{self, StatusReport};
use super::why;
use crate::store::dashboard::{self as store, AccountCard, AccountsWithWork, MinuteRequests};

/// Accounts shown at most (and entries at most in each account list of the report).
pub const ACCOUNTS_SHOWN: i64 = 50;
/// Failures shown at most.
pub const FAILURES_SHOWN: i64 = 10;
/// The finished jobs, most recent first, among which failures are looked for: a day of
/// successes never makes the page read the whole `follow_jobs` table.
pub const FAILURE_SCAN: i64 = 5_000;
/// Queued jobs counted per listed account at most; more shows as "at least".
pub const QUEUED_COUNT_CAP: i64 = 10_000;
/// Minutes in the requests chart.
pub const CHART_MINUTES: i64 = 60;

/// The configuration the page measures accounts against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `rate_limit.requests_per_period`, for accounts without their own quota.
    pub requests_per_period: u32,
    /// `rate_limit.period`.
    pub period: Duration,
    /// `rate_limit.daily_follows_per_account`.
    pub daily_follows_per_account: u32,
    /// `retry.max_attempts`, for the failures' sentences.
    pub default_max_attempts: u32,
    /// `worker.send_deadline` + `x_api.request_timeout`: a request has its answer (or can no
    /// longer reach X) within this long after it was sent.
    pub answer_within: Duration,
    /// `billing.price_per_request`, for the spend's money figures.
    pub price_per_request: rust_decimal::Decimal,
}

impl Limits {
    /// A minute of the chart is read from the ledger until it is this many minutes old, then
    /// kept (see [`SettledMinutes`]): `answer_within` and a minute of slack after it ended,
    /// every request sent in it has its outcome, so its counts no longer change.
    pub fn settle_minutes(&self) -> i64 {
        let answer_minutes = self.answer_within.as_secs().div_ceil(60);
        i64::try_from(answer_minutes)
            .unwrap_or(CHART_MINUTES)
            .saturating_add(1)
            .clamp(2, CHART_MINUTES)
    }

    /// The accounts statement's measures and bounds for this configuration, while an app-wide
    /// stop is in force or not.
    pub fn accounts_with_work(&self, app_stopped: bool) -> AccountsWithWork {
        AccountsWithWork {
            default_window_limit: i32::try_from(self.requests_per_period).unwrap_or(i32::MAX),
            default_window_seconds: i32::try_from(self.period.as_secs()).unwrap_or(i32::MAX),
            app_stopped,
            daily_cap: i64::from(self.daily_follows_per_account),
            shown: ACCOUNTS_SHOWN,
            queued_count_cap: QUEUED_COUNT_CAP,
        }
    }
}

/// The page's data; `GET /api/status` serves it as JSON. Its first fields are those of
/// `followq status --json`, with each account list cut at [`ACCOUNTS_SHOWN`].
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    #[serde(flatten)]
    pub status: StatusReport,
    /// The account lists above hold at most this many entries each.
    pub list_limit: i64,
    /// One entry per minute, oldest first, the last one the minute in progress.
    pub requests_per_minute: Vec<MinuteRequests>,
    /// Accounts with work, the most in need of attention first.
    pub accounts: Vec<AccountCard>,
    /// Accounts with work not in `accounts`.
    pub accounts_not_shown: i64,
    /// The most recent failed jobs, newest first.
    pub recent_failures: Vec<Failure>,
}

/// A failed job and why, as `followq jobs show` says it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub job_id: i64,
    pub source_user_id: String,
    pub target_user_id: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub why: String,
}

/// The chart's minutes that no longer change, kept from one snapshot to the next so that a
/// refresh reads only the last [`Limits::settle_minutes`] minutes of the ledger instead of an hour of
/// it (an hour of a busy day is hundreds of thousands of rows).
#[derive(Debug, Clone, Default)]
pub struct SettledMinutes {
    /// Minutes with requests, in order, all before `read_until`.
    minutes: Vec<MinuteRequests>,
    /// Every minute before this one has been read and settled.
    read_until: Option<DateTime<Utc>>,
}

impl SettledMinutes {
    /// Where the next read of the ledger starts for a chart starting at `chart_start`.
    fn read_from(&self, chart_start: DateTime<Utc>, settle_before: DateTime<Utc>) -> DateTime<Utc> {
        match self.read_until {
            // A clock that went back makes the kept minutes suspect: read the hour again.
            Some(until) if until <= settle_before => until.max(chart_start),
            _ => chart_start,
        }
    }

    /// Merges the minutes just read (from `read_from`) with the kept ones into the chart, and
    /// keeps those that are settled now.
    fn merge(
        &mut self,
        fresh: Vec<MinuteRequests>,
        read_from: DateTime<Utc>,
        now: DateTime<Utc>,
        settle_minutes: i64,
    ) -> Vec<MinuteRequests> {
        let this_minute = minute_of(now);
        let chart_start = this_minute - TimeDelta::minutes(CHART_MINUTES - 1);
        let settle_before = this_minute - TimeDelta::minutes(settle_minutes);
        let mut rows: Vec<MinuteRequests> = self
            .minutes
            .iter()
            .filter(|m| m.minute >= chart_start && m.minute < read_from)
            .cloned()
            .collect();
        rows.extend(fresh);
        let chart = every_minute(rows, now);
        self.minutes = chart
            .iter()
            .filter(|m| m.minute < settle_before && **m != MinuteRequests::empty(m.minute))
            .cloned()
            .collect();
        self.read_until = Some(settle_before.max(chart_start));
        chart
    }
}

impl MinuteRequests {
    fn empty(minute: DateTime<Utc>) -> MinuteRequests {
        MinuteRequests {
            minute,
            ..MinuteRequests::default()
        }
    }
}

/// The start of the minute of `at`.
fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.timestamp()
        .div_euclid(60)
        .checked_mul(60)
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .unwrap_or(at)
}

/// Reads the page's data from one snapshot. `settled` carries the chart's settled minutes
/// from the previous snapshot to the next (a fresh one reads the whole hour).
pub async fn snapshot(
    pool: &PgPool,
    limits: &Limits,
    settled: &mut SettledMinutes,
) -> Result<Dashboard, sqlx::Error> {
    let mut tx = store::snapshot(pool).await?;
    let report = status::report_in(&mut tx, Some(ACCOUNTS_SHOWN), limits.price_per_request).await?;
    let now = report.generated_at;
    let this_minute = minute_of(now);
    let read_from = settled.read_from(
        this_minute - TimeDelta::minutes(CHART_MINUTES - 1),
        this_minute - TimeDelta::minutes(limits.settle_minutes()),
    );
    let minutes = store::requests_per_minute(&mut tx, read_from).await?;
    let (rows, total) = store::accounts_with_work(
        &mut tx,
        &limits.accounts_with_work(report.app_pause.is_some()),
    )
    .await?;
    let failed = store::recent_failed_jobs(&mut tx, FAILURES_SHOWN, FAILURE_SCAN).await?;
    tx.commit().await?;

    let app_stop = report.app_pause.as_ref().map(|stop| why::AppStopFacts {
        reason: stop.reason.clone(),
        paused_until: stop.paused_until,
    });
    let accounts: Vec<AccountCard> = rows
        .into_iter()
        .map(|row| row.explained(app_stop.as_ref(), now))
        .collect();
    let accounts_not_shown = total.saturating_sub(i64::try_from(accounts.len()).unwrap_or(0));
    let recent_failures = failed
        .iter()
        .map(|job| Failure {
            job_id: job.id,
            source_user_id: job.source_user_id.clone(),
            target_user_id: job.target_user_id.clone(),
            finished_at: job.finished_at,
            why: why::explain(&why::Facts {
                job,
                account: None,
                app: None,
                ahead: 0,
                default_max_attempts: limits.default_max_attempts,
                now,
            }),
        })
        .collect();
    Ok(Dashboard {
        status: report,
        list_limit: ACCOUNTS_SHOWN,
        requests_per_minute: settled.merge(minutes, read_from, now, limits.settle_minutes()),
        accounts,
        accounts_not_shown,
        recent_failures,
    })
}

/// The chart's minutes, one entry each (zero where the ledger has none), oldest first.
fn every_minute(rows: Vec<MinuteRequests>, now: DateTime<Utc>) -> Vec<MinuteRequests> {
    let this_minute = minute_of(now);
    let mut rows = rows.into_iter().peekable();
    (0..CHART_MINUTES)
        .rev()
        .map(|ago| this_minute - TimeDelta::minutes(ago))
        .map(|minute| {
            // Rows come in minute order; one older than the chart (a clock step) is skipped.
            while rows.next_if(|row| row.minute < minute).is_some() {}
            rows.next_if(|row| row.minute == minute)
                .unwrap_or_else(|| MinuteRequests::empty(minute))
        })
        .collect()
}

impl AccountCard {
    /// The card with its sentence.
    fn explained(self, app: Option<&why::AppStopFacts>, now: DateTime<Utc>) -> AccountCard {
        let why = why::account_sentence(&why::AccountState {
            user_id: &self.user_id,
            status: self.status,
            pause_reason: self.pause_reason.as_ref(),
            paused_until: self.paused_until,
            leased_by: self.leased_by.as_deref(),
            queued: self.queued,
            window_spent: self.window_spent,
            window_limit: self.window_limit,
            window_resets_at: self.window_resets_at,
            follows_24h: self.follows_24h,
            daily_cap: self.daily_cap,
            app,
            now,
        });
        AccountCard { why, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap_or_default()
    }

    #[test]
    fn the_chart_has_every_minute_of_the_hour_once() {
        let now = at(100) + TimeDelta::seconds(17);
        let rows = vec![
            MinuteRequests {
                minute: at(10),
                succeeded: 9,
                ..MinuteRequests::default()
            },
            MinuteRequests {
                minute: at(41),
                succeeded: 3,
                ..MinuteRequests::default()
            },
            MinuteRequests {
                minute: at(100),
                transient: 2,
                ..MinuteRequests::default()
            },
        ];
        let minutes = every_minute(rows, now);
        assert_eq!(minutes.len(), 60);
        assert_eq!(minutes[0].minute, at(41));
        assert_eq!(minutes[0].succeeded, 3);
        assert_eq!(minutes[59].minute, at(100));
        assert_eq!(minutes[59].transient, 2);
        assert!(
            minutes[1..59]
                .iter()
                .all(|m| m.succeeded + m.transient == 0)
        );
        assert!(
            minutes
                .windows(2)
                .all(|w| w[1].minute - w[0].minute == TimeDelta::minutes(1))
        );
    }

    fn succeeded(minute: i64, n: i64) -> MinuteRequests {
        MinuteRequests {
            minute: at(minute),
            succeeded: n,
            ..MinuteRequests::default()
        }
    }

    #[test]
    fn settling_waits_for_the_answers_and_a_minute() {
        let limits = |secs| Limits {
            requests_per_period: 50,
            period: Duration::from_secs(900),
            daily_follows_per_account: 400,
            default_max_attempts: 8,
            answer_within: Duration::from_secs(secs),
            price_per_request: rust_decimal::Decimal::ZERO,
        };
        assert_eq!(limits(3).settle_minutes(), 2);
        assert_eq!(limits(30).settle_minutes(), 2);
        assert_eq!(limits(61).settle_minutes(), 3);
        assert_eq!(limits(u64::MAX).settle_minutes(), CHART_MINUTES);
    }

    #[test]
    fn settled_minutes_are_kept_and_only_the_recent_ones_read_again() {
        let mut settled = SettledMinutes::default();
        // The first snapshot reads the whole hour.
        let now = at(100) + TimeDelta::seconds(5);
        let from = settled.read_from(at(41), at(95));
        assert_eq!(from, at(41));
        let chart = settled.merge(vec![succeeded(50, 4), succeeded(99, 2)], from, now, 5);
        assert_eq!(chart.iter().map(|m| m.succeeded).sum::<i64>(), 6);

        // Two minutes later only the minutes from the first unsettled one are read; the kept
        // minute 50 is still on the chart, and minute 99's new count replaces the old one.
        let now = at(102) + TimeDelta::seconds(5);
        let from = settled.read_from(at(43), at(97));
        assert_eq!(from, at(95));
        let chart = settled.merge(vec![succeeded(99, 3), succeeded(102, 1)], from, now, 5);
        let by_minute = |m: i64| {
            chart
                .iter()
                .find(|c| c.minute == at(m))
                .map(|c| c.succeeded)
        };
        assert_eq!(by_minute(50), Some(4));
        assert_eq!(by_minute(99), Some(3));
        assert_eq!(by_minute(102), Some(1));
        assert_eq!(chart.len(), 60);

        // An hour later minute 50 has left the chart, and the read starts at the chart's start.
        let now = at(160);
        let from = settled.read_from(at(101), at(155));
        assert_eq!(from, at(101));
        let chart = settled.merge(Vec::new(), from, now, 5);
        assert_eq!(chart.iter().map(|m| m.succeeded).sum::<i64>(), 0);

        // A clock that went back reads the hour again.
        let from = settled.read_from(at(30), at(84));
        assert_eq!(from, at(30));
    }
}
