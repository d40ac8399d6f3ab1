//! What the daemon's tasks tell the scheduler: the [`Event`]s on its channel, among them the
//! [`JobReport`] that ends each turn of an account. Kept apart from the scheduler and the job
//! turns so that each depends on these messages, not on the other.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::ratelimit::{AccountLimiter, ServerWindow};

/// Messages to the scheduler.
#[derive(Debug)]
pub enum Event {
    /// Newly leased accounts, their limiters seeded from the ledger.
    Leased(Vec<(String, AccountLimiter)>),
    /// New jobs were enqueued for these (held) accounts.
    Wake(Vec<String>),
    /// One turn of an account ended.
    JobDone { account: String, report: JobReport },
    /// A claim statement returned (whatever it claimed).
    Claimed,
    /// The heartbeat's result: leases kept, idle accounts given back, and this daemon's fair
    /// share of the accounts (`None`: it runs alone).
    Heartbeat {
        lost: Vec<String>,
        released: Vec<String>,
        kept_idle: Vec<String>,
        share: Option<usize>,
    },
    /// The app-wide stop: `Some(until)` while in force, `None` once lifted.
    AppStop(Option<Instant>),
    /// A job just met an app-wide stop, which may not be written yet: hold every account
    /// until this instant whatever the app monitor reports meanwhile (it may have read the
    /// table before the write, and report the previous stop lifted).
    AppStopSeen(Instant),
}

/// What the scheduler learns from one turn of an account.
#[derive(Debug)]
pub enum JobReport {
    /// No job was ready. The account's next queued job becomes ready at this time (`None`: the
    /// account has none queued).
    NoJob { next_run_at: Option<DateTime<Utc>> },
    /// A request went out and ended (answered, or failed in transport).
    Sent {
        sent_at: Instant,
        completed_at: Instant,
        server: ServerWindow,
        /// False only when X's answer shows no follow was made.
        may_have_followed: bool,
        unauthorized: bool,
        /// The account must not send before this instant (pause, 429, usage cap).
        pause_until: Option<Instant>,
    },
    /// The job was claimed but its request was not sent: the send deadline passed first. The
    /// job is back in the queue; the account may try again at once.
    NotSent,
    /// The account cannot send any more (needs_reauth, no credentials): give it up.
    AccountParked,
    /// Nothing was sent; try this account again at this instant.
    RetryAt(Instant),
    /// The turn panicked: its job went back to the queue with its ledger row unanswered (the
    /// request may have gone out); give the account up so a fresh limiter reads the ledger.
    Panicked,
}
