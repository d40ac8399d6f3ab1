//! The figures the simulator reports at `GET /__sim/stats` and through `SimHandle::stats`,
//! and the entries of its request log (`SimHandle::request_log`). Per-user figures are
//! updated under that user's lock in the same step that decides the answer, so they are exact
//! under any concurrency; totals are summed from them, plus the app-wide ones kept beside.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Everything the simulator counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Keyed by user id: every registered user, including those that sent nothing.
    pub users: BTreeMap<String, UserStats>,
    pub totals: TotalStats,
}

impl SimStats {
    /// The figures of one user, or zeros if the user is unknown.
    pub fn user(&self, user_id: &str) -> UserStats {
        self.users.get(user_id).cloned().unwrap_or_default()
    }
}

/// One user's figures on the follow endpoint and the token endpoint.
///
/// Invariant: `requests == by_status.values().sum() + faults.dropped`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStats {
    /// Follow requests authenticated as this user (valid token), whatever the answer, except
    /// 402s for depleted credits (in [`TotalStats::payment_required`]), which X refuses before
    /// counting. These are exactly the requests counted in the user's windows.
    pub requests: u64,
    /// 429s for the user's 15-minute window.
    pub rate_limited: u64,
    /// The most follow requests received inside any one of this user's windows, rejected ones
    /// included. Requests spent with `prespend` (another app) are not in it.
    pub max_requests_in_window: u64,
    /// The most requests counted in any one window, `prespend` included: above the limit means
    /// 429s were sent.
    pub max_window_usage: u64,
    /// Windows started.
    pub windows: u64,
    /// Follows made (target public).
    pub follows: u64,
    /// Follow requests made to protected targets (pending).
    pub pending: u64,
    /// Repeated follows answered as a no-op.
    pub repeated: u64,
    /// 403 "unable to follow more people" (this user's daily cap; the app's is in
    /// [`TotalStats::app_daily_capped`]).
    pub daily_capped: u64,
    /// The most new follows (pending included, counted as the daily cap counts them: made
    /// whatever answer was then sent) this user made within **any** span of `daily_window`,
    /// a sliding measure rather than per fixed daily window: a client that keeps under X's
    /// cap however X places its day shows at most the cap here.
    pub max_follows_in_day: u64,
    /// 429 `usage-capped`.
    pub usage_capped: u64,
    /// 403 `client-forbidden`.
    pub app_forbidden: u64,
    /// 401s for this user's expired, revoked or refused tokens and bad OAuth 1.0a signatures
    /// (not counted in `requests`).
    pub unauthorized: u64,
    /// 401s for OAuth 1.0a requests with this user's token whose signature did not verify
    /// (also in `unauthorized`).
    pub bad_signatures: u64,
    /// 429s for the user's 24-hour limit (`x-user-limit-24hour-*`).
    pub user_24h_limited: u64,
    /// 429s for the app's 24-hour limit (`x-app-limit-24hour-*`), on this user's requests.
    pub app_24h_limited: u64,
    /// Successful refreshes at the token endpoint.
    pub refreshes: u64,
    /// Refreshes with a spent refresh token of this user.
    pub refresh_reuses: u64,
    /// The most follow requests of this user being handled at once (from the moment one is
    /// counted until its answer is sent, its connection dropped, or its client gave up). A
    /// client that keeps one request per user in flight never shows more than 1.
    pub max_in_flight: u64,
    /// Requests that arrived while another request of this user for the same target was still
    /// being handled: one job sent twice at once.
    pub same_target_overlaps: u64,
    /// Answers sent, by HTTP status (faulted ones included; dropped ones have none).
    pub by_status: BTreeMap<u16, u64>,
    pub faults: FaultStats,
}

