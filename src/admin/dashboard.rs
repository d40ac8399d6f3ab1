//! The status page's data (`GET /` and `GET /api/status` on the ops listener): the report of
//! `followq status` plus what only the page shows — requests per minute over the last hour,
//! the accounts with work ordered by what needs attention, and the most recent failures with
//! their one-sentence why.
//!
//! Everything comes from one read-only REPEATABLE READ snapshot ([`store::status::snapshot`]): the
//! queue, the app-wide stop and the daemons through `admin::status`'s own functions (so the
//! page and `followq status` always agree on how a number is computed), and the rest through
//! the named statements at the end of this file, the only SQL the page adds.
//!
//! Every statement is bounded whatever the number of accounts: lists have a LIMIT, the
//! ledger is read through `attempts_by_time` for the last hour and through
//! `attempts_by_account_and_time` for the listed accounts only, and the failures are looked
//! for among the last [`FAILURE_SCAN`] finished jobs only. Nothing reads
//! `followq.account_credentials`: no token can reach the page.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};

use super::jobs::JobRow;
use super::status::{self, StatusReport};
use super::why;
use crate::store;

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
    /// `worker.job_lease`: a request has its answer, or the rescuer has marked it abandoned,
    /// within about this long after it was sent.
    pub job_lease: Duration,
}

