//! Engine throughput: a limit that never binds, many accounts, an endpoint that answers at
//! once. Jobs per second end to end, transactions per job, CPU per job (this process runs the
//! daemon; the endpoint runs in another process, Postgres in its own).

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::harness::{self, access_token, account_id};
use super::{BenchContext, ScenarioResult};
use crate::scratch_db::ScratchDb;
use crate::store::bench;

pub struct ThroughputOptions {
    pub accounts: u64,
    pub jobs_per_account: u64,
    /// Aim at this endpoint instead of a simulator process of our own.
    pub base_url: Option<String>,
}

pub async fn run(
    ctx: &BenchContext,
    options: &ThroughputOptions,
) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(&ctx.settings.database.url, 40, async |scratch| {
        measure(ctx, options, scratch).await
    })
    .await
}

async fn measure(
    ctx: &BenchContext,
    options: &ThroughputOptions,
    scratch: &ScratchDb,
) -> anyhow::Result<ScenarioResult> {
    harness::add_accounts(&scratch.pool, &ctx.keys, 0, options.accounts).await?;
    harness::enqueue(&scratch.pool, 0, options.accounts, options.jobs_per_account).await?;
    // Statistics, as a running deployment's tables have: a table loaded a moment ago has none
    // until autovacuum's first ANALYZE (up to a minute later), and without them the planner
    // takes every job id for one of 200 values.
    bench::vacuum_analyze_jobs(&scratch.pool).await?;
    let jobs = options.accounts * options.jobs_per_account;

    let (base_url, mut endpoint) = match &options.base_url {
        Some(url) => (url.clone(), None),
        None => {
            let (url, child) = spawn_simulator(options.accounts).await?;
            (url, Some(child))
        }
    };
    let mut settings = harness::settings(&ctx.settings, scratch, &base_url);
    settings.rate_limit.requests_per_period = 1_000_000;
    settings.rate_limit.period = Duration::from_secs(1);

    let transactions_before = bench::transactions(&scratch.pool).await?;
    let cpu_before = harness::process_cpu_seconds("self");
    let postgres_before = harness::postgres_cpu_seconds();
    let backends_before = harness::database_backend_cpu(&scratch.pool).await?;
    let daemon = harness::start_daemon(settings, scratch.pool.clone()).await?;
    harness::wait_for(
        &scratch.pool,
        "every job finished",
        async |pool| bench::all_finished(pool).await,
        Duration::from_millis(100),
        Duration::from_secs(600),
    )
    .await?;
    let cpu_after = harness::process_cpu_seconds("self");
    let postgres_after = harness::postgres_cpu_seconds();
    let backends_after = harness::database_backend_cpu(&scratch.pool).await?;
    daemon.stop().await?;
    let transactions_after = bench::transactions(&scratch.pool).await?;
    if let Some(child) = endpoint.as_mut() {
        let _ = child.kill().await;
    }

    let seconds = harness::first_sent_to_last_finished(&scratch.pool).await?;
    let succeeded = bench::count_succeeded(&scratch.pool).await?;
    let requests = bench::count_requests(&scratch.pool).await?;
    let hot = bench::hot_updates(&scratch.pool).await?;
    let hot_line = hot
        .iter()
        .map(|(table, updates, hot)| format!("{table} {hot}/{updates}"))
        .collect::<Vec<_>>()
        .join(", ");
    let per_job = |total: f64| total / jobs as f64;
    let jobs_per_second = jobs as f64 / seconds.max(f64::EPSILON);
    let transactions_per_job = per_job((transactions_after - transactions_before) as f64);
    let daemon_cpu_ms = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| per_job(after - before) * 1000.0);
    let postgres_cpu_ms = postgres_before
        .zip(postgres_after)
        .map(|(before, after)| per_job(after - before) * 1000.0);
    let backend_cpu_ms = per_job(harness::backend_cpu_since(
        &backends_before,
        &backends_after,
    )) * 1000.0;
    Ok(ScenarioResult {
        name: "throughput",
        line: format!(
            "throughput: {jobs} jobs over {} accounts in {seconds:.2} s = {jobs_per_second:.0} jobs/s \
             (target >= 6500); {transactions_per_job:.2} transactions/job; daemon CPU {} ms/job; \
             Postgres CPU {} ms/job (its backends for this database alone: \
             {backend_cpu_ms:.3} ms/job); {succeeded} succeeded with {requests} requests; HOT updates {hot_line}",
            options.accounts,
            daemon_cpu_ms.map_or("?".into(), |v| format!("{v:.3}")),
            postgres_cpu_ms.map_or("?".into(), |v| format!("{v:.3}")),
        ),
        figures: json!({
            "jobs": jobs,
            "accounts": options.accounts,
            "seconds": seconds,
            "jobs_per_second": jobs_per_second,
            "transactions_per_job": transactions_per_job,
            "daemon_cpu_ms_per_job": daemon_cpu_ms,
            "postgres_cpu_ms_per_job": postgres_cpu_ms,
            "postgres_backend_cpu_ms_per_job": backend_cpu_ms,
            "succeeded": succeeded,
            "requests": requests,
            "hot_updates": hot.iter().map(|(table, updates, hot)| json!({"table": table, "updates": updates, "hot": hot})).collect::<Vec<_>>(),
            "endpoint": if options.base_url.is_some() { "external" } else { "followq sim (own process)" },
        }),
    })
}

/// Starts `followq sim` as its own process with every account's token and a limit that never
/// binds; returns its base URL.
pub(super) async fn spawn_simulator(accounts: u64) -> anyhow::Result<(String, Child)> {
    let exe = std::env::current_exe().context("locating the followq binary")?;
    let mut command = Command::new(exe);
    command
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--window-requests",
            "1000000000",
            "--window",
            "1s",
            "--daily-cap",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for n in 0..accounts {
        command.arg("--user").arg(format!(
            "{}:{}:bench-refresh-{n}",
            account_id(n),
            access_token(n)
        ));
    }
    let mut child = command.spawn().context("starting followq sim")?;
    let stdout = child.stdout.take().context("the simulator's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next_line()
        .await?
        .context("the simulator printed nothing")?;
    let parsed: serde_json::Value = serde_json::from_str(&first)?;
    let url = parsed["base_url"]
        .as_str()
        .context("the simulator's first line names its base_url")?
        .to_owned();
    // Keep reading (and discarding) its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((url, child))
}
