//! What every benchmark scenario needs: a scratch database filled in bulk, accounts known to
//! the simulator, a daemon to run, and the measurements (wall time from the database's own
//! timestamps, CPU time of this process and of Postgres). The statements are in
//! `store::bench`.

use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::accounts::KeyRing;
use crate::accounts::sealed::{TokenColumn, seal};
use crate::config::Settings;
use crate::ids::UserId;
use crate::scratch_db::ScratchDb;
use crate::sim::SimHandle;
use crate::store::bench;
use crate::worker::{Daemon, DaemonHandle};

/// First account id of a scenario: realistic 10-digit ids.
pub const FIRST_ACCOUNT: u64 = 1_000_000_000;
/// First target id: far from the accounts, so no job is a self-follow.
pub const FIRST_TARGET: u64 = 5_000_000_000;

pub fn account_id(n: u64) -> String {
    (FIRST_ACCOUNT + n).to_string()
}

pub fn access_token(n: u64) -> String {
    format!("bench-access-{}", FIRST_ACCOUNT + n)
}

/// Runs `measure` in a fresh scratch database (`followq_bench_…`) on the operator's server,
/// dropped afterwards whatever the outcome. On Citus its tables get `ctx.citus_shards` shards.
pub async fn in_scratch_db<T>(
    ctx: &super::BenchContext,
    connections: u32,
    measure: impl AsyncFnOnce(&ScratchDb) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let scratch = ScratchDb::create(
        &ctx.settings.database.url,
        "followq_bench",
        connections,
        ctx.citus_shards,
    )
    .await?;
    let outcome = measure(&scratch).await;
    if let Err(e) = scratch.drop_now().await {
        tracing::warn!(error = %e, "could not drop a scratch database");
    }
    outcome
}

/// Accounts sealed and inserted per statement by [`add_accounts`].
const ACCOUNTS_PER_STATEMENT: u64 = 10_000;

/// Registers `count` OAuth 2.0 accounts (the token is `access_token(n)`), sealed with `keys`
/// as `accounts add` would, a few statements per ten thousand accounts.
pub async fn add_accounts(
    pool: &PgPool,
    keys: &KeyRing,
    first: u64,
    count: u64,
) -> anyhow::Result<()> {
    let mut start = first;
    while start < first + count {
        let end = (start + ACCOUNTS_PER_STATEMENT).min(first + count);
        let mut ids = Vec::new();
        let mut tokens = Vec::new();
        for n in start..end {
            let user = UserId::parse(&account_id(n))?;
            let token = SecretString::from(access_token(n));
            tokens.push(seal(keys, &user, TokenColumn::OAuth2AccessToken, &token)?);
            ids.push(user.as_str().to_owned());
        }
        bench::insert_accounts(pool, &ids).await?;
        bench::insert_credentials(pool, &ids, &tokens).await?;
        start = end;
    }
    Ok(())
}