impl Limits {
    /// A minute of the chart is read from the ledger until it is this many minutes old, then
    /// kept (see [`SettledMinutes`]): a job lease and a minute of slack after it ended, every
    /// request sent in it has its outcome, so its counts no longer change.
    pub fn settle_minutes(&self) -> i64 {
        let lease_minutes = self.job_lease.as_secs().div_ceil(60);
        i64::try_from(lease_minutes)
            .unwrap_or(CHART_MINUTES)
            .saturating_add(1)
            .clamp(2, CHART_MINUTES)
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

/// Ledger rows sent in one minute, by outcome class. Rows still waiting for their answer and
/// `not_sent` rows (nothing went out) are not counted.
#[derive(Debug, Clone, Default, FromRow, Serialize, PartialEq, Eq)]
pub struct MinuteRequests {
    pub minute: DateTime<Utc>,
    pub succeeded: i64,
    /// X answered 429 (a spent window or a usage cap).
    pub rate_limited: i64,
    /// Worth retrying: 5xx, timeouts, connections lost, requests abandoned by a dead daemon.
    pub transient: i64,
    /// Every other answer: 400, 401, 403, 404, the daily cap.
    pub permanent: i64,
}

/// One account with work (queued jobs, a live lease, or in need of new tokens), as the
/// accounts statement returns it and [`AccountCard::explained`] completes it.
#[derive(Debug, Clone, Serialize, PartialEq, FromRow)]
pub struct AccountCard {
    pub user_id: String,
    pub status: String,
    pub pause_reason: Option<String>,
    pub paused_until: Option<DateTime<Utc>>,
    /// The daemon holding the account's lease, while the lease runs.
    pub leased_by: Option<String>,
    /// Queued jobs, counted up to [`QUEUED_COUNT_CAP`].
    pub queued: i64,
    /// Requests sent in the last `window_seconds` (the ledger, `not_sent` rows excluded).
    pub window_spent: i64,
    pub window_limit: i64,
    pub window_seconds: i64,
    /// When the oldest request of the window leaves it (or the reset X announced, if later).
    pub window_resets_at: Option<DateTime<Utc>>,
    /// Follows that may have happened in the last 24 hours (succeeded, or no answer).
    pub follows_24h: i64,
    pub daily_cap: i64,
    /// What holds it, or what it is doing, in words (not a column: see
    /// [`AccountCard::explained`]).
    #[sqlx(default)]
    pub why: String,
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
    let mut tx = store::status::snapshot(pool).await?;
    // The planner's estimates for 100,000 accounts pass `jit_above_cost`, and compiling the
    // statements took longer than running them (about 4 times, for the accounts statement).
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let report = status::report_in(&mut tx, Some(ACCOUNTS_SHOWN)).await?;
    let now = report.generated_at;
    let this_minute = minute_of(now);
    let read_from = settled.read_from(
        this_minute - TimeDelta::minutes(CHART_MINUTES - 1),
        this_minute - TimeDelta::minutes(limits.settle_minutes()),
    );
    let minutes = requests_per_minute(&mut tx, read_from).await?;
    let (rows, total) = accounts_with_work(&mut tx, limits, report.app_pause.is_some()).await?;
    let failed = recent_failed_jobs(&mut tx).await?;
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
            status: &self.status,
            pause_reason: self.pause_reason.as_deref(),
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

// ---------------------------------------------------------------------------------------
// The page's statements. Each is read-only, runs on the caller's connection (inside its
// snapshot) and is bounded as the file's top comment says.
// ---------------------------------------------------------------------------------------

/// Ledger rows per minute and outcome class from the minute `from` (the minute in progress
/// included), through `attempts_by_time`.
pub async fn requests_per_minute(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
) -> Result<Vec<MinuteRequests>, sqlx::Error> {
    sqlx::query_as::<_, MinuteRequests>(
        r#"
        SELECT date_trunc('minute', sent_at) AS minute,
               count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE http_status = 429
                                   OR outcome IN ('rate_limited', 'usage_capped')) AS rate_limited,
               count(*) FILTER (WHERE outcome IN ('transient', 'abandoned')
                                  AND http_status IS DISTINCT FROM 429) AS transient,
               count(*) FILTER (WHERE outcome NOT IN ('succeeded', 'rate_limited', 'usage_capped',
                                                      'transient', 'abandoned', 'not_sent')
                                  AND http_status IS DISTINCT FROM 429) AS permanent
        FROM followq.attempts
        WHERE sent_at >= $1
        GROUP BY 1
        ORDER BY 1
        "#,
    )
    .bind(from)
    .fetch_all(conn)
    .await
}

/// The [`ACCOUNTS_SHOWN`] accounts with work most in need of attention (needs_reauth, then,
/// while the app is stopped, every other, then paused, disabled, and the rest; the longest in
/// that state first), with their windows and daily counts, and how many accounts have work.
///
/// Which accounts have work, and how many, is one pass over `accounts` with a semi-join on the
/// queued jobs; the ledger and the queued counts are read for the listed accounts only.
pub async fn accounts_with_work(
    conn: &mut PgConnection,
    limits: &Limits,
    app_stopped: bool,
) -> Result<(Vec<AccountCard>, i64), sqlx::Error> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        account: AccountCard,
        total: i64,
    }
    let rows = sqlx::query_as::<_, Row>(
        r#"
        WITH shown AS (
            SELECT a.user_id, a.status, a.pause_reason, a.paused_until, a.updated_at,
                   CASE WHEN a.lease_expires_at > now() THEN a.leased_by END AS leased_by,
                   coalesce(a.quota_requests, $1) AS window_limit,
                   coalesce(a.quota_period_seconds, $2) AS window_seconds,
                   CASE WHEN a.status = 'needs_reauth' THEN 0
                        WHEN $3 THEN 1
                        WHEN a.status = 'paused' AND a.paused_until > now() THEN 2
                        WHEN a.status = 'disabled' THEN 3
                        ELSE 4 END AS urgency,
                   count(*) OVER () AS total
            FROM followq.accounts AS a
            WHERE a.status = 'needs_reauth'
               OR a.lease_expires_at > now()
               OR EXISTS (SELECT 1 FROM followq.follow_jobs AS j
                          WHERE j.source_user_id = a.user_id AND j.state = 'queued')
            -- "C": ids compare as bytes, not through the locale (ties on updated_at are
            -- common: accounts registered in one batch).
            ORDER BY urgency, a.updated_at, a.user_id COLLATE "C"
            LIMIT $5
        )
        SELECT s.user_id, s.status, s.pause_reason, s.paused_until, s.leased_by,
               q.queued, w.spent AS window_spent, s.window_limit::int8 AS window_limit,
               s.window_seconds::int8 AS window_seconds,
               greatest(w.oldest + make_interval(secs => s.window_seconds), w.announced_reset)
                   AS window_resets_at,
               d.follows AS follows_24h, $4::int8 AS daily_cap, s.total
        FROM shown AS s
        CROSS JOIN LATERAL (
            SELECT count(*) AS queued FROM (
                SELECT 1 FROM followq.follow_jobs AS j
                WHERE j.source_user_id = s.user_id AND j.state = 'queued'
                LIMIT $6
            ) AS capped
        ) AS q
        CROSS JOIN LATERAL (
            SELECT count(*) AS spent, min(t.sent_at) AS oldest,
                   max(t.rate_limit_reset_at) FILTER (WHERE t.rate_limit_reset_at > now())
                       AS announced_reset
            FROM followq.attempts AS t
            WHERE t.account_user_id = s.user_id
              AND t.sent_at > now() - make_interval(secs => s.window_seconds)
              AND t.outcome IS DISTINCT FROM 'not_sent'
        ) AS w
        CROSS JOIN LATERAL (
            SELECT count(*) AS follows
            FROM followq.attempts AS t
            WHERE t.account_user_id = s.user_id
              AND t.sent_at > now() - interval '24 hours'
              AND (t.outcome IS NULL OR t.outcome IN ('succeeded', 'abandoned'))
        ) AS d
        ORDER BY s.urgency, s.updated_at, s.user_id COLLATE "C"
        "#,
    )
    .bind(i32::try_from(limits.requests_per_period).unwrap_or(i32::MAX))
    .bind(i32::try_from(limits.period.as_secs()).unwrap_or(i32::MAX))
    .bind(app_stopped)
    .bind(i64::from(limits.daily_follows_per_account))
    .bind(ACCOUNTS_SHOWN)
    .bind(QUEUED_COUNT_CAP)
    .fetch_all(conn)
    .await?;
    let total = rows.first().map_or(0, |row| row.total);
    Ok((rows.into_iter().map(|row| row.account).collect(), total))
}

/// The [`FAILURES_SHOWN`] most recent failed jobs among the last [`FAILURE_SCAN`] finished
/// ones, newest first (a backward walk of `follow_jobs_finished_at`).
pub async fn recent_failed_jobs(conn: &mut PgConnection) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as::<_, JobRow>(
        r#"
        SELECT id, source_user_id, target_user_id, state, priority, run_at, attempts,
               max_attempts, rate_limited_count, following, pending_follow, last_error,
               created_at, updated_at, finished_at, leased_by, lease_expires_at
        FROM (
            SELECT * FROM followq.follow_jobs
            WHERE finished_at IS NOT NULL
            ORDER BY finished_at DESC
            LIMIT $2
        ) AS recent
        WHERE state = 'failed'
        ORDER BY finished_at DESC, id DESC
        LIMIT $1
        "#,
    )
    .bind(FAILURES_SHOWN)
    .bind(FAILURE_SCAN)
    .fetch_all(conn)
    .await
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
    fn settling_waits_for_a_job_lease_and_a_minute() {
        let limits = |secs| Limits {
            requests_per_period: 50,
            period: Duration::from_secs(900),
            daily_follows_per_account: 400,
            default_max_attempts: 8,
            job_lease: Duration::from_secs(secs),
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
