//! Scale: a full day of follows. Every account made `follows_per_account` follows (400, X's
//! daily cap) spread over the last 24 hours, and has jobs queued. The daemon runs as its own
//! process (so its memory is its own), leases every account, seeds each limiter from the
//! ledger, finds each at its daily cap and holds them all on timers (each account's
//! `daily_cap` pause written). Then: the time to lease and to seed them all, its resident
//! memory in all and per held account (over an idle daemon's), and the claim statement's
//! latency with the full queue and with the queue nearly drained (99% of the jobs finished in
//! place, dead rows and all).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::process::Child;

use super::harness::{self, FIRST_ACCOUNT, percentile};
use super::{BenchContext, ScenarioResult};
use crate::scratch_db::ScratchDb;
use crate::store::bench;
use crate::store::claim::claim_batch;
use crate::store::leases;
use crate::store::shards::Shards;

pub struct ScaleOptions {
    pub accounts: u64,
    pub jobs: u64,
    /// Follows each account made in the last 24 hours.
    pub follows_per_account: u64,
}

/// Ledger rows inserted per statement.
const LEDGER_BATCH: u64 = 400_000;

pub async fn run(ctx: &BenchContext, options: &ScaleOptions) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(ctx, 8, async |scratch| measure(ctx, options, scratch).await).await
}

