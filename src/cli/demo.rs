//! `followq demo`: the whole product in about a minute against the bundled simulator.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::demo::{self, DemoOptions, progress};

#[derive(Debug, Args)]
#[command(after_help = "\
Needs only a Postgres server where it may create a database: DATABASE_URL (or database.url)
names the server; the demo creates followq_demo_<pid>_<random> there, migrates it, and drops
it at the end (unless --keep-database). The simulator runs in-process on a loopback port: no
X credentials, no network.")]
pub struct DemoArgs {
    /// Demo accounts (source users).
    #[arg(long, default_value_t = DemoOptions::default().accounts)]
    accounts: u32,
    /// Follow jobs in all, spread evenly over the accounts.
    #[arg(long, default_value_t = DemoOptions::default().jobs)]
    jobs: u32,
    /// Requests per window per account (X: 50 per 15 minutes).
    #[arg(long, default_value_t = DemoOptions::default().quota)]
    quota: u32,
    /// The window, scaled down from X's 15 minutes.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Rate of injected 5xx answers (dropped connections and unreadable bodies at half and a
    /// quarter of it); 0 for none.
    #[arg(long, value_name = "RATE", default_value_t = DemoOptions::default().fault_rate)]
    faults: f64,
    /// Targets with an id divisible by N are protected (their follows stay pending); 0: none.
    #[arg(long, value_name = "N", default_value_t = DemoOptions::default().protected_every)]
    protected_every: u64,
    /// Targets with an id divisible by N do not exist (those jobs fail); 0: none.
    #[arg(long, value_name = "N", default_value_t = DemoOptions::default().unknown_every)]
    unknown_every: u64,
    /// Seed for the injected faults.
    #[arg(long, default_value_t = DemoOptions::default().seed)]
    seed: u64,
    /// Keep the scratch database afterwards, to look at with psql.
    #[arg(long)]
    keep_database: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let options = DemoOptions {
        accounts: args.accounts,
        jobs: args.jobs,
        quota: args.quota,
        window: args.window,
        fault_rate: args.faults,
        protected_every: args.protected_every,
        unknown_every: args.unknown_every,
        seed: args.seed,
        keep_database: args.keep_database,
    };
    let interrupt = CancellationToken::new();
    let on_signal = interrupt.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let mut progress = progress::for_stderr();
    let report = demo::run(&settings, &options, progress.as_mut(), interrupt).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
