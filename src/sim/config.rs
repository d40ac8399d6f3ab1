//! The simulator's settings: the rate-limit rules (defaults are X's real ones), the 24-hour
//! limits, the OAuth 1.0a consumer, the rules that make a target protected, unknown, invalid or
//! blocking, the app-wide switches, and the fault rates.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything that decides how the simulator answers. `Default` is X's real rules with no
/// faults.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Requests one user may make in one fixed window (X: 50).
    pub window_requests: u32,
    /// Length of the fixed window, counted from the first request after the previous window
    /// ended (X: 15 minutes).
    pub window: Duration,
    /// New follows (including pending ones) one user may make per daily window; `None` turns
    /// the cap off (X: 400).
    pub daily_cap: Option<u32>,
    /// Length of the daily window, fixed and starting at the first follow after the previous
    /// one ended (24 h; shorter in tests).
    pub daily_window: Duration,
    /// New follows (including pending ones) all users together may make per daily window of
    /// the app (`daily_window` long, fixed, starting at the first follow after the previous
    /// one ended); past it a follow gets the same 403 as the per-user cap. `None` (the
    /// default) turns it off (X: 1,000 per app).
    pub app_daily_cap: Option<u32>,
    /// Lifetime of an access token issued by `add_user` or the token endpoint (X: 7200 s).
    pub access_token_ttl: Duration,
    /// When set, the token endpoint requires this client id (form field `client_id` or the
    /// user part of HTTP Basic). When unset, any client id is accepted but one must be given.
    pub client_id: Option<String>,
    /// Reusing a spent refresh token also revokes the user's current tokens, as X may do.
    pub revoke_family_on_reuse: bool,
    /// Which targets are protected or do not exist.
    pub targets: TargetRules,
    /// App-wide 403 `client-forbidden` from the start.
    pub app_forbidden: bool,
    /// App-wide 429 `usage-capped` from the start.
    pub usage_capped: Option<UsageCap>,
    /// Injected faults.
    pub faults: FaultConfig,
    /// Send `x-rate-limit-*` headers with every counted answer, as X does. Off: answers carry
    /// none (a proxy that strips them, or X leaving them out), the window is still enforced.
    /// The 24-hour headers below are left out too.
    pub rate_limit_headers: bool,
    /// A per-user 24-hour request limit, reported as `x-user-limit-24hour-*` on every counted
    /// answer and enforced with 429; `None` (the default): neither.
    pub user_24h_limit: Option<DayLimit>,
    /// The same for the whole app (every user's requests together), reported as
    /// `x-app-limit-24hour-*`; `None` (the default): neither.
    pub app_24h_limit: Option<DayLimit>,
    /// The app's OAuth 1.0a consumer: requests signed with OAuth 1.0a must name this key and
    /// carry a valid HMAC-SHA1 signature made with its secret and the token's secret.
    /// `None`: every OAuth 1.0a request gets 401, as for an unknown consumer key.
    pub oauth1_consumer: Option<OAuth1Consumer>,
    /// Keep [`LoggedRequest`](super::LoggedRequest)s for `SimHandle::request_log` (on by
    /// default, for tests). `followq sim` turns it off: nobody can read the log of that
    /// process, and at the benchmark's rates it would only grow.
    pub request_log: bool,
    /// Prepaid credits (X's pay-per-use billing): each request acted on spends one (see
    /// `TotalStats::credits_spent`), and with none left every authenticated follow request
    /// gets 402 `CreditsDepleted`. `None` (the default): unlimited.
    pub credits: Option<u64>,
}

/// A limit on requests per fixed window that starts at the first request after the previous
/// one ended: X's 24-hour user and app limits (24 h; seconds in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayLimit {
    pub limit: u32,
    pub window: Duration,
}

/// An OAuth 1.0a consumer (the app's API key and secret).
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth1Consumer {
    pub key: String,
    pub secret: String,
}

