//! `followq bench`: how close followq comes to the limits set by X's quota and by Postgres.
//! Not part of `cargo test`; every scenario prints one line of figures and the whole run is
//! written as JSON. BENCHMARKS.md holds the method and the figures measured on this machine.
//!
//! | scenario | question |
//! | --- | --- |
//! | `utilisation` | with the quota binding, how close to the ideal completion time, with no window over and no 429? |
//! | `throughput` | with no quota binding, how many jobs per second, at what cost per job? |
//! | `latency` | on an idle daemon, how long from an insert's commit to the request? |
//! | `scale` | 20k accounts with a day of follows each (400), 1M jobs: lease and seed time, the daemon's memory per account, the claim's latency full and drained |
//! | `noisy_neighbour` | one deep backlog beside 1,000 one-job accounts: are the small ones served at once? |
//! | `timer` | how late after a window opens does its first request arrive? |
//! | `failover` | one of two daemons killed with kill -9: how soon are its accounts taken over and sent for? |
//! | `soak` | minutes of a steady stream with the daily cap lifted: does the daemon's memory stay flat? (only when named) |

pub mod endpoint;
pub mod failover;
pub mod harness;
pub mod latency;
pub mod nodes;
pub mod noisy;
pub mod scale;
pub mod soak;
pub mod throughput;
pub mod timer;
pub mod utilisation;

use std::time::Duration;

use serde::Serialize;

use crate::accounts::KeyRing;
use crate::config::Settings;
use crate::scratch_db::citus::ShardCount;

/// What scenarios share.
pub struct BenchContext {
    /// The operator's settings, with a key of the bench's own in `[credentials]`.
    pub settings: Settings,
    /// That key, to seal the scenarios' tokens.
    pub keys: KeyRing,
    /// On a Citus coordinator, the shards of each distributed table of the scratch databases.
    /// By default the cluster's own count (Citus's default, 32, unless configured otherwise):
    /// the daemon sends one claim and one record statement per shard of a batch, so the work
    /// per job depends on it, and the figures are to be those of a cluster as its operator
    /// runs it.
    pub citus_shards: ShardCount,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: &'static str,
    /// The one line printed for it.
    pub line: String,
    pub figures: serde_json::Value,
}

/// The scenarios, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Utilisation,
    Throughput,
    Latency,
    Scale,
    NoisyNeighbour,
    Timer,
    Failover,
    Soak,
}

impl Scenario {
    /// Every scenario but the soak, which takes minutes and runs only when named.
    pub const ALL: [Scenario; 7] = [
        Scenario::Utilisation,
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Scale,
        Scenario::NoisyNeighbour,
        Scenario::Timer,
        Scenario::Failover,
    ];
}

/// Knobs of the run (each scenario has sensible defaults for a 2-core machine).
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub base_url: Option<String>,
    pub throughput_accounts: u64,
    pub throughput_jobs_per_account: u64,
    pub utilisation_accounts: u64,
    pub utilisation_jobs_per_account: u64,
    pub utilisation_quota: u32,
    pub utilisation_window: Duration,
    pub scale_accounts: u64,
    pub scale_jobs: u64,
    pub scale_follows_per_account: u64,
    pub soak_accounts: u64,
    pub soak_rate: u64,
    pub soak_duration: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            base_url: None,
            throughput_accounts: 1_000,
            throughput_jobs_per_account: 50,
            utilisation_accounts: 20,
            utilisation_jobs_per_account: 201,
            utilisation_quota: 50,
            utilisation_window: Duration::from_secs(10),
            scale_accounts: 20_000,
            scale_jobs: 1_000_000,
            scale_follows_per_account: 400,
            soak_accounts: 200,
            soak_rate: 2_000,
            soak_duration: Duration::from_secs(9 * 60),
        }
    }
}

/// Runs one scenario.
pub async fn run(
    ctx: &BenchContext,
    scenario: Scenario,
    options: &BenchOptions,
) -> anyhow::Result<ScenarioResult> {
    match scenario {
        Scenario::Utilisation => {
            utilisation::run(
                ctx,
                &utilisation::UtilisationOptions {
                    accounts: options.utilisation_accounts,
                    jobs_per_account: options.utilisation_jobs_per_account,
                    quota: options.utilisation_quota,
                    window: options.utilisation_window,
                },
            )
            .await
        }
        Scenario::Latency => {
            latency::run(
                ctx,
                &latency::LatencyOptions {
                    accounts: 50,
                    samples: 300,
                },
            )
            .await
        }
        Scenario::Scale => {
            scale::run(
                ctx,
                &scale::ScaleOptions {
                    accounts: options.scale_accounts,
                    jobs: options.scale_jobs,
                    follows_per_account: options.scale_follows_per_account,
                },
            )
            .await
        }
        Scenario::NoisyNeighbour => {
            noisy::run(
                ctx,
                &noisy::NoisyOptions {
                    big_jobs: 10_000,
                    small_accounts: 1_000,
                },
            )
            .await
        }
        Scenario::Timer => {
            timer::run(
                ctx,
                &timer::TimerOptions {
                    accounts: 20,
                    quota: 10,
                    window: Duration::from_secs(2),
                    windows: 4,
                },
            )
            .await
        }
        Scenario::Failover => failover::run(ctx, &failover::FailoverOptions { accounts: 40 }).await,
        Scenario::Soak => {
            soak::run(
                ctx,
                &soak::SoakOptions {
                    accounts: options.soak_accounts,
                    rate: options.soak_rate,
                    duration: options.soak_duration,
                },
            )
            .await
        }
        Scenario::Throughput => {
            throughput::run(
                ctx,
                &throughput::ThroughputOptions {
                    accounts: options.throughput_accounts,
                    jobs_per_account: options.throughput_jobs_per_account,
                    base_url: options.base_url.clone(),
                },
            )
            .await
        }
    }
}
