//! What the daemon's tasks tell the scheduler: the [`Event`]s on its channel, among them the
//! [`JobReport`] that ends each turn of an account. Kept apart from the scheduler and the job
//! turns so that each depends on these messages, not on the other.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::ratelimit::{AccountLimiter, ServerWindow};

/// Messages to the scheduler.
#[derive(Debug)]
pub enum Event {
    /// Newly leased accounts, their limiters seeded from the ledger.
    Leased(Vec<(String, AccountLimiter)>),
    /// The leaser asks which accounts the scheduler holds, the one place that knows: new jobs
    /// were enqueued for `enqueued` (empty when it only wants the count). The held ones among
    /// them are woken; the answer names the others, for the leaser to lease.
    Holding {
        enqueued: Vec<String>,
        reply: oneshot::Sender<Holding>,
    },
    /// One turn of an account ended.
    JobDone { account: String, report: JobReport },
    /// A request was answered and nothing holds its account back (no pause, no app-wide
    /// stop, no refused token): the scheduler takes the answer now, before the outcome is
    /// written, and may hand the job task's slot to the next account in line, whose next job
    /// is then claimed in the statement that records this one. The account itself waits for
    /// [`JobReport::Recorded`] before it can be claimed again.
    Handoff {
        account: String,
        answered: Answered,
        reply: oneshot::Sender<Option<Successor>>,
    },
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
    /// The budgets' reserving task reserved more (see `budget.rs`): accounts held back for
    /// lack of budget may start.
    BudgetReserved,
    /// This daemon took the turn to probe the app-wide stop (`credits_depleted`): one request
    /// goes out while it lasts, and its answer says whether the cause is gone.
    Probe,
    /// A job just met an app-wide stop, which may not be written yet: hold every account
    /// until this instant whatever the app monitor reports meanwhile (it may have read the
    /// table before the write, and report the previous stop lifted).
    AppStopSeen(Instant),
}

/// The scheduler's answer to [`Event::Holding`].
#[derive(Debug)]
pub struct Holding {
    /// The enqueued accounts it does not hold.
    pub not_held: Vec<String>,
    /// How many accounts it holds.
    pub count: usize,
}

/// What the scheduler learns from one turn of an account.
#[derive(Debug)]
pub enum JobReport {
    /// No job was ready. The account's next queued job becomes ready at this time (`None`: the
    /// account has none queued).
    NoJob { next_run_at: Option<DateTime<Utc>> },
    /// A request went out and ended (answered, or failed in transport).
    Sent(Answered),
    /// The outcome of a turn the scheduler took in an [`Event::Handoff`] is written: the
    /// account may be claimed again. `slot_kept`: the job task went on with the successor it
    /// was given (the slot is still in use).
    Recorded { slot_kept: bool },
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

/// What the scheduler learns from a request that went out and ended.
#[derive(Debug)]
pub struct Answered {
    pub sent_at: Instant,
    pub completed_at: Instant,
    pub server: ServerWindow,
    /// False only when X's answer shows no follow was made.
    pub may_have_followed: bool,
    pub unauthorized: bool,
    /// The account must not send before this instant (pause, 429, usage cap).
    pub pause_until: Option<Instant>,
}

/// The account a job task goes on with after an [`Event::Handoff`]: its limiter let it send,
/// and it is marked busy for the task.
#[derive(Debug)]
pub struct Successor {
    pub account: String,
    /// Its count of 401s in a row.
    pub unauthorized_streak: u32,
    /// Its request is not sent at all after this instant.
    pub send_by: Instant,
}
