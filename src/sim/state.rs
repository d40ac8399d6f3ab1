//! The simulator's memory: users (each behind its own `Mutex`: window, daily count, follow
//! graph, figures), tokens, and the app-wide switches; and the rules that decide a follow
//! request's answer, applied in one critical section per request so the figures are exact.
//!
//! Users live in a sharded map (`DashMap`) of `Arc<Mutex<UserState>>`: a request takes the
//! shard's read lock just long enough to clone the `Arc`, then only its user's lock, so
//! requests of different users never wait on one another and each costs O(1).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::config::{DayLimit, FaultConfig, SimConfig, UsageCap};
use super::faults::{self, FaultDecision, FaultKind};
use super::problems::{self, Problem};
use super::stats::{LoggedRequest, SimStats, TotalStats, UserStats};

/// A fresh pair of user tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTokens {
    pub access_token: String,
    pub refresh_token: String,
}

/// Who an `Authorization` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No header, an unknown token, or an unparsable header.
    Unknown,
    /// A known user token that expired or was revoked.
    Expired { user_id: String },
    /// An app-only bearer token.
    AppOnly,
    /// A known user's OAuth 1.0a token with a signature that does not verify (wrong secret,
    /// another request's signature, an unknown consumer key, an unsupported method).
    BadSignature { user_id: String },
    /// A valid user token.
    User { user_id: String },
}

/// The target of a follow request, once the body passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowRequest {
    /// The path's `:id`, validated.
    pub path_id: String,
    pub target: String,
}

/// The window figures sent as `x-rate-limit-*` (or `x-user-limit-24hour-*`,
/// `x-app-limit-24hour-*`) headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u64,
    /// Epoch seconds of the window's end, rounded up.
    pub reset: u64,
}

/// The answer decided for an authenticated follow request.
#[derive(Debug, Clone)]
pub enum Answer {
    Follow {
        following: bool,
        pending_follow: bool,
    },
    Refused(Problem),
    ServerError {
        status: u16,
    },
    Errors200,
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Follow { .. } | Answer::Errors200 => 200,
            Answer::Refused(problem) => problem.status.as_u16(),
            Answer::ServerError { status } => *status,
        }
    }
}

/// Everything the handler needs to build the response, decided under the user's lock.
#[derive(Debug, Clone)]
pub struct FollowOutcome {
    pub answer: Answer,
    /// `None` when the simulator sends no rate-limit headers.
    pub rate: Option<RateHeaders>,
    /// The 24-hour limits' figures, when configured and headers are on.
    pub user_24h: Option<RateHeaders>,
    pub app_24h: Option<RateHeaders>,
    /// The user's own answer delay, on top of any injected one.
    pub user_delay: Option<Duration>,
    /// The target being handled, to release with [`SimState::leave`].
    pub target: Option<String>,
    /// `Drop` and `Malformed` spoil `answer` when it is sent; `delay` delays it.
    pub fault: FaultDecision,
    /// Counted in the user's in-flight figures, to release with [`SimState::leave`]: false
    /// for a 402, which X refuses before anything else counts it.
    pub counted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    Following,
    Pending,
}

/// One fixed window of one user.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    reset_epoch: u64,
    /// Requests counted, `prespend` included.
    used: u64,
    /// Requests received over HTTP.
    received: u64,
}

/// One fixed daily window of new follows.
#[derive(Debug, Clone, Copy)]
struct Day {
    started: Instant,
    follows: u32,
}

impl Day {
    /// The window running at `now`, or a fresh one.
    fn current(day: Option<Day>, now: Instant, length: Duration) -> Day {
        day.filter(|d| now.saturating_duration_since(d.started) < length)
            .unwrap_or(Day {
                started: now,
                follows: 0,
            })
    }
}

/// The times of recent new follows, for the most follows in any span of a given length. It
/// holds only the follows of the last span, so it stays as small as that count.
#[derive(Debug, Default)]
struct Recent {
    times: VecDeque<Instant>,
    max: u64,
}

