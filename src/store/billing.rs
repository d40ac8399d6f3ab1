//! What followq spent at X, and the budgets' reservations: the hourly rollup of the ledger
//! (`followq.spend_by_hour`), the spend of the last hour, the UTC day and the calendar month,
//! and the blocks of requests the daemons reserve of a budget's period
//! (`followq.budget_periods`).
//!
//! Billed requests are those X answered 2xx; possibly billed ones those X may have acted on
//! without a final answer (5xx, no answer, abandoned, in the air): the ledger's definitions in
//! [`super::ledger`]. A 4xx or a request that never left is not billed.

use super::Statement;
use super::ledger::{billed_sql, possibly_billed_sql};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

/// How long after an hour ends its requests are rolled up: by then each has its answer or is
/// long past its `answer_by` (the ledger seed reads an answer recorded up to an hour late).
pub const SETTLE_HOURS: i32 = 2;

/// Most hours rolled up per statement, so that catching up on a long ledger (the first run,
/// two months of it) is a series of short statements.
pub const HOURS_PER_STATEMENT: i32 = 6;

const ROLL_UP: &str = concat!(
    r#"
        WITH span AS (
            SELECT coalesce(
                       (SELECT max(hour) + interval '1 hour' FROM followq.spend_by_hour),
                       -- The first run covers last month too, so this month's figures and the
                       -- previous month's are whole.
                       date_trunc('month', now() - interval '1 month', 'UTC')) AS first,
                   date_trunc('hour', now() - make_interval(hours => $1), 'UTC') AS settled
        ),
        hours AS (
            SELECT generate_series(span.first,
                                   least(span.settled,
                                         span.first + make_interval(hours => $2))
                                   - interval '1 hour',
                                   interval '1 hour') AS hour
            FROM span
        ),
        counted AS (
            SELECT date_trunc('hour', t.sent_at, 'UTC') AS hour,
                   count(*) FILTER (WHERE "#,
    billed_sql!("t"),
    r#") AS billed,
                   count(*) FILTER (WHERE "#,
    possibly_billed_sql!("t"),
    r#") AS possibly_billed
            FROM followq.attempts AS t
            WHERE t.sent_at >= (SELECT min(hour) FROM hours)
              AND t.sent_at < (SELECT max(hour) FROM hours) + interval '1 hour'
            GROUP BY 1
        )
        INSERT INTO followq.spend_by_hour (hour, requests_billed, requests_possibly_billed)
        SELECT h.hour, coalesce(c.billed, 0), coalesce(c.possibly_billed, 0)
        FROM hours AS h LEFT JOIN counted AS c ON c.hour = h.hour
        ON CONFLICT (hour) DO NOTHING
        "#
);

/// Rolls up the next settled hours of the ledger (at most [`HOURS_PER_STATEMENT`]); returns
/// how many hours it wrote (0: caught up). Replicas may run it at once: an hour is written by
/// whichever comes first, from the same rows.
pub async fn roll_up(executor: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(ROLL_UP)
        .bind(SETTLE_HOURS)
        .bind(HOURS_PER_STATEMENT)
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}

/// Requests billed and possibly billed in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, FromRow)]
pub struct Requests {
    pub billed: i64,
    pub possibly_billed: i64,
}

impl Requests {
    /// Every request that may cost money.
    pub fn may_be_billed(&self) -> i64 {
        self.billed.saturating_add(self.possibly_billed)
    }
}

/// The spend of the last hour, the UTC day and the calendar month (UTC), in requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Spend {
    pub last_hour: Requests,
    pub day: Requests,
    pub day_starts_at: DateTime<Utc>,
    pub month: Requests,
    pub month_starts_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct SpendRow {
    hour_billed: i64,
    hour_possibly_billed: i64,
    day_billed: i64,
    day_possibly_billed: i64,
    day_starts_at: DateTime<Utc>,
    month_billed: i64,
    month_possibly_billed: i64,
    month_starts_at: DateTime<Utc>,
}

/// The rollup's hours from `$start`, and the ledger after the last of them: one period's
/// requests, billed and possibly billed. `$start` is a period's first instant.
macro_rules! period_sums {
    ($start:literal) => {
        concat!(
            r#"(SELECT coalesce(sum(s.requests_billed), 0)::bigint
                FROM followq.spend_by_hour AS s, rolled
                WHERE s.hour >= "#,
            $start,
            r#" AND s.hour < rolled.through)
             + (SELECT count(*) FROM followq.attempts AS t, rolled
                WHERE t.sent_at >= greatest("#,
            $start,
            r#", rolled.through) AND "#,
            billed_sql!("t"),
            r#"),
               (SELECT coalesce(sum(s.requests_possibly_billed), 0)::bigint
                FROM followq.spend_by_hour AS s, rolled
                WHERE s.hour >= "#,
            $start,
            r#" AND s.hour < rolled.through)
             + (SELECT count(*) FROM followq.attempts AS t, rolled
                WHERE t.sent_at >= greatest("#,
            $start,
            r#", rolled.through) AND "#,
            possibly_billed_sql!("t"),
            r#")"#
        )
    };
}

/// One period's billed or possibly billed requests in the ledger, from `$start` (a column of
/// `bounds`) or the end of the rollup, whichever is later.
macro_rules! ledger_since {
    ($start:literal, $which:ident) => {
        concat!(
            "count(*) FILTER (WHERE t.sent_at >= greatest(b.",
            $start,
            ", b.through) AND ",
            $which!("t"),
            ")"
        )
    };
}

/// The rollup's hours from the start of the day and the month, and the ledger after the last
/// of them (and the last hour's ledger): each read once, the ledger from the earliest instant
/// any figure needs (through its BRIN index on `sent_at`). Joined only with `bounds`, one row,
/// and never through a correlated subquery: Citus plans it over the shards of the ledger.
const SPEND: &str = concat!(
    r#"
        WITH bounds AS MATERIALIZED (
            SELECT date_trunc('day', now(), 'UTC') AS day_start,
                   date_trunc('month', now(), 'UTC') AS month_start,
                   now() - interval '1 hour' AS hour_start,
                   coalesce((SELECT max(hour) + interval '1 hour' FROM followq.spend_by_hour),
                            '-infinity'::timestamptz) AS through
        ),
        ledger AS MATERIALIZED (
            SELECT count(*) FILTER (WHERE t.sent_at > b.hour_start AND "#,
    billed_sql!("t"),
    r#") AS hour_billed,
                   count(*) FILTER (WHERE t.sent_at > b.hour_start AND "#,
    possibly_billed_sql!("t"),
    r#") AS hour_possibly_billed,
                   "#,
    ledger_since!("day_start", billed_sql),
    r#" AS day_billed,
                   "#,
    ledger_since!("day_start", possibly_billed_sql),
    r#" AS day_possibly_billed,
                   "#,
    ledger_since!("month_start", billed_sql),
    r#" AS month_billed,
                   "#,
    ledger_since!("month_start", possibly_billed_sql),
    r#" AS month_possibly_billed
            FROM followq.attempts AS t, bounds AS b
            -- A scalar subquery, so that one Postgres reads the BRIN index from that instant.
            WHERE t.sent_at >= (SELECT least(x.hour_start, greatest(x.month_start, x.through))
                                FROM bounds AS x)
        ),
        rolled AS MATERIALIZED (
            SELECT coalesce(sum(s.requests_billed) FILTER (WHERE s.hour >= b.day_start), 0)
                       ::bigint AS day_billed,
                   coalesce(sum(s.requests_possibly_billed) FILTER (WHERE s.hour >= b.day_start), 0)
                       ::bigint AS day_possibly_billed,
                   coalesce(sum(s.requests_billed), 0)::bigint AS month_billed,
                   coalesce(sum(s.requests_possibly_billed), 0)::bigint AS month_possibly_billed
            FROM bounds AS b
            LEFT JOIN followq.spend_by_hour AS s
                   ON s.hour >= b.month_start AND s.hour < b.through
        )
        SELECT l.hour_billed, l.hour_possibly_billed,
               r.day_billed + l.day_billed AS day_billed,
               r.day_possibly_billed + l.day_possibly_billed AS day_possibly_billed,
               b.day_start AS day_starts_at,
               r.month_billed + l.month_billed AS month_billed,
               r.month_possibly_billed + l.month_possibly_billed AS month_possibly_billed,
               b.month_start AS month_starts_at
        FROM bounds AS b, ledger AS l, rolled AS r
        "#
);

/// The requests of the last hour, the UTC day and the calendar month that were billed or may
/// have been: the rollup's settled hours, and the ledger since the last of them.
pub async fn spend(executor: impl PgExecutor<'_>) -> Result<Spend, sqlx::Error> {
    let row: SpendRow = sqlx::query_as(SPEND).fetch_one(executor).await?;
    Ok(Spend {
        last_hour: Requests {
            billed: row.hour_billed,
            possibly_billed: row.hour_possibly_billed,
        },
        day: Requests {
            billed: row.day_billed,
            possibly_billed: row.day_possibly_billed,
        },
        day_starts_at: row.day_starts_at,
        month: Requests {
            billed: row.month_billed,
            possibly_billed: row.month_possibly_billed,
        },
        month_starts_at: row.month_starts_at,
    })
}

/// A budget's period, as `followq.budget_periods.period` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetPeriod {
    /// A UTC day.
    Day,
    /// A calendar month, UTC.
    Month,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }
}

const OPEN_PERIOD: &str = concat!(
    r#"
        WITH rolled AS (
            SELECT coalesce((SELECT max(hour) + interval '1 hour' FROM followq.spend_by_hour),
                            '-infinity'::timestamptz) AS through
        )
        INSERT INTO followq.budget_periods (period, starts_at, reserved)
        SELECT $1, $2::timestamptz, sums.billed + sums.possibly_billed
        FROM (SELECT "#,
    period_sums!("$2::timestamptz"),
    r#") AS sums(billed, possibly_billed)
        ON CONFLICT (period, starts_at) DO NOTHING
        "#
);

/// Makes the reservation row of a budget's period that starts at `starts_at`, if no daemon
/// has: it starts at what the period has already spent (billed, possibly billed, in the air),
/// so a budget set mid-period counts what went before.
pub async fn open_period(
    executor: impl PgExecutor<'_>,
    period: BudgetPeriod,
    starts_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(OPEN_PERIOD)
        .bind(period.as_str())
        .bind(starts_at)
        .execute(executor)
        .await?;
    Ok(())
}

const RESERVE: &str = r#"
        WITH current AS (
            SELECT reserved FROM followq.budget_periods
            WHERE period = $1 AND starts_at = $2
            FOR UPDATE
        ),
        granted AS (
            SELECT least($3::bigint, greatest($4::bigint - current.reserved, 0)) AS n
            FROM current
        )
        UPDATE followq.budget_periods AS b
        SET reserved = b.reserved + granted.n
        FROM granted
        WHERE b.period = $1 AND b.starts_at = $2
        RETURNING granted.n
        "#;

/// Reserves up to `want` requests of the period, without taking it past `allowed` (the
/// budget in requests); returns how many were granted (0: the budget is reached, or the
/// period's row is not open).
pub async fn reserve(
    executor: impl PgExecutor<'_>,
    period: BudgetPeriod,
    starts_at: DateTime<Utc>,
    want: i64,
    allowed: i64,
) -> Result<i64, sqlx::Error> {
    let granted: Option<i64> = sqlx::query_scalar(RESERVE)
        .bind(period.as_str())
        .bind(starts_at)
        .bind(want)
        .bind(allowed)
        .fetch_optional(executor)
        .await?;
    Ok(granted.unwrap_or(0))
}

const GIVE_BACK: &str = r#"
        UPDATE followq.budget_periods
        SET reserved = greatest(reserved - $3, 0)
        WHERE period = $1 AND starts_at = $2
        "#;

/// Gives back `unused` requests reserved of the period (a daemon stopping with some left).
pub async fn give_back(
    executor: impl PgExecutor<'_>,
    period: BudgetPeriod,
    starts_at: DateTime<Utc>,
    unused: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(GIVE_BACK)
        .bind(period.as_str())
        .bind(starts_at)
        .bind(unused)
        .execute(executor)
        .await?;
    Ok(())
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "billing::roll_up",
        sql: ROLL_UP,
    },
    Statement {
        name: "billing::spend",
        sql: SPEND,
    },
    Statement {
        name: "billing::open_period",
        sql: OPEN_PERIOD,
    },
    Statement {
        name: "billing::reserve",
        sql: RESERVE,
    },
    Statement {
        name: "billing::give_back",
        sql: GIVE_BACK,
    },
];
