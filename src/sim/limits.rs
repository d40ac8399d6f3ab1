//! What the follow rules count in: a user's fixed rate-limit window, the 24-hour request
//! windows, the fixed daily windows of new follows and the sliding count of recent ones, and
//! the app's prepaid credits (reserved for a request, then spent or given back).

use std::collections::VecDeque;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::DayLimit;
use super::rules::RateHeaders;
use super::state::{SimState, UserState};

/// One fixed window of one user.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    started: Instant,
    pub(super) reset_epoch: u64,
    /// Requests counted, `prespend` included.
    pub(super) used: u64,
    /// Requests received over HTTP.
    pub(super) received: u64,
}

/// One fixed daily window of new follows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Day {
    pub(super) started: Instant,
    pub(super) follows: u32,
}

impl Day {
    /// The window running at `now`, or a fresh one.
    pub(super) fn current(day: Option<Day>, now: Instant, length: Duration) -> Day {
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
pub(super) struct Recent {
    times: VecDeque<Instant>,
    pub(super) max: u64,
}

impl Recent {
    /// Counts a follow made now; the clock is read here, under the caller's lock, so the
    /// times are in order.
    pub(super) fn record(&mut self, span: Duration) -> u64 {
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
pub(super) struct Credits {
    /// `None`: unlimited.
    pub(super) left: Option<u64>,
    /// Bumped by `set_credits`, so a credit reserved before it is not refunded into the new
    /// balance.
    pub(super) generation: u64,
}

/// A credit taken for a request until it is known whether the request is acted on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Credit {
    Unlimited,
    Reserved { generation: u64 },
}

/// The app's follows (every user's): its daily cap window and its sliding count.
#[derive(Debug, Default)]
pub(super) struct AppFollows {
    pub(super) day: Option<Day>,
    pub(super) recent: Recent,
    pub(super) capped: u64,
}

impl UserState {
    /// The current window, starting a new one if there is none or it has ended.
    pub(super) fn window(&mut self, now: Instant, length: Duration) -> &mut Window {
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
pub(super) fn count_in_day(
    slot: &mut Option<Window>,
    limit: DayLimit,
    now: Instant,
) -> (RateHeaders, bool) {
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

impl SimState {
    /// Takes a credit for a request, or `None` when there is none left (402).
    pub(super) fn reserve_credit(&self) -> Option<Credit> {
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
    pub(super) fn settle_credit(&self, credit: Credit, acted_on: bool) {
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
}
