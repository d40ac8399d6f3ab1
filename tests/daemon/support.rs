//! Starting the simulator, registering its users as followq accounts, enqueueing jobs,
//! running daemons, waiting for what they do (on notifications where the daemon or the
//! simulator gives one), and reading the outcome.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use followq::accounts::Credentials;
use followq::config::{ConfigSources, Settings};
use followq::queue::{FollowRequest, JOB_FINISHED_CHANNEL, enqueue_batch};
use followq::sim::{SimConfig, SimHandle, SimStats, UserStats};
use followq::worker::{Daemon, DaemonHandle};
use sqlx::postgres::PgListener;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::common::TestDb;

/// Scenarios whose assertions time the daemon hold it exclusively; the others share it, so
/// they run beside each other but never beside a timed one.
static SCENARIOS: RwLock<()> = RwLock::const_new(());

/// Holds the scenario lock exclusively: for a scenario that asserts timings, which must not
/// compete with another for the machine's two cores.
pub async fn serial() -> RwLockWriteGuard<'static, ()> {
    crate::common::init_test_logging();
    SCENARIOS.write().await
}

/// Holds the scenario lock shared: for a scenario whose assertions do not depend on how fast
/// the machine is (it waits for events with generous limits).
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    crate::common::init_test_logging();
    SCENARIOS.read().await
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
        // The built-in defaults (no file, the test process's environment), pointed at this
        // test's database and simulator with the fast timings every local run shares.
        let mut settings = Settings::load(&ConfigSources {
            config_dir: "/nonexistent".into(),
            environment: None,
        })
        .expect("built-in defaults")
        .for_local_simulator(db.url.clone().into(), &sim.base_url(), quota, window);
        // What only the tests need: a pool of their own size, the app the simulator's tokens
        // are checked against, and the test process's key.
        settings.database.max_connections = 12;
        settings.x_api.oauth2.client_id = "followq-tests".into();
        settings.credentials = crate::common::test_credentials();
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

    /// Registers `user` as an OAuth 1.0a account in followq and in the simulator, whose
    /// consumer must be configured (`SimConfig::oauth1_consumer`).
    pub async fn oauth1_account(&self, user: &str, token: &str, token_secret: &str) {
        self.sim.add_oauth1_user(user, token, token_secret);
        self.db
            .add_account_with(
                user,
                Credentials::OAuth1 {
                    token: token.to_owned().into(),
                    token_secret: token_secret.to_owned().into(),
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
    pub async fn start(&self) -> DaemonHandle {
        start_with(&self.settings).await
    }

    pub async fn stats(&self) -> SimStats {
        self.sim.stats().await
    }

    pub async fn user(&self, user: &str) -> UserStats {
        self.stats().await.user(user)
    }

    /// Waits until no job is queued or running, or panics after `limit`. Wakes on
    /// `NOTIFY followq_job_finished` (and once a second, see [`Harness::finished_within`]).
    pub async fn wait_all_finished(&self, limit: Duration) -> Duration {
        self.wait_finished(
            limit,
            "every job finished",
            "SELECT count(*) = 0 FROM followq.follow_jobs WHERE state IN ('queued', 'running')",
        )
        .await
    }

    /// Waits until `sql` (a boolean about finished jobs) is true, checking it at the start
    /// and again on every `NOTIFY followq_job_finished` (and once a second); panics after
    /// `limit`.
    pub async fn wait_finished(&self, limit: Duration, what: &str, sql: &'static str) -> Duration {
        match self.finished_within(limit, sql).await {
            Some(took) => took,
            None => self.give_up(what, limit).await,
        }
    }

    /// [`Harness::wait_finished`] without the panic: how long `sql` took to hold, or `None`
    /// if it did not within `limit`. The notification only wakes the check: `sql`, read
    /// after the commit that notified, is what decides. It is also checked once a second: a
    /// job's end is announced at most once, and on Citus in a statement after the one that
    /// finished it, which the daemon does not send again if it fails (the notification tests
    /// check the announcements themselves).
    pub async fn finished_within(&self, limit: Duration, sql: &'static str) -> Option<Duration> {
        let start = Instant::now();
        let deadline = start + limit;
        // Listening before the first check: no notification can fall between the two.
        let mut listener = PgListener::connect_with(&self.db.pool)
            .await
            .expect("listener connection");
        listener
            .listen(JOB_FINISHED_CHANNEL)
            .await
            .expect("LISTEN followq_job_finished");
        loop {
            let done: bool = sqlx::query_scalar(sql)
                .fetch_one(&self.db.pool)
                .await
                .expect("condition query");
            if done {
                return Some(start.elapsed());
            }
            if Instant::now() >= deadline {
                return None;
            }
            let wake = deadline.min(Instant::now() + Duration::from_secs(1));
            match tokio::time::timeout_at(wake.into(), listener.recv()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => panic!("the finished-job listener failed: {e}"),
            }
        }
    }

    /// Waits until the simulator's figures satisfy `done`, woken by every change of them
    /// (no polling); panics after `limit` with the last figures.
    pub async fn sim_wait(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&SimStats) -> bool,
    ) -> SimStats {
        match self.sim.wait_for(limit, done).await {
            Ok(stats) => stats,
            Err(last) => panic!("the simulator did not see {what} within {limit:?}: {last:?}"),
        }
    }

    async fn give_up(&self, what: &str, limit: Duration) -> ! {
        let states: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM followq.follow_jobs GROUP BY 1 ORDER BY 1")
                .fetch_all(&self.db.pool)
                .await
                .unwrap_or_default();
        panic!("not {what} after {limit:?}: jobs by state {states:?}");
    }

    /// Polls `sql` (a boolean) every 50 ms until true; returns how long it took. Only for
    /// what nothing announces (an account's status or lease, an app-wide stop, a job back in
    /// the queue, rows pruned): a job finishing has [`Harness::wait_finished`], a request the
    /// simulator sees [`Harness::sim_wait`].
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
                self.give_up(what, limit).await;
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

    /// An account's row: what operators and other daemons read.
    pub async fn account_row(&self, user: &str) -> AccountRow {
        sqlx::query_as(
            "SELECT status, paused_until, pause_reason, leased_by FROM followq.accounts \
             WHERE user_id = $1",
        )
        .bind(user)
        .fetch_one(&self.db.pool)
        .await
        .expect("account row")
    }

    /// Every job of `source`, by target.
    pub async fn jobs_of(&self, source: &str) -> Vec<JobRow> {
        sqlx::query_as(
            "SELECT target_user_id, state, attempts, rate_limited_count, run_at, following, \
             pending_follow, last_error, finished_at FROM followq.follow_jobs \
             WHERE source_user_id = $1 ORDER BY target_user_id::numeric",
        )
        .bind(source)
        .fetch_all(&self.db.pool)
        .await
        .expect("job rows")
    }

    /// The ledger rows of `account`, in the order the requests were sent. (The join names the
    /// account on both sides, as Citus joins its tables: on the column they are spread by.)
    pub async fn ledger_of(&self, account: &str) -> Vec<LedgerRow> {
        sqlx::query_as(
            "SELECT j.target_user_id, t.sent_at, t.completed_at, t.http_status, \
             t.outcome, t.rate_limit_limit, t.rate_limit_remaining, t.rate_limit_reset_at, \
             t.error, t.answer_by FROM followq.attempts AS t JOIN followq.follow_jobs AS j \
             ON j.id = t.job_id AND j.source_user_id = t.account_user_id \
             WHERE t.account_user_id = $1 ORDER BY t.sent_at, t.id",
        )
        .bind(account)
        .fetch_all(&self.db.pool)
        .await
        .expect("ledger rows")
    }

    /// The app-wide stop, if one is recorded.
    pub async fn app_pause(&self) -> Option<AppPauseRow> {
        sqlx::query_as("SELECT reason, detail, paused_until FROM followq.app_pause")
            .fetch_optional(&self.db.pool)
            .await
            .expect("app_pause row")
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub status: String,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
    pub leased_by: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub target_user_id: String,
    pub state: String,
    pub attempts: i32,
    pub rate_limited_count: i32,
    pub run_at: DateTime<Utc>,
    pub following: Option<bool>,
    pub pending_follow: Option<bool>,
    pub last_error: Option<serde_json::Value>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerRow {
    pub target_user_id: String,
    pub sent_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub http_status: Option<i16>,
    pub outcome: Option<String>,
    pub rate_limit_limit: Option<i32>,
    pub rate_limit_remaining: Option<i32>,
    pub rate_limit_reset_at: Option<DateTime<Utc>>,
    pub error: Option<serde_json::Value>,
    /// The latest instant the request could reach X (claim + send deadline + timeout).
    pub answer_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppPauseRow {
    pub reason: String,
    pub detail: Option<serde_json::Value>,
    pub paused_until: Option<DateTime<Utc>>,
}

/// Starts a daemon with its own pool (`followq::db::connect`, as `followq run` does). Its
/// handle's `stop` fails if the graceful stop takes longer than the grace period and slack.
pub async fn start_with(settings: &Settings) -> DaemonHandle {
    let pool = followq::db::connect(&settings.database)
        .await
        .expect("daemon pool");
    Daemon::new(settings.clone(), pool).expect("daemon").spawn()
}

/// A daemon whose turn panics for jobs to `target`.
pub async fn start_with_panic(settings: &Settings, target: &str) -> DaemonHandle {
    let pool = followq::db::connect(&settings.database)
        .await
        .expect("daemon pool");
    let mut daemon = Daemon::new(settings.clone(), pool).expect("daemon");
    daemon.inject_panic_for_target(target);
    daemon.spawn()
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
