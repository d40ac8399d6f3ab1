//! The simulator's memory: [`SimState`], shared by every handler and the `SimHandle`, and its
//! users (each behind its own `Mutex`: window, daily count, follow graph, figures); the figures
//! read from them, the request log, and the follow requests being handled. The rest of
//! `SimState`'s methods are in its sibling files, one concern each: the tokens
//! (`tokens.rs`), the switches a test flips (`switches.rs`), the follow rules (`rules.rs`) and
//! the windows, days and credits they count in (`limits.rs`).
//!
//! Users live in a sharded map (`DashMap`) of `Arc<Mutex<UserState>>`: a request takes the
//! shard's read lock just long enough to clone the `Arc`, then only its user's lock, so
//! requests of different users never wait on one another and each costs O(1).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

use super::config::{FaultConfig, SimConfig, UsageCap};
use super::limits::{AppFollows, Credits, Day, Recent, Window};
use super::stats::{LoggedRequest, SimStats, TotalStats, UserStats};
use super::tokens::{AccessToken, RefreshToken};

/// The shared state behind every handler and the `SimHandle`.
#[derive(Debug)]
pub struct SimState {
    pub(super) config: SimConfig,
    pub(super) faults: RwLock<FaultConfig>,
    pub(super) app_forbidden: AtomicBool,
    pub(super) usage_capped: RwLock<Option<UsageCap>>,
    users: DashMap<String, Arc<Mutex<UserState>>>,
    pub(super) access_tokens: DashMap<String, AccessToken>,
    pub(super) refresh_tokens: DashMap<String, RefreshToken>,
    /// OAuth 1.0a token → (user id, token secret).
    pub(super) oauth1_tokens: DashMap<String, (String, String)>,
    /// The app's 24-hour window of requests (every user's), when that limit is configured.
    pub(super) app_day: Mutex<Option<Window>>,
    /// Every user's new follows together: the app's daily cap and its figures. Taken under a
    /// user's lock, never the other way round.
    pub(super) app_follows: Mutex<AppFollows>,
    /// Every follow request, when `SimConfig::request_log` is on.
    request_log: Option<Mutex<Vec<LoggedRequest>>>,
    /// Prepaid credits. A request takes one before it is counted and gives it back if it is
    /// not acted on, so concurrent requests never act on more credits than there are.
    pub(super) credits: Mutex<Credits>,
    pub(super) credits_spent: AtomicU64,
    pub(super) payment_required: AtomicU64,
    unauthenticated: AtomicU64,
    app_only: AtomicU64,
    token_rejected: AtomicU64,
    in_flight: AtomicU64,
    idle: Notify,
    pub(super) rate_limit_headers: AtomicBool,
    /// While true, token endpoint requests wait (a test holds a refresh in flight).
    pub(super) token_hold: tokio::sync::watch::Sender<bool>,
    pub(super) token_waiting: AtomicU64,
    /// Bumped whenever the figures change (a follow request counted, refused or answered; a
    /// token endpoint answer), so a test can wait for a figure without polling.
    changes: tokio::sync::watch::Sender<u64>,
}

/// Where a user stands with a target in its follow graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Edge {
    Following,
    Pending,
}

#[derive(Debug, Default)]
pub(super) struct UserState {
    pub(super) window: Option<Window>,
    pub(super) day: Option<Day>,
    /// Follow requests authenticated as this user so far: the fault decisions' counter.
    pub(super) seq: u64,
    pub(super) graph: HashMap<String, Edge>,
    pub(super) stats: UserStats,
    /// Follow requests being handled now, in all and per target.
    pub(super) in_flight: u64,
    pub(super) targets_in_flight: HashMap<String, u32>,
    /// Every answer to this user waits this long (a slow request, set by a test).
    pub(super) answer_delay: Option<Duration>,
    /// The current 24-hour window of this user's requests, when that limit is configured.
    pub(super) day_requests: Option<Window>,
    /// X refuses every token of this user with 401, fresh ones included (set by a test).
    pub(super) tokens_refused: bool,
    /// A usage cap on this account alone (set by a test): 429 `usage-capped` for this user
    /// while others go on.
    pub(super) usage_cap: Option<UsageCap>,
    /// This user's recent new follows, for `max_follows_in_day`.
    pub(super) recent_follows: Recent,
    /// Follow requests per target (valid body), whatever their answer. Kept out of
    /// `UserStats` so that the snapshots tests take after every change stay small.
    pub(super) requests_by_target: HashMap<String, u64>,
}

