//! The daemon (`followq run`): drains `followq.follow_jobs` as fast as every account's rate
//! limit allows and never faster, with any number of replicas on one database.
//!
//! | file | owns |
//! | --- | --- |
//! | `leaser.rs` | leasing accounts with ready jobs (NOTIFY + poll), seeding their limiters from the ledger |
//! | `scheduler.rs` | which account sends next: round robin, timers, concurrency, heartbeat, drain |
//! | `job.rs` | jobs: claim a batch → token → request → record → pauses |
//! | `completer.rs` | writing job outcomes in batches |
//! | `decision.rs` | what an answer means for the job, the account and the app (pure) |
//! | `registry.rs` | live daemons (`followq.daemons`) and each one's fair share of accounts |
//! | `housekeeping.rs` | rescuing orphans, the app-wide stop, the summary line |
//! | `retention.rs` | pruning old finished jobs and ledger rows |
//! | `stats.rs` | counters for the summary |
//!
//! Why the limit holds across processes: governor's buckets live in process memory, so
//! each account is *leased* to one daemon at a time and only the lease holder sends for it.
//! A new holder charges its bucket with what the ledger (`followq.attempts`, one row per
//! request, written before the request goes out) says was sent in the current period, and
//! re-reads the last window the server reported. Claiming a job re-checks the lease in the
//! same statement. See README.md, "Running the daemon".

mod completer;
mod decision;
mod housekeeping;
mod job;
mod leaser;
mod registry;
mod retention;
mod scheduler;
pub mod stats;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::accounts::lease;
use crate::accounts::token_store::{AuthError, TokenStore};
use crate::accounts::{KeyError, KeyRing};
use crate::config::Settings;
use crate::http::{HttpError, HttpListener, Ops};
use crate::ids::UserId;
use crate::metrics::Metrics;
use crate::xapi::RequestAuth;
use crate::xapi::{TokenClient, XApiError, XClient};
use stats::Counters;

/// The longest credentials stay cached (see `Context::auth_cache`).
const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);

/// What every part of the daemon shares.
pub struct Context {
    pub settings: Settings,
    pub pool: PgPool,
    pub client: XClient,
    pub tokens: TokenStore,
    /// Names this daemon in leases and the ledger: host, pid and a random suffix.
    pub worker_id: String,
    pub counters: Counters,
    pub metrics: Metrics,
    /// Accounts this daemon holds a lease on (the scheduler writes, the leaser reads).
    held: Mutex<HashSet<String>>,
    /// Wakes the app monitor at once when a job hit an app-wide stop.
    app_check: Notify,
    /// The scheduler's inbox.
    events: mpsc::UnboundedSender<scheduler::Event>,
    /// Writes job outcomes in batches.
    completer: completer::Completer,
    /// Credentials recently loaded, so a busy account does not read its tokens for every
    /// request. Kept for less than half the refresh margin, so a token near expiry is always
    /// seen by the token store, which refreshes it; dropped on a 401.
    auth_cache: Mutex<HashMap<String, (RequestAuth, Instant)>>,
}

impl Context {
    fn held_insert(&self, account: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(account.to_owned());
        }
    }

    fn held_remove(&self, account: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(account);
        }
    }

    fn held_contains(&self, account: &str) -> bool {
        self.held.lock().is_ok_and(|held| held.contains(account))
    }

    pub fn held_count(&self) -> usize {
        self.held.lock().map_or(0, |held| held.len())
    }

    /// A job hit an app-wide stop: tell the scheduler before anything else, so no account
    /// starts another request, then have the app monitor read the stop's details.
    /// The credentials for `user`'s next request (cached briefly; see `auth_cache`).
    async fn auth_for(&self, user: &UserId) -> Result<RequestAuth, AuthError> {
        let ttl = (self.settings.x_api.oauth2.refresh_margin / 2).min(AUTH_CACHE_TTL);
        if let Ok(cache) = self.auth_cache.lock()
            && let Some((auth, at)) = cache.get(user.as_str())
            && at.elapsed() < ttl
        {
            return Ok(auth.clone());
        }
        let auth = self.tokens.auth_for(user).await?;
        if let Ok(mut cache) = self.auth_cache.lock() {
            cache.insert(user.as_str().to_owned(), (auth.clone(), Instant::now()));
        }
        Ok(auth)
    }

    /// X refused the cached credentials: the next request reads them afresh.
    fn forget_auth(&self, user: &UserId) {
        if let Ok(mut cache) = self.auth_cache.lock() {
            cache.remove(user.as_str());
        }
    }

    fn app_stop_seen(&self) {
        let until = std::time::Instant::now() + self.settings.worker.poll_interval * 2;
        let _ = self.events.send(scheduler::Event::AppStop(Some(until)));
        self.app_check.notify_one();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("could not build the HTTP client")]
    Client(#[from] XApiError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Credentials(#[from] KeyError),
}

/// A daemon ready to run.
pub struct Daemon {
    ctx: Arc<Context>,
    events: mpsc::UnboundedReceiver<scheduler::Event>,
    completions: mpsc::UnboundedReceiver<completer::Request>,
    /// The operations listener, bound already (`[http] enabled`).
    http: Option<HttpListener>,
}