impl Recent {
    /// Counts a follow made now; the clock is read here, under the caller's lock, so the
    /// times are in order.
    fn record(&mut self, span: Duration) -> u64 {
        let now = Instant::now();
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= span)
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.max = self.max.max(self.times.len() as u64);
        self.max
    }
}

/// The app's prepaid credits.
#[derive(Debug)]
struct Credits {
    /// `None`: unlimited.
    left: Option<u64>,
    /// Bumped by `set_credits`, so a credit reserved before it is not refunded into the new
    /// balance.
    generation: u64,
}

/// A credit taken for a request until it is known whether the request is acted on.
#[derive(Debug, Clone, Copy)]
enum Credit {
    Unlimited,
    Reserved { generation: u64 },
}

/// The app's follows (every user's): its daily cap window and its sliding count.
#[derive(Debug, Default)]
struct AppFollows {
    day: Option<Day>,
    recent: Recent,
    capped: u64,
}

#[derive(Debug, Default)]
struct UserState {
    window: Option<Window>,
    day: Option<Day>,
    /// Follow requests authenticated as this user so far: the fault decisions' counter.
    seq: u64,
    graph: HashMap<String, Edge>,
    stats: UserStats,
    /// Follow requests being handled now, in all and per target.
    in_flight: u64,
    targets_in_flight: HashMap<String, u32>,
    /// Every answer to this user waits this long (a slow request, set by a test).
    answer_delay: Option<Duration>,
    /// The current 24-hour window of this user's requests, when that limit is configured.
    day_requests: Option<Window>,
    /// X refuses every token of this user with 401, fresh ones included (set by a test).
    tokens_refused: bool,
    /// A usage cap on this account alone (set by a test): 429 `usage-capped` for this user
    /// while others go on.
    usage_cap: Option<UsageCap>,
    /// This user's recent new follows, for `max_follows_in_day`.
    recent_follows: Recent,
    /// Follow requests per target (valid body), whatever their answer. Kept out of
    /// `UserStats` so that the snapshots tests take after every change stay small.
    requests_by_target: HashMap<String, u64>,
}

impl UserState {
    /// The current window, starting a new one if there is none or it has ended.
    fn window(&mut self, now: Instant, length: Duration) -> &mut Window {
        let running = self
            .window
            .is_some_and(|w| now.saturating_duration_since(w.started) < length);
        if !running {
            self.stats.windows += 1;
            self.window = Some(new_window(now, length));
        }
        self.window.get_or_insert_with(|| new_window(now, length))
    }
}

/// The window in `slot`, starting a new one if there is none or it has ended.
fn current_window(slot: &mut Option<Window>, now: Instant, length: Duration) -> &mut Window {
    if slot.is_none_or(|w| now.saturating_duration_since(w.started) >= length) {
        *slot = Some(new_window(now, length));
    }
    slot.get_or_insert_with(|| new_window(now, length))
}

/// Counts one request in a 24-hour window: the headers to send, and whether it is over.
fn count_in_day(slot: &mut Option<Window>, limit: DayLimit, now: Instant) -> (RateHeaders, bool) {
    let window = current_window(slot, now, limit.window);
    window.used += 1;
    window.received += 1;
    let headers = RateHeaders {
        limit: limit.limit,
        remaining: u64::from(limit.limit).saturating_sub(window.used),
        reset: window.reset_epoch,
    };
    (headers, window.used > u64::from(limit.limit))
}

fn new_window(now: Instant, length: Duration) -> Window {
    // The wall clock is read at the same moment as the monotonic one, so the header's reset
    // (rounded up) is never earlier than the window's real end.
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(length);
    Window {
        started: now,
        reset_epoch: end.as_secs() + u64::from(end.subsec_nanos() > 0),
        used: 0,
        received: 0,
    }
}

#[derive(Debug, Clone)]
enum Owner {
    User(String),
    AppOnly,
}

#[derive(Debug, Clone)]
struct AccessToken {
    owner: Owner,
    expires_at: Option<Instant>,
    revoked: bool,
}

#[derive(Debug, Clone)]
struct RefreshToken {
    user_id: String,
    spent: bool,
}

