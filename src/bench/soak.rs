//! Soak: a steady stream of jobs for minutes on end, the daily cap lifted, to show that the
//! daemon's memory stays flat however many follows each account makes. The daemon runs as its
//! own process (so its memory is its own) against `followq sim` in another; this process
//! enqueues `rate` jobs per second spread over the accounts and samples the daemon's RSS and
//! the backlog every few seconds. Then: every job done or not, the backlog's peak, and RSS
//! after warm-up against RSS at the end.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::process::Child;

use super::harness::{self, FIRST_ACCOUNT, FIRST_TARGET};
use super::throughput::spawn_simulator;
use super::{BenchContext, ScenarioResult};
use crate::scratch_db::ScratchDb;
use crate::store::bench;

pub struct SoakOptions {
    pub accounts: u64,
    /// Jobs enqueued per second.
    pub rate: u64,
    pub duration: Duration,
}

/// How often the feeder inserts (each time, the jobs due since the start).
const FEED_EVERY: Duration = Duration::from_millis(100);
/// How often RSS and the backlog are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples before this are warm-up: pools, buffers and the simulator's first tokens.
const WARM_UP: Duration = Duration::from_secs(60);

pub async fn run(ctx: &BenchContext, options: &SoakOptions) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(ctx, 8, async |scratch| measure(ctx, options, scratch).await).await
}

/// One reading of the daemon and the queue.
struct Sample {
    at: f64,
    rss_mib: f64,
    backlog: i64,
    fed: u64,
}

async fn measure(
    ctx: &BenchContext,
    options: &SoakOptions,
    scratch: &ScratchDb,
) -> anyhow::Result<ScenarioResult> {
    harness::add_accounts(&scratch.pool, &ctx.keys, 0, options.accounts).await?;
    let (base_url, mut simulator) = spawn_simulator(options.accounts).await?;
    let mut daemon = spawn_daemon(ctx, scratch, &base_url, options.accounts)?;
    let pid = daemon.id().context("the daemon's pid")?.to_string();

    let start = Instant::now();
    let mut fed: u64 = 0;
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = start;
    let mut feed = tokio::time::interval(FEED_EVERY);
    feed.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while start.elapsed() < options.duration {
        feed.tick().await;
        let due = (start.elapsed().as_secs_f64() * options.rate as f64) as u64;
        if due > fed {
            enqueue_round_robin(&scratch.pool, options.accounts, fed, due).await?;
            fed = due;
        }
        if Instant::now() >= next_sample {
            next_sample += SAMPLE_EVERY;
            samples.push(Sample {
                at: start.elapsed().as_secs_f64(),
                rss_mib: harness::rss_mib(&pid).map_or(f64::NAN, |(rss, _)| rss),
                backlog: bench::count_queued(&scratch.pool).await?,
                fed,
            });
        }
    }
    let drained = harness::wait_for(
        &scratch.pool,
        "every job finished",
        async |pool| bench::all_finished(pool).await,
        Duration::from_millis(250),
        Duration::from_secs(120),
    )
    .await
    .is_ok();
    let (end_rss, peak_rss) = harness::rss_mib(&pid).unwrap_or((f64::NAN, f64::NAN));
    let _ = daemon.kill().await;
    let _ = daemon.wait().await;
    let _ = simulator.kill().await;

    let succeeded = bench::count_succeeded(&scratch.pool).await?;
    let seconds = harness::first_sent_to_last_finished(&scratch.pool).await?;
    let warm: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= WARM_UP.as_secs_f64())
        .collect();
    let after_warm_up = warm.first().map_or(f64::NAN, |s| s.rss_mib);
    let warm_max = warm.iter().map(|s| s.rss_mib).fold(f64::NAN, f64::max);
    let last = warm.last().map_or(f64::NAN, |s| s.rss_mib);
    let max_backlog = samples.iter().map(|s| s.backlog).max().unwrap_or(0);
    let per_account = fed as f64 / options.accounts.max(1) as f64;
    Ok(ScenarioResult {
        name: "soak",
        line: format!(
            "soak: {} accounts, {} jobs/s for {:.0} s, daily cap lifted: {fed} jobs ({per_account:.0} per \
             account), {succeeded} succeeded{} in {seconds:.0} s; backlog at most {max_backlog}; daemon \
             RSS {after_warm_up:.1} MiB after {:.0} s of warm-up, {last:.1} MiB at the last sample \
             (max {warm_max:.1}), {end_rss:.1} MiB drained (peak {peak_rss:.1})",
            options.accounts,
            options.rate,
            options.duration.as_secs_f64(),
            if drained { "" } else { " (not drained)" },
            WARM_UP.as_secs_f64(),
        ),
        figures: json!({
            "accounts": options.accounts,
            "rate_jobs_per_second": options.rate,
            "duration_seconds": options.duration.as_secs_f64(),
            "jobs": fed,
            "succeeded": succeeded,
            "drained": drained,
            "seconds_first_sent_to_last_finished": seconds,
            "max_backlog": max_backlog,
            "rss_after_warm_up_mib": after_warm_up,
            "rss_last_sample_mib": last,
            "rss_max_after_warm_up_mib": warm_max,
            "rss_drained_mib": end_rss,
            "peak_rss_mib": peak_rss,
            "samples": samples.iter().map(|s| json!({
                "seconds": s.at,
                "rss_mib": s.rss_mib,
                "backlog": s.backlog,
                "jobs_fed": s.fed,
            })).collect::<Vec<_>>(),
        }),
    })
}

/// `followq run` as its own process against the simulator, with a quota that never binds and
/// no daily cap.
fn spawn_daemon(
    ctx: &BenchContext,
    scratch: &ScratchDb,
    base_url: &str,
    accounts: u64,
) -> anyhow::Result<Child> {
    harness::daemon_process(ctx, scratch, base_url, accounts)?
        .env("FOLLOWQ_RATE_LIMIT__REQUESTS_PER_PERIOD", "1000000")
        .env("FOLLOWQ_RATE_LIMIT__PERIOD", "1s")
        .env(
            "FOLLOWQ_RATE_LIMIT__DAILY_FOLLOWS_PER_ACCOUNT",
            u32::MAX.to_string(),
        )
        .env("FOLLOWQ_WORKER__POLL_INTERVAL", "250ms")
        .spawn()
        .context("starting followq run")
}

/// Jobs number `from..to`: job n for account n mod `accounts`, each to a target of its own.
async fn enqueue_round_robin(
    pool: &sqlx::PgPool,
    accounts: u64,
    from: u64,
    to: u64,
) -> Result<(), sqlx::Error> {
    bench::enqueue_round_robin(
        pool,
        FIRST_ACCOUNT as i64,
        accounts as i64,
        FIRST_TARGET as i64,
        from as i64,
        to as i64,
    )
    .await
}