impl Daemon {
    pub fn new(settings: Settings, pool: PgPool) -> Result<Daemon, WorkerError> {
        let client = XClient::new(&settings.x_api)?;
        let tokens = TokenStore::new(
            pool.clone(),
            TokenClient::new(&settings.x_api)?,
            &settings.x_api,
            KeyRing::from_settings(&settings.credentials)?,
        );
        let (sender, events) = mpsc::unbounded_channel();
        let (completer, completions) = completer::Completer::new();
        let http = HttpListener::bind(&settings.http)?;
        Ok(Daemon {
            events,
            completions,
            http,
            ctx: Arc::new(Context {
                events: sender,
                completer,
                auth_cache: Mutex::new(HashMap::new()),
                worker_id: worker_id(),
                settings,
                pool,
                client,
                tokens,
                counters: Counters::default(),
                metrics: Metrics::new(),
                held: Mutex::new(HashSet::new()),
                app_check: Notify::new(),
            }),
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.ctx.worker_id
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served, when `[http]` is enabled.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(HttpListener::local_addr)
    }

    /// Runs until `shutdown` is cancelled, then stops gracefully: no new requests, requests
    /// in flight get `worker.shutdown_grace` to finish and record their answers, jobs still
    /// running after that go back to the queue, and every lease is released.
    pub async fn run(self, shutdown: CancellationToken) {
        let Daemon {
            ctx,
            events,
            completions,
            http,
        } = self;
        info!(
            worker_id = %ctx.worker_id,
            concurrency = ctx.settings.worker.concurrency,
            quota = ctx.settings.rate_limit.requests_per_period,
            period = ?ctx.settings.rate_limit.period,
            base_url = %ctx.settings.x_api.base_url,
            "followq daemon started"
        );
        if let Err(e) = registry::register(&ctx.pool, &ctx.worker_id).await {
            warn!(error = %e, "could not register in followq.daemons; replicas may share accounts unevenly");
        }
        let sender = ctx.events.clone();
        let background = CancellationToken::new();
        let mut chores = tokio::task::JoinSet::new();
        if let Some(listener) = http {
            let ops = Ops {
                pool: ctx.pool.clone(),
                metrics: ctx.metrics.clone(),
                worker_id: ctx.worker_id.clone(),
                stopping: shutdown.clone(),
            };
            chores.spawn(listener.serve(ops, background.clone()));
        }
        chores.spawn(leaser::run(
            Arc::clone(&ctx),
            sender.clone(),
            background.clone(),
        ));
        chores.spawn(housekeeping::rescuer(Arc::clone(&ctx), background.clone()));
        chores.spawn(housekeeping::app_monitor(
            Arc::clone(&ctx),
            sender.clone(),
            background.clone(),
        ));
        chores.spawn(housekeeping::summary(Arc::clone(&ctx), background.clone()));
        chores.spawn(completer::run(
            Arc::clone(&ctx),
            completions,
            background.clone(),
        ));
        chores.spawn(retention::run(Arc::clone(&ctx), background.clone()));

        let scheduler = scheduler::Scheduler::new(Arc::clone(&ctx), events);
        let abandoned = scheduler.run(shutdown).await;
        background.cancel();
        while chores.join_next().await.is_some() {}

        if abandoned > 0 {
            warn!(
                abandoned,
                "grace period over: putting the requests still in flight back in the queue"
            );
        }
        match return_running_jobs(&ctx.pool, &ctx.worker_id).await {
            Ok(0) => {}
            Ok(n) => info!(jobs = n, "jobs still running went back to the queue"),
            Err(e) => {
                warn!(error = %e, "could not return running jobs; the rescuer will after their lease")
            }
        }
        match lease::release_all(&ctx.pool, &ctx.worker_id).await {
            Ok(n) => info!(accounts = n, "account leases released; daemon stopped"),
            Err(e) => {
                warn!(error = %e, "could not release account leases; they expire by themselves")
            }
        }
        if let Err(e) = registry::leave(&ctx.pool, &ctx.worker_id).await {
            warn!(error = %e, "could not leave followq.daemons; the entry expires by itself");
        }
    }
}

/// Jobs this daemon still holds after the grace period go back to the queue at once (their
/// requests may have reached X: the ledger rows say `abandoned`, and they still count).
async fn return_running_jobs(pool: &PgPool, worker_id: &str) -> Result<u64, sqlx::Error> {
    let rows: i64 = sqlx::query_scalar(
        r#"
        WITH returned AS (
            UPDATE followq.follow_jobs
            SET state = 'queued', leased_by = NULL, lease_expires_at = NULL,
                run_at = now(), updated_at = now(),
                last_error = jsonb_build_object('kind', 'abandoned',
                    'detail', 'the daemon stopped before the answer arrived')
            WHERE state = 'running' AND leased_by = $1
            RETURNING id
        ),
        ledger AS (
            UPDATE followq.attempts AS t SET outcome = 'abandoned', completed_at = now()
            FROM returned AS r
            WHERE t.job_id = r.id AND t.outcome IS NULL
        )
        SELECT count(*) FROM returned
        "#,
    )
    .bind(worker_id)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(rows).unwrap_or(0))
}

fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}
