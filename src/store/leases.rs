//! Account leases: which daemon alone may send for an account, and for how long.
//!
//! governor keeps its buckets in process memory, so two daemons pacing one account would
//! allow twice its quota. A lease makes the holder's limiter the only one: a daemon leases
//! accounts that have ready jobs, renews its leases in one statement per heartbeat, and
//! releases them when the account runs dry or the daemon stops. Claiming a job re-checks the
//! lease in the same statement (see `store::claim`), so a daemon whose lease lapsed cannot
//! send. A new holder seeds its limiter from the ledger ([`ledger_seeds`]) before sending.
//!
//! Statements that change several account rows lock them in key order first, as the claim
//! does, so that a renewal or a release never deadlocks with a claim. On Citus, where such a
//! statement must name one shard's accounts, each is sent once per shard ([`Shards`]), all in
//! flight together; on one Postgres, once.

use super::Statement;
use std::time::Duration;

use futures_util::future::try_join_all;
use sqlx::{FromRow, PgConnection, PgPool};

use super::shards::Shards;

/// A freshly leased account, with what its limiter needs.
#[derive(Debug, Clone, FromRow)]
pub struct LeasedAccount {
    pub user_id: String,
    pub quota_requests: Option<i32>,
    pub quota_period_seconds: Option<i32>,
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Leases up to `limit` accounts that have a job ready now and that no other daemon holds
/// (or whose holder's lease ran out). Paused accounts whose pause has ended are included.
///
/// On one Postgres one statement picks and leases them, skipping rows another daemon is
/// leasing at that moment. Citus takes no row lock in a statement over every shard: there the
/// candidates are read first, without locks, and leased as named accounts, one statement per
/// shard, which checks each again under its lock (a candidate another daemon took meanwhile
/// is simply not leased).
pub async fn acquire(
    pool: &PgPool,
    shards: &Shards,
    worker_id: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<LeasedAccount>, sqlx::Error> {
    if !shards.distributed(pool).await? {
        return sqlx::query_as::<_, LeasedAccount>(ACQUIRE_ANY)
            .bind(worker_id)
            .bind(seconds(lease))
            .bind(limit)
            .fetch_all(pool)
            .await;
    }
    let candidates: Vec<String> = sqlx::query_scalar(LEASE_CANDIDATES)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    acquire_named(pool, shards, worker_id, &candidates, lease).await
}

/// Leases the named accounts that are free (or already this daemon's) and have a ready job:
/// the NOTIFY path, for a burst of notifications at once.
pub async fn acquire_named(
    pool: &PgPool,
    shards: &Shards,
    worker_id: &str,
    accounts: &[String],
    lease: Duration,
) -> Result<Vec<LeasedAccount>, sqlx::Error> {
    let groups = shards.group(pool, accounts).await?;
    let leased = try_join_all(groups.iter().map(|group| {
        sqlx::query_as::<_, LeasedAccount>(ACQUIRE_NAMED)
            .bind(worker_id)
            .bind(seconds(lease))
            .bind(i64::try_from(group.len()).unwrap_or(i64::MAX))
            .bind(group)
            .fetch_all(pool)
    }))
    .await?;
    Ok(leased.into_iter().flatten().collect())
}

/// Leasing, named accounts or any: the accounts filter, and the statement around it.
macro_rules! acquire_sql {
    ($which:literal, $named_jobs:literal, $named_update:literal) => {
        concat!(
            r#"
        WITH candidates AS MATERIALIZED (
            SELECT a.user_id
            FROM followq.accounts AS a
            WHERE "#,
            $which,
            r#"
              AND (a.status = 'active' OR (a.status = 'paused' AND a.paused_until <= now()))
              AND EXISTS (
                  SELECT 1 FROM followq.follow_jobs AS j
                  WHERE j.source_user_id = a.user_id"#,
            $named_jobs,
            r#"
                    AND j.state = 'queued'
                    AND j.run_at <= now())
            LIMIT $3
            FOR NO KEY UPDATE OF a SKIP LOCKED
        )
        UPDATE followq.accounts AS a
        SET leased_by = $1,
            lease_expires_at = now() + make_interval(secs => $2)
        FROM candidates
        WHERE a.user_id = candidates.user_id"#,
            $named_update,
            r#"
        RETURNING a.user_id, a.quota_requests, a.quota_period_seconds
        "#
        )
    };
}

/// Any free account with a ready job.
const ACQUIRE_ANY: &str = acquire_sql!(
    "(a.leased_by IS NULL OR a.lease_expires_at < now())",
    "",
    ""
);

/// The named accounts ($4) that are free or this daemon's own. The accounts' filter is on
/// every table the statement reads or writes (redundant on one Postgres): on Citus, names of
/// one shard's accounts make it one statement routed to that shard, row locks and all.
const ACQUIRE_NAMED: &str = acquire_sql!(
    "a.user_id = ANY($4::text[])
              AND (a.leased_by IS NULL OR a.lease_expires_at < now() OR a.leased_by = $1)",
    "
                    AND j.source_user_id = ANY($4::text[])",
    "
          AND a.user_id = ANY($4::text[])"
);

/// Free accounts with a ready job, read without locks (Citus; see [`acquire`]): on Citus
/// each shard answers for its own accounts, and the coordinator keeps the first `$1`.
const LEASE_CANDIDATES: &str = r#"
        SELECT a.user_id
        FROM followq.accounts AS a
        WHERE (a.leased_by IS NULL OR a.lease_expires_at < now())
          AND (a.status = 'active' OR (a.status = 'paused' AND a.paused_until <= now()))
          AND EXISTS (
              SELECT 1 FROM followq.follow_jobs AS j
              WHERE j.source_user_id = a.user_id
                AND j.state = 'queued'
                AND j.run_at <= now())
        LIMIT $1
        "#;

const RENEW: &str = r#"
        WITH mine AS (
            SELECT user_id FROM followq.accounts
            WHERE user_id = ANY($2) AND leased_by = $1
            ORDER BY user_id
            FOR NO KEY UPDATE
        )
        UPDATE followq.accounts AS a
        SET lease_expires_at = now() + make_interval(secs => $3)
        FROM mine
        WHERE a.user_id = mine.user_id AND a.user_id = ANY($2)
        RETURNING a.user_id
        "#;

/// Extends every lease this daemon still holds among `held`; returns the ones it kept.
/// An account missing from the answer was lost (the lease lapsed and another daemon took it).
pub async fn renew(
    pool: &PgPool,
    shards: &Shards,
    worker_id: &str,
    held: &[String],
    lease: Duration,
) -> Result<Vec<String>, sqlx::Error> {
    let groups = shards.group(pool, held).await?;
    let kept = try_join_all(groups.iter().map(|group| {
        sqlx::query_scalar::<_, String>(RENEW)
            .bind(worker_id)
            .bind(group)
            .bind(seconds(lease))
            .fetch_all(pool)
    }))
    .await?;
    Ok(kept.into_iter().flatten().collect())
}

const RELEASE: &str = r#"
        WITH mine AS (
            SELECT a.user_id FROM followq.accounts AS a
            WHERE a.user_id = ANY($2) AND a.leased_by = $1
              -- An idle account whose job arrived meanwhile stays: its NOTIFY may have been
              -- taken as "already held".
              AND NOT ($3 AND EXISTS (
                  SELECT 1 FROM followq.follow_jobs AS j
                  WHERE j.source_user_id = a.user_id AND j.source_user_id = ANY($2)
                    AND j.state = 'queued' AND j.run_at <= now()))
            ORDER BY a.user_id
            FOR NO KEY UPDATE OF a
        )
        UPDATE followq.accounts AS a
        SET leased_by = NULL, lease_expires_at = NULL
        FROM mine
        WHERE a.user_id = mine.user_id AND a.user_id = ANY($2)
        RETURNING a.user_id
        "#;

/// Which of the named accounts [`release`] gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Every one this daemon holds (parked, beyond its share, fenced, stopping).
    Now,
    /// Those with no ready job: idle accounts, unless a job arrived since they went idle.
    IfIdle,
}

/// Gives back those of `accounts` this daemon holds (see [`Release`]); returns the ones
/// released.
pub async fn release(
    pool: &PgPool,
    shards: &Shards,
    worker_id: &str,
    accounts: &[String],
    which: Release,
) -> Result<Vec<String>, sqlx::Error> {
    let groups = shards.group(pool, accounts).await?;
    let released = try_join_all(groups.iter().map(|group| {
        sqlx::query_scalar::<_, String>(RELEASE)
            .bind(worker_id)
            .bind(group)
            .bind(which == Release::IfIdle)
            .fetch_all(pool)
    }))
    .await?;
    Ok(released.into_iter().flatten().collect())
}

const RELEASE_ALL: &str = r#"
        WITH mine AS (
            SELECT user_id FROM followq.accounts WHERE leased_by = $1
            ORDER BY user_id
            FOR NO KEY UPDATE
        )
        UPDATE followq.accounts AS a SET leased_by = NULL, lease_expires_at = NULL
        FROM mine WHERE a.user_id = mine.user_id
        "#;

const HELD: &str = "SELECT user_id FROM followq.accounts WHERE leased_by = $1";

/// Gives back every lease this daemon holds; returns how many. On Citus, where the one
/// statement would lock rows of every shard, the accounts are read first and released by
/// name, once per shard.
pub async fn release_all(
    pool: &PgPool,
    shards: &Shards,
    worker_id: &str,
) -> Result<u64, sqlx::Error> {
    if !shards.distributed(pool).await? {
        let done = sqlx::query(RELEASE_ALL)
            .bind(worker_id)
            .execute(pool)
            .await?;
        return Ok(done.rows_affected());
    }
    let held: Vec<String> = sqlx::query_scalar(HELD)
        .bind(worker_id)
        .fetch_all(pool)
        .await?;
    let released = release(pool, shards, worker_id, &held, Release::Now).await?;
    Ok(released.len() as u64)
}

/// The ledger's view of one account's recent past. Times are seconds relative to the
/// database's `now()` (positive: ago; for `*_in`: ahead), so that a host clock that disagrees
/// with the database's cannot shift them.
#[derive(Debug, Clone, FromRow)]
pub struct LedgerRow {
    pub account_user_id: String,
    /// How long ago each request that may still count could have reached X at the latest
    /// (negative: it may still reach X), newest first, at most the quota: answered requests at
    /// their answer, unanswered ones at their `answer_by`; none older than the last answer
    /// that opened a window, none older than one period.
    pub arrivals_ago: Vec<f64>,
    /// An unanswered request may still reach X for this many seconds.
    pub outstanding_for: Option<f64>,
    /// The last window the server reported, while it lasts.
    pub report_limit: Option<i32>,
    pub report_remaining: Option<i32>,
    pub report_ends_in: Option<f64>,
    /// Requests sent after the answer that reported it.
    pub report_sent_since: Option<i64>,
    /// The follows that may have happened in the last 24 hours (succeeded, in flight, or sent
    /// with no answer recorded), in bins of [`FollowGrid`] by when each stops counting (a day
    /// after its latest possible arrival): how many in each bin, soonest bin first...
    pub follow_counts: Vec<i32>,
    /// ... and in how many seconds the last follow of each bin stops counting.
    pub follows_expire_in: Vec<f64>,
}

/// The bins of [`LedgerRow::follow_counts`]: `width` wide, one of them starting `origin_ago`
/// before the database's `now()`. A caller that passes its own grid (its origin read just
/// before the statement) gets bins that nearly always fall within one of its own buckets.
#[derive(Debug, Clone, Copy)]
pub struct FollowGrid {
    pub origin_ago: Duration,
    pub width: Duration,
}

/// How far back the ledger is read beyond one period: an answer recorded this late after its
/// request (a database outage) still counts, later ones are ignored.
const LATE_ANSWER_HORIZON_SECONDS: f64 = 3600.0;

/// The latest instant a ledger row's request may reach (or have reached) X: answered at its
/// answer, unanswered at its `answer_by` (or, for a row without one, `$4` seconds after it was
/// sent, or its answer if later).
macro_rules! arrives_sql {
    () => {
        concat!(
            "CASE WHEN ",
            $crate::store::ledger::unanswered_sql!("t"),
            r#"
                 THEN coalesce(t.answer_by,
                               greatest(t.sent_at + make_interval(secs => $4), t.completed_at))
                 ELSE t.completed_at END"#
        )
    };
}

/// One column of the latest ledger row that reported a window (its rate-limit headers), of
/// the rows aggregated.
macro_rules! latest_report_sql {
    ($column:literal) => {
        concat!(
            "(array_agg(t.",
            $column,
            " ORDER BY t.sent_at DESC, t.id DESC) FILTER (WHERE t.rate_limit_remaining IS NOT NULL",
            " AND t.rate_limit_limit IS NOT NULL))[1]"
        )
    };
}

const LEDGER_SEEDS: &str = concat!(
    r#"
        -- Two passes over the ledger, each grouped by account (on Citus each runs on the
        -- shards, which hold whole accounts), then the accounts' own periods and quotas applied
        -- to their results. A join of the accounts' parameters with lateral look-ups into the
        -- ledger read the same rows, but Citus cannot run it.
        WITH acc AS (
            SELECT * FROM UNNEST($1::text[], $2::float8[], $3::int[])
                AS acc(user_id, period_seconds, quota)
        ),
        -- Every request that may count within the batch's longest horizon ($8: the longest
        -- period, plus the late-answer horizon), oldest first, with its latest possible
        -- arrival; and the two facts read from the latest rows: the last answer that opened a
        -- window, and the last answer that reported one.
        requests AS (
            SELECT t.account_user_id,
                   array_agg(t.sent_at ORDER BY t.sent_at, t.id) AS sent,
                   array_agg("#,
    arrives_sql!(),
    r#" ORDER BY t.sent_at, t.id) AS arrives,
                   array_agg("#,
    super::ledger::unanswered_sql!("t"),
    r#" ORDER BY t.sent_at, t.id) AS unanswered,
                   max(t.sent_at) FILTER (WHERE t.rate_limit_remaining = t.rate_limit_limit - 1)
                       AS opened_at,
                   "#,
    latest_report_sql!("sent_at"),
    " AS report_sent_at, ",
    latest_report_sql!("rate_limit_limit"),
    " AS report_limit, ",
    latest_report_sql!("rate_limit_remaining"),
    " AS report_remaining, ",
    latest_report_sql!("completed_at"),
    " AS report_completed_at, ",
    latest_report_sql!("rate_limit_reset_at"),
    r#" AS report_reset_at
            FROM followq.attempts AS t
            WHERE t.account_user_id = ANY($1::text[])
              AND t.sent_at > now() - make_interval(secs => $8::float8 + $5::float8)
              AND t.outcome IS DISTINCT FROM 'not_sent'
            GROUP BY t.account_user_id
        ),
        -- The follows that may have happened in the last 24 hours, each counting until a day
        -- after its latest possible arrival, counted per bin of the grid ($6, $7).
        follow_bins AS (
            SELECT f.account_user_id, count(*)::int AS follows, max(f.expires) AS expires
            FROM (
                SELECT t.account_user_id,
                       "#,
    super::ledger::latest_arrival_sql!("t", "$4"),
    r#" + interval '24 hours' AS expires
                FROM followq.attempts AS t
                WHERE t.account_user_id = ANY($1::text[])
                  AND t.sent_at > now() - interval '24 hours' - make_interval(secs => $4 + $5)
                  "#,
    "AND ",
    super::ledger::may_have_acted_sql!("t"),
    r#"
            ) AS f
            WHERE f.expires > now()
            GROUP BY f.account_user_id,
                     date_bin(make_interval(secs => $7), f.expires,
                              now() - make_interval(secs => $6))
        ),
        follows AS (
            SELECT b.account_user_id,
                   array_agg(b.follows ORDER BY b.expires) AS counts,
                   array_agg(extract(epoch FROM b.expires - now())::float8
                             ORDER BY b.expires) AS expire_in
            FROM follow_bins AS b
            GROUP BY b.account_user_id
        )
        SELECT acc.user_id AS account_user_id,
               coalesce(recent.ago, '{}') AS arrivals_ago,
               outstanding.seconds AS outstanding_for,
               report.rate_limit_limit AS report_limit,
               report.rate_limit_remaining AS report_remaining,
               report.ends_in AS report_ends_in,
               report.sent_since AS report_sent_since,
               coalesce(follows.counts, '{}') AS follow_counts,
               coalesce(follows.expire_in, '{}') AS follows_expire_in
        FROM acc
        CROSS JOIN LATERAL (
            SELECT now() - make_interval(secs => acc.period_seconds + $5) AS since
        ) AS horizon
        LEFT JOIN requests AS r ON r.account_user_id = acc.user_id
        LEFT JOIN follows ON follows.account_user_id = acc.user_id
        -- The account's requests within its own horizon.
        CROSS JOIN LATERAL (
            SELECT coalesce(array_agg(u.sent_at ORDER BY u.n), '{}') AS sent,
                   coalesce(array_agg(u.arrives ORDER BY u.n), '{}') AS arrives,
                   coalesce(array_agg(u.unanswered ORDER BY u.n), '{}') AS unanswered
            FROM UNNEST(r.sent, r.arrives, r.unanswered)
                 WITH ORDINALITY AS u(sent_at, arrives, unanswered, n)
            WHERE u.sent_at > horizon.since
        ) AS rows
        -- The last answer that opened a window: requests before it arrived in earlier windows.
        -- (The batch's latest is the account's, if it falls within the account's horizon.)
        LEFT JOIN LATERAL (
            SELECT r.opened_at AS sent_at WHERE r.opened_at > horizon.since
        ) AS opened ON true
        LEFT JOIN LATERAL (
            SELECT array_agg(extract(epoch FROM now() - x.arrives)::float8
                             ORDER BY x.arrives DESC) AS ago
            FROM (
                SELECT u.arrives
                FROM UNNEST(rows.sent, rows.arrives) AS u(sent_at, arrives)
                WHERE u.arrives > now() - make_interval(secs => acc.period_seconds)
                  AND (opened.sent_at IS NULL OR u.arrives > opened.sent_at)
                ORDER BY u.arrives DESC
                LIMIT acc.quota
            ) AS x
        ) AS recent ON true
        LEFT JOIN LATERAL (
            SELECT extract(epoch FROM max(u.arrives) - now())::float8 AS seconds
            FROM UNNEST(rows.arrives, rows.unanswered) AS u(arrives, unanswered)
            WHERE u.unanswered AND u.arrives > now()
        ) AS outstanding ON true
        -- The last answer with a window in it, while that window lasts.
        LEFT JOIN LATERAL (
            SELECT r.report_limit AS rate_limit_limit,
                   r.report_remaining AS rate_limit_remaining,
                   extract(epoch FROM
                       CASE WHEN r.report_remaining = r.report_limit - 1
                            THEN r.report_completed_at
                                 + make_interval(secs => acc.period_seconds)
                            ELSE r.report_reset_at END - now())::float8 AS ends_in,
                   (SELECT count(*) FROM UNNEST(rows.sent) AS u(sent_at)
                    WHERE u.sent_at > r.report_sent_at) AS sent_since
            WHERE r.report_sent_at > horizon.since
        ) AS report ON report.ends_in > 0
        "#
);

/// Reads what the ledger says about `accounts` (each with its quota: requests per period in
/// seconds): one statement for a whole batch of newly leased accounts. `answer_within` is the
/// bound assumed for rows written by daemons that did not record their `answer_by`. The
/// follows of the last day come as counts per bin of `follow_grid`, so that an account that
/// made 400 follows costs the daemon no more than one that made 4.
pub async fn ledger_seeds(
    pool: &PgPool,
    accounts: &[String],
    periods_seconds: &[f64],
    quotas: &[i32],
    answer_within: Duration,
    follow_grid: FollowGrid,
) -> Result<Vec<LedgerRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // For a batch of hundreds of accounts the planner's estimate passes `jit_above_cost`,
    // and compiling the statement took four times as long as running it (0.75 of 0.95 s for
    // 500 accounts with a day of follows each).
    jit_off(&mut tx).await?;
    let longest_period = periods_seconds.iter().copied().fold(0.0, f64::max);
    let rows = sqlx::query_as::<_, LedgerRow>(LEDGER_SEEDS)
        .bind(accounts)
        .bind(periods_seconds)
        .bind(quotas)
        .bind(answer_within.as_secs_f64())
        .bind(LATE_ANSWER_HORIZON_SECONDS)
        .bind(follow_grid.origin_ago.as_secs_f64())
        .bind(follow_grid.width.as_secs_f64())
        .bind(longest_period)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}

const JIT_OFF: &str = "SET LOCAL jit = off";

/// Turns JIT compilation off until the end of the transaction open on `conn`.
pub async fn jit_off(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(JIT_OFF).execute(conn).await?;
    Ok(())
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "leases::acquire_any",
        sql: ACQUIRE_ANY,
    },
    Statement {
        name: "leases::lease_candidates",
        sql: LEASE_CANDIDATES,
    },
    Statement {
        name: "leases::acquire_named",
        sql: ACQUIRE_NAMED,
    },
    Statement {
        name: "leases::renew",
        sql: RENEW,
    },
    Statement {
        name: "leases::release",
        sql: RELEASE,
    },
    Statement {
        name: "leases::release_all",
        sql: RELEASE_ALL,
    },
    Statement {
        name: "leases::held",
        sql: HELD,
    },
    Statement {
        name: "leases::jit_off",
        sql: JIT_OFF,
    },
    Statement {
        name: "leases::ledger_seeds",
        sql: LEDGER_SEEDS,
    },
];
