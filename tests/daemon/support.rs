//! Starting the simulator, registering its users as followq accounts, enqueueing jobs,
//! running daemons, and reading the outcome.

use std::time::{Duration, Instant};

use followq::accounts::Credentials;
use followq::config::{ConfigSources, Settings};
use followq::queue::{FollowRequest, enqueue_batch};
use followq::sim::{SimConfig, SimHandle, SimStats, UserStats};
use followq::worker::Daemon;
use tokio::sync::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use crate::common::TestDb;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Holds the scenario lock: one daemon scenario at a time.
pub async fn serial() -> MutexGuard<'static, ()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    SERIAL.lock().await
}

/// A test database, a simulator, and the settings that point a daemon at both.
pub struct Harness {
    pub db: TestDb,
    pub sim: SimHandle,
    pub settings: Settings,
}

pub fn sim_config(quota: u32, window: Duration) -> SimConfig {
    SimConfig {
        window_requests: quota,
        window,
        daily_cap: None,
        ..SimConfig::default()
    }
}

impl Harness {
    /// `quota` requests per `window`, in the simulator and in followq's settings alike.
    pub async fn new(sim: SimConfig) -> Harness {
        let db = TestDb::new().await;
        let quota = sim.window_requests;
        let window = sim.window;
        let sim = followq::sim::spawn(sim).expect("start the simulator");
        let mut settings = Settings::load(&ConfigSources {
            config_dir: "/nonexistent".into(),
            environment: None,
        })
        .expect("built-in defaults");
        settings.database.url = db.url.clone().into();
        settings.database.max_connections = 12;
        settings.x_api.base_url = sim.base_url();
        settings.x_api.connect_timeout = Duration::from_secs(1);
        settings.x_api.request_timeout = Duration::from_secs(2);
        settings.x_api.oauth2.client_id = "followq-tests".into();
        settings.credentials = crate::common::test_credentials();
        settings.rate_limit.requests_per_period = quota;
        settings.rate_limit.period = window;
        settings.worker.poll_interval = Duration::from_millis(200);
        settings.worker.heartbeat_interval = Duration::from_secs(1);
        settings.worker.account_lease = Duration::from_secs(4);
        settings.worker.job_lease = Duration::from_secs(3);
        settings.worker.shutdown_grace = Duration::from_secs(5);
        settings.worker.summary_interval = Duration::from_secs(5);
        settings.retry.max_attempts = 4;
        settings.retry.base_delay = Duration::from_millis(100);
        settings.retry.max_delay = Duration::from_secs(2);
        Harness { db, sim, settings }
    }

    /// Registers `user` in the simulator and as a followq account with its tokens.
    pub async fn account(&self, user: &str) {
        let tokens = self.sim.add_user(user);
        self.db
            .add_account_with(
                user,
                Credentials::OAuth2 {
                    access_token: tokens.access_token.into(),
                    refresh_token: Some(tokens.refresh_token.into()),
                    expires_at: None,
                },
            )
            .await;
    }

    /// Enqueues `count` follows for `source`, to targets `first_target..`.
    pub async fn enqueue(&self, source: &str, first_target: u64, count: u64) {
        let requests: Vec<FollowRequest> = (first_target..first_target + count)
            .map(|target| FollowRequest::new(source, &target.to_string()).expect("valid request"))
            .collect();
        enqueue_batch(&self.db.pool, &requests)
            .await
            .expect("enqueue");
    }

    /// Starts a daemon with its own pool: it shares nothing with others but the database.
    pub async fn start(&self) -> Running {
        start_with(&self.settings).await
    }

    pub async fn stats(&self) -> SimStats {
        self.sim.stats().await
    }

    pub async fn user(&self, user: &str) -> UserStats {
        self.stats().await.user(user)
    }

    /// Waits until no job is queued or running, or panics after `limit`.
    pub async fn wait_all_finished(&self, limit: Duration) -> Duration {
        self.wait_until(
            limit,
            "every job finished",
            "SELECT count(*) = 0 FROM followq.follow_jobs WHERE state IN ('queued', 'running')",
        )
        .await
    }

    /// Polls `sql` (a boolean) every 50 ms until true; returns how long it took.
    pub async fn wait_until(&self, limit: Duration, what: &str, sql: &'static str) -> Duration {
        let start = Instant::now();
        loop {
            let done: bool = sqlx::query_scalar(sql)
                .fetch_one(&self.db.pool)
                .await
                .expect("poll query");
            if done {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                let states: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT state, count(*) FROM followq.follow_jobs GROUP BY 1 ORDER BY 1",
                )
                .fetch_all(&self.db.pool)
                .await
                .unwrap_or_default();
                panic!("not {what} after {limit:?}: jobs by state {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .expect("count query")
    }
}

pub async fn start_with(settings: &Settings) -> Running {
    let pool = followq::db::connect(&settings.database)
        .await
        .expect("daemon pool");
    let daemon = Daemon::new(settings.clone(), pool).expect("daemon");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(daemon.run(shutdown.clone()));
    Running { shutdown, handle }
}

/// A daemon running in this process.
pub struct Running {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    /// SIGTERM, in effect: returns once the daemon has stopped gracefully.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("the daemon task ends cleanly");
    }

    /// A crash, in effect: no cleanup at all.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Every user's stats must show no window above `quota` and no 429.
pub fn assert_within_quota(stats: &SimStats, quota: u64) {
    for (user, figures) in &stats.users {
        assert!(
            figures.max_requests_in_window <= quota,
            "user {user} had {} requests in one window (quota {quota})",
            figures.max_requests_in_window
        );
        assert_eq!(figures.rate_limited, 0, "user {user} got 429s");
    }
}
