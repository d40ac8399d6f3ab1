//! Noisy neighbour: one account with a deep backlog and many accounts with one job each, at
//! X's real quota (50 per 15 minutes). How long until every small account has been served,
//! and does the big one hold anything up?

use std::time::{Duration, Instant};

use serde_json::json;

use super::harness;
use super::{BenchContext, ScenarioResult};
use crate::scratch_db::ScratchDb;
use crate::sim::{self, SimConfig};
use crate::store::bench;

pub struct NoisyOptions {
    pub big_jobs: u64,
    pub small_accounts: u64,
}

pub async fn run(ctx: &BenchContext, options: &NoisyOptions) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(ctx, 24, async |scratch| {
        measure(ctx, options, scratch).await
    })
    .await
}

async fn measure(
    ctx: &BenchContext,
    options: &NoisyOptions,
    scratch: &ScratchDb,
) -> anyhow::Result<ScenarioResult> {
    let sim = sim::spawn(SimConfig {
        daily_cap: None,
        ..SimConfig::default()
    })?;
    let accounts = 1 + options.small_accounts;
    harness::add_accounts(&scratch.pool, &ctx.keys, 0, accounts).await?;
    harness::add_sim_users(&sim, 0, accounts);
    // Account 0 is the big one; the others get one job each.
    harness::enqueue(&scratch.pool, 0, 1, options.big_jobs).await?;
    harness::enqueue(&scratch.pool, 1, options.small_accounts, 1).await?;
    let settings = harness::settings(&ctx.settings, scratch, &sim.base_url());

    let started = Instant::now();
    let daemon = harness::start_daemon(settings, scratch.pool.clone()).await?;
    harness::wait_for(
        &scratch.pool,
        "every small account served",
        async |pool| bench::small_accounts_served(pool).await,
        Duration::from_millis(10),
        Duration::from_secs(120),
    )
    .await?;
    let all_small_served = started.elapsed();
    let first_small = bench::small_accounts_served_after_first_request(&scratch.pool).await?;
    daemon.stop().await?;
    let stats = sim.stats().await;
    sim.shutdown().await;
    let big = stats.user("1000000000");
    let seconds = first_small.unwrap_or(all_small_served.as_secs_f64());
    Ok(ScenarioResult {
        name: "noisy_neighbour",
        line: format!(
            "noisy neighbour: 1 account with {} jobs + {} accounts with 1 job, 50 per 15 min: every small \
             account served {:.3} s after the first request ({:.3} s after start); meanwhile the big one \
             sent {}, taking its turn like the others; {} 429s",
            options.big_jobs,
            options.small_accounts,
            seconds,
            all_small_served.as_secs_f64(),
            big.requests,
            stats.totals.all_users.rate_limited
        ),
        figures: json!({
            "big_jobs": options.big_jobs,
            "small_accounts": options.small_accounts,
            "all_small_served_after_first_request_seconds": seconds,
            "all_small_served_after_start_seconds": all_small_served.as_secs_f64(),
            "big_account_requests": big.requests,
            "rate_limited": stats.totals.all_users.rate_limited,
        }),
    })
}
