//! Retention: every `retention.interval`, delete finished jobs older than
//! `retention.finished_jobs` and ledger rows older than `retention.attempts`, so the tables do
//! not grow without bound.
//!
//! Each batch is one short `DELETE` of at most `retention.batch_size` rows
//! (`store::retention`), with a short pause between batches so that the queue's own
//! statements always get through.
//!
//! What the daemon still needs is never old enough: the configuration refuses a ledger age
//! below 24 hours plus one quota period (the window seeding and the daily caps read that
//! much), and only finished jobs are deleted (`finished_at` is set exactly when a job is
//! succeeded, failed or cancelled).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Context;
use crate::store::retention::{Table, delete_batch};

/// Breathing room between two batches of one round.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

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
        let deleted = delete_batch(&ctx.pool, &ctx.shards, table, age, batch_size).await?;
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
