//! The statements only the ops listener's status page adds to those of `followq status`
//! ([`super::status`]): requests per minute from the ledger, the accounts with work ordered by
//! what needs attention, and the most recent failures; and the page's snapshot ([`snapshot`])
//! they all run in.
//!
//! Each is read-only, runs on the caller's connection (inside its snapshot) and is bounded
//! whatever the number of accounts: lists have a LIMIT, the ledger is read through
//! `attempts_by_time` for the minutes asked for and through `attempts_by_account_and_time` for
//! the listed accounts only, and the failures are looked for among the last finished jobs
//! only. Nothing reads `followq.account_credentials`: no token can reach the page.

use super::Statement;
use super::status;
use crate::states::{AccountStatus, PauseReason};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Transaction};

use crate::admin::jobs::JobRow;

const JIT_OFF: &str = "SET LOCAL jit = off";

/// The page's snapshot: [`status::snapshot`] (one read-only REPEATABLE READ snapshot), with
/// JIT compilation off for its statements.
pub async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = status::snapshot(pool).await?;
    // The planner's estimates for 100,000 accounts pass `jit_above_cost`, and compiling the
    // statements took longer than running them (about 4 times, for the accounts statement).
    sqlx::query(JIT_OFF).execute(&mut *tx).await?;
    Ok(tx)
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

const REQUESTS_PER_MINUTE: &str = r#"
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
        "#;

/// Ledger rows per minute and outcome class from the minute `from` (the minute in progress
/// included), through `attempts_by_time`; only minutes with rows, oldest first.
pub async fn requests_per_minute(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
) -> Result<Vec<MinuteRequests>, sqlx::Error> {
    sqlx::query_as::<_, MinuteRequests>(REQUESTS_PER_MINUTE)
        .bind(from)
        .fetch_all(conn)
        .await
}

/// One account with work (queued jobs, a live lease, or in need of new tokens), as
/// [`accounts_with_work`] returns it and the page completes it with its `why`.
#[derive(Debug, Clone, Serialize, PartialEq, FromRow)]
pub struct AccountCard {
    pub user_id: String,
    pub status: AccountStatus,
    pub pause_reason: Option<PauseReason>,
    pub paused_until: Option<DateTime<Utc>>,
    /// The daemon holding the account's lease, while the lease runs.
    pub leased_by: Option<String>,
    /// Queued jobs not in flight, counted up to [`AccountsWithWork::queued_count_cap`].
    pub queued: i64,
    /// Jobs whose request may be on its way to X now (`followq.jobs_in_flight`).
    pub in_flight: i64,
    /// Requests sent in the last `window_seconds` (the ledger, `not_sent` rows excluded).
    pub window_spent: i64,
    pub window_limit: i64,
    pub window_seconds: i64,
    /// When the oldest request of the window leaves it (or the reset X announced, if later).
    pub window_resets_at: Option<DateTime<Utc>>,
    /// Follows that may have happened in the last 24 hours (succeeded, or no answer).
    pub follows_24h: i64,
    pub daily_cap: i64,
    /// What holds it, or what it is doing, in words: not a column, left empty here for the
    /// page to fill.
    #[sqlx(default)]
    pub why: String,
}

/// What [`accounts_with_work`] measures the accounts against, and how many it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountsWithWork {
    /// The window's requests for an account without its own quota.
    pub default_window_limit: i32,
    /// The window's length in seconds for an account without its own quota.
    pub default_window_seconds: i32,
    /// An app-wide stop is in force: every account is held by it.
    pub app_stopped: bool,
    /// Follows per account in 24 hours.
    pub daily_cap: i64,
    /// Accounts listed at most.
    pub shown: i64,
    /// Queued jobs counted per listed account at most.
    pub queued_count_cap: i64,
}

