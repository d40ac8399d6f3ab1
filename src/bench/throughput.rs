//! Engine throughput: a limit that never binds, many accounts, an endpoint that answers at
//! once. Jobs per second end to end, transactions per job, CPU per job (this process runs the
//! daemon; the endpoint runs in another process, Postgres in its own). On Citus the
//! transactions and the backends' CPU are counted on every node ([`super::nodes`]): the
//! coordinator's are the daemon's statements, the workers' what Citus sent them for those.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use sqlx::postgres::PgPoolOptions;

use super::harness::{self, access_token, account_id};
use super::nodes::{self, NodeWork};
use super::{BenchContext, ScenarioResult};
use crate::db;
use crate::scratch_db::ScratchDb;
use crate::store::bench::{self, CitusCounters};

/// The daemon's pool (its default `database.max_connections` is smaller: this many keep up
/// with the bench's rate).
const DAEMON_CONNECTIONS: u32 = 40;

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
    harness::in_scratch_db(ctx, 4, async |scratch| measure(ctx, options, scratch).await).await
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

    // The daemon's own pool, closed after the run: its backends then end, and with them the
    // statistics they had not reported yet (and, on Citus, the workers' backends they used).
    // On Citus, with a superuser, they turn on Citus's counters of the statements run on one
    // shard and on several, and of the connections opened to the workers: the statements per
    // job there (a role that is not a superuser may not turn them on).
    let count_statements = scratch.citus.is_some() && bench::is_superuser(&scratch.pool).await?;
    let mut daemon_options = db::connect_options(&scratch.url)?;
    if count_statements {
        daemon_options = daemon_options.options([("citus.enable_stat_counters", "on")]);
    }
    let daemon_pool = PgPoolOptions::new()
        .max_connections(DAEMON_CONNECTIONS)
        .connect_with(daemon_options)
        .await?;
    let counters_before = if count_statements {
        Some(bench::citus_counters(&scratch.pool).await?)
    } else {
        None
    };
    let mut nodes = nodes::connect(scratch).await?;
    let mut before = Vec::new();
    for node in &mut nodes {
        before.push(node.sample().await?);
    }
    let cpu_before = harness::process_cpu_seconds("self");
    let postgres_before = harness::postgres_cpu_seconds();
    let daemon = harness::start_daemon(settings, daemon_pool.clone()).await?;
    harness::wait_for(
        &scratch.pool,
        "every job finished",
        async |pool| bench::all_finished(pool).await,
        // Once a second: on Citus each look is a statement on every shard, whose work on the
        // workers would count as the daemon's. The run's time comes from the database's
        // timestamps, not from when this notices the end.
        Duration::from_secs(1),
        Duration::from_secs(600),
    )
    .await?;
    let cpu_after = harness::process_cpu_seconds("self");
    let postgres_after = harness::postgres_cpu_seconds();
    let mut at_end = Vec::new();
    for node in &mut nodes {
        at_end.push(node.sample().await?);
    }
    daemon.stop().await?;
    daemon_pool.close().await;
    let mut after = Vec::new();
    for (node, before) in nodes.iter_mut().zip(&before) {
        let ended = node.wait_for_reports(before).await?;
        after.push((node.sample().await?, ended));
    }
    let counters = match counters_before {
        Some(before) => {
            let after = bench::citus_counters(&scratch.pool).await?;
            Some(CitusCounters {
                connections_opened: after.connections_opened - before.connections_opened,
                single_shard_statements: after.single_shard_statements
                    - before.single_shard_statements,
                multi_shard_statements: after.multi_shard_statements
                    - before.multi_shard_statements,
            })
        }
        None => None,
    };
    if let Some(child) = endpoint.as_mut() {
        let _ = child.kill().await;
    }
    let work: Vec<NodeWork> = nodes
        .iter()
        .zip(&before)
        .zip(&at_end)
        .zip(&after)
        .map(|(((node, before), at_end), after)| node.work(before, at_end, after))
        .collect();

    let seconds = harness::first_sent_to_last_finished(&scratch.pool).await?;
    let succeeded = bench::count_succeeded(&scratch.pool).await?;
    let requests = bench::count_requests(&scratch.pool).await?;
    // Every node's (on Citus the workers', where the shards are), read once the sessions
    // that made them ended and reported them.
    let mut hot: Vec<(String, i64, i64)> = Vec::new();
    for node in &mut nodes {
        for (table, updates, hot_updates) in node.hot_updates().await? {
            match hot.iter_mut().find(|(t, ..)| *t == table) {
                Some((_, u, h)) => {
                    *u += updates;
                    *h += hot_updates;
                }
                None => hot.push((table, updates, hot_updates)),
            }
        }
    }
    let hot_line = hot
        .iter()
        .map(|(table, updates, hot)| format!("{table} {hot}/{updates}"))
        .collect::<Vec<_>>()
        .join(", ");
    let per_job = |total: f64| total / jobs as f64;
    let jobs_per_second = jobs as f64 / seconds.max(f64::EPSILON);
    // The server's (on Citus the coordinator's): the daemon's own transactions.
    let (server, workers) = work
        .split_first()
        .context("the scratch database's server")?;
    let transactions_per_job = per_job(server.transactions as f64);
    let worker_transactions_per_job = (!workers.is_empty())
        .then(|| per_job(workers.iter().map(|w| w.transactions).sum::<i64>() as f64));
    let daemon_cpu_ms = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| per_job(after - before) * 1000.0);
    let postgres_cpu_ms = postgres_before
        .zip(postgres_after)
        .map(|(before, after)| per_job(after - before) * 1000.0);
    // Every node's client backends of the scratch database, when all are on this machine.
    let backend_cpu_ms = work
        .iter()
        .map(|w| w.backend_cpu_seconds)
        .sum::<Option<f64>>()
        .map(|seconds| per_job(seconds) * 1000.0);
    let unseen_backends: i64 = work
        .iter()
        .filter_map(|w| Some(w.sessions_opened? - w.new_backends_counted as i64))
        .filter(|unseen| *unseen > 0)
        .sum();
    let ms = |value: Option<f64>| value.map_or("?".into(), |v| format!("{v:.3}"));
    let statements = counters.map(|c| {
        (
            per_job(c.single_shard_statements as f64),
            per_job(c.multi_shard_statements as f64),
            per_job(c.connections_opened as f64),
        )
    });
    let on = match (workers.is_empty(), statements) {
        (true, _) => "one Postgres".to_owned(),
        (false, statements) => format!(
            "Citus, {} workers: {:.2} on the workers, sent by Citus{}",
            workers.len(),
            worker_transactions_per_job.unwrap_or(0.0),
            statements.map_or(String::new(), |(single, multi, connections)| format!(
                "; statements per job by Citus's counters: {single:.3} on one shard, \
                 {multi:.4} on several; {connections:.3} connections opened to the workers"
            )),
        ),
    };
    Ok(ScenarioResult {
        name: "throughput",
        line: format!(
            "throughput: {jobs} jobs over {} accounts in {seconds:.2} s = {jobs_per_second:.0} jobs/s \
             (target >= 6500); {transactions_per_job:.2} transactions/job ({on}); daemon CPU {} ms/job; \
             Postgres CPU {} ms/job (every Postgres process on this machine; the scratch database's \
             backends on {} alone: {} ms/job{}); {succeeded} succeeded with {requests} requests; \
             HOT updates {hot_line}",
            options.accounts,
            ms(daemon_cpu_ms),
            ms(postgres_cpu_ms),
            if workers.is_empty() {
                "the server"
            } else {
                "every node"
            },
            ms(backend_cpu_ms),
            if unseen_backends > 0 {
                format!(", {unseen_backends} backends came and went unseen")
            } else {
                String::new()
            },
        ),
        figures: json!({
            "jobs": jobs,
            "accounts": options.accounts,
            "seconds": seconds,
            "jobs_per_second": jobs_per_second,
            "database": if workers.is_empty() { "one Postgres" } else { "Citus" },
            "workers": workers.len(),
            "transactions_per_job": transactions_per_job,
            "worker_transactions_per_job": worker_transactions_per_job,
            "citus_statements_per_job": statements.map(|(single, multi, connections)| json!({
                "single_shard": single,
                "multi_shard": multi,
                "connections_opened": connections,
            })),
            "daemon_cpu_ms_per_job": daemon_cpu_ms,
            "postgres_cpu_ms_per_job": postgres_cpu_ms,
            "postgres_backend_cpu_ms_per_job": backend_cpu_ms,
            "nodes": work,
            "backends_unseen": unseen_backends,
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