/// Why the token endpoint refused a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRefused {
    /// Never issued.
    Unknown,
    /// Already used or revoked; `revoked_family` when this reuse revoked the user's tokens.
    Reused {
        user_id: String,
        revoked_family: bool,
    },
}

/// The shared state behind every handler and the `SimHandle`.
#[derive(Debug)]
pub struct SimState {
    config: SimConfig,
    faults: RwLock<FaultConfig>,
    app_forbidden: AtomicBool,
    usage_capped: RwLock<Option<UsageCap>>,
    users: DashMap<String, Arc<Mutex<UserState>>>,
    access_tokens: DashMap<String, AccessToken>,
    refresh_tokens: DashMap<String, RefreshToken>,
    /// OAuth 1.0a token → (user id, token secret).
    oauth1_tokens: DashMap<String, (String, String)>,
    /// The app's 24-hour window of requests (every user's), when that limit is configured.
    app_day: Mutex<Option<Window>>,
    /// Every user's new follows together: the app's daily cap and its figures. Taken under a
    /// user's lock, never the other way round.
    app_follows: Mutex<AppFollows>,
    /// Every follow request, when `SimConfig::request_log` is on.
    request_log: Option<Mutex<Vec<LoggedRequest>>>,
    /// Prepaid credits. A request takes one before it is counted and gives it back if it is
    /// not acted on, so concurrent requests never act on more credits than there are.
    credits: Mutex<Credits>,
    credits_spent: AtomicU64,
    payment_required: AtomicU64,
    unauthenticated: AtomicU64,
    app_only: AtomicU64,
    token_rejected: AtomicU64,
    in_flight: AtomicU64,
    idle: Notify,
    rate_limit_headers: AtomicBool,
    /// While true, token endpoint requests wait (a test holds a refresh in flight).
    token_hold: tokio::sync::watch::Sender<bool>,
    token_waiting: AtomicU64,
    /// Bumped whenever the figures change (a follow request counted, refused or answered; a
    /// token endpoint answer), so a test can wait for a figure without polling.
    changes: tokio::sync::watch::Sender<u64>,
}