async fn measure(
    ctx: &BenchContext,
    options: &ScaleOptions,
    scratch: &ScratchDb,
) -> anyhow::Result<ScenarioResult> {
    // An idle daemon first, with nothing to lease: what holding accounts adds is measured
    // over it.
    let mut idle = spawn_daemon(ctx, scratch, options.accounts)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = harness::rss_mib(&pid_of(&idle)?).map_or(f64::NAN, |(rss, _)| rss);
    let _ = idle.kill().await;
    let _ = idle.wait().await;
    bench::forget_daemons(&scratch.pool).await?;

    let filling = Instant::now();
    harness::add_accounts(&scratch.pool, &ctx.keys, 0, options.accounts).await?;
    harness::enqueue(
        &scratch.pool,
        0,
        options.accounts,
        (options.jobs / options.accounts.max(1)).max(1),
    )
    .await?;
    fill_a_day_of_follows(&scratch.pool, options).await?;
    bench::vacuum_analyze_jobs(&scratch.pool).await?;
    bench::vacuum_analyze_attempts(&scratch.pool).await?;
    let fill_seconds = filling.elapsed().as_secs_f64();
    let ledger_rows = bench::count_requests(&scratch.pool).await?;

    let claim_at_start = claim_latencies(&scratch.pool, "bench-probe-start", 200).await?;

    let requests_before = bench::count_requests(&scratch.pool).await?;
    // The daemon, as its own process, against an endpoint it never gets to call.
    let mut daemon = spawn_daemon(ctx, scratch, options.accounts)?;
    let pid = pid_of(&daemon)?;
    let started = Instant::now();
    let limit = Duration::from_secs(300);
    let mut leased_seconds = None;
    let (held, capped) = loop {
        let (held, capped) = bench::held_and_capped_accounts(&scratch.pool).await?;
        if held as u64 >= options.accounts {
            leased_seconds.get_or_insert(started.elapsed().as_secs_f64());
        }
        if capped as u64 >= options.accounts || started.elapsed() > limit {
            break (held, capped);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seeded_seconds = started.elapsed().as_secs_f64();
    // Let it settle with everything held, then read its memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, peak) = harness::rss_mib(&pid).unwrap_or((f64::NAN, f64::NAN));
    let sent = bench::count_requests(&scratch.pool).await? - requests_before;
    let _ = daemon.kill().await;
    let _ = daemon.wait().await;
    bench::release_and_resume_all_accounts(&scratch.pool).await?;
    let per_account_bytes = (rss - idle_rss) * 1024.0 * 1024.0 / (held.max(1) as f64);

    // Near the end: all but 1% of the jobs finished in place (dead rows left for vacuum, as a
    // real drain would leave them).
    bench::finish_all_but_one_percent(&scratch.pool).await?;
    let claim_near_end = claim_latencies(&scratch.pool, "bench-probe-end", 200).await?;

    let stat = |values: &[f64], p: f64| percentile(values, p);
    let leased = leased_seconds.map_or("not all".to_owned(), |s| format!("{s:.1} s"));
    Ok(ScenarioResult {
        name: "scale",
        line: format!(
            "scale: {} accounts x {} follows in 24 h ({ledger_rows} ledger rows), {} jobs: all leased in \
             {leased}, {capped} seeded and held at their daily cap in {seeded_seconds:.1} s (target < 60), \
             {sent} requests sent; daemon RSS {rss:.0} MiB (peak {peak:.0} MiB, target < 96), idle \
             {idle_rss:.0} MiB: {per_account_bytes:.0} bytes per held account; claim p50/p99 \
             {:.2}/{:.2} ms with the full queue, {:.2}/{:.2} ms near the end",
            options.accounts,
            options.follows_per_account,
            options.jobs,
            stat(&claim_at_start, 50.0),
            stat(&claim_at_start, 99.0),
            stat(&claim_near_end, 50.0),
            stat(&claim_near_end, 99.0),
        ),
        figures: json!({
            "accounts": options.accounts,
            "follows_per_account": options.follows_per_account,
            "ledger_rows": ledger_rows,
            "jobs": options.jobs,
            "fill_seconds": fill_seconds,
            "idle_daemon_rss_mib": idle_rss,
            "daemon_rss_mib": rss,
            "daemon_peak_rss_mib": peak,
            "bytes_per_held_account": per_account_bytes,
            "accounts_held": held,
            "accounts_at_daily_cap": capped,
            "requests_sent": sent,
            "lease_all_seconds": leased_seconds,
            "lease_and_seed_all_seconds": seeded_seconds,
            "claim_start_p50_ms": stat(&claim_at_start, 50.0),
            "claim_start_p99_ms": stat(&claim_at_start, 99.0),
            "claim_end_p50_ms": stat(&claim_near_end, 50.0),
            "claim_end_p99_ms": stat(&claim_near_end, 99.0),
        }),
    })
}

/// `followq run` as its own process, against an endpoint it never gets to call.
fn spawn_daemon(ctx: &BenchContext, scratch: &ScratchDb, accounts: u64) -> anyhow::Result<Child> {
    harness::daemon_process(ctx, scratch, "http://127.0.0.1:9", accounts)?
        .env("FOLLOWQ_WORKER__POLL_INTERVAL", "250ms")
        .spawn()
        .context("starting followq run")
}

fn pid_of(child: &Child) -> anyhow::Result<String> {
    Ok(child.id().context("the daemon's pid")?.to_string())
}

/// Each account's follows of the last 24 hours, evenly spread from 23 h 40 min ago to a few
/// minutes ago (so none ages out during the run), answered after 80 ms, as an earlier daemon
/// would have left them.
async fn fill_a_day_of_follows(pool: &sqlx::PgPool, options: &ScaleOptions) -> anyhow::Result<()> {
    let per_account = options.follows_per_account;
    let total = options.accounts * per_account;
    let mut start = 0;
    while start < total {
        let end = (start + LEDGER_BATCH).min(total);
        bench::insert_earlier_follows(
            pool,
            FIRST_ACCOUNT as i64,
            per_account as i64,
            start as i64,
            end as i64,
        )
        .await?;
        start = end;
    }
    Ok(())
}

/// Times the daemon's claim statement for one account at a time: a probe leases `count`
/// accounts as a daemon would, then claims one job of each.
async fn claim_latencies(pool: &sqlx::PgPool, probe: &str, count: u64) -> anyhow::Result<Vec<f64>> {
    let accounts = bench::accounts_with_queued_jobs(pool, count as i64).await?;
    let shards = Shards::new();
    leases::acquire_named(pool, &shards, probe, &accounts, Duration::from_secs(60)).await?;
    let mut latencies = Vec::with_capacity(accounts.len());
    for account in accounts {
        let started = Instant::now();
        claim_batch(
            pool,
            probe,
            std::slice::from_ref(&account),
            Duration::from_secs(5),
        )
        .await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    leases::release_all(pool, &shards, probe).await?;
    Ok(latencies)
}
