//! Retention's deletes: one batch of the oldest finished jobs, or of the oldest ledger rows,
//! per statement.
//!
//! Each batch is one short `DELETE` of at most the batch size (its own transaction, so no
//! long lock and no huge WAL burst). `FOR UPDATE SKIP LOCKED` lets every replica prune at once
//! without waiting on each other's rows. Citus takes no row lock in a statement over every
//! shard: there the batch is chosen without it, and a replica whose batch another is deleting
//! waits for that delete, then finds those rows gone. Only finished jobs are deleted (`finished_at` is set
//! exactly when a job is succeeded, failed or cancelled); how old is old enough, and the pace
//! between batches, are `worker::retention`'s.

use super::Statement;
use std::time::Duration;

use sqlx::PgPool;

use super::shards::Shards;

/// The tables retention prunes: a fixed list, each with its own statement.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    FollowJobs,
    Attempts,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::FollowJobs => "follow_jobs",
            Table::Attempts => "attempts",
        }
    }

    /// The statement deleting one batch of this table (`citus`: without row locks).
    fn delete_batch(self, citus: bool) -> &'static str {
        match (self, citus) {
            (Table::FollowJobs, false) => DELETE_BATCH_FOLLOW_JOBS,
            (Table::FollowJobs, true) => DELETE_BATCH_FOLLOW_JOBS_CITUS,
            (Table::Attempts, false) => DELETE_BATCH_ATTEMPTS,
            (Table::Attempts, true) => DELETE_BATCH_ATTEMPTS_CITUS,
        }
    }
}

/// One batch of `$table`'s rows that are `$old` (older than `$1` seconds), oldest (`$order`)
/// first, at most `$2`, chosen with `$lock`.
macro_rules! delete_batch_sql {
    ($table:literal, $old:expr, $order:literal, $lock:literal) => {
        concat!(
            "DELETE FROM followq.",
            $table,
            " WHERE id IN (SELECT id FROM followq.",
            $table,
            " WHERE ",
            $old,
            " ORDER BY ",
            $order,
            " LIMIT $2 ",
            $lock,
            ")"
        )
    };
}

/// Finished jobs old enough to delete.
macro_rules! jobs_finished_long_ago {
    () => {
        "finished_at < now() - make_interval(secs => $1) \
         AND state IN ('succeeded', 'failed', 'cancelled')"
    };
}

/// Ledger rows old enough to delete.
macro_rules! requests_sent_long_ago {
    () => {
        "sent_at < now() - make_interval(secs => $1)"
    };
}

const DELETE_BATCH_FOLLOW_JOBS: &str = delete_batch_sql!(
    "follow_jobs",
    jobs_finished_long_ago!(),
    "finished_at",
    "FOR UPDATE SKIP LOCKED"
);
const DELETE_BATCH_FOLLOW_JOBS_CITUS: &str =
    delete_batch_sql!("follow_jobs", jobs_finished_long_ago!(), "finished_at", "");
const DELETE_BATCH_ATTEMPTS: &str = delete_batch_sql!(
    "attempts",
    requests_sent_long_ago!(),
    "sent_at",
    "FOR UPDATE SKIP LOCKED"
);
const DELETE_BATCH_ATTEMPTS_CITUS: &str =
    delete_batch_sql!("attempts", requests_sent_long_ago!(), "sent_at", "");

/// Deletes up to `batch_size` rows of `table` older than `age`, oldest first, along the
/// indexes `follow_jobs_finished_at` and `attempts_by_time`; returns how many it deleted.
///
/// The statement text is chosen at run time, by `table` and by whether the database is a
/// Citus coordinator, from the fixed list above (`$1`: the age in seconds; `$2`: the batch
/// size); each text is a const, and every one is in [`STATEMENTS`].
pub async fn delete_batch(
    pool: &PgPool,
    shards: &Shards,
    table: Table,
    age: Duration,
    batch_size: u32,
) -> Result<u64, sqlx::Error> {
    let citus = shards.distributed(pool).await?;
    let done = sqlx::query(table.delete_batch(citus))
        .bind(age.as_secs_f64())
        .bind(i64::from(batch_size))
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// The static statements of this file, for the test that prepares every one: the one
/// [`delete_batch`] runs for each table.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "retention::delete_batch(follow_jobs)",
        sql: DELETE_BATCH_FOLLOW_JOBS,
    },
    Statement {
        name: "retention::delete_batch(attempts)",
        sql: DELETE_BATCH_ATTEMPTS,
    },
    Statement {
        name: "retention::delete_batch(follow_jobs, Citus)",
        sql: DELETE_BATCH_FOLLOW_JOBS_CITUS,
    },
    Statement {
        name: "retention::delete_batch(attempts, Citus)",
        sql: DELETE_BATCH_ATTEMPTS_CITUS,
    },
];
