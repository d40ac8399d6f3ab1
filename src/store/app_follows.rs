//! The ledger read behind the app's count of follows of the last 24 hours
//! (`accounts::app_follows`): the follows that may count, by the bucket at whose end each
//! stops counting, settled rows apart from fresh ones.

use super::Statement;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};

/// What one refresh reads: the database's clock, up to when rows are settled, and per bucket
/// that has not ended (ascending), the follows of settled rows and those of fresh ones.
#[derive(Debug, Clone, FromRow)]
pub struct LedgerRead {
    pub now: DateTime<Utc>,
    pub settled_by: DateTime<Utc>,
    pub buckets: Vec<i64>,
    pub settled: Vec<i64>,
    pub fresh: Vec<i64>,
}

const READ_LEDGER: &str = concat!(
    r#"
        WITH clock AS (
            SELECT now() AS now, now() - make_interval(secs => $2::float8 + $3::float8) AS settled_by
        ),
        follows AS (
            SELECT t.sent_at <= clock.settled_by AS settled,
                   -- The minute at whose end the follow stops counting: a day after its
                   -- latest possible arrival, as everywhere the daily caps are counted.
                   ceil(extract(epoch FROM
                       "#,
    super::ledger::latest_arrival_sql!("t", "$2"),
    r#" + interval '24 hours') / $4)::bigint AS bucket
            FROM followq.attempts AS t, clock
            WHERE t.sent_at > greatest(
                      $1, clock.now - interval '24 hours' - make_interval(secs => $2 + $5))
              "#,
    "AND ",
    super::ledger::may_have_acted_sql!("t"),
    r#"
              -- A fresh unanswered row counts once its request took a slot of the cap (it may
              -- have left); only claimed, it may never be sent.
              AND (t.sent_at <= clock.settled_by OR t.id = ANY($6::bigint[]) OR NOT "#,
    super::ledger::unanswered_sql!("t"),
    r#")
        ),
        bins AS (
            SELECT bucket,
                   count(*) FILTER (WHERE settled) AS settled,
                   count(*) FILTER (WHERE NOT settled) AS fresh
            FROM follows, clock
            WHERE bucket * $4 > extract(epoch FROM clock.now)
            GROUP BY bucket
        )
        SELECT clock.now, clock.settled_by,
               coalesce(array_agg(bins.bucket ORDER BY bins.bucket)
                        FILTER (WHERE bins.bucket IS NOT NULL), '{}') AS buckets,
               coalesce(array_agg(bins.settled ORDER BY bins.bucket)
                        FILTER (WHERE bins.bucket IS NOT NULL), '{}') AS settled,
               coalesce(array_agg(bins.fresh ORDER BY bins.bucket)
                        FILTER (WHERE bins.bucket IS NOT NULL), '{}') AS fresh
        FROM clock LEFT JOIN bins ON true
        GROUP BY clock.now, clock.settled_by
        "#
);

/// Counts the ledger rows sent after `settled_through` (or over the whole day and
/// `late_answer_horizon` more, the first time) whose follow may count, per bucket of
/// `bucket_seconds` on the database's clock. A row is settled once it was sent more than
/// `answer_within` plus `settle_margin` ago; a fresh row still unanswered counts only if its
/// id is in `slotted` (its request took a slot of the cap).
pub async fn read_ledger(
    executor: impl PgExecutor<'_>,
    settled_through: Option<DateTime<Utc>>,
    answer_within: Duration,
    settle_margin: Duration,
    bucket_seconds: i64,
    late_answer_horizon: Duration,
    slotted: &[i64],
) -> Result<LedgerRead, sqlx::Error> {
    sqlx::query_as(READ_LEDGER)
        .bind(settled_through)
        .bind(answer_within.as_secs_f64())
        .bind(settle_margin.as_secs_f64())
        .bind(bucket_seconds as f64)
        .bind(late_answer_horizon.as_secs_f64())
        .bind(slotted)
        .fetch_one(executor)
        .await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[Statement {
    name: "app_follows::read_ledger",
    sql: READ_LEDGER,
}];
