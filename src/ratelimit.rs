//! Per-account pacing: when may this account send its next request?
//!
//! Three gates, the strictest wins:
//!
//! 1. **The governor token bucket** (`requests` per `period`, burst `requests`): the local pacer.
//!    On its own it is not enough: a bucket of 50 refilled every 18 s lets ~99 requests through
//!    in the first 15 minutes, while X counts a *fixed* window of 50 from the first request.
//! 2. **X's fixed window**, tracked from the response headers, which are the truth: when
//!    `x-rate-limit-remaining` reaches 0 the account waits until the window ends. The reset
//!    header comes in whole seconds, so the end is also estimated locally: a response saying
//!    `remaining = limit - 1` means *this* request opened the window, which therefore ends no
//!    later than that request's completion + period. The earlier of the two (when they agree
//!    to within a second) is the resume instant. Without any headers, the local count of
//!    requests since the first one after the previous window still stops the 51st request.
//! 3. **The daily follow cap**: follows made in the last 24 hours, a rolling count.
//!
//! Everything here is synchronous and takes `now` as an argument; the worker owns the timers.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{Quota as GovernorQuota, RateLimiter};

/// Requests per period for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub requests: NonZeroU32,
    pub period: Duration,
}

impl Quota {
    pub fn new(requests: u32, period: Duration) -> Option<Quota> {
        let requests = NonZeroU32::new(requests)?;
        if period.is_zero() {
            return None;
        }
        Some(Quota { requests, period })
    }

    fn bucket(self) -> GovernorQuota {
        // period / requests is never zero for the periods accepted by `new` and any u32 count
        // over a second; fall back to a 1 ns cell otherwise rather than failing.
        let cell = (self.period / self.requests.get()).max(Duration::from_nanos(1));
        GovernorQuota::with_period(cell)
            .unwrap_or_else(|| GovernorQuota::per_second(self.requests))
            .allow_burst(self.requests)
    }
}

/// Why an account is not sending right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The governor bucket is empty.
    TokenBucket,
    /// X's fixed window is spent (headers said remaining 0, or the local count reached the quota).
    WindowExhausted,
    /// The account's follows in the last 24 hours reached the configured cap.
    DailyCap,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::TokenBucket => "token_bucket",
            WaitReason::WindowExhausted => "rate_limit_window",
            WaitReason::DailyCap => "daily_cap",
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A request may go now; the token has been spent.
    Go,
    /// Ask again at this instant.
    WaitUntil(Instant, WaitReason),
}

/// What the server said about its window, with the reset already mapped to a local instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerWindow {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    pub reset_at: Option<Instant>,
}

/// What the ledger knows about an account's recent past, for a daemon that just took it over.
#[derive(Debug, Clone, Default)]
pub struct LedgerSeed {
    /// Requests sent within the last quota period.
    pub requests_in_period: u32,
    /// The most recent response's window, if its reset is still ahead.
    pub server: ServerWindow,
    /// For each follow made in the last 24 hours, when it stops counting (24 hours after it),
    /// oldest first. Future instants only, so a recent boot cannot make them unrepresentable.
    pub follow_expiries: Vec<Instant>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The local view of X's fixed window.
#[derive(Debug, Clone, Default)]
struct FixedWindow {
    /// Requests counted in the current window.
    count: u32,
    /// When the current window ends at the latest; `None` while unknown.
    ends: Option<Instant>,
    /// `ends` comes from a response that opened the window (`remaining = limit - 1`), so it is
    /// exact to within one round trip, not a guess.
    aligned: bool,
}

/// The pacing state of one account. Owned by the one task that sends for it.
pub struct AccountLimiter {
    quota: Quota,
    bucket: governor::DefaultDirectRateLimiter,
    window: FixedWindow,
    server: ServerWindow,
    daily_cap: u32,
    /// When each follow of the last 24 hours stops counting, oldest first.
    follow_expiries: VecDeque<Instant>,
}

impl std::fmt::Debug for AccountLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountLimiter")
            .field("quota", &self.quota)
            .field("window", &self.window)
            .field("server", &self.server)
            .field("follows_24h", &self.follow_expiries.len())
            .finish_non_exhaustive()
    }
}

