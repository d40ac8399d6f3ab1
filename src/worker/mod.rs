//! The daemon (`followq run`): drains `followq.follow_jobs` as fast as every account's rate
//! limit allows and never faster, with any number of replicas on one database.
//!
//! | file | owns |
//! | --- | --- |
//! | `leaser.rs` | leasing accounts with ready jobs (NOTIFY + poll), seeding their limiters from the ledger |
//! | `scheduler.rs` | which account sends next: round robin, timers, concurrency, drain (its parts in `scheduler/`) |
//! | `events.rs` | the messages the daemon's tasks send the scheduler |
//! | `claim.rs` | the claim task: one statement for every account let through in a round |
//! | `turn.rs` | one job's turn: token → request → decision → pauses; ends with the outcome to write |
//! | `record.rs` | the record task: a turn's outcome written, with the successor's claim |
//! | `clock.rs` | wall-clock instants as monotonic ones |
//! | `app_cap.rs` | the per-app daily follow cap: a slot per request, taken across replicas |
//! | `budget.rs` | the budgets: blocks reserved across replicas, one place per request |
//! | `completer.rs` | writing job outcomes in batches, two statements at a time |
//! | `decision.rs` | what an answer means for the job, the account and the app (pure) |
//! | `retry.rs` | every wait before trying again: job retries, turns that could not start, unwritten outcomes |
//! | `registry.rs` | each daemon's fair share of accounts, from the live daemons (`followq.daemons`) |
//! | `liveness.rs` | this daemon's liveness session, fencing, and taking over from peers that are gone |
//! | `supervise.rs` | restarting a background task that panicked |
//! | `handle.rs` | `Daemon::spawn` and the handle that stops it: the one way to run a daemon |
//! | `housekeeping.rs` | the app-wide stop (and its probe), the summary line |
//! | `retention.rs` | pruning old finished jobs and ledger rows |
//! | `spend_rollup.rs` | counting the ledger's settled hours into the spend rollup |
//!
//! Why the limit holds across processes, at every handover:
//!
//! - each account is *leased* to one daemon at a time, and only the holder claims its jobs: the
//!   claim statement re-checks the lease and locks the account row, so whoever takes the
//!   account next reads every claim made before;
//! - every claim writes its ledger row (`followq.attempts`) before the request goes out, with
//!   the latest instant the request can reach X (`answer_by`): a request not on the wire by
//!   its send deadline is never sent;
//! - a new holder seeds its limiter from the ledger: it waits for every unanswered request of
//!   the account (one request per account at a time), counts each at its latest possible
//!   arrival, and paces so that no fixed window of any alignment can take more than the
//!   quota, whether or not any answer carried rate-limit headers.
//!
//! See README.md, "Several replicas".

mod app_cap;
mod budget;
mod claim;
mod clock;
mod completer;
mod decision;
mod events;
mod handle;
mod housekeeping;
mod leaser;
mod liveness;
mod record;
mod registry;
mod retention;
mod retry;
mod scheduler;
mod spend_rollup;
mod turn;

pub use handle::{DaemonHandle, StopError};
mod supervise;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::prelude::ToPrimitive;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::accounts::token_store::{AuthError, TokenStore};
use crate::accounts::{KeyError, KeyRing};
use crate::admin::dashboard::Limits;
use crate::config::Settings;
use crate::http::{HttpError, HttpListener, Ops};
use crate::ids::UserId;
use crate::metrics::Metrics;
use crate::store::daemons;
use crate::store::leases;
use crate::store::shards::Shards;
use crate::store::unanswered::{self, Which};
use crate::xapi::RequestAuth;
use crate::xapi::{TokenClient, XApiError, XClient};

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
    pub metrics: Metrics,
    /// Which shard holds each account, on Citus (lease statements go once per shard).
    pub shards: Shards,
    /// Wakes the app monitor at once when a job hit an app-wide stop.
    app_check: Notify,
    /// The per-app daily follow cap, checked before each request.
    app_cap: app_cap::AppCapGate,
    /// The budgets, one place taken per request (see `budget.rs`).
    budget: budget::BudgetGate,
    /// The scheduler's inbox.
    events: mpsc::UnboundedSender<events::Event>,
    /// Writes job outcomes in batches.
    completer: completer::Completer,
    /// Credentials recently loaded, so a busy account does not read its tokens for every
    /// request. Kept for less than half the refresh margin, so a token near expiry is always
    /// seen by the token store, which refreshes it; dropped on a 401.
    auth_cache: Mutex<HashMap<String, (RequestAuth, Instant)>>,
    /// When this daemon's liveness session last answered (see `liveness.rs`).
    alive_at: Mutex<Option<Instant>>,
    /// Wakes the leaser at once (peers found gone: their accounts are free).
    lease_now: Notify,
    /// Tests only: a job to this target panics in its turn.
    panic_target: Option<String>,
}