impl UserStats {
    fn add(&mut self, other: &UserStats) {
        self.requests += other.requests;
        self.rate_limited += other.rate_limited;
        self.max_requests_in_window = self
            .max_requests_in_window
            .max(other.max_requests_in_window);
        self.max_window_usage = self.max_window_usage.max(other.max_window_usage);
        self.max_in_flight = self.max_in_flight.max(other.max_in_flight);
        self.max_follows_in_day = self.max_follows_in_day.max(other.max_follows_in_day);
        self.same_target_overlaps += other.same_target_overlaps;
        self.windows += other.windows;
        self.follows += other.follows;
        self.pending += other.pending;
        self.repeated += other.repeated;
        self.daily_capped += other.daily_capped;
        self.usage_capped += other.usage_capped;
        self.app_forbidden += other.app_forbidden;
        self.unauthorized += other.unauthorized;
        self.bad_signatures += other.bad_signatures;
        self.user_24h_limited += other.user_24h_limited;
        self.app_24h_limited += other.app_24h_limited;
        self.refreshes += other.refreshes;
        self.refresh_reuses += other.refresh_reuses;
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        self.faults.add(&other.faults);
    }

    pub(crate) fn count_status(&mut self, status: u16) {
        *self.by_status.entry(status).or_default() += 1;
    }
}

/// Faults injected, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStats {
    /// 500/503 without the follow made (`fail_5xx`).
    pub server_errors: u64,
    /// 500/503 after the follow was made as a 200 would have made it (`applied_5xx`); not in
    /// `server_errors`. Their 5xx is in `by_status`, their follow in `follows` or `pending`.
    pub applied_then_failed: u64,
    pub delayed: u64,
    pub dropped: u64,
    pub malformed: u64,
    pub errors_200: u64,
}

impl FaultStats {
    fn add(&mut self, other: &FaultStats) {
        self.server_errors += other.server_errors;
        self.applied_then_failed += other.applied_then_failed;
        self.delayed += other.delayed;
        self.dropped += other.dropped;
        self.malformed += other.malformed;
        self.errors_200 += other.errors_200;
    }
}

/// Sums over all users, plus what no user can be charged with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalStats {
    /// Per-user figures summed (the `max_*` fields are the maximum over users).
    pub all_users: UserStats,
    /// Follow requests with no, or an unknown, token (401).
    pub unauthenticated: u64,
    /// Follow requests with an app-only token (403 `unsupported-authentication`).
    pub app_only: u64,
    /// Token endpoint requests answered 400/401 that matched no user (unknown refresh token,
    /// bad grant type, missing client).
    pub token_rejected: u64,
    /// 403s for the app's daily follow cap (`SimConfig::app_daily_cap`).
    pub app_daily_capped: u64,
    /// The most new follows of all users together (pending included, as the caps count
    /// them) within any span of `daily_window`: sliding, like
    /// [`UserStats::max_follows_in_day`].
    pub app_max_follows_in_day: u64,
    /// Requests acted on, each of which costs one prepaid credit: the follow rules ran to a
    /// success (a follow made, pending, or already in place), whatever was then sent (a 200,
    /// a spoiled body, a dropped connection, an applied-then-5xx). Refusals, plain 5xx and
    /// errors-200 faults cost nothing. Counted with unlimited credits too.
    pub credits_spent: u64,
    /// 402 `CreditsDepleted` answers (not in any user's `requests` or `by_status`).
    pub payment_required: u64,
    /// Prepaid credits left; `None`: unlimited.
    pub credits_left: Option<u64>,
}

impl TotalStats {
    pub(crate) fn sum<'a>(users: impl IntoIterator<Item = &'a UserStats>) -> UserStats {
        let mut total = UserStats::default();
        for user in users {
            total.add(user);
        }
        total
    }
}

/// One follow request as it reached the follow handler, for tests that check timing and
/// what was sent (`SimHandle::request_log`). Every request is in it, refused ones and those
/// without valid credentials included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The user the credentials name (valid, expired, refused or badly signed); for a request
    /// whose credentials name no user, the path's `:id` as sent.
    pub user_id: String,
    /// The body's `target_user_id`, or `None` when the path or body is not valid.
    pub target: Option<String>,
    /// When the handler received the request (its head and body read).
    pub received_at: Instant,
    /// When the answer was handed to the connection to be written, the connection was dropped
    /// on purpose, or the client gave up waiting.
    pub answered_at: Instant,
    /// The status sent; `None` when no answer was sent (a dropped connection, or a client
    /// that gave up first).
    pub status: Option<u16>,
}
