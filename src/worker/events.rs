//! What reaches the scheduler: the [`Event`]s other tasks send on its channel, and the
//! [`TaskDone`] each job task it owns returns (a claim, a turn, a record). Kept apart from the
//! scheduler and the tasks so that each depends on these messages, not on the other.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::app_cap::Slot as AppSlot;
use super::decision::{AccountAction, AppStop};
use crate::ratelimit::{AccountLimiter, ServerWindow};
use crate::store::claim::ClaimedJob;
use crate::store::record::Completion;

/// Messages to the scheduler from the tasks it does not own.
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
    /// The app monitor counted the app's follows (see `app_cap.rs`): with a per-app cap, no
    /// request starts before the first count.
    AppCounted,
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

/// What a job task the scheduler started hands back when it ends.
#[derive(Debug)]
pub enum TaskDone {
    /// A claim statement returned: the jobs it claimed, and the accounts it found nothing
    /// ready for (`Err`: the statement failed, nothing was claimed).
    Claimed(Result<Vec<ClaimedJob>, ()>),
    /// When the next job of each account a claim found nothing for is due.
    NothingClaimed(Vec<(String, NoTurn)>),
    /// A job's turn ended: its outcome is to be written.
    Turn(Box<TurnEnd>),
    /// A turn's outcome is written; with it the next job of the successor named when the
    /// record was started, if one was.
    Recorded { successor: Option<SuccessorClaim> },
}

/// Why an account let through had no turn.
#[derive(Debug, Clone, Copy)]
pub enum NoTurn {
    /// No job was ready. Its next queued job becomes ready at this time (`None`: none queued).
    NoJob { next_run_at: Option<DateTime<Utc>> },
    /// The database could not be asked: try again at this instant.
    RetryAt(Instant),
}

/// What the claim made with a record found for the successor.
#[derive(Debug)]
pub enum SuccessorClaim {
    /// Its next job, claimed: its turn starts.
    Job(ClaimedJob),
    /// Nothing to send.
    None(NoTurn),
}

/// The end of a job's turn: the outcome to write, how to log it once written, and what the
/// account does next.
#[derive(Debug)]
pub struct TurnEnd {
    pub completion: Completion,
    /// The job's attempt number, for its span.
    pub attempt: i32,
    /// The event logged once the outcome is written.
    pub transition: Transition,
    pub then: AfterTurn,
    /// The request's place under the per-app cap, held until its outcome is written.
    pub app_slot: Option<AppSlot>,
    /// The account's pauses and the app-wide stop the answer calls for, persisted once the
    /// outcome is written (the scheduler already holds the account, and the app, meanwhile).
    pub consequences: Consequences,
}

/// The account's pauses and the app-wide stop an answer calls for.
#[derive(Debug, Default)]
pub struct Consequences {
    pub account: Vec<AccountAction>,
    pub app: Option<AppStop>,
}

/// The state-change event of a job, logged once its outcome is written.
#[derive(Debug, Clone)]
pub enum Transition {
    /// X answered (or the request failed in transport): the decision's next state, with the
    /// outcome's kind.
    Decided { outcome: &'static str },
    /// The request was never sent; the job goes back to the queue for `reason`.
    Unsent {
        reason: String,
        message: &'static str,
    },
}

/// What the account does after its turn.
#[derive(Debug)]
pub enum AfterTurn {
    /// A request went out and ended (answered, or failed in transport).
    Answered(Answered),
    /// The job was claimed but its request was not sent: the send deadline passed first. The
    /// account may try again at once.
    NotSent,
    /// Nothing was sent; try this account again at this instant.
    RetryAt(Instant),
    /// The account cannot send any more (needs_reauth, no credentials): give it up.
    Parked,
}

impl AfterTurn {
    /// The request may have been billed: X may have acted on it.
    pub fn may_have_followed(&self) -> bool {
        matches!(self, AfterTurn::Answered(answered) if answered.may_have_followed)
    }
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
    /// The account must not send before this instant (pause, 429, usage cap, a refresh that
    /// failed after a 401).
    pub pause_until: Option<Instant>,
}