impl Context {
    /// How long after its claim a request may still reach X: the send deadline, then the
    /// request timeout.
    pub fn answer_within(&self) -> Duration {
        answer_within(&self.settings)
    }

    fn confirm_alive(&self) {
        if let Ok(mut at) = self.alive_at.lock() {
            *at = Some(Instant::now());
        }
    }

    /// Whether this daemon may start a request now: its liveness session answered recently.
    /// When it did not, peers may soon take its accounts over.
    fn is_alive(&self, now: Instant) -> bool {
        let confirmed = self.alive_at.lock().ok().and_then(|at| *at);
        liveness::vouches(confirmed, now, self.settings.worker.liveness_interval)
    }

    /// Whether this daemon's liveness session was ever confirmed (it is not, at start).
    fn was_alive(&self) -> bool {
        self.alive_at.lock().is_ok_and(|at| at.is_some())
    }

    fn inject_panic_for(&self, target: &str) {
        if self.panic_target.as_deref() == Some(target) {
            panic!("injected panic for target {target}");
        }
    }

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

    /// Notes in their jobs' `last_error` why this daemon leaves requests in flight (`which`)
    /// without an answer. The jobs wait in the queue and their ledger rows count until their
    /// `answer_by` either way, so a database error is only logged.
    async fn note_unanswered(&self, which: Which<'_>, why: &str) {
        match unanswered::note_unanswered(&self.pool, &self.worker_id, which, why).await {
            Ok(0) => {}
            Ok(jobs) => info!(
                jobs,
                why, "requests left without an answer: their jobs wait in the queue"
            ),
            Err(e) => warn!(
                error = %e,
                why,
                "could not note why requests were left without an answer; their jobs wait in the queue all the same"
            ),
        }
    }