impl AccountLimiter {
    pub fn new(quota: Quota, daily_cap: u32) -> AccountLimiter {
        AccountLimiter {
            quota,
            bucket: RateLimiter::direct(quota.bucket()),
            window: FixedWindow::default(),
            server: ServerWindow::default(),
            daily_cap,
            follow_expiries: VecDeque::new(),
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Charges what the ledger says was already spent (by this account's previous holder, or
    /// before a restart): conservative, as if those requests were made just now.
    pub fn seed(&mut self, seed: &LedgerSeed, now: Instant) {
        let spent = seed.requests_in_period.min(self.quota.requests.get());
        if let Some(spent) = NonZeroU32::new(spent) {
            // Cannot exceed the burst (clamped above); the result only reports that.
            let _ = self.bucket.check_n(spent);
        }
        self.window.count = spent;
        if let Some(reset_at) = seed.server.reset_at.filter(|&r| r > now) {
            self.server = seed.server;
            self.window.ends = Some(reset_at);
            if let (Some(limit), Some(remaining)) = (seed.server.limit, seed.server.remaining) {
                self.window.count = self.window.count.max(limit.saturating_sub(remaining));
            }
        }
        self.follow_expiries = seed
            .follow_expiries
            .iter()
            .copied()
            .filter(|&expiry| expiry > now)
            .collect();
    }

    /// When the account may send next, without spending anything. `None`: now, as far as the
    /// window and the daily cap go (the bucket is checked by [`AccountLimiter::try_acquire`]).
    pub fn blocked_until(&mut self, now: Instant) -> Option<(Instant, WaitReason)> {
        while self
            .follow_expiries
            .front()
            .is_some_and(|&expiry| expiry <= now)
        {
            self.follow_expiries.pop_front();
        }
        if self.follow_expiries.len() >= self.daily_cap as usize
            && let Some(&first_to_expire) = self.follow_expiries.front()
        {
            return Some((first_to_expire, WaitReason::DailyCap));
        }
        if let Some(resume) = self.server_resume_at()
            && now < resume
        {
            return Some((resume, WaitReason::WindowExhausted));
        }
        if self.window.ends.is_some_and(|ends| now >= ends) {
            self.window = FixedWindow::default();
        }
        if self.window.count >= self.limit()
            && let Some(ends) = self.window.ends
        {
            return Some((ends, WaitReason::WindowExhausted));
        }
        None
    }

    /// Spends a token if every gate is open.
    pub fn try_acquire(&mut self, now: Instant) -> Gate {
        if let Some((until, reason)) = self.blocked_until(now) {
            return Gate::WaitUntil(until, reason);
        }
        if let Err(not_until) = self.bucket.check() {
            return Gate::WaitUntil(not_until.earliest_possible(), WaitReason::TokenBucket);
        }
        self.window.count += 1;
        Gate::Go
    }

    /// Gives back the window slot of an acquisition that sent nothing (no job was ready, or
    /// the account turned out unusable). The bucket's token stays spent: conservative.
    pub fn refund(&mut self) {
        self.window.count = self.window.count.saturating_sub(1);
    }

    /// Learns from a response (or from a request that got none: pass the default window).
    pub fn record_response(&mut self, completed_at: Instant, server: ServerWindow, followed: bool) {
        if followed {
            self.follow_expiries.push_back(completed_at + DAY);
        }
        if let Some(limit) = server.limit.and_then(NonZeroU32::new)
            && limit < self.quota.requests
        {
            // X says this account's tier allows fewer: adopt it.
            self.quota.requests = limit;
            self.bucket = RateLimiter::direct(self.quota.bucket());
            // What this window already spent, charged to the new bucket.
            if let Some(spent) = NonZeroU32::new(self.window.count.min(limit.get())) {
                let _ = self.bucket.check_n(spent);
            }
        }
        match (server.limit, server.remaining) {
            (Some(limit), Some(remaining)) if limit > 0 && remaining + 1 == limit => {
                // This request opened the window: it ends at most one period after it returned.
                self.window = FixedWindow {
                    count: 1,
                    ends: Some(completed_at + self.quota.period),
                    aligned: true,
                };
            }
            (Some(limit), Some(remaining)) => {
                self.window.count = self.window.count.max(limit.saturating_sub(remaining));
                if self.window.ends.is_none() {
                    self.window.ends = server.reset_at;
                }
            }
            _ => {
                if self.window.ends.is_none() {
                    // No headers: the first request after the last window opens the next one.
                    self.window.ends = Some(completed_at + self.quota.period);
                }
            }
        }
        if server.remaining.is_some() || server.reset_at.is_some() {
            self.server = server;
        }
    }

    /// The server said its window is spent: when it reopens, as precisely as we know.
    fn server_resume_at(&self) -> Option<Instant> {
        if self.server.remaining != Some(0) {
            return None;
        }
        let reset = self.server.reset_at?;
        // The reset header is the window end rounded up to a whole second. A window end known
        // from the response that opened the window is as safe and up to a second earlier.
        match self.window.ends {
            Some(ends)
                if self.window.aligned
                    && ends <= reset
                    && ends + Duration::from_secs(1) > reset =>
            {
                Some(ends)
            }
            _ => Some(reset),
        }
    }

    fn limit(&self) -> u32 {
        let server_limit = self.server.limit.unwrap_or(u32::MAX);
        self.quota.requests.get().min(server_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(requests: u32, seconds: u64) -> Quota {
        Quota::new(requests, Duration::from_secs(seconds)).unwrap()
    }

    fn headers(limit: u32, remaining: u32, reset_at: Instant) -> ServerWindow {
        ServerWindow {
            limit: Some(limit),
            remaining: Some(remaining),
            reset_at: Some(reset_at),
        }
    }

    #[test]
    fn without_headers_the_local_window_stops_the_request_past_the_quota() {
        let start = Instant::now();
        let mut limiter = AccountLimiter::new(quota(5, 60), 400);
        for _ in 0..5 {
            assert_eq!(limiter.try_acquire(start), Gate::Go);
            limiter.record_response(start, ServerWindow::default(), true);
        }
        // The bucket would allow more after 12 s; the fixed window does not before 60 s.
        let later = start + Duration::from_secs(13);
        assert_eq!(
            limiter.try_acquire(later),
            Gate::WaitUntil(start + Duration::from_secs(60), WaitReason::WindowExhausted)
        );
    }

    #[test]
    fn remaining_zero_waits_for_the_window_that_the_first_response_opened() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut limiter = AccountLimiter::new(quota(3, 10), 400);
        // The server's reset header is rounded up to a whole second.
        let reset = start + period + Duration::from_millis(700);
        for remaining in [2, 1, 0] {
            assert_eq!(limiter.try_acquire(start), Gate::Go);
            limiter.record_response(start, headers(3, remaining, reset), true);
        }
        let Gate::WaitUntil(until, reason) = limiter.try_acquire(start) else {
            panic!("the window is spent");
        };
        assert_eq!(reason, WaitReason::WindowExhausted);
        assert_eq!(
            until,
            start + period,
            "the precise end, not the rounded header"
        );
        // (The bucket runs on the real clock, so only the window gate is asked here.)
        assert_eq!(limiter.blocked_until(start + period), None);
    }

    #[test]
    fn another_app_spending_the_window_is_respected() {
        let start = Instant::now();
        let mut limiter = AccountLimiter::new(quota(50, 900), 400);
        let reset = start + Duration::from_secs(300);
        assert_eq!(limiter.try_acquire(start), Gate::Go);
        // 49 were already spent elsewhere: this was the last one.
        limiter.record_response(start, headers(50, 0, reset), true);
        assert_eq!(
            limiter.try_acquire(start + Duration::from_secs(1)),
            Gate::WaitUntil(reset, WaitReason::WindowExhausted),
            "a window not opened by us ends at the header's reset"
        );
    }

    #[test]
    fn a_smaller_server_limit_is_adopted() {
        let start = Instant::now();
        let mut limiter = AccountLimiter::new(quota(50, 900), 400);
        assert_eq!(limiter.try_acquire(start), Gate::Go);
        limiter.record_response(start, headers(5, 4, start + Duration::from_secs(900)), true);
        assert_eq!(limiter.quota().requests.get(), 5);
        for remaining in [3, 2, 1, 0] {
            assert_eq!(
                limiter.try_acquire(start),
                Gate::Go,
                "remaining {remaining}"
            );
            limiter.record_response(
                start,
                headers(5, remaining, start + Duration::from_secs(900)),
                true,
            );
        }
        assert!(matches!(
            limiter.try_acquire(start),
            Gate::WaitUntil(_, WaitReason::WindowExhausted)
        ));
    }

    #[test]
    fn the_bucket_paces_after_a_burst_within_a_window() {
        let start = Instant::now();
        // 2 per 10 s: burst 2, then one every 5 s.
        let mut limiter = AccountLimiter::new(quota(2, 10), 400);
        assert_eq!(limiter.try_acquire(start), Gate::Go);
        assert_eq!(limiter.try_acquire(start), Gate::Go);
        assert!(matches!(limiter.try_acquire(start), Gate::WaitUntil(_, _)));
    }

    #[test]
    fn the_daily_cap_waits_for_the_oldest_follow_to_age_out() {
        let start = Instant::now();
        let mut limiter = AccountLimiter::new(quota(50, 1), 2);
        let seed = LedgerSeed {
            requests_in_period: 0,
            server: ServerWindow::default(),
            follow_expiries: vec![start + DAY, start + DAY + Duration::from_secs(5)],
        };
        limiter.seed(&seed, start + Duration::from_secs(10));
        assert_eq!(
            limiter.try_acquire(start + Duration::from_secs(10)),
            Gate::WaitUntil(start + DAY, WaitReason::DailyCap)
        );
    }

    #[test]
    fn seeding_charges_what_the_ledger_says_was_spent() {
        let now = Instant::now();
        let mut limiter = AccountLimiter::new(quota(3, 60), 400);
        limiter.seed(
            &LedgerSeed {
                requests_in_period: 3,
                server: headers(3, 0, now + Duration::from_secs(30)),
                follow_expiries: vec![],
            },
            now,
        );
        assert_eq!(
            limiter.try_acquire(now),
            Gate::WaitUntil(now + Duration::from_secs(30), WaitReason::WindowExhausted)
        );
    }
}
