//! `followq bench`: runs the benchmark scenarios, prints one line each, writes JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::accounts::KeyRing;
use crate::accounts::keyring::fresh_settings;
use crate::bench::{self, BenchContext, BenchOptions, Scenario};
use crate::config::Settings;
use crate::scratch_db::citus::ShardCount;

#[derive(Debug, Args)]
#[command(after_help = "\
Needs a Postgres server where it may create databases (DATABASE_URL). Each scenario makes its
own scratch database and drops it. Build with --release: debug builds measure the compiler.")]
pub struct BenchArgs {
    /// Scenarios to run (repeatable); all of them but the soak by default.
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,
    /// Where to write the figures as JSON.
    #[arg(long, value_name = "PATH", default_value = "bench-results.json")]
    json: PathBuf,
    /// Aim the throughput scenario at this endpoint (e.g. a loopback nginx answering the follow
    /// JSON) instead of a simulator process of its own.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Throughput: accounts.
    #[arg(long, default_value_t = BenchOptions::default().throughput_accounts)]
    throughput_accounts: u64,
    /// Throughput: jobs per account.
    #[arg(long, default_value_t = BenchOptions::default().throughput_jobs_per_account)]
    throughput_jobs_per_account: u64,
    /// Scale: accounts.
    #[arg(long, default_value_t = BenchOptions::default().scale_accounts)]
    scale_accounts: u64,
    /// Scale: queued jobs (at least one per account).
    #[arg(long, default_value_t = BenchOptions::default().scale_jobs)]
    scale_jobs: u64,
    /// Scale: follows each account made in the last 24 hours.
    #[arg(long, default_value_t = BenchOptions::default().scale_follows_per_account)]
    scale_follows_per_account: u64,
    /// Soak: accounts.
    #[arg(long, default_value_t = BenchOptions::default().soak_accounts)]
    soak_accounts: u64,
    /// Soak: jobs enqueued per second.
    #[arg(long, default_value_t = BenchOptions::default().soak_rate)]
    soak_rate: u64,
    /// Soak: how long jobs are enqueued (e.g. "9m").
    #[arg(long, value_parser = humantime::parse_duration, default_value = "9m")]
    soak_duration: std::time::Duration,
    /// On a Citus coordinator: shards of each distributed table of the scratch databases
    /// (default: the cluster's citus.shard_count).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    citus_shards: Option<u32>,
}

pub async fn run(mut settings: Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    // Scratch databases get a scratch key: the operator's keys stay out of the bench.
    settings.credentials = fresh_settings("bench")?;
    let keys = KeyRing::from_settings(&settings.credentials)?;
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let options = BenchOptions {
        base_url: args.base_url.clone(),
        throughput_accounts: args.throughput_accounts,
        throughput_jobs_per_account: args.throughput_jobs_per_account,
        scale_accounts: args.scale_accounts,
        scale_jobs: args.scale_jobs,
        scale_follows_per_account: args.scale_follows_per_account,
        soak_accounts: args.soak_accounts,
        soak_rate: args.soak_rate,
        soak_duration: args.soak_duration,
        ..BenchOptions::default()
    };
    let ctx = BenchContext {
        settings,
        keys,
        citus_shards: args
            .citus_shards
            .map_or(ShardCount::ClusterDefault, ShardCount::Total),
    };
    let mut results = Vec::new();
    for scenario in scenarios {
        let result = bench::run(&ctx, scenario, &options)
            .await
            .with_context(|| format!("scenario {scenario:?}"))?;
        outln!("{}", result.line);
        results.push(result);
    }
    let document = json!({
        "followq_version": env!("CARGO_PKG_VERSION"),
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        },
        "scenarios": results,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&document)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("figures written to {}", args.json.display());
    Ok(ExitCode::SUCCESS)
}