    /// A job hit an app-wide stop: tell the scheduler before anything else, so no account
    /// starts another request, then have the app monitor read the stop's details.
    fn app_stop_seen(&self) {
        let until = std::time::Instant::now() + self.settings.worker.poll_interval * 2;
        let _ = self.events.send(events::Event::AppStopSeen(until));
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
    events: scheduler::Inbox,
    completions: completer::Inbox,
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
        let budget = budget::BudgetGate::new(&settings.billing);
        let app_cap = app_cap::AppCapGate::new(
            settings.rate_limit.daily_follows_per_app,
            answer_within(&settings),
        );
        Ok(Daemon {
            events: scheduler::Inbox::new(events),
            completions: completer::Inbox::new(completions),
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
                metrics: Metrics::new(),
                shards: Shards::new(),
                app_check: Notify::new(),
                app_cap,
                budget,
                alive_at: Mutex::new(None),
                lease_now: Notify::new(),
                panic_target: None,
            }),
        })
    }

    /// Tests only: the turn of any job to `target` panics, to show that a panic is logged,
    /// counted and recovered from. Call before [`Daemon::run`].
    #[doc(hidden)]
    pub fn inject_panic_for_target(&mut self, target: &str) {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.panic_target = Some(target.to_owned());
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.ctx.worker_id
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served, when `[http]` is enabled.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(HttpListener::local_addr)
    }

    /// Runs until `shutdown` is cancelled, then stops gracefully: the leaser stops at once,
    /// no new request starts, requests in flight get `worker.shutdown_grace` to finish and
    /// record their answers (leases are renewed meanwhile), jobs still running after that go
    /// back to the queue with their ledger rows unanswered (a successor counts them until
    /// their `answer_by`), and every lease is released.
    async fn run(self, shutdown: CancellationToken) {
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
        ctx.metrics.set_price_per_request(
            ctx.settings
                .billing
                .price_per_request
                .to_f64()
                .unwrap_or(0.0),
        );
        let billing = &ctx.settings.billing;
        ctx.metrics.set_budgets(
            billing.daily_budget.map(|b| billing.requests_within(b)),
            billing.monthly_budget.map(|b| billing.requests_within(b)),
        );
        let sender = ctx.events.clone();
        // Chores that outlive the first signal (the drain needs liveness, outcomes written,
        // and the ops listener) stop with `background`, after the drain.
        let background = CancellationToken::new();
        let mut chores = tokio::task::JoinSet::new();
        if let Some(listener) = http {
            let ops = Ops {
                pool: ctx.pool.clone(),
                metrics: ctx.metrics.clone(),
                worker_id: ctx.worker_id.clone(),
                stopping: shutdown.clone(),
                limits: Limits {
                    requests_per_period: ctx.settings.rate_limit.requests_per_period,
                    period: ctx.settings.rate_limit.period,
                    daily_follows_per_account: ctx.settings.rate_limit.daily_follows_per_account,
                    default_max_attempts: ctx.settings.retry.max_attempts,
                    answer_within: ctx.answer_within(),
                    price_per_request: ctx.settings.billing.price_per_request,
                },
            };
            chores.spawn(listener.serve(ops, background.clone()));
        }
        let supervised = |name: &'static str| supervise::Supervisor::new(name, Arc::clone(&ctx));
        chores.spawn(supervised("liveness").run(background.clone(), liveness::run));
        // No account is leased after the first signal.
        let leaser_events = sender.clone();
        chores.spawn(
            supervised("leaser").run(shutdown.clone(), move |ctx, stop| {
                leaser::run(ctx, leaser_events.clone(), stop)
            }),
        );
        let monitor_events = sender.clone();
        chores.spawn(
            supervised("app_monitor").run(background.clone(), move |ctx, stop| {
                housekeeping::app_monitor(ctx, monitor_events.clone(), stop)
            }),
        );
        chores.spawn(supervised("summary").run(background.clone(), housekeeping::summary));
        chores.spawn(
            supervised("completer").run(background.clone(), move |ctx, stop| {
                completer::run(ctx, completions.clone(), stop)
            }),
        );
        chores.spawn(supervised("retention").run(background.clone(), retention::run));
        let budget_events = sender.clone();
        chores.spawn(
            supervised("budget").run(background.clone(), move |ctx, stop| {
                budget::run(ctx, budget_events.clone(), stop)
            }),
        );
        chores.spawn(supervised("spend_rollup").run(background.clone(), spend_rollup::run));

        let abandoned = scheduler::run_supervised(Arc::clone(&ctx), events, shutdown).await;
        background.cancel();
        while chores.join_next().await.is_some() {}

        if abandoned > 0 {
            warn!(
                abandoned,
                "grace period over: the requests still in flight are left without an answer"
            );
        }
        ctx.note_unanswered(Which::All, STOPPED_MID_REQUEST).await;
        match leases::release_all(&ctx.pool, &ctx.shards, &ctx.worker_id).await {
            Ok(n) => info!(accounts = n, "account leases released; daemon stopped"),
            Err(e) => {
                warn!(error = %e, "could not release account leases; they expire by themselves")
            }
        }
        if let Err(e) = daemons::leave(&ctx.pool, &ctx.worker_id).await {
            warn!(error = %e, "could not leave followq.daemons; the entry expires by itself");
        }
    }
}

/// Why a job went back when its daemon stopped before the answer came (its `last_error`).
const STOPPED_MID_REQUEST: &str = "the daemon stopped before the answer arrived";

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

/// How long after its claim a request may still reach X: the send deadline, then the request
/// timeout.
fn answer_within(settings: &Settings) -> Duration {
    settings.worker.send_deadline + settings.x_api.request_timeout
}
