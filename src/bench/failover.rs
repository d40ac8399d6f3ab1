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

pub struct FailoverOptions {
    pub accounts: u64,
}

pub async fn run(ctx: &BenchContext, options: &FailoverOptions) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(&ctx.settings.database.url, 8, async |scratch| {
        measure(ctx, options, scratch).await
    })
    .await
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
    sqlx::query(
        "UPDATE followq.accounts SET quota_requests = 1, quota_period_seconds = 2 \
         WHERE (user_id::bigint - $1) % 2 = 0",
    )
    .bind(FIRST_ACCOUNT as i64)
    .execute(&scratch.pool)
    .await?;

    // The victim takes the first half (steady and paced accounts alternate), the survivor the
    // rest, and everything once the victim is gone.
    harness::enqueue(&scratch.pool, 0, half, jobs_each).await?;
    let mut victim = spawn_daemon(scratch, &sim.base_url(), ctx, half)?;
    harness::wait_for(
        &scratch.pool,
        "SELECT count(*) > 0 FROM followq.accounts WHERE leased_by IS NOT NULL",
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
        let holders: Vec<(String, i64)> = sqlx::query_as(
            "SELECT leased_by, count(*) FROM followq.accounts WHERE leased_by IS NOT NULL GROUP BY 1",
        )
        .fetch_all(&scratch.pool)
        .await?;
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

    let held: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM followq.accounts WHERE leased_by = $1")
            .bind(&victim_id)
            .fetch_all(&scratch.pool)
            .await?;
    let (sent, unanswered): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE sent_at > now() - interval '3 seconds'), \
                count(*) FILTER (WHERE outcome IS NULL) \
         FROM followq.attempts WHERE worker_id = $1",
    )
    .bind(&victim_id)
    .fetch_one(&scratch.pool)
    .await?;
    tracing::info!(
        accounts = held.len(),
        sent_in_3s = sent,
        unanswered,
        "killing one daemon"
    );
    victim.start_kill().context("kill -9")?;
    let killed = Instant::now();
    let _ = victim.wait().await;
    let killed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&scratch.pool)
        .await?;

    // Poll until every account it held has been sent for by the survivor.
    let mut taken: HashMap<String, f64> = HashMap::new();
    let mut first_request: HashMap<String, f64> = HashMap::new();
    while first_request.len() < held.len() && killed.elapsed() < Duration::from_secs(120) {
        let holders: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT user_id, leased_by FROM followq.accounts WHERE user_id = ANY($1)",
        )
        .bind(&held)
        .fetch_all(&scratch.pool)
        .await?;
        for (account, holder) in holders {
            if holder.is_some_and(|h| h != victim_id) {
                taken
                    .entry(account)
                    .or_insert_with(|| killed.elapsed().as_secs_f64());
            }
        }
        let firsts: Vec<(String, f64)> = sqlx::query_as(
            "SELECT account_user_id, extract(epoch FROM min(sent_at) - $3)::float8 \
             FROM followq.attempts \
             WHERE account_user_id = ANY($1) AND worker_id <> $2 AND sent_at > $3 \
             GROUP BY 1",
        )
        .bind(&held)
        .bind(&victim_id)
        .bind(killed_at)
        .fetch_all(&scratch.pool)
        .await?;
        first_request.extend(firsts);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = survivor.start_kill();
    let _ = survivor.wait().await;
    sim.shutdown().await;
    // Which accounts had a request in the air when the victim died (the survivor marked its
    // ledger row abandoned).
    let in_flight: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT account_user_id FROM followq.attempts \
         WHERE worker_id = $1 AND outcome = 'abandoned'",
    )
    .bind(&victim_id)
    .fetch_all(&scratch.pool)
    .await?;

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