/// `followq run` as a process of its own (this executable), against the scratch database and
/// `base_url`, holding at most `max_accounts`, with the bench's credentials key, its output
/// discarded, and killed if the bench drops it. Scenarios add their own settings.
pub fn daemon_process(
    ctx: &super::BenchContext,
    scratch: &ScratchDb,
    base_url: &str,
    max_accounts: u64,
) -> anyhow::Result<tokio::process::Command> {
    let exe = std::env::current_exe().context("locating the followq binary")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("run")
        // The bench's own key, which sealed the scenario's tokens.
        .envs(credentials_env(ctx))
        .env("DATABASE_URL", scratch.url.expose_secret())
        .env_remove("FOLLOWQ_DATABASE__URL")
        .env("FOLLOWQ_X_API__BASE_URL", base_url)
        .env("FOLLOWQ_WORKER__MAX_ACCOUNTS", max_accounts.to_string())
        .env("FOLLOWQ_LOG__FILTER", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

/// The environment that gives a `followq run` child process the bench's own key, which
/// sealed the scenario's tokens, made the active one whatever the parent's environment says.
pub fn credentials_env(ctx: &super::BenchContext) -> Vec<(String, String)> {
    let active = ctx.keys.active_id();
    match ctx.settings.credentials.keys.get(active) {
        Some(key) => vec![
            (
                format!("FOLLOWQ_CREDENTIALS__KEYS__{}", active.to_uppercase()),
                key.expose_secret().to_owned(),
            ),
            (
                "FOLLOWQ_CREDENTIALS__ACTIVE_KEY".to_owned(),
                active.to_owned(),
            ),
        ],
        None => Vec::new(),
    }
}

/// Tells the in-process simulator the same accounts and tokens.
pub fn add_sim_users(sim: &SimHandle, first: u64, count: u64) {
    for n in first..first + count {
        sim.add_user_with_tokens(
            &account_id(n),
            &access_token(n),
            &format!("bench-refresh-{n}"),
        );
    }
}

/// Enqueues `jobs_per_account` follows for each account in `first..first + accounts`, in
/// statements of at most 200,000 rows.
pub async fn enqueue(
    pool: &PgPool,
    first: u64,
    accounts: u64,
    jobs_per_account: u64,
) -> Result<(), sqlx::Error> {
    let total = accounts * jobs_per_account;
    let step = 200_000u64;
    let mut start = 0;
    while start < total {
        let end = (start + step).min(total);
        bench::enqueue_jobs(
            pool,
            FIRST_ACCOUNT as i64,
            first as i64,
            accounts as i64,
            FIRST_TARGET as i64,
            start as i64,
            end as i64,
        )
        .await?;
        start = end;
    }
    Ok(())
}

/// Settings for a scenario: the operator's, pointed at the scratch database and `base_url`
/// by [`Settings::for_local_simulator`] (the operator's quota, which most scenarios then set),
/// but with the operator's worker and retry timings: a scenario measures the daemon as
/// configured, and the fast heartbeats and liveness checks of a test would add transactions
/// and CPU of their own to what it measures.
pub fn settings(base: &Settings, scratch: &ScratchDb, base_url: &str) -> Settings {
    let mut settings = base.for_local_simulator(
        scratch.url.clone(),
        base_url,
        base.rate_limit.requests_per_period,
        base.rate_limit.period,
    );
    // The operator's timings but two, as the figures in BENCHMARKS.md were measured: a
    // 250 ms poll, and no summary line inside a measurement.
    settings.worker = crate::config::WorkerSettings {
        poll_interval: Duration::from_millis(250),
        summary_interval: Duration::from_secs(3600),
        ..base.worker.clone()
    };
    settings.retry = base.retry.clone();
    // The operator's per-app cap (off by default), to measure what its slot per request costs;
    // the simulator's own daily caps are for a test of the caps.
    settings.rate_limit.daily_follows_per_app = base.rate_limit.daily_follows_per_app;
    // Thousands of requests in flight on two cores, the simulator a process of its own in
    // some scenarios: an answer may take seconds.
    settings.x_api.connect_timeout = Duration::from_secs(2);
    settings.x_api.request_timeout = Duration::from_secs(5);
    settings
}

/// Starts a daemon in this process.
pub async fn start_daemon(settings: Settings, pool: PgPool) -> anyhow::Result<DaemonHandle> {
    Ok(Daemon::new(settings, pool)?.spawn())
}

/// Waits until `condition` (one of the conditions of `store::bench`, such as
/// `bench::all_finished`) holds, polling every `every`; gives up after `limit`, saying it was
/// waiting for `what`.
pub async fn wait_for(
    pool: &PgPool,
    what: &str,
    condition: impl AsyncFn(&PgPool) -> Result<bool, sqlx::Error>,
    every: Duration,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if condition(pool).await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            anyhow::bail!("gave up after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Seconds from the first request sent to the last job finished, by the database's clock.
pub async fn first_sent_to_last_finished(pool: &PgPool) -> Result<f64, sqlx::Error> {
    let seconds = crate::store::demo_report::first_sent_to_last_finished(pool).await?;
    Ok(seconds.unwrap_or(0.0))
}

/// CPU seconds (user + system) used by a process so far, from /proc; `None` off Linux.
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let fields = stat_fields(pid)?;
    Some((fields.utime + fields.stime) / clock_ticks_per_second())
}

/// The CPU fields of /proc/<pid>/stat, in clock ticks.
struct CpuFields {
    utime: f64,
    stime: f64,
    /// What the process's children that have ended (and that it waited for) used.
    cutime: f64,
    cstime: f64,
}

fn stat_fields(pid: &str) -> Option<CpuFields> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n)?.parse().ok() };
    Some(CpuFields {
        utime: field(11)?,
        stime: field(12)?,
        cutime: field(13)?,
        cstime: field(14)?,
    })
}

fn clock_ticks_per_second() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on.
    100.0
}

/// CPU seconds used so far by all Postgres server processes on this machine, the ended ones
/// included (a backend's time goes to its postmaster's ended children when it ends, as the
/// connections Citus opens for one statement and closes do): every server and every node of a
/// cluster on this machine, and whatever else they served meanwhile.
pub fn postgres_cpu_seconds() -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres"
            && let Some(cpu) = stat_fields(pid)
        {
            total += (cpu.utime + cpu.stime + cpu.cutime + cpu.cstime) / clock_ticks_per_second();
            found = true;
        }
    }
    found.then_some(total)
}

/// A process's resident set now and at its peak, in MiB, from /proc/<pid>/status.
pub fn rss_mib(pid: &str) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The p-th percentile (0..=100) of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
