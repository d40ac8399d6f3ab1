//! The spend rollup: every minute, the ledger's settled hours (two hours past) are counted
//! into `followq.spend_by_hour`, billed and possibly billed, so that a month's spend is read
//! from a few hundred rows rather than the whole ledger, and outlives the ledger's retention.
//! Catching up (the first run covers last month and this one) goes a few hours per statement.
//! Replicas may roll up at once: an hour is written by whichever comes first, from the same
//! rows.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Context;
use crate::store::billing;

/// How often the rollup looks for hours to count.
const EVERY: Duration = Duration::from_secs(60);

/// Breathing room between two statements of one catch-up.
const BETWEEN_STATEMENTS: Duration = Duration::from_millis(50);

/// Most statements per round: a round never holds the pool for long; the rest waits a minute.
const STATEMENTS_PER_ROUND: u32 = 50;

pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for _ in 0..STATEMENTS_PER_ROUND {
            match billing::roll_up(&ctx.pool).await {
                Ok(0) => break,
                Ok(hours) => debug!(hours, "spend of settled hours rolled up"),
                Err(e) => {
                    warn!(error = %e, "could not roll up the spend of settled hours; retrying in a minute");
                    break;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(BETWEEN_STATEMENTS) => {}
            }
        }
    }
}
