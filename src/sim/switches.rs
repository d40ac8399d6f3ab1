//! The switches a test (or `SimHandle`) flips on a running simulator: the rate-limit headers,
//! one user's refused tokens and slow answers, the token endpoint's hold, the app-wide and
//! per-account stops, the faults, the prepaid credits, and requests another app spent.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::config::{FaultConfig, UsageCap};
use super::state::{SimState, lock};

impl SimState {
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
}
