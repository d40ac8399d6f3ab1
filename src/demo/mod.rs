//! `followq demo`: followq doing its job, end to end, in about a minute, with nothing to set up
//! but a Postgres server.
//!
//! It creates a scratch database on the configured server, starts the bundled X API simulator
//! in-process on a loopback port with the window scaled to seconds, registers demo accounts
//! (one of them with an expired token, to show a refresh), enqueues a few thousand follows
//! (some to protected targets, a few to targets that do not exist) with light fault injection,
//! runs the real daemon, shows progress, and ends with a report: outcomes, 429s, requests per
//! window against the quota, and the achieved time against the ideal one. Then it drops the
//! database.

pub mod abandoned;
pub mod choose_postgres;
#[cfg(feature = "demo-docker")]
pub mod docker_postgres;
pub mod progress;
pub mod report;
pub mod server_user;
pub mod throwaway_postgres;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::accounts::keyring::fresh_settings;
use crate::accounts::{Credentials, KeyRing, NewAccount, register};
use crate::config::Settings;
use crate::ids::UserId;
use crate::queue::{FollowRequest, enqueue_batch};
use crate::scratch_db::citus::ShardCount;
use crate::scratch_db::{ScratchDb, ScratchDbError};
use crate::sim::{self, FaultConfig, SimConfig, SimHandle, TargetRules};
use crate::store::demo_report;
use crate::worker::Daemon;
use progress::Progress;
use report::DemoReport;