/// Locks a user, shrugging off poisoning: no code under these locks panics, and a poisoned
/// figure is still better than a crashed simulator.
fn lock(user: &Mutex<UserState>) -> MutexGuard<'_, UserState> {
    user.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
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

    fn user(&self, user_id: &str) -> Arc<Mutex<UserState>> {
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

    // ---- tokens ----

    /// Registers `user_id` (if new) and issues it a fresh token pair.
    pub fn add_user(&self, user_id: &str) -> SimTokens {
        let tokens = SimTokens {
            access_token: random_token(),
            refresh_token: random_token(),
        };
        self.add_user_with_tokens(user_id, &tokens.access_token, &tokens.refresh_token);
        tokens
    }

    /// Registers `user_id` (if new) with the given tokens; the access token lives
    /// `access_token_ttl` from now.
    pub fn add_user_with_tokens(&self, user_id: &str, access: &str, refresh: &str) {
        self.user(user_id);
        self.issue(user_id, access, refresh);
    }

    fn issue(&self, user_id: &str, access: &str, refresh: &str) {
        self.access_tokens.insert(
            access.to_owned(),
            AccessToken {
                owner: Owner::User(user_id.to_owned()),
                expires_at: Instant::now().checked_add(self.config.access_token_ttl),
                revoked: false,
            },
        );
        self.refresh_tokens.insert(
            refresh.to_owned(),
            RefreshToken {
                user_id: user_id.to_owned(),
                spent: false,
            },
        );
    }

    pub fn add_app_only_token(&self, token: &str) {
        self.access_tokens.insert(
            token.to_owned(),
            AccessToken {
                owner: Owner::AppOnly,
                expires_at: None,
                revoked: false,
            },
        );
    }

    /// Registers an OAuth 1.0a `oauth_token` and its secret for `user_id`.
    pub fn add_oauth1_user(&self, user_id: &str, token: &str, token_secret: &str) {
        self.user(user_id);
        self.oauth1_tokens.insert(
            token.to_owned(),
            (user_id.to_owned(), token_secret.to_owned()),
        );
    }

    /// Makes every access token of `user_id` expired from now on.
    pub fn expire_access_tokens(&self, user_id: &str) {
        let now = Instant::now();
        for mut token in self.access_tokens.iter_mut() {
            if matches!(&token.owner, Owner::User(u) if u == user_id) {
                token.expires_at = Some(now);
            }
        }
    }

    /// Who a bearer access token belongs to.
    pub fn bearer(&self, token: &str) -> Caller {
        let Some(entry) = self.access_tokens.get(token) else {
            return Caller::Unknown;
        };
        let expired = entry.revoked || entry.expires_at.is_some_and(|at| Instant::now() >= at);
        match (&entry.owner, expired) {
            (Owner::AppOnly, _) => Caller::AppOnly,
            (Owner::User(user_id), true) => Caller::Expired {
                user_id: user_id.clone(),
            },
            (Owner::User(user_id), false) => Caller::User {
                user_id: user_id.clone(),
            },
        }
    }

    /// The user and token secret of an OAuth 1.0a `oauth_token`.
    pub fn oauth1(&self, token: &str) -> Option<(String, String)> {
        self.oauth1_tokens.get(token).map(|entry| entry.clone())
    }

    /// Spends `refresh` and issues a new pair, or says why not. Exactly one of several
    /// concurrent refreshes with the same token succeeds: the check and the spend happen under
    /// the token's shard lock.
    pub fn refresh(&self, refresh: &str) -> Result<(String, SimTokens), RefreshRefused> {
        let (user_id, was_spent) = {
            let Some(mut entry) = self.refresh_tokens.get_mut(refresh) else {
                return Err(RefreshRefused::Unknown);
            };
            let was_spent = entry.spent;
            entry.spent = true;
            (entry.user_id.clone(), was_spent)
            // The guard drops here: issuing below writes to the same map.
        };
        let user = self.user(&user_id);
        if was_spent {
            lock(&user).stats.refresh_reuses += 1;
            let revoked_family = self.config.revoke_family_on_reuse;
            if revoked_family {
                self.revoke_all(&user_id);
            }
            return Err(RefreshRefused::Reused {
                user_id,
                revoked_family,
            });
        }
        let tokens = SimTokens {
            access_token: random_token(),
            refresh_token: random_token(),
        };
        self.issue(&user_id, &tokens.access_token, &tokens.refresh_token);
        lock(&user).stats.refreshes += 1;
        Ok((user_id, tokens))
    }

    /// Revokes every token of `user_id`: the user must authorize the app again.
    fn revoke_all(&self, user_id: &str) {
        for mut token in self.access_tokens.iter_mut() {
            if matches!(&token.owner, Owner::User(u) if u == user_id) {
                token.revoked = true;
            }
        }
        for mut token in self.refresh_tokens.iter_mut() {
            if token.user_id == user_id {
                token.spent = true;
            }
        }
    }

    // ---- switches ----

    /// Turns the `x-rate-limit-*` headers on or off for later answers.
    pub fn set_rate_limit_headers(&self, on: bool) {
        self.rate_limit_headers.store(on, Ordering::SeqCst);
    }

    /// While `refused`, every follow request of `user_id` gets 401 whatever its token; the
    /// token endpoint still refreshes.
    pub fn set_tokens_refused(&self, user_id: &str, refused: bool) {
        lock(&self.user(user_id)).tokens_refused = refused;
    }

    /// Whether `user_id`'s tokens are refused (see [`SimState::set_tokens_refused`]).
    pub fn tokens_refused(&self, user_id: &str) -> bool {
        lock(&self.user(user_id)).tokens_refused
    }

    /// Every later answer to `user_id` waits `delay` (`None`: answer at once).
    pub fn set_answer_delay(&self, user_id: &str, delay: Option<Duration>) {
        lock(&self.user(user_id)).answer_delay = delay;
    }

    /// Holds (true) or releases (false) every request to the token endpoint.
    pub fn hold_token_endpoint(&self, held: bool) {
        self.token_hold.send_replace(held);
    }

    /// Token endpoint requests waiting on the hold right now.
    pub fn token_requests_waiting(&self) -> u64 {
        self.token_waiting.load(Ordering::SeqCst)
    }

    /// Waits while the token endpoint is held.
    pub async fn token_gate(&self) {
        let mut held = self.token_hold.subscribe();
        if *held.borrow() {
            self.token_waiting.fetch_add(1, Ordering::SeqCst);
            let _ = held.wait_for(|held| !held).await;
            self.token_waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub fn set_app_forbidden(&self, on: bool) {
        self.app_forbidden.store(on, Ordering::SeqCst);
    }

    /// A usage cap on `user_id` alone (`None` lifts it); the app-wide one wins while set.
    pub fn set_account_usage_capped(&self, user_id: &str, cap: Option<UsageCap>) {
        lock(&self.user(user_id)).usage_cap = cap;
    }

    /// A usage cap on every account, whatever scope it names (`None` lifts it).
    pub fn set_usage_capped(&self, cap: Option<UsageCap>) {
        *self
            .usage_capped
            .write()
            .unwrap_or_else(PoisonError::into_inner) = cap;
    }

    /// The fault settings in force now.
    pub fn faults(&self) -> FaultConfig {
        *self.faults.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Adds `n` prepaid credits; unlimited stays unlimited.
    pub fn top_up(&self, n: u64) {
        let mut credits = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(left) = &mut credits.left {
            *left = left.saturating_add(n);
        }
    }

    /// Sets the prepaid credits left (`None`: unlimited). Credits held by requests being
    /// handled now are not given back into the new balance.
    pub fn set_credits(&self, credits: Option<u64>) {
        let mut current = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
        current.left = credits;
        current.generation = current.generation.wrapping_add(1);
    }

    /// Takes a credit for a request, or `None` when there is none left (402).
    fn reserve_credit(&self) -> Option<Credit> {
        let mut credits = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
        match credits.left {
            None => Some(Credit::Unlimited),
            Some(0) => None,
            Some(n) => {
                credits.left = Some(n - 1);
                Some(Credit::Reserved {
                    generation: credits.generation,
                })
            }
        }
    }

    /// Spends the credit taken for a request that was acted on, or gives it back.
    fn settle_credit(&self, credit: Credit, acted_on: bool) {
        if acted_on {
            self.credits_spent.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Credit::Reserved { generation } = credit {
            let mut credits = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
            if credits.generation == generation
                && let Some(left) = &mut credits.left
            {
                *left = left.saturating_add(1);
            }
        }
    }

    /// Another app of `user_id` spends `n` requests of the current window (starting one if
    /// none is running).
    pub fn prespend(&self, user_id: &str, n: u64) {
        let user = self.user(user_id);
        let mut user = lock(&user);
        let window = user.window(Instant::now(), self.config.window);
        window.used += n;
        let used = window.used;
        user.stats.max_window_usage = user.stats.max_window_usage.max(used);
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

    // ---- the follow rules ----

    /// Decides the answer to a follow request authenticated as `user_id`, counts it in the
    /// user's window and figures, and applies the follow. `request` is the validated path and
    /// body, or the 400 they earned.
    pub fn follow(&self, user_id: &str, request: Result<FollowRequest, Problem>) -> FollowOutcome {
        let faults = self.faults();
        let usage_cap = *self
            .usage_capped
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let app_forbidden = self.app_forbidden.load(Ordering::SeqCst);
        let limit = self.config.window_requests;
        let now = Instant::now();

        let user = self.user(user_id);
        let mut user = lock(&user);
        let user = &mut *user;
        if let Ok(request) = &request {
            match user.requests_by_target.get_mut(&request.target) {
                Some(n) => *n += 1,
                None => {
                    user.requests_by_target.insert(request.target.clone(), 1);
                }
            }
        }
        // X's billing comes before everything but the credentials: a 402 is not counted in
        // the window nor in `requests`.
        let Some(credit) = self.reserve_credit() else {
            self.payment_required.fetch_add(1, Ordering::Relaxed);
            return FollowOutcome {
                answer: Answer::Refused(problems::credits_depleted()),
                rate: None,
                user_24h: None,
                app_24h: None,
                user_delay: user.answer_delay,
                target: None,
                fault: FaultDecision::default(),
                counted: false,
            };
        };
        user.seq += 1;
        user.stats.requests += 1;

        // Every authenticated request counts in the window, whatever its answer.
        let window = user.window(now, self.config.window);
        window.used += 1;
        window.received += 1;
        let (used, received, reset) = (window.used, window.received, window.reset_epoch);
        user.stats.max_window_usage = user.stats.max_window_usage.max(used);
        user.stats.max_requests_in_window = user.stats.max_requests_in_window.max(received);
        let headers_on = self.rate_limit_headers.load(Ordering::SeqCst);
        let rate = headers_on.then_some(RateHeaders {
            limit,
            remaining: u64::from(limit).saturating_sub(used),
            reset,
        });
        let (user_24h, user_day_over) = match self.config.user_24h_limit {
            Some(day) => {
                let (headers, over) = count_in_day(&mut user.day_requests, day, now);
                (Some(headers), over)
            }
            None => (None, false),
        };
        let (app_24h, app_day_over) = match self.config.app_24h_limit {
            Some(day) => {
                let mut app_day = self.app_day.lock().unwrap_or_else(PoisonError::into_inner);
                let (headers, over) = count_in_day(&mut app_day, day, now);
                (Some(headers), over)
            }
            None => (None, false),
        };
        let (user_24h, app_24h) = (
            user_24h.filter(|_| headers_on),
            app_24h.filter(|_| headers_on),
        );
        // Being handled from now until `leave`: in flight for this user, and for this target.
        user.in_flight += 1;
        user.stats.max_in_flight = user.stats.max_in_flight.max(user.in_flight);
        let target = request.as_ref().ok().map(|r| r.target.clone());
        if let Some(target) = &target {
            let same = user.targets_in_flight.entry(target.clone()).or_default();
            if *same > 0 {
                user.stats.same_target_overlaps += 1;
            }
            *same += 1;
        }
        let user_delay = user.answer_delay;

        let answer = if app_forbidden {
            user.stats.app_forbidden += 1;
            Some(Answer::Refused(problems::client_forbidden()))
        } else if let Some(cap) = usage_cap.or(user.usage_cap) {
            user.stats.usage_capped += 1;
            Some(Answer::Refused(problems::usage_capped(cap)))
        } else if used > u64::from(limit) {
            user.stats.rate_limited += 1;
            Some(Answer::Refused(problems::too_many_requests()))
        } else if user_day_over {
            user.stats.user_24h_limited += 1;
            Some(Answer::Refused(problems::too_many_requests()))
        } else if app_day_over {
            user.stats.app_24h_limited += 1;
            Some(Answer::Refused(problems::too_many_requests()))
        } else {
            None
        };
        // Refusals before this point are never faulted, so 429s and the app-wide stops stay
        // clean signals.
        let (answer, fault) = match answer {
            Some(answer) => (answer, FaultDecision::default()),
            None => {
                let mut fault = faults::decide(&faults, user_id, user.seq);
                let answer = match fault.kind {
                    Some(FaultKind::ServerError { status }) => {
                        user.stats.faults.server_errors += 1;
                        Answer::ServerError { status }
                    }
                    Some(FaultKind::Errors200) => {
                        user.stats.faults.errors_200 += 1;
                        Answer::Errors200
                    }
                    Some(FaultKind::AppliedThenServerError { status }) => {
                        match self.apply(user, user_id, request, now) {
                            // Applied as a 200 would be; only the answer is a 5xx.
                            Answer::Follow { .. } => {
                                user.stats.faults.applied_then_failed += 1;
                                Answer::ServerError { status }
                            }
                            // Nothing was applied, so there is nothing for the 5xx to hide.
                            refused => {
                                fault.kind = None;
                                refused
                            }
                        }
                    }
                    _ => self.apply(user, user_id, request, now),
                };
                (answer, fault)
            }
        };

        // Acted on: the rules ran to a success (a follow made, pending or already there),
        // whatever is then sent (200, a spoiled body, nothing, or the applied-then-5xx).
        let acted_on = matches!(answer, Answer::Follow { .. })
            || matches!(fault.kind, Some(FaultKind::AppliedThenServerError { .. }));
        self.settle_credit(credit, acted_on);
        if fault.delay.is_some() {
            user.stats.faults.delayed += 1;
        }
        match fault.kind {
            Some(FaultKind::Drop) => user.stats.faults.dropped += 1,
            Some(FaultKind::Malformed { .. }) => {
                user.stats.faults.malformed += 1;
                user.stats.count_status(answer.status());
            }
            _ => user.stats.count_status(answer.status()),
        }
        FollowOutcome {
            answer,
            rate,
            user_24h,
            app_24h,
            user_delay,
            target,
            fault,
            counted: true,
        }
    }

    /// A request counted by [`SimState::follow`] is no longer being handled.
    pub fn leave(&self, user_id: &str, target: Option<&str>) {
        let user = self.user(user_id);
        let mut user = lock(&user);
        user.in_flight = user.in_flight.saturating_sub(1);
        if let Some(target) = target
            && let Some(same) = user.targets_in_flight.get_mut(target)
        {
            *same = same.saturating_sub(1);
            if *same == 0 {
                user.targets_in_flight.remove(target);
            }
        }
    }

    /// The rules past the window: who may act, the target, the graph, the daily cap.
    fn apply(
        &self,
        user: &mut UserState,
        user_id: &str,
        request: Result<FollowRequest, Problem>,
        now: Instant,
    ) -> Answer {
        let request = match request {
            Ok(request) => request,
            Err(problem) => return Answer::Refused(problem),
        };
        if request.path_id != user_id {
            return Answer::Refused(problems::not_this_user(&request.path_id));
        }
        if request.target == user_id {
            return Answer::Refused(problems::invalid_request(
                "target_user_id",
                &request.target,
                "You cannot follow yourself.",
            ));
        }
        let rules = &self.config.targets;
        if rules.is_unknown(&request.target) {
            return Answer::Refused(problems::target_not_found(&request.target));
        }
        if rules.invalid_ids.contains(&request.target) {
            return Answer::Refused(problems::invalid_request(
                "target_user_id",
                &request.target,
                &format!(
                    "The `target_user_id` query parameter value [{}] is not valid",
                    request.target
                ),
            ));
        }
        if rules.blocking_ids.contains(&request.target) {
            return Answer::Refused(problems::blocked_by_target());
        }
        if let Some(edge) = user.graph.get(&request.target) {
            user.stats.repeated += 1;
            return Answer::Follow {
                following: *edge == Edge::Following,
                pending_follow: *edge == Edge::Pending,
            };
        }
        let length = self.config.daily_window;
        let user_day = match self.config.daily_cap {
            Some(cap) => {
                let day = Day::current(user.day, now, length);
                if day.follows >= cap {
                    user.day = Some(day);
                    user.stats.daily_capped += 1;
                    return Answer::Refused(problems::daily_cap());
                }
                Some(day)
            }
            None => None,
        };
        {
            let mut app = self
                .app_follows
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(cap) = self.config.app_daily_cap {
                let day = Day::current(app.day, now, length);
                if day.follows >= cap {
                    // The user's own day is left as it was: no follow was made.
                    app.day = Some(day);
                    app.capped += 1;
                    return Answer::Refused(problems::daily_cap());
                }
                app.day = Some(Day {
                    follows: day.follows + 1,
                    ..day
                });
            }
            app.recent.record(length);
        }
        if let Some(day) = user_day {
            user.day = Some(Day {
                follows: day.follows + 1,
                ..day
            });
        }
        user.stats.max_follows_in_day = user.recent_follows.record(length);
        if rules.is_protected(&request.target) {
            user.graph.insert(request.target, Edge::Pending);
            user.stats.pending += 1;
            Answer::Follow {
                following: false,
                pending_follow: true,
            }
        } else {
            user.graph.insert(request.target, Edge::Following);
            user.stats.follows += 1;
            Answer::Follow {
                following: true,
                pending_follow: false,
            }
        }
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
