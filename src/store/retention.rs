//! Retention's deletes: one batch of the oldest finished jobs, or of the oldest ledger rows,
//! per statement.
//!
//! Each batch is one short `DELETE` of at most the batch size (its own transaction, so no
//! long lock and no huge WAL burst). `FOR UPDATE SKIP LOCKED` lets every replica prune at once
//! without waiting on each other's rows. Only finished jobs are deleted (`finished_at` is set
//! exactly when a job is succeeded, failed or cancelled); how old is old enough, and the pace
//! between batches, are `worker::retention`'s.

use super::Statement;
use std::time::Duration;

use sqlx::PgExecutor;

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

    /// The statement deleting one batch of this table.
    fn delete_batch(self) -> &'static str {
        match self {
            Table::FollowJobs => DELETE_BATCH_FOLLOW_JOBS,
            Table::Attempts => DELETE_BATCH_ATTEMPTS,
        }
    }
}

const DELETE_BATCH_FOLLOW_JOBS: &str = r#"
                DELETE FROM followq.follow_jobs
                WHERE id IN (
                    SELECT id FROM followq.follow_jobs
                    WHERE finished_at < now() - make_interval(secs => $1)
                      AND state IN ('succeeded', 'failed', 'cancelled')
                    ORDER BY finished_at
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                "#;

const DELETE_BATCH_ATTEMPTS: &str = r#"
                DELETE FROM followq.attempts
                WHERE id IN (
                    SELECT id FROM followq.attempts
                    WHERE sent_at < now() - make_interval(secs => $1)
                    ORDER BY sent_at
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                "#;

/// Deletes up to `batch_size` rows of `table` older than `age`, oldest first, along the
/// indexes `follow_jobs_finished_at` and `attempts_by_time`; returns how many it deleted.
///
/// The statement text is chosen at run time, by `table`, from the fixed list above (`$1`: the
/// age in seconds; `$2`: the batch size); each table's text is a const, and every one is in
/// [`STATEMENTS`].
pub async fn delete_batch(
    executor: impl PgExecutor<'_>,
    table: Table,
    age: Duration,
    batch_size: u32,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(table.delete_batch())
        .bind(age.as_secs_f64())
        .bind(i64::from(batch_size))
        .execute(executor)
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
];
