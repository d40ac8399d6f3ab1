//! Timer precision: how late is the first request of a window, after the window X counts has
//! ended? A recording endpoint enforces the fixed window (quota per window, from the first
//! request) and records arrivals; for every account and every window after the first, the
//! delay is (arrival of the window's first request) - (arrival of the previous window's first
//! request + window). Negative would be a request sent too early (it would have been a 429).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::endpoint::Endpoint;
use super::harness::{self, percentile};
use super::{BenchContext, ScenarioResult};
use crate::scratch_db::ScratchDb;
use crate::store::bench;

pub struct TimerOptions {
    pub accounts: u64,
    pub quota: u32,
    pub window: Duration,
    pub windows: u64,
}

pub async fn run(ctx: &BenchContext, options: &TimerOptions) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(ctx, 16, async |scratch| {
        measure(ctx, options, scratch).await
    })
    .await
}

async fn measure(
    ctx: &BenchContext,
    options: &TimerOptions,
    scratch: &ScratchDb,
) -> anyhow::Result<ScenarioResult> {
    let endpoint = Endpoint::start(options.quota, options.window).await?;
    harness::add_accounts(&scratch.pool, &ctx.keys, 0, options.accounts).await?;
    let per_account = u64::from(options.quota) * options.windows;
    harness::enqueue(&scratch.pool, 0, options.accounts, per_account).await?;
    let mut settings = harness::settings(&ctx.settings, scratch, &endpoint.base_url);
    settings.rate_limit.requests_per_period = options.quota;
    settings.rate_limit.period = options.window;
    let daemon = harness::start_daemon(settings, scratch.pool.clone()).await?;
    harness::wait_for(
        &scratch.pool,
        "every job finished",
        async |pool| bench::all_finished(pool).await,
        Duration::from_millis(50),
        options.window * (options.windows as u32 + 3),
    )
    .await?;
    daemon.stop().await?;

    let mut by_user: HashMap<String, Vec<Instant>> = HashMap::new();
    for (user, _, at) in endpoint.arrivals() {
        by_user.entry(user).or_default().push(at);
    }
    let quota = options.quota as usize;
    let mut delays = Vec::new();
    for arrivals in by_user.values() {
        let firsts: Vec<Instant> = arrivals.iter().step_by(quota).copied().collect();
        for pair in firsts.windows(2) {
            let opened = pair[0] + options.window;
            let ms = if pair[1] >= opened {
                pair[1].duration_since(opened).as_secs_f64() * 1000.0
            } else {
                -(opened.duration_since(pair[1]).as_secs_f64() * 1000.0)
            };
            delays.push(ms);
        }
    }
    delays.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&delays, 50.0), percentile(&delays, 99.0));
    let early = delays.iter().filter(|d| **d < 0.0).count();
    Ok(ScenarioResult {
        name: "timer",
        line: format!(
            "timer: {} window openings over {} accounts ({} per {:?}): first request p50 {p50:.2} ms, \
             p99 {p99:.2} ms after the window opened (target p99 <= 50 ms); {early} early; {} 429s",
            delays.len(),
            options.accounts,
            options.quota,
            options.window,
            endpoint.rate_limited()
        ),
        figures: json!({
            "openings": delays.len(),
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": delays.last().copied(),
            "early": early,
            "rate_limited": endpoint.rate_limited(),
        }),
    })
}
