//! The scheduler: one task that owns every leased account's limiter and decides which account
//! sends next. It shares no state: everything reaches it as an [`Event`], and its database
//! writes run as tasks it owns (`writes.rs`) and waits for when it stops.
//!
//! - Accounts whose gates are open wait in a FIFO ready queue, so accounts are served round
//!   robin and a paused, limited or slow account never holds up another.
//! - An account has at most one job in flight; at most `worker.concurrency` are in flight in
//!   all (each job is a task holding one permit).
//! - An account that must wait sits on a timer heap until the exact instant its gate opens
//!   (governor's readiness, the window's end, a pause's end): no polling.
//! - On shutdown no new request starts; requests in flight get `worker.shutdown_grace` to
//!   finish and record their answers, and the leases are renewed meanwhile.
//!
//! | file | owns |
//! | --- | --- |
//! | `slot.rs` | one account's phase in its turn, its limiter, what an answer changes |
//! | `holding.rs` | which accounts are kept: heartbeat, fair share, fencing, the leaser's question |
//! | `writes.rs` | the scheduler's database writes, as tasks it owns and waits for |
//! | `recovery.rs` | panics in the scheduler or a claim batch: logged, counted, recovered from |

mod holding;
mod recovery;
mod slot;
mod writes;

pub use recovery::{Inbox, run_supervised};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Context;
use super::events::{Answered, Event, JobReport, Successor};
use super::job;
use crate::ratelimit::{Gate, WaitReason};
use slot::{Phase, Slot};
use writes::Writes;

/// Claim statements the scheduler lets run at once (see `Scheduler::claims_in_flight`).
const MAX_CLAIMS_IN_FLIGHT: usize = 2;

pub struct Scheduler {
    ctx: Arc<Context>,
    events: tokio::sync::OwnedMutexGuard<mpsc::UnboundedReceiver<Event>>,
    sender: mpsc::UnboundedSender<Event>,
    slots: HashMap<String, Slot>,
    ready: VecDeque<String>,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    jobs: JoinSet<()>,
    /// Its database writes (lease renewals and releases, pauses), run as tasks it owns.
    writes: Writes,
    /// The accounts of each claim batch in `jobs`, to recover them if the batch panics.
    batches: HashMap<tokio::task::Id, Vec<String>>,
    /// Claim statements on their way to the database. While [`MAX_CLAIMS_IN_FLIGHT`] are, the
    /// accounts that become ready wait for the next one: under load each claim statement
    /// serves every account that became ready during the last one, with no timer.
    claims_in_flight: usize,
    in_flight: usize,
    app_stopped_until: Option<Instant>,
    /// See [`Event::AppStopSeen`].
    app_stop_seen_until: Option<Instant>,
    next_heartbeat: Instant,
    heartbeat_running: bool,
    /// Since when this daemon could not confirm its liveness session (see [`Scheduler::fenced`]).
    fenced_since: Option<Instant>,
    /// This daemon has the turn to send the request that probes an app-wide stop.
    probe_requested: bool,
}

impl Scheduler {
    fn new(
        ctx: Arc<Context>,
        events: tokio::sync::OwnedMutexGuard<mpsc::UnboundedReceiver<Event>>,
    ) -> Scheduler {
        let sender = ctx.events.clone();
        let next_heartbeat = Instant::now() + ctx.settings.worker.heartbeat_interval;
        Scheduler {
            writes: Writes::new(Arc::clone(&ctx)),
            ctx,
            events,
            sender,
            slots: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            jobs: JoinSet::new(),
            batches: HashMap::new(),
            claims_in_flight: 0,
            in_flight: 0,
            app_stopped_until: None,
            app_stop_seen_until: None,
            next_heartbeat,
            heartbeat_running: false,
            fenced_since: None,
            probe_requested: false,
        }
    }