/// Locks a user, shrugging off poisoning: no code under these locks panics, and a poisoned
/// figure is still better than a crashed simulator.
pub(super) fn lock(user: &Mutex<UserState>) -> MutexGuard<'_, UserState> {
    user.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimState {
    pub fn new(config: SimConfig) -> SimState {
        SimState {
            faults: RwLock::new(config.faults),
            app_forbidden: AtomicBool::new(config.app_forbidden),
            usage_capped: RwLock::new(config.usage_capped),
            rate_limit_headers: AtomicBool::new(config.rate_limit_headers),
            request_log: config.request_log.then(|| Mutex::new(Vec::new())),
            credits: Mutex::new(Credits {
                left: config.credits,
                generation: 0,
            }),
            credits_spent: AtomicU64::new(0),
            payment_required: AtomicU64::new(0),
            config,
            users: DashMap::new(),
            access_tokens: DashMap::new(),
            refresh_tokens: DashMap::new(),
            oauth1_tokens: DashMap::new(),
            app_day: Mutex::new(None),
            app_follows: Mutex::new(AppFollows::default()),
            unauthenticated: AtomicU64::new(0),
            app_only: AtomicU64::new(0),
            token_rejected: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            idle: Notify::new(),
            token_hold: tokio::sync::watch::Sender::new(false),
            token_waiting: AtomicU64::new(0),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Tells [`SimState::changes`] watchers that the figures moved.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later change of the figures.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub(super) fn user(&self, user_id: &str) -> Arc<Mutex<UserState>> {
        if let Some(user) = self.users.get(user_id) {
            return Arc::clone(user.value());
        }
        Arc::clone(
            self.users
                .entry(user_id.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(UserState::default())))
                .value(),
        )
    }

    // ---- counting what no user is charged with ----

    pub fn count_unauthenticated(&self) {
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_app_only(&self) {
        self.app_only.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_token_rejected(&self) {
        self.token_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A 401 for an expired, revoked or refused token of a known user.
    pub fn count_unauthorized(&self, user_id: &str) {
        lock(&self.user(user_id)).stats.unauthorized += 1;
    }

    /// A 401 for a known user's OAuth 1.0a token whose signature did not verify.
    pub fn count_bad_signature(&self, user_id: &str) {
        let user = self.user(user_id);
        let mut user = lock(&user);
        user.stats.unauthorized += 1;
        user.stats.bad_signatures += 1;
    }

    // ---- figures ----

    /// A snapshot of the figures. Each user's figures are read under its lock.
    pub fn stats(&self) -> SimStats {
        let users: std::collections::BTreeMap<String, UserStats> = self
            .users
            .iter()
            .map(|entry| (entry.key().clone(), lock(entry.value()).stats.clone()))
            .collect();
        let (app_daily_capped, app_max_follows_in_day) = {
            let app = self
                .app_follows
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (app.capped, app.recent.max)
        };
        let totals = TotalStats {
            all_users: TotalStats::sum(users.values()),
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            app_only: self.app_only.load(Ordering::Relaxed),
            token_rejected: self.token_rejected.load(Ordering::Relaxed),
            app_daily_capped,
            app_max_follows_in_day,
            credits_spent: self.credits_spent.load(Ordering::Relaxed),
            payment_required: self.payment_required.load(Ordering::Relaxed),
            credits_left: self
                .credits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .left,
        };
        SimStats { users, totals }
    }

    /// How many follow requests with a valid body `user_id` sent for each target, whatever
    /// their answer (refusals, faults, 402s included).
    pub fn requests_by_target(&self, user_id: &str) -> BTreeMap<String, u64> {
        let Some(user) = self.users.get(user_id).map(|u| Arc::clone(u.value())) else {
            return BTreeMap::new();
        };
        let user = lock(&user);
        user.requests_by_target
            .iter()
            .map(|(target, n)| (target.clone(), *n))
            .collect()
    }

    /// [`SimState::requests_by_target`] of every user, keyed by (user, target).
    pub fn requests_by_pair(&self) -> BTreeMap<(String, String), u64> {
        let users: Vec<(String, Arc<Mutex<UserState>>)> = self
            .users
            .iter()
            .map(|entry| (entry.key().clone(), Arc::clone(entry.value())))
            .collect();
        let mut pairs = BTreeMap::new();
        for (user_id, user) in users {
            let user = lock(&user);
            for (target, n) in &user.requests_by_target {
                pairs.insert((user_id.clone(), target.clone()), *n);
            }
        }
        pairs
    }

    /// Whether follow requests are logged (`SimConfig::request_log`).
    pub fn logs_requests(&self) -> bool {
        self.request_log.is_some()
    }

    /// Adds one entry to the request log (nothing when it is off).
    pub fn log_request(&self, entry: LoggedRequest) {
        if let Some(log) = &self.request_log {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(entry);
        }
    }

    /// A copy of the request log, in the order answers were given.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        match &self.request_log {
            Some(log) => log.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            None => Vec::new(),
        }
    }

    /// Marks a follow request as being handled until the guard drops (answered, dropped, or
    /// abandoned by the client).
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Waits until no follow request is being handled, or `bound` passes.
    pub async fn settle(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// See [`SimState::enter`].
pub struct InFlight(Arc<SimState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
        self.0.changed();
    }
}
