//! Scale: 100,000 accounts and 1,000,000 queued jobs. The daemon runs as its own process (so
//! its memory is its own) and leases every account; every account's window is already spent
//! (the ledger says so, as after a busy hour), so it holds them all, waiting on timers. Then:
//! its resident memory, and the claim statement's latency with the full queue and with the
//! queue nearly drained (99% of the jobs finished in place, dead rows and all).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::process::Command;

use super::harness::{self, FIRST_ACCOUNT, percentile};
use super::{BenchContext, ScenarioResult};
use crate::accounts::lease;
use crate::demo::scratch_db::ScratchDb;
use crate::queue::claim::claim_batch;

pub struct ScaleOptions {
    pub accounts: u64,
    pub jobs: u64,
}

pub async fn run(ctx: &BenchContext, options: &ScaleOptions) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(&ctx.settings.database.url, 8, async |scratch| {
        measure(ctx, options, scratch).await
    })
    .await
}

async fn measure(
    ctx: &BenchContext,
    options: &ScaleOptions,
    scratch: &ScratchDb,
) -> anyhow::Result<ScenarioResult> {
    let filling = Instant::now();
    harness::add_accounts(&scratch.pool, &ctx.keys, 0, options.accounts).await?;
    harness::enqueue(
        &scratch.pool,
        0,
        options.accounts,
        options.jobs / options.accounts.max(1),
    )
    .await?;
    // Every window already spent, until a quarter of an hour from now.
    sqlx::query(
        "INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at, completed_at, \
             outcome, http_status, rate_limit_limit, rate_limit_remaining, rate_limit_reset_at) \
         SELECT 0, ($1 + g)::text, 'earlier', now(), now(), 'succeeded', 200, 50, 0, \
                now() + interval '15 minutes' \
         FROM generate_series(0, $2 - 1) AS g",
    )
    .bind(FIRST_ACCOUNT as i64)
    .bind(options.accounts as i64)
    .execute(&scratch.pool)
    .await?;
    sqlx::query("VACUUM ANALYZE followq.follow_jobs")
        .execute(&scratch.pool)
        .await?;
    let fill_seconds = filling.elapsed().as_secs_f64();

    let claim_at_start = claim_latencies(&scratch.pool, "bench-probe-start", 200).await?;

    // The daemon, as its own process, against an endpoint it never gets to call.
    let exe = std::env::current_exe().context("locating the followq binary")?;
    let mut daemon = Command::new(exe)
        // The bench's own key, which sealed the scenario's tokens.
        .envs(harness::credentials_env(ctx))
        .arg("run")
        .env("DATABASE_URL", scratch.url.expose_secret())
        .env_remove("FOLLOWQ_DATABASE__URL")
        .env("FOLLOWQ_X_API__BASE_URL", "http://127.0.0.1:9")
        .env("FOLLOWQ_WORKER__MAX_ACCOUNTS", options.accounts.to_string())
        .env("FOLLOWQ_WORKER__POLL_INTERVAL", "250ms")
        .env("FOLLOWQ_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting followq run")?;
    let pid = daemon.id().context("the daemon's pid")?.to_string();
    let leasing = Instant::now();
    let held = loop {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM followq.accounts WHERE leased_by IS NOT NULL")
                .fetch_one(&scratch.pool)
                .await?;
        if held as u64 >= options.accounts || leasing.elapsed() > Duration::from_secs(180) {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let lease_seconds = leasing.elapsed().as_secs_f64();
    // Let it settle with everything held, then read its memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, peak) = harness::rss_mib(&pid).unwrap_or((f64::NAN, f64::NAN));
    let _ = daemon.kill().await;
    let _ = daemon.wait().await;
    sqlx::query("UPDATE followq.accounts SET leased_by = NULL, lease_expires_at = NULL")
        .execute(&scratch.pool)
        .await?;

    // Near the end: all but 1% of the jobs finished in place (dead rows left for vacuum, as a
    // real drain would leave them).
    sqlx::query(
        "UPDATE followq.follow_jobs SET state = 'succeeded', following = true, \
         pending_follow = false, finished_at = now() WHERE state = 'queued' AND id % 100 <> 0",
    )
    .execute(&scratch.pool)
    .await?;
    let claim_near_end = claim_latencies(&scratch.pool, "bench-probe-end", 200).await?;

    let stat = |values: &[f64], p: f64| percentile(values, p);
    Ok(ScenarioResult {
        name: "scale",
        line: format!(
            "scale: {} accounts, {} jobs: daemon RSS {rss:.0} MiB (peak {peak:.0} MiB, target <= 256) \
             holding {held} accounts (leased in {lease_seconds:.1} s); claim p50/p99 {:.2}/{:.2} ms \
             with the full queue, {:.2}/{:.2} ms near the end",
            options.accounts,
            options.jobs,
            stat(&claim_at_start, 50.0),
            stat(&claim_at_start, 99.0),
            stat(&claim_near_end, 50.0),
            stat(&claim_near_end, 99.0),
        ),
        figures: json!({
            "accounts": options.accounts,
            "jobs": options.jobs,
            "fill_seconds": fill_seconds,
            "daemon_rss_mib": rss,
            "daemon_peak_rss_mib": peak,
            "accounts_held": held,
            "lease_all_seconds": lease_seconds,
            "claim_start_p50_ms": stat(&claim_at_start, 50.0),
            "claim_start_p99_ms": stat(&claim_at_start, 99.0),
            "claim_end_p50_ms": stat(&claim_near_end, 50.0),
            "claim_end_p99_ms": stat(&claim_near_end, 99.0),
        }),
    })
}

/// Times the daemon's claim statement for one account at a time: a probe leases `count`
/// accounts as a daemon would, then claims one job of each.
async fn claim_latencies(pool: &sqlx::PgPool, probe: &str, count: u64) -> anyhow::Result<Vec<f64>> {
    let accounts: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT source_user_id FROM followq.follow_jobs WHERE state = 'queued' \
         ORDER BY 1 DESC LIMIT $1",
    )
    .bind(count as i64)
    .fetch_all(pool)
    .await?;
    lease::acquire_named(pool, probe, &accounts, Duration::from_secs(60)).await?;
    let mut latencies = Vec::with_capacity(accounts.len());
    for account in accounts {
        let started = Instant::now();
        claim_batch(
            pool,
            probe,
            std::slice::from_ref(&account),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    lease::release_all(pool, probe).await?;
    Ok(latencies)
}