    /// Runs until `shutdown` is cancelled and the requests in flight have finished (or the
    /// grace period ran out). Returns how many were still in flight when it gave up.
    pub async fn run(mut self, shutdown: CancellationToken) -> usize {
        loop {
            self.dispatch(Instant::now());
            let wake_at = self.next_wake();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                event = self.events.recv() => match event {
                    Some(event) => {
                        self.handle(event);
                        // Take in everything else that is waiting before dispatching, so that
                        // under load one claim statement serves many accounts.
                        while let Ok(event) = self.events.try_recv() {
                            self.handle(event);
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
            if Instant::now() >= self.next_heartbeat {
                self.heartbeat();
            }
            self.writes.reap();
        }
        self.drain().await
    }

    /// Waits for the requests in flight, up to the grace period, recording their answers.
    async fn drain(mut self) -> usize {
        let grace = self.ctx.settings.worker.shutdown_grace;
        info!(
            in_flight = self.in_flight,
            grace = ?grace,
            "stopping: no new requests; waiting for those in flight"
        );
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight > 0 {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(Event::JobDone { account, report }) => self.job_done(account, report),
                    // No new request starts while stopping: the answer is taken, the slot
                    // ends with the outcome's write.
                    Some(Event::Handoff { account, answered, reply }) => {
                        let successor = self.handoff(account, answered, false);
                        let _ = reply.send(successor);
                    }
                    // Leases lost while draining still count; nothing is given back or
                    // taken meanwhile (the stop releases every lease).
                    Some(Event::Heartbeat { lost, .. }) => {
                        self.heartbeat_done(lost, Vec::new(), Vec::new(), None)
                    }
                    // The leaser asks while stopping: its answer is dropped, so it leases
                    // nothing.
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                // The leases of the accounts still in flight are renewed while they drain.
                _ = tokio::time::sleep_until(self.next_heartbeat.into()) => self.heartbeat(),
            }
            self.reap_batches();
            self.writes.reap();
        }
        let abandoned = self.in_flight;
        self.jobs.abort_all();
        self.writes.finish(deadline).await;
        abandoned
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_heartbeat;
        if let Some(Reverse((at, _))) = self.timers.peek() {
            wake = wake.min(*at);
        }
        for until in [self.app_stopped_until, self.app_stop_seen_until]
            .into_iter()
            .flatten()
        {
            wake = wake.min(until);
        }
        wake
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Leased(accounts) => self.leased(accounts),
            Event::Holding { enqueued, reply } => {
                let _ = reply.send(self.holding(enqueued));
            }
            Event::JobDone { account, report } => self.job_done(account, report),
            Event::Handoff {
                account,
                answered,
                reply,
            } => {
                let successor = self.handoff(account, answered, true);
                if let Err(Some(successor)) = reply.send(successor) {
                    // The job task is gone (its slot ends with its own report): the successor
                    // never started, and takes its turn again from the head of the queue.
                    if let Some(slot) = self.slots.get_mut(&successor.account) {
                        slot.limiter.refund();
                        slot.unbilled(&self.ctx);
                        slot.phase = Phase::Ready;
                        self.ready.push_front(successor.account);
                    }
                }
            }
            Event::Claimed => self.claims_in_flight = self.claims_in_flight.saturating_sub(1),
            Event::Heartbeat {
                lost,
                released,
                kept_idle,
                share,
            } => self.heartbeat_done(lost, released, kept_idle, share),
            Event::AppStop(until) => {
                if until.is_none() && self.app_stopped_until.is_some() {
                    info!("app-wide stop lifted: accounts send again");
                }
                self.app_stopped_until = until;
            }
            Event::Probe => self.probe_requested = true,
            // Nothing to do but dispatch again (the loop does).
            Event::BudgetReserved => {}
            Event::AppStopSeen(until) => {
                self.app_stop_seen_until =
                    Some(self.app_stop_seen_until.map_or(until, |u| u.max(until)));
            }
        }
    }

    fn wake_slot(slot: &mut Slot, account: &str, ready: &mut VecDeque<String>) {
        match slot.phase {
            Phase::Idle { .. } | Phase::Waiting { for_jobs: true, .. } => {
                slot.phase = Phase::Ready;
                ready.push_back(account.to_owned());
            }
            _ => {}
        }
    }

    /// Starts as many requests as the gates and the concurrency cap allow.
    fn dispatch(&mut self, now: Instant) {
        self.wake_due(now);
        if self.fenced(now) {
            return;
        }
        if self.app_stopped(now) {
            if self.probe_requested {
                self.start_probe(now);
            }
            return;
        }
        if self.claims_in_flight >= MAX_CLAIMS_IN_FLIGHT {
            return;
        }
        let concurrency = self.ctx.settings.worker.concurrency as usize;
        let send_by = now + self.ctx.settings.worker.send_deadline;
        let answer_by = now + self.ctx.answer_within();
        let mut batch: Vec<(String, u32)> = Vec::new();
        while self.in_flight < concurrency {
            let Some(next) = self.take_ready(now, answer_by) else {
                break;
            };
            self.in_flight += 1;
            batch.push(next);
        }
        if !batch.is_empty() {
            // One claim statement for every account let through in this round.
            let accounts: Vec<String> = batch.iter().map(|(name, _)| name.clone()).collect();
            let handle = self.jobs.spawn(job::run_batch(
                Arc::clone(&self.ctx),
                batch,
                send_by,
                job::Turns::Regular,
            ));
            self.batches.insert(handle.id(), accounts);
            self.claims_in_flight += 1;
        }
        self.reap_batches();
    }

    /// Moves the accounts whose timers are due to the ready queue.
    fn wake_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, account))) = self.timers.pop() else {
                break;
            };
            if let Some(slot) = self.slots.get_mut(&account)
                && matches!(slot.phase, Phase::Waiting { until, .. } if until == at)
            {
                slot.phase = Phase::Ready;
                self.ready.push_back(account);
            }
        }
    }

    /// No app-wide stop is in force (or just seen), and this daemon's liveness is confirmed:
    /// a request may start.
    fn may_start(&mut self, now: Instant) -> bool {
        // Fenced otherwise: peers may take this daemon's accounts over at any moment.
        !self.app_stopped(now) && !self.fenced(now)
    }

    /// An app-wide stop is in force, or was just seen by a job (see [`Event::AppStopSeen`]).
    fn app_stopped(&mut self, now: Instant) -> bool {
        let mut stopped = false;
        for stop in [&mut self.app_stopped_until, &mut self.app_stop_seen_until] {
            match *stop {
                Some(until) if until > now => stopped = true,
                Some(_) => *stop = None,
                None => {}
            }
        }
        stopped
    }

    /// While the app is stopped, the one request that probes whether the stop's cause is gone
    /// (see [`Event::Probe`]): the next account in line sends it, marked as the probe. With no
    /// account ready the probe waits for one.
    fn start_probe(&mut self, now: Instant) {
        if self.in_flight >= self.ctx.settings.worker.concurrency as usize {
            return;
        }
        let answer_by = now + self.ctx.answer_within();
        let Some(next) = self.take_ready(now, answer_by) else {
            return;
        };
        self.probe_requested = false;
        self.in_flight += 1;
        info!(
            account = next.0,
            "the app is stopped: one request probes whether its cause is gone"
        );
        let accounts = vec![next.0.clone()];
        let handle = self.jobs.spawn(job::run_batch(
            Arc::clone(&self.ctx),
            vec![next],
            now + self.ctx.settings.worker.send_deadline,
            job::Turns::Probe,
        ));
        self.batches.insert(handle.id(), accounts);
        self.claims_in_flight += 1;
    }

    /// The first account of the ready queue whose limiter lets it send now, marked busy, with
    /// its count of 401s in a row. Accounts that must wait are put on their timers on the way.
    fn take_ready(&mut self, now: Instant, answer_by: Instant) -> Option<(String, u32)> {
        loop {
            let account = self.ready.pop_front()?;
            let Some(slot) = self.slots.get_mut(&account) else {
                continue;
            };
            if slot.phase != Phase::Ready {
                continue;
            }
            // The budgets first: an account they hold back keeps its place at the head of the
            // line until the reserving task has reserved more (`Event::BudgetReserved`).
            let Some(ticket) = self.ctx.budget.take(chrono::Utc::now()) else {
                self.ready.push_front(account);
                return None;
            };
            match slot.limiter.try_acquire(now, answer_by) {
                Gate::Go => {
                    slot.budget_ticket = Some(ticket);
                    let waited = slot
                        .limiter_wait_since
                        .take()
                        .map(|at| now.saturating_duration_since(at));
                    self.ctx.metrics.token_wait(waited.unwrap_or_default());
                    slot.phase = Phase::Busy;
                    return Some((account, slot.unauthorized_streak));
                }
                Gate::WaitUntil(until, reason) => {
                    self.ctx.budget.give_back(ticket);
                    debug!(account, reason = reason.as_str(), "account waits");
                    slot.limiter_wait_since.get_or_insert(now);
                    if reason == WaitReason::DailyCap && slot.persisted_daily_cap != Some(until) {
                        slot.persisted_daily_cap = Some(until);
                        let until_wall = chrono::Utc::now()
                            + chrono::TimeDelta::from_std(until.saturating_duration_since(now))
                                .unwrap_or(chrono::TimeDelta::zero());
                        info!(account, until = %until_wall, reason = "daily_cap", "account paused: its follows in the last 24 hours reached rate_limit.daily_follows_per_account");
                        self.writes.pause_for_daily_cap(account.clone(), until_wall);
                    }
                    slot.phase = Phase::Waiting {
                        until,
                        for_jobs: false,
                    };
                    self.timers.push(Reverse((until, account)));
                }
            }
        }
    }

    /// Takes the answer of `account`'s request (see [`Event::Handoff`]): the account waits in
    /// `Recording` until its outcome is written. With `may_continue`, and when another account
    /// may send now, that account is the successor the job task goes on with, in the same
    /// slot: the next in the ready queue, so accounts keep their round-robin turns.
    fn handoff(
        &mut self,
        account: String,
        answered: Answered,
        may_continue: bool,
    ) -> Option<Successor> {
        let now = Instant::now();
        let slot = self.slots.get_mut(&account)?;
        let next = slot.answered(&self.ctx, answered, now);
        slot.phase = Phase::Recording;
        slot.after_record = Some(next);
        if !may_continue || !self.may_start(now) {
            return None;
        }
        let answer_by = now + self.ctx.answer_within();
        let (account, unauthorized_streak) = self.take_ready(now, answer_by)?;
        Some(Successor {
            account,
            unauthorized_streak,
            send_by: now + self.ctx.settings.worker.send_deadline,
        })
    }

    fn job_done(&mut self, account: String, report: JobReport) {
        // A slot handed to a successor is still in use.
        if !matches!(report, JobReport::Recorded { slot_kept: true }) {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let now = Instant::now();
        let Some(slot) = self.slots.get_mut(&account) else {
            return;
        };
        // Nothing was sent, or X refused it (a 401 that parked the account): unbilled.
        if matches!(
            report,
            JobReport::NoJob { .. }
                | JobReport::NotSent
                | JobReport::RetryAt(_)
                | JobReport::AccountParked
        ) {
            slot.unbilled(&self.ctx);
        }
        if slot.lost {
            self.slots.remove(&account);
            return;
        }
        if slot.hand_over {
            // Its answer is recorded in the ledger, which is all a successor needs.
            self.give_back(account);
            return;
        }
        let next = match report {
            JobReport::Sent(answered) => slot.answered(&self.ctx, answered, now),
            // The answer was taken at the handoff; the outcome is now written.
            JobReport::Recorded { .. } => slot.after_record.take().unwrap_or(Phase::Ready),
            JobReport::NoJob { next_run_at } => {
                slot.limiter.refund();
                let lease = self.ctx.settings.worker.account_lease;
                match next_run_at {
                    None => Phase::Idle { since: now },
                    Some(at) if job::instant_at(at) <= now + Duration::from_millis(50) => {
                        // A job is ready but could not be claimed: an operator paused or
                        // disabled the account, it needs re-authorization, or the lease is
                        // gone. Give it back rather than ask again and again; the leaser
                        // takes it again once it can be served.
                        debug!(account, "ready job not claimable: giving the account back");
                        self.give_back(account);
                        return;
                    }
                    Some(at) => {
                        let until = job::instant_at(at);
                        if until > now + lease / 2 {
                            Phase::Idle { since: now }
                        } else {
                            Phase::Waiting {
                                until,
                                for_jobs: true,
                            }
                        }
                    }
                }
            }
            JobReport::AccountParked | JobReport::Panicked => {
                self.give_back(account);
                return;
            }
            JobReport::NotSent => {
                slot.limiter.refund();
                Phase::Ready
            }
            JobReport::RetryAt(until) => {
                slot.limiter.refund();
                Phase::Waiting {
                    until: until.max(now),
                    for_jobs: false,
                }
            }
        };
        slot.phase = next;
        match next {
            Phase::Ready => self.ready.push_back(account),
            Phase::Waiting { until, .. } => self.timers.push(Reverse((until, account))),
            _ => {}
        }
    }
}