const ACCOUNTS_WITH_WORK: &str = concat!(
    r#"
        WITH shown AS (
            SELECT a.user_id, a.updated_at,
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
        -- The listed accounts are read again (by primary key) and the lateral subqueries
        -- refer to that row, not to `shown`: Citus computes `shown` first, as an intermediate
        -- result, and cannot push down a subquery with a LIMIT that refers to one; it can one
        -- that refers to the account column of a table distributed by it (every row of one
        -- account is on one shard).
        SELECT a.user_id, a.status, a.pause_reason, a.paused_until,
               CASE WHEN a.lease_expires_at > now() THEN a.leased_by END AS leased_by,
               q.queued, q.in_flight, w.spent AS window_spent,
               coalesce(a.quota_requests, $1)::int8 AS window_limit,
               coalesce(a.quota_period_seconds, $2)::int8 AS window_seconds,
               greatest(w.oldest + make_interval(secs => coalesce(a.quota_period_seconds, $2)),
                        w.announced_reset) AS window_resets_at,
               d.follows AS follows_24h, $4::int8 AS daily_cap, s.total
        FROM shown AS s
        JOIN followq.accounts AS a ON a.user_id = s.user_id
        CROSS JOIN LATERAL (
            -- A job in flight stays queued in the table: counted as in flight, not queued.
            -- One more than the cap is read, so that an account with a job in flight and
            -- more than the cap queued still shows the cap.
            SELECT least(count(*) - count(f.job_id), $6) AS queued, count(f.job_id) AS in_flight
            FROM (
                SELECT j.id FROM followq.follow_jobs AS j
                WHERE j.source_user_id = a.user_id AND j.state = 'queued'
                LIMIT $6 + 1
            ) AS capped
            LEFT JOIN followq.jobs_in_flight AS f
                ON f.job_id = capped.id AND f.source_user_id = a.user_id
        ) AS q
        CROSS JOIN LATERAL (
            SELECT count(*) AS spent, min(t.sent_at) AS oldest,
                   max(t.rate_limit_reset_at) FILTER (WHERE t.rate_limit_reset_at > now())
                       AS announced_reset
            FROM followq.attempts AS t
            WHERE t.account_user_id = a.user_id
              AND t.sent_at > now() - make_interval(secs => coalesce(a.quota_period_seconds, $2))
              AND t.outcome IS DISTINCT FROM 'not_sent'
        ) AS w
        CROSS JOIN LATERAL (
            SELECT count(*) AS follows
            FROM followq.attempts AS t
            WHERE t.account_user_id = a.user_id
              AND t.sent_at > now() - interval '24 hours'
              "#,
    "AND ",
    super::ledger::may_have_acted_sql!("t"),
    r#"
        ) AS d
        ORDER BY s.urgency, s.updated_at, s.user_id COLLATE "C"
        "#
);

/// The `shown` accounts with work most in need of attention (needs_reauth, then, while the
/// app is stopped, every other, then paused, disabled, and the rest; the longest in that state
/// first), with their windows and daily counts, and how many accounts have work.
///
/// Which accounts have work, and how many, is one pass over `accounts` with a semi-join on the
/// queued jobs; the ledger and the queued counts are read for the listed accounts only. The
/// same statement runs on one Postgres and on Citus (there, the list is one distributed pass,
/// and the rest one statement pushed down to the listed accounts' shards).
pub async fn accounts_with_work(
    conn: &mut PgConnection,
    params: &AccountsWithWork,
) -> Result<(Vec<AccountCard>, i64), sqlx::Error> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        account: AccountCard,
        total: i64,
    }
    let rows = sqlx::query_as::<_, Row>(ACCOUNTS_WITH_WORK)
        .bind(params.default_window_limit)
        .bind(params.default_window_seconds)
        .bind(params.app_stopped)
        .bind(params.daily_cap)
        .bind(params.shown)
        .bind(params.queued_count_cap)
        .fetch_all(conn)
        .await?;
    let total = rows.first().map_or(0, |row| row.total);
    Ok((rows.into_iter().map(|row| row.account).collect(), total))
}

const RECENT_FAILED_JOBS: &str = r#"
        SELECT id, source_user_id, target_user_id, state, priority, run_at, attempts,
               max_attempts, rate_limited_count, following, pending_follow, last_error,
               created_at, updated_at, finished_at, NULL::text AS sent_by,
               NULL::timestamptz AS answer_by
        FROM (
            SELECT * FROM followq.follow_jobs
            WHERE finished_at IS NOT NULL
            ORDER BY finished_at DESC
            LIMIT $2
        ) AS recent
        WHERE state = 'failed'
        ORDER BY finished_at DESC, id DESC
        LIMIT $1
        "#;

/// The `shown` most recent failed jobs among the last `scan` finished ones, newest first (a
/// backward walk of `follow_jobs_finished_at`): a day of successes never makes the page read
/// the whole `follow_jobs` table.
pub async fn recent_failed_jobs(
    conn: &mut PgConnection,
    shown: i64,
    scan: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as::<_, JobRow>(RECENT_FAILED_JOBS)
        .bind(shown)
        .bind(scan)
        .fetch_all(conn)
        .await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "dashboard::snapshot",
        sql: JIT_OFF,
    },
    Statement {
        name: "dashboard::requests_per_minute",
        sql: REQUESTS_PER_MINUTE,
    },
    Statement {
        name: "dashboard::accounts_with_work",
        sql: ACCOUNTS_WITH_WORK,
    },
    Statement {
        name: "dashboard::recent_failed_jobs",
        sql: RECENT_FAILED_JOBS,
    },
];
