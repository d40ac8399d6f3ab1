//! Utilisation: U accounts with J jobs each, J several times the quota, against the strict
//! simulator with a scaled window. The fastest possible run opens each account's last window
//! (windows needed - 1) windows after its first request; the figure is ideal / achieved.

use std::time::Duration;

use serde_json::json;

use super::harness;
use super::{BenchContext, ScenarioResult};
use crate::scratch_db::ScratchDb;
use crate::sim::{self, SimConfig};
use crate::store::bench;

pub struct UtilisationOptions {
    pub accounts: u64,
    pub jobs_per_account: u64,
    pub quota: u32,
    pub window: Duration,
}

pub async fn run(
    ctx: &BenchContext,
    options: &UtilisationOptions,
) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(ctx, 24, async |scratch| {
        measure(ctx, options, scratch).await
    })
    .await
}

async fn measure(
    ctx: &BenchContext,
    options: &UtilisationOptions,
    scratch: &ScratchDb,
) -> anyhow::Result<ScenarioResult> {
    let sim = sim::spawn(SimConfig {
        window_requests: options.quota,
        window: options.window,
        daily_cap: None,
        ..SimConfig::default()
    })?;
    harness::add_accounts(&scratch.pool, &ctx.keys, 0, options.accounts).await?;
    harness::add_sim_users(&sim, 0, options.accounts);
    harness::enqueue(&scratch.pool, 0, options.accounts, options.jobs_per_account).await?;
    let mut settings = harness::settings(&ctx.settings, scratch, &sim.base_url());
    settings.rate_limit.requests_per_period = options.quota;
    settings.rate_limit.period = options.window;

    let daemon = harness::start_daemon(settings, scratch.pool.clone()).await?;
    harness::wait_for(
        &scratch.pool,
        "every job finished",
        async |pool| bench::all_finished(pool).await,
        Duration::from_millis(50),
        options.window * (options.jobs_per_account as u32 / options.quota + 3),
    )
    .await?;
    daemon.stop().await?;
    let stats = sim.stats().await;
    sim.shutdown().await;

    let achieved = harness::first_sent_to_last_finished(&scratch.pool).await?;
    let windows = options.jobs_per_account.div_ceil(u64::from(options.quota));
    let ideal = options.window.as_secs_f64() * windows.saturating_sub(1) as f64;
    let over = stats
        .users
        .values()
        .filter(|u| u.max_requests_in_window > u64::from(options.quota))
        .count();
    let rate_limited = stats.totals.all_users.rate_limited;
    let efficiency = 100.0 * ideal / achieved.max(f64::EPSILON);
    Ok(ScenarioResult {
        name: "utilisation",
        line: format!(
            "utilisation: {} accounts x {} jobs, {} per {:?}: {achieved:.3} s achieved, {ideal:.3} s ideal \
             = {efficiency:.2}% of ideal (target >= 99.5%); {over} accounts over the window; {rate_limited} 429s",
            options.accounts, options.jobs_per_account, options.quota, options.window
        ),
        figures: json!({
            "accounts": options.accounts,
            "jobs_per_account": options.jobs_per_account,
            "quota": options.quota,
            "window_seconds": options.window.as_secs_f64(),
            "achieved_seconds": achieved,
            "ideal_seconds": ideal,
            "percent_of_ideal": efficiency,
            "accounts_over_window": over,
            "rate_limited": rate_limited,
            "requests": stats.totals.all_users.requests,
        }),
    })
}