/// What the demo runs. The defaults finish in about a minute.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub accounts: u32,
    /// Jobs in all, spread evenly over the accounts.
    pub jobs: u32,
    /// Requests per window, in the simulator and in followq alike.
    pub quota: u32,
    pub window: Duration,
    /// Rate of injected 5xx answers; dropped connections and unreadable bodies come at half
    /// and a quarter of it.
    pub fault_rate: f64,
    /// Targets whose id is divisible by this are protected (pending follows).
    pub protected_every: u64,
    /// Targets whose id is divisible by this do not exist (404: failed jobs).
    pub unknown_every: u64,
    pub seed: u64,
    /// Leave the scratch database for inspection.
    pub keep_database: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            accounts: 30,
            jobs: 3_000,
            quota: 50,
            window: Duration::from_secs(20),
            fault_rate: 0.02,
            protected_every: 10,
            unknown_every: 97,
            seed: 1,
            keep_database: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the options make no demo: {0}")]
    Options(&'static str),
    #[error(transparent)]
    Database(#[from] ScratchDbError),
    #[error("could not start the simulator")]
    Simulator(#[from] sim::SimError),
    #[error("could not set up the demo data")]
    Setup(#[source] anyhow::Error),
    #[error("could not start the daemon")]
    Daemon(#[from] crate::worker::WorkerError),
    #[error("could not read the outcome")]
    Report(#[source] sqlx::Error),
}

/// First demo account id: realistic 10-digit X ids.
const FIRST_ACCOUNT: u64 = 1_000_000_000;
/// Targets: well apart from the accounts, so no job is a self-follow.
const FIRST_TARGET: u64 = 5_000_000_000;

/// Runs the demo. `interrupt` (Ctrl-C) stops it early; the report then says what was done.
pub async fn run(
    base: &Settings,
    options: &DemoOptions,
    progress: &mut dyn Progress,
    interrupt: CancellationToken,
) -> Result<DemoReport, DemoError> {
    if options.accounts == 0 || options.jobs == 0 || options.quota == 0 {
        return Err(DemoError::Options(
            "accounts, jobs and quota must be at least 1",
        ));
    }
    if options.window < Duration::from_secs(1) {
        return Err(DemoError::Options("the window must be at least 1 s"));
    }
    if !(0.0..=0.5).contains(&options.fault_rate) {
        return Err(DemoError::Options(
            "the fault rate must be between 0 and 0.5",
        ));
    }
    // On Citus, two shards per worker: each worker gets shards of its own (Citus places them
    // in turn), so the report can show every worker's share, and the statements that read
    // every shard (the progress line's counts, once a second) reach four shards on a
    // two-worker cluster rather than Citus's default of 32.
    let scratch = ScratchDb::create(
        &base.database.url,
        "followq_demo",
        24,
        ShardCount::PerWorker(2),
    )
    .await?;
    match &scratch.citus {
        None => progress.note(&format!(
            "scratch database {} created and migrated",
            scratch.name
        )),
        Some(cluster) => progress.note(&format!(
            "scratch database {} created on the Citus coordinator {} and its {} workers ({}), \
             and migrated: its tables are distributed",
            scratch.name,
            cluster.coordinator(),
            cluster.workers().len(),
            cluster
                .workers()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    let outcome = run_in(base, options, &scratch, progress, interrupt).await;
    if options.keep_database {
        progress.note(&format!("kept the database {}", scratch.name));
    } else {
        let name = scratch.name.clone();
        match scratch.drop_now().await {
            Ok(()) => progress.note(&format!("scratch database {name} dropped")),
            Err(e) => progress.note(&format!(
                "could not drop {name}: {:#}",
                anyhow::Error::from(e)
            )),
        }
    }
    outcome
}

async fn run_in(
    base: &Settings,
    options: &DemoOptions,
    scratch: &ScratchDb,
    progress: &mut dyn Progress,
    interrupt: CancellationToken,
) -> Result<DemoReport, DemoError> {
    let sim = sim::spawn(simulator_config(options))?;
    // The demo's tokens are sealed with a key of its own, which goes with its database.
    let credentials = fresh_settings("demo").map_err(|e| DemoError::Setup(e.into()))?;
    let keys = KeyRing::from_settings(&credentials).map_err(|e| DemoError::Setup(e.into()))?;
    let accounts = register_accounts(scratch, &sim, options, &keys)
        .await
        .map_err(DemoError::Setup)?;
    let jobs = enqueue_jobs(scratch, &accounts, options)
        .await
        .map_err(DemoError::Setup)?;
    progress.note(&format!(
        "simulator on {} ({} requests per {:?} window); {} accounts, {jobs} jobs enqueued",
        sim.base_url(),
        options.quota,
        options.window,
        accounts.len()
    ));

    let mut settings = demo_settings(base, options, scratch, &sim);
    settings.credentials = credentials;
    let price = settings.billing.price_per_request;
    let daemon = Daemon::new(settings, scratch.pool.clone())?;
    let started = Instant::now();
    let running = daemon.spawn();

    progress.start(u64::from(jobs));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let finished_at = loop {
        tokio::select! {
            _ = interrupt.cancelled() => break None,
            _ = tick.tick() => {}
        }
        let counts = demo_report::job_counts(&scratch.pool)
            .await
            .map_err(DemoError::Report)?;
        let stats = sim.stats_now();
        progress.update(
            counts.finished(),
            stats.totals.all_users.requests,
            stats.totals.all_users.rate_limited,
        );
        if counts.queued + counts.running == 0 {
            break Some(started.elapsed());
        }
    };
    let _ = running.stop().await;
    progress.finish();

    let report = report::build(
        &scratch.pool,
        &sim.stats().await,
        options,
        finished_at.unwrap_or_else(|| started.elapsed()),
        finished_at.is_some(),
        price,
    )
    .await
    .map_err(DemoError::Report)?;
    sim.shutdown().await;
    Ok(report)
}

fn simulator_config(options: &DemoOptions) -> SimConfig {
    SimConfig {
        window_requests: options.quota,
        window: options.window,
        daily_cap: None,
        client_id: Some("followq-demo".into()),
        targets: TargetRules {
            protected_every: Some(options.protected_every).filter(|n| *n > 0),
            unknown_every: Some(options.unknown_every).filter(|n| *n > 0),
            ..TargetRules::default()
        },
        faults: FaultConfig {
            seed: options.seed,
            fail_5xx: options.fault_rate,
            drop: options.fault_rate / 2.0,
            malformed: options.fault_rate / 4.0,
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    }
}

/// The daemon's settings for the demo: the operator's, pointed at the scratch database and
/// the simulator with the fast timings of [`Settings::for_local_simulator`] (the quota scaled
/// like the simulator's), the demo's app, and a retry budget of its own.
fn demo_settings(
    base: &Settings,
    options: &DemoOptions,
    scratch: &ScratchDb,
    sim: &SimHandle,
) -> Settings {
    let mut settings = base.for_local_simulator(
        scratch.url.clone(),
        &sim.base_url(),
        options.quota,
        options.window,
    );
    // The simulator knows the demo's public client only: no operator's secret goes to it.
    settings.x_api.oauth2.client_id = "followq-demo".into();
    settings.x_api.oauth2.client_secret = None;
    // A retry budget of its own: the faults are an option of the demo (`--fault-rate`, up
    // to 0.5), and the jobs that run out of attempts are part of its report.
    settings.retry.max_attempts = 5;
    settings.retry.base_delay = Duration::from_millis(500);
    settings.retry.max_delay = Duration::from_secs(5);
    settings
}

async fn register_accounts(
    scratch: &ScratchDb,
    sim: &SimHandle,
    options: &DemoOptions,
    keys: &KeyRing,
) -> anyhow::Result<Vec<UserId>> {
    let mut accounts = Vec::new();
    for i in 0..u64::from(options.accounts) {
        let user_id = UserId::parse(&(FIRST_ACCOUNT + i).to_string())?;
        let tokens = sim.add_user(user_id.as_str());
        register(
            &scratch.pool,
            keys,
            &NewAccount {
                user_id: user_id.clone(),
                credentials: Credentials::OAuth2 {
                    access_token: tokens.access_token.into(),
                    refresh_token: Some(tokens.refresh_token.into()),
                    expires_at: None,
                },
                quota: None,
            },
        )
        .await?;
        accounts.push(user_id);
    }
    // One account's access token has expired: the daemon refreshes it on the first 401.
    if let Some(first) = accounts.first() {
        sim.expire_access_token(first.as_str());
    }
    Ok(accounts)
}

async fn enqueue_jobs(
    scratch: &ScratchDb,
    accounts: &[UserId],
    options: &DemoOptions,
) -> anyhow::Result<u32> {
    let count = accounts.len() as u64;
    let requests: Vec<FollowRequest> = (0..u64::from(options.jobs))
        .map(|n| {
            let source = &accounts[(n % count) as usize];
            FollowRequest::new(source.as_str(), &(FIRST_TARGET + n / count).to_string())
        })
        .collect::<Result<_, _>>()?;
    enqueue_batch(&scratch.pool, &requests).await?;
    Ok(options.jobs)
}
