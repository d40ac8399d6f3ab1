//! The `followq` command line: argument definitions and dispatch. Each subcommand's work lives
//! in its own file; this one only wires them to the settings and the database.
//!
//! Exit codes: 0 success, 1 error, 2 bad usage (from clap), 3 some input rows rejected
//! (`enqueue --file`).
//!
//! Commands write to standard output with [`outln!`] and [`out!`], not `println!`: a reader
//! that goes away (`followq jobs list | head`) ends the command quietly instead of a panic.

/// `println!` that hands a failed write (a closed pipe) back to the command as an error, which
/// `main` takes for the reader having had enough.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?;
    }};
}

/// `print!`, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)?;
    }};
}

mod accounts;
mod app;
#[cfg(feature = "bench")]
mod bench;
mod credentials;
mod demo;
mod enqueue;
mod jobs;
mod run;
mod sim;
mod status;
mod table;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sqlx::PgPool;

use crate::config::{ConfigSources, Settings};
use crate::{db, telemetry};

/// Exit code when the command ran but some input rows were rejected.
pub const EXIT_ROWS_REJECTED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "followq",
    version,
    about = "Drains a Postgres queue of X follow requests without ever breaking a user's rate limit",
    long_about = None,
)]
pub struct Cli {
    /// Directory holding default.toml and <FOLLOWQ_ENV>.toml [default: ./config].
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the followq schema. Safe to run again: applied migrations are skipped.
    Migrate,
    /// Enqueue follow requests: one with --source/--target, or many from a CSV file.
    Enqueue(enqueue::EnqueueArgs),
    /// Register accounts and store their tokens; list, inspect, pause, resume, disable them.
    Accounts {
        #[command(subcommand)]
        command: accounts::AccountsCommand,
    },
    /// The app-wide stop: end one an operator may end (`followq app resume`).
    App {
        #[command(subcommand)]
        command: app::AppCommand,
    },
    /// The keys that encrypt stored tokens: make one, count rows per key, re-encrypt.
    Credentials {
        #[command(subcommand)]
        command: credentials::CredentialsCommand,
    },
    /// What the queue, the accounts and the daemons are doing now (text, or --json).
    Status(status::StatusArgs),
    /// Inspect jobs and retry or cancel them.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Run the daemon: drain the queue within every account's rate limit until SIGTERM/SIGINT.
    /// Several replicas may run against one database; each account is sent for by one at a time.
    Run,
    /// See followq work in about a minute: a scratch database, the bundled simulator, a few
    /// thousand jobs, the real daemon, and a report. Needs only a Postgres server.
    Demo(demo::DemoArgs),
    /// Measure followq against the limits set by X's quota and by Postgres (scenarios print
    /// one line each and write JSON). Build with --release --features bench.
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Run the bundled X API simulator (follow and token endpoints with X's rules, faults on
    /// demand). Needs no database.
    Sim(Box<sim::SimArgs>),
}

/// The demo and the bench print progress and a report of their own; the daemon's info lines
/// would drown them.
fn shows_its_own_progress(command: &Command) -> bool {
    match command {
        Command::Demo(_) => true,
        #[cfg(feature = "bench")]
        Command::Bench(_) => true,
        _ => false,
    }
}

/// Loads settings, installs logging, and runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(&ConfigSources::from_process(cli.config_dir.as_deref()))?;
    if shows_its_own_progress(&cli.command) && !log_filter_chosen() {
        settings.log.filter = "warn,sqlx=error".into();
    }
    // Held to the end: dropping it sends the last spans when trace export is on.
    let _telemetry = telemetry::init(&settings.log, &settings.telemetry)?;
    let default_max_attempts = settings.retry.max_attempts;
    let credentials = settings.credentials.clone();
    let price = settings.billing.price_per_request;
    let outcome = match cli.command {
        // The simulator stands in for X: it runs where there is no database.
        Command::Sim(args) => sim::run(*args).await,
        // The demo makes its own scratch database on the configured server.
        Command::Demo(args) => demo::run(settings, args).await,
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench::run(settings, args).await,
        Command::Credentials { command } => credentials::run(&settings, command).await,
        Command::Run => {
            on_database(&settings.clone(), |pool| async move {
                db::check_schema(&pool).await?;
                run::run(settings, pool).await
            })
            .await
        }
        Command::Migrate => {
            on_database(&settings, |pool| async move {
                db::migrate(&pool).await?;
                outln!("followq schema is up to date");
                Ok(ExitCode::SUCCESS)
            })
            .await
        }
        Command::Enqueue(args) => {
            on_database(
                &settings,
                |pool| async move { enqueue::run(&pool, args).await },
            )
            .await
        }
        Command::Accounts { command } => {
            on_database(&settings, |pool| async move {
                accounts::run(&pool, &credentials, command).await
            })
            .await
        }
        Command::App { command } => {
            on_database(
                &settings,
                |pool| async move { app::run(&pool, command).await },
            )
            .await
        }
        Command::Status(args) => {
            on_database(&settings, |pool| async move {
                status::run(&pool, args, price).await
            })
            .await
        }
        Command::Jobs { command } => {
            on_database(&settings, |pool| async move {
                jobs::run(&pool, command, default_max_attempts).await
            })
            .await
        }
    };
    outcome.map_err(explain_missing_schema)
}

/// Runs `work` with a pool on the configured database, closed afterwards.
pub(crate) async fn on_database<F, Fut>(settings: &Settings, work: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    let pool = db::connect(&settings.database).await?;
    let outcome = work(pool.clone()).await;
    pool.close().await;
    outcome
}

/// Whether the user picked a log filter (RUST_LOG or FOLLOWQ_LOG__FILTER).
fn log_filter_chosen() -> bool {
    ["RUST_LOG", "FOLLOWQ_LOG__FILTER"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// A command other than `migrate` on a database without the schema: say what to do.
fn explain_missing_schema(error: anyhow::Error) -> anyhow::Error {
    let missing = error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .and_then(|e| e.code())
            .is_some_and(|code| code == "42P01" || code == "3F000")
    });
    if missing {
        error.context("the followq schema is missing in this database: run `followq migrate` first")
    } else {
        error
    }
}
