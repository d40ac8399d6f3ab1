//! One leased account as the scheduler sees it: where it is in its turn ([`Phase`]), its
//! limiter, and what an answered request changes for it.

use std::time::Instant;

use super::super::Context;
use super::super::budget::Ticket;
use super::super::events::Answered;
use crate::ratelimit::AccountLimiter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// In the ready queue.
    Ready,
    /// Let through: its claim or its turn is running.
    Busy,
    /// Its turn ended and its outcome is being written (`tasks.rs`); then it
    /// moves to `Slot::after_record`.
    Recording,
    /// On the timer heap until this instant; `for_jobs` when it waits for a job's `run_at`
    /// rather than for its limiter (a NOTIFY then wakes it early).
    Waiting { until: Instant, for_jobs: bool },
    /// Nothing queued; given back at the next heartbeat unless a NOTIFY wakes it.
    Idle { since: Instant },
    /// Being given back by the heartbeat.
    Releasing,
}

impl Phase {
    /// A request of the account is in the air or its outcome is being written.
    pub(super) fn in_turn(self) -> bool {
        matches!(self, Phase::Busy | Phase::Recording)
    }
}

pub(super) struct Slot {
    pub(super) limiter: AccountLimiter,
    pub(super) phase: Phase,
    pub(super) unauthorized_streak: u32,
    /// The lease was lost while a job ran: drop the slot when it ends.
    pub(super) lost: bool,
    /// Beyond this daemon's fair share: give the account back when its turn ends.
    pub(super) hand_over: bool,
    /// The daily-cap pause already persisted for this wait.
    pub(super) persisted_daily_cap: Option<Instant>,
    /// When the limiter first made the account wait (for the token-wait metric).
    pub(super) limiter_wait_since: Option<Instant>,
    /// Where a `Recording` account goes once its outcome is written.
    pub(super) after_record: Option<Phase>,
    /// Its request's places in the budgets, given back if the request proves unbilled.
    pub(super) budget_ticket: Option<Ticket>,
}

impl Slot {
    /// A newly leased account, ready to send.
    pub(super) fn new(limiter: AccountLimiter) -> Slot {
        Slot {
            limiter,
            phase: Phase::Ready,
            unauthorized_streak: 0,
            lost: false,
            hand_over: false,
            persisted_daily_cap: None,
            limiter_wait_since: None,
            after_record: None,
            budget_ticket: None,
        }
    }

    /// Feeds an answered request to the account's limiter: where the account goes next.
    pub(super) fn answered(&mut self, answered: &Answered, now: Instant) -> Phase {
        let Answered {
            sent_at,
            completed_at,
            server,
            may_have_followed,
            unauthorized,
            pause_until,
        } = *answered;
        self.limiter
            .record_response(sent_at, completed_at, server, may_have_followed);
        self.unauthorized_streak = if unauthorized {
            self.unauthorized_streak + 1
        } else {
            0
        };
        match pause_until {
            Some(until) if until > now => Phase::Waiting {
                until,
                for_jobs: false,
            },
            _ => Phase::Ready,
        }
    }

    /// Gives the budget places of a request that never went out back.
    pub(super) fn unbilled(&mut self, ctx: &Context) {
        if let Some(ticket) = self.budget_ticket.take() {
            ctx.budget.give_back(ticket);
        }
    }
}
