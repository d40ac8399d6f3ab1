//! Failover: two daemons (each its own process, default lease and liveness settings) share
//! accounts that send steadily; one is killed with kill -9. For each account it held: how long
//! until the survivor holds it, and until its first request. Accounts that had a request in the
//! air at the kill must first wait that request's `answer_by` (send deadline + request
//! timeout); the others only for the takeover and their own pacing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::process::Child;

use super::harness::{self, FIRST_ACCOUNT, percentile};
use super::{BenchContext, ScenarioResult};
use crate::scratch_db::ScratchDb;
use crate::sim::{self, SimConfig};
use crate::store::bench;

pub struct FailoverOptions {
    pub accounts: u64,
}

pub async fn run(ctx: &BenchContext, options: &FailoverOptions) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(ctx, 8, async |scratch| measure(ctx, options, scratch).await).await
}

/// A daemon process holding at most `max_accounts`.
fn spawn_daemon(
    scratch: &ScratchDb,
    base_url: &str,
    ctx: &BenchContext,
    max_accounts: u64,
) -> anyhow::Result<Child> {
    harness::daemon_process(ctx, scratch, base_url, max_accounts)?
        .env("FOLLOWQ_RATE_LIMIT__REQUESTS_PER_PERIOD", "1000000")
        .env("FOLLOWQ_RATE_LIMIT__DAILY_FOLLOWS_PER_ACCOUNT", "1000000")
        .env(
            "FOLLOWQ_X_API__REQUEST_TIMEOUT",
            humantime::format_duration(ctx.settings.x_api.request_timeout).to_string(),
        )
        .spawn()
        .context("starting followq run")
}

async fn measure(
    ctx: &BenchContext,
    options: &FailoverOptions,
    scratch: &ScratchDb,
) -> anyhow::Result<ScenarioResult> {
    let sim = sim::spawn(SimConfig {
        window_requests: 1_000_000,
        window: Duration::from_secs(900),
        daily_cap: None,
        ..SimConfig::default()
    })?;
    harness::add_accounts(&scratch.pool, &ctx.keys, 0, options.accounts).await?;
    harness::add_sim_users(&sim, 0, options.accounts);
    let half = options.accounts.div_ceil(2);
    let jobs_each = 100_000 / options.accounts.max(1);
    // Half the accounts send steadily (a request in the air most of the time), half pace at one
    // request per 2 s (between requests most of the time).
    for n in 0..options.accounts {
        sim.set_answer_delay(&harness::account_id(n), Some(Duration::from_millis(100)));
    }
    bench::pace_every_other_account(&scratch.pool, FIRST_ACCOUNT as i64).await?;

    // The victim takes the first half (steady and paced accounts alternate), the survivor the
    // rest, and everything once the victim is gone.
    harness::enqueue(&scratch.pool, 0, half, jobs_each).await?;
    let mut victim = spawn_daemon(scratch, &sim.base_url(), ctx, half)?;
    harness::wait_for(
        &scratch.pool,
        "a daemon holding an account",
        async |pool| bench::any_account_leased(pool).await,
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .await?;
    harness::enqueue(&scratch.pool, half, options.accounts - half, jobs_each).await?;
    let mut survivor = spawn_daemon(scratch, &sim.base_url(), ctx, options.accounts)?;
    let victim_pid = victim.id().context("the daemon's pid")?;
    // Both hold their half and send for a while.
    let sharing = Instant::now();
    let victim_id: String = loop {
        let holders = bench::accounts_per_holder(&scratch.pool).await?;
        let mine = holders
            .iter()
            .find(|(worker, _)| worker.contains(&format!("-{victim_pid}-")));
        if holders.len() == 2
            && let Some((worker, _)) = mine
        {
            break worker.clone();
        }
        anyhow::ensure!(
            sharing.elapsed() < Duration::from_secs(60),
            "the two daemons did not share the accounts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    let held = bench::accounts_held_by(&scratch.pool, &victim_id).await?;
    let (sent, unanswered) =
        bench::recent_and_unanswered_requests(&scratch.pool, &victim_id).await?;
    tracing::info!(
        accounts = held.len(),
        sent_in_3s = sent,
        unanswered,
        "killing one daemon"
    );
    victim.start_kill().context("kill -9")?;
    let killed = Instant::now();
    let _ = victim.wait().await;
    let killed_at = bench::database_clock(&scratch.pool).await?;

    // Poll until every account it held has been sent for by the survivor.
    let mut taken: HashMap<String, f64> = HashMap::new();
    let mut first_request: HashMap<String, f64> = HashMap::new();
    while first_request.len() < held.len() && killed.elapsed() < Duration::from_secs(120) {
        let holders = bench::holders_of(&scratch.pool, &held).await?;
        for (account, holder) in holders {
            if holder.is_some_and(|h| h != victim_id) {
                taken
                    .entry(account)
                    .or_insert_with(|| killed.elapsed().as_secs_f64());
            }
        }
        let firsts =
            bench::first_requests_since(&scratch.pool, &held, &victim_id, killed_at).await?;
        first_request.extend(firsts);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = survivor.start_kill();
    let _ = survivor.wait().await;
    sim.shutdown().await;
    // Which accounts had a request in the air when the victim died (the survivor marked its
    // ledger row abandoned).
    let in_flight = bench::accounts_with_abandoned_requests(&scratch.pool, &victim_id).await?;

    let sorted = |values: Vec<f64>| {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        values
    };
    let takeover = sorted(taken.values().copied().collect());
    let busy = sorted(
        first_request
            .iter()
            .filter(|(account, _)| in_flight.contains(account))
            .map(|(_, &s)| s)
            .collect(),
    );
    let idle = sorted(
        first_request
            .iter()
            .filter(|(account, _)| !in_flight.contains(account))
            .map(|(_, &s)| s)
            .collect(),
    );
    let stat = |values: &[f64], p: f64| {
        if values.is_empty() {
            f64::NAN
        } else {
            percentile(values, p)
        }
    };
    let answer_within =
        (ctx.settings.worker.send_deadline + ctx.settings.x_api.request_timeout).as_secs_f64();
    Ok(ScenarioResult {
        name: "failover",
        line: format!(
            "failover: kill -9 of one of two daemons holding {} accounts: taken over after \
             p50 {:.2} s / max {:.2} s; first request of an account with nothing in the air \
             p50 {:.2} s / max {:.2} s ({} accounts); of one with a request in the air (it waits \
             for that request's answer_by, {answer_within:.0} s after its claim) p50 {:.2} s / \
             max {:.2} s ({} accounts)",
            held.len(),
            stat(&takeover, 50.0),
            stat(&takeover, 100.0),
            stat(&idle, 50.0),
            stat(&idle, 100.0),
            idle.len(),
            stat(&busy, 50.0),
            stat(&busy, 100.0),
            busy.len(),
        ),
        figures: json!({
            "accounts_held_by_the_killed_daemon": held.len(),
            "takeover_p50_seconds": stat(&takeover, 50.0),
            "takeover_max_seconds": stat(&takeover, 100.0),
            "first_request_idle_p50_seconds": stat(&idle, 50.0),
            "first_request_idle_max_seconds": stat(&idle, 100.0),
            "idle_accounts": idle.len(),
            "first_request_in_flight_p50_seconds": stat(&busy, 50.0),
            "first_request_in_flight_max_seconds": stat(&busy, 100.0),
            "in_flight_accounts": busy.len(),
            "answer_within_seconds": answer_within,
        }),
    })
}
