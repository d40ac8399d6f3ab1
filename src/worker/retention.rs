//! Retention: every `retention.interval`, delete finished jobs older than
//! `retention.finished_jobs` and ledger rows older than `retention.attempts`, so the tables do
//! not grow without bound.
//!
//! Each batch is one short `DELETE` of at most `retention.batch_size` rows (its own
//! transaction, so no long lock and no huge WAL burst), with a short pause between batches so
//! that the queue's own statements always get through. `FOR UPDATE SKIP LOCKED` lets every
//! replica prune at once without waiting on each other's rows.
//!
//! What the daemon still needs is never old enough: the configuration refuses a ledger age
//! below 24 hours plus one quota period (the window seeding and the daily caps read that
//! much), and only finished jobs are deleted (`finished_at` is set exactly when a job is
//! succeeded, failed or cancelled).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Context;

/// Breathing room between two batches of one round.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// The two tables retention prunes, with the statement deleting one batch of each.
#[derive(Debug, Clone, Copy)]
enum Table {
    FollowJobs,
    Attempts,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::FollowJobs => "follow_jobs",
            Table::Attempts => "attempts",
        }
    }

    /// `$1`: the age in seconds; `$2`: the batch size. Oldest first, along the indexes
    /// `follow_jobs_finished_at` and `attempts_by_time`.
    fn delete_batch(self) -> &'static str {
        match self {
            Table::FollowJobs => {
                r#"
                DELETE FROM followq.follow_jobs
                WHERE id IN (
                    SELECT id FROM followq.follow_jobs
                    WHERE finished_at < now() - make_interval(secs => $1)
                      AND state IN ('succeeded', 'failed', 'cancelled')
                    ORDER BY finished_at
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                "#
            }
            Table::Attempts => {
                r#"
                DELETE FROM followq.attempts
                WHERE id IN (
                    SELECT id FROM followq.attempts
                    WHERE sent_at < now() - make_interval(secs => $1)
                    ORDER BY sent_at
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                "#
            }
        }
    }
}

/// The retention loop, until `shutdown`. Does nothing when `retention.enabled` is false.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let settings = ctx.settings.retention.clone();
    if !settings.enabled {
        return;
    }
    // The first round one interval after start, not at once: start-up (registering, leasing,
    // seeding limiters) gets the pool and the database to itself, and replicas started
    // together do not all prune in the same instant.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.interval,
        settings.interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (table, age) in [
            (Table::FollowJobs, settings.finished_jobs),
            (Table::Attempts, settings.attempts),
        ] {
            match prune(&ctx, table, age, settings.batch_size, &shutdown).await {
                Ok(0) => {}
                Ok(rows) => info!(
                    table = table.name(),
                    rows,
                    older_than = %humantime::format_duration(age),
                    "retention: old rows deleted"
                ),
                Err(e) => warn!(
                    table = table.name(),
                    error = %e,
                    "retention: deleting old rows failed; trying again next round"
                ),
            }
        }
    }
}

/// Deletes batches until one comes back short (or shutdown); returns the rows deleted.
async fn prune(
    ctx: &Context,
    table: Table,
    age: Duration,
    batch_size: u32,
    shutdown: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = delete_batch(&ctx.pool, table, age, batch_size).await?;
        ctx.metrics.retention_deleted(table.name(), deleted);
        total += deleted;
        if deleted < u64::from(batch_size) {
            return Ok(total);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(total),
            _ = tokio::time::sleep(BETWEEN_BATCHES) => {}
        }
    }
}

async fn delete_batch(
    pool: &PgPool,
    table: Table,
    age: Duration,
    batch_size: u32,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(table.delete_batch())
        .bind(age.as_secs_f64())
        .bind(i64::from(batch_size))
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
