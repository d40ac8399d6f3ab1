//! `followq demo`: the whole product in about a minute against the bundled simulator, on a
//! Postgres server it is given or, when none answers, one it starts and removes itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::demo::choose_postgres::{self, Lookup};
use crate::demo::{self, DemoOptions, progress};

#[derive(Debug, Args)]
#[command(after_help = "\
The demo creates followq_demo_<pid>_<random> on a Postgres server, migrates it, and drops it at
the end (unless --keep-database); on a Citus coordinator with workers, on every node, its tables
distributed, and the report says how the jobs were spread over the workers. The server: the one --database-url, DATABASE_URL or
FOLLOWQ_DATABASE__URL names, always; else database.url if a server answers there within 2 s;
else a throwaway one the demo starts and removes at the end (also on Ctrl-C): a cluster from
the local Postgres binaries (initdb and pg_ctl on PATH or in the usual package directories;
run as nobody when the demo runs as root), on a Unix socket in a temporary directory, or a
Docker container (builds with the demo-docker feature). A throwaway cluster that a killed demo
left running is stopped and removed by the next demo. The simulator runs in-process on a
loopback port: no X credentials, no network.")]
pub struct DemoArgs {
    /// The Postgres server to create the demo's database on, instead of DATABASE_URL and
    /// database.url. A named server is always used: if it cannot be reached, the demo fails
    /// rather than start a throwaway one. (A URL with a password is better in DATABASE_URL:
    /// the command line is visible to other users.)
    #[arg(long, value_name = "URL", value_parser = parse_secret)]
    database_url: Option<SecretString>,
    /// Where the Postgres binaries (initdb, pg_ctl) for a throwaway server are [default: the
    /// first directory on PATH with both, else the newest of the usual package directories].
    #[arg(long, value_name = "DIR")]
    postgres_bin: Option<PathBuf>,
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
    /// Keep the scratch database afterwards, to look at with psql (a throwaway Postgres is
    /// then left running too; the demo says how to remove it).
    #[arg(long)]
    keep_database: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub async fn run(mut settings: Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
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
    cancel_on_ctrl_c_or_sigterm(interrupt.clone())?;
    let mut progress = progress::for_stderr();

    let explicit = args.database_url.is_some() || database_url_in_environment();
    if let Some(url) = args.database_url {
        settings.database.url = url;
    }
    let lookup = Lookup::this_machine(args.postgres_bin);
    // Whichever server this run uses: what a demo killed with SIGKILL left running goes first.
    choose_postgres::remove_abandoned(&lookup, progress.as_mut()).await;
    let postgres =
        choose_postgres::choose(&settings.database.url, explicit, &lookup, progress.as_mut())
            .await?;
    settings.database.url = postgres.url().clone();
    // A Ctrl-C while a throwaway server was starting: remove it and stop here.
    let outcome = if interrupt.is_cancelled() {
        Err(anyhow::anyhow!("interrupted before the demo started"))
    } else {
        demo::run(&settings, &options, progress.as_mut(), interrupt)
            .await
            .map_err(anyhow::Error::from)
    };
    // Whatever the outcome: a throwaway server is stopped and removed here.
    if let Some(note) = postgres.finish(options.keep_database).await {
        progress.note(&note);
    }
    let report = outcome?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{report}");
    }
    Ok(if report.completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// Whether the environment names the database server (then it is used as is, never replaced
/// by a throwaway one).
fn database_url_in_environment() -> bool {
    ["DATABASE_URL", "FOLLOWQ_DATABASE__URL"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

/// Cancels `interrupt` on the first Ctrl-C (SIGINT) or SIGTERM: the demo then stops early,
/// reports, and removes what it created. Later signals are ignored while it cleans up.
fn cancel_on_ctrl_c_or_sigterm(interrupt: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupted.recv() => {}
            _ = terminated.recv() => {}
        }
        interrupt.cancel();
    });
    Ok(())
}