impl std::fmt::Debug for OAuth1Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth1Consumer")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            window_requests: 50,
            window: Duration::from_secs(900),
            daily_cap: Some(400),
            daily_window: Duration::from_secs(24 * 60 * 60),
            access_token_ttl: Duration::from_secs(7200),
            client_id: None,
            revoke_family_on_reuse: true,
            targets: TargetRules::default(),
            app_forbidden: false,
            usage_capped: None,
            faults: FaultConfig::default(),
            rate_limit_headers: true,
            user_24h_limit: None,
            app_24h_limit: None,
            oauth1_consumer: None,
            app_daily_cap: None,
            request_log: true,
            credits: None,
        }
    }
}

/// Deterministic rules for targets, tried in this order: unknown (404), invalid (400),
/// blocking (403), protected (pending), else public.
#[derive(Debug, Clone, Default)]
pub struct TargetRules {
    /// Target ids divisible by this number are protected (follows become pending).
    pub protected_every: Option<u64>,
    /// These target ids are protected.
    pub protected_ids: HashSet<String>,
    /// Target ids divisible by this number do not exist (404 `resource-not-found`).
    pub unknown_every: Option<u64>,
    /// These target ids do not exist.
    pub unknown_ids: HashSet<String>,
    /// X refuses these target ids with 400 `invalid-request`.
    pub invalid_ids: HashSet<String>,
    /// These targets block the user: 403 "You cannot follow an account that is blocking you."
    pub blocking_ids: HashSet<String>,
}

impl TargetRules {
    /// Ids longer than u64 (19 digits can exceed it) never match a divisibility rule.
    fn divisible(id: &str, every: Option<u64>) -> bool {
        match (every, id.parse::<u64>()) {
            (Some(n), Ok(v)) if n > 0 => v % n == 0,
            _ => false,
        }
    }

    pub fn is_unknown(&self, id: &str) -> bool {
        self.unknown_ids.contains(id) || Self::divisible(id, self.unknown_every)
    }

    pub fn is_protected(&self, id: &str) -> bool {
        self.protected_ids.contains(id) || Self::divisible(id, self.protected_every)
    }
}

/// The `period` field of a `usage-capped` problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsagePeriod {
    Daily,
    Monthly,
}

impl UsagePeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            UsagePeriod::Daily => "Daily",
            UsagePeriod::Monthly => "Monthly",
        }
    }
}

/// The `scope` field of a `usage-capped` problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsageScope {
    Account,
    Product,
}

impl UsageScope {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageScope::Account => "Account",
            UsageScope::Product => "Product",
        }
    }
}

/// A usage cap: the follow requests it covers (every account's when set app-wide, one
/// account's when set on that account) get 429 `usage-capped` naming these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageCap {
    pub period: UsagePeriod,
    pub scope: UsageScope,
}

/// Fault injection. Each rate is a probability in `[0, 1]` per authenticated follow request;
/// decisions are a pure function of (`seed`, user id, that user's request number, fault
/// kind), so the same requests per user get the same faults on every run, however requests of
/// different users interleave.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultConfig {
    pub seed: u64,
    /// Answer 500 or 503 (alternating by the same hash) without making the follow.
    pub fail_5xx: f64,
    /// Wait `delay` before answering (the answer itself is the normal one).
    pub delay: f64,
    pub delay_duration: Duration,
    /// Make the follow, then close the connection without any answer.
    pub drop: f64,
    /// Make the follow, then answer 200 with a body that is not valid JSON (truncated JSON or
    /// an HTML error page).
    pub malformed: f64,
    /// Answer 200 with `errors[]` and no `data`, without making the follow.
    pub errors_200: f64,
    /// Make the follow exactly as a 200 would (the user's follows, daily count, graph), then
    /// answer 500 or 503 instead of the 200: X sometimes does, so a 5xx does not prove that
    /// nothing happened. A request whose rules refuse it gets its refusal unspoiled.
    pub applied_5xx: f64,
}
