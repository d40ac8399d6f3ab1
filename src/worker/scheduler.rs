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
//! | `tasks.rs` | the job tasks it owns: a job's trip from claim to turn to record, in one line |
//! | `slot.rs` | one account's phase in its turn, its limiter, what an answer changes |
//! | `holding.rs` | which accounts are kept: heartbeat, fair share, fencing, the leaser's question |
//! | `writes.rs` | the scheduler's database writes, as tasks it owns and waits for |
//! | `recovery.rs` | panics in the scheduler or a claim batch: logged, counted, recovered from |

mod holding;
mod recovery;
mod slot;
mod tasks;
mod writes;

pub use recovery::{Inbox, run_supervised};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Context;
use super::events::Event;
use crate::ratelimit::{Gate, WaitReason};
use slot::{Phase, Slot};
use tasks::Tasks;
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
    /// Its job tasks: claims, turns, records.
    tasks: Tasks,
    /// Its database writes (lease renewals and releases, pauses), run as tasks it owns.
    writes: Writes,
    /// Claim statements on their way to the database. While [`MAX_CLAIMS_IN_FLIGHT`] are, the
    /// accounts that become ready wait for the next one: under load each claim statement
    /// serves every account that became ready during the last one, with no timer.
    claims_in_flight: usize,
    /// Slots of `worker.concurrency` in use: an account let through holds one from its claim
    /// until its outcome is written, or passes it on to the successor named at its answer.
    in_flight: usize,
    /// Stopping: no request starts, no successor is named.
    stopping: bool,
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
            tasks: Tasks::default(),
            claims_in_flight: 0,
            in_flight: 0,
            stopping: false,
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
                Some(joined) = self.tasks.set.join_next_with_id(), if !self.tasks.set.is_empty() => {
                    self.task_ended(joined);
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
            // Every task that ended meanwhile, so that one claim statement serves every
            // account they free.
            self.reap_tasks();
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
        // No new request starts, no successor is named: each slot ends with its outcome's
        // write.
        self.stopping = true;
        while self.in_flight > 0 {
            tokio::select! {
                Some(joined) = self.tasks.set.join_next_with_id(), if !self.tasks.set.is_empty() => {
                    self.task_ended(joined);
                }
                event = self.events.recv() => match event {
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
            self.writes.reap();
        }
        let abandoned = self.in_flight;
        // The completer keeps the outcomes handed to it, written or logged at its own stop.
        self.tasks.set.abort_all();
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
            Event::BudgetReserved | Event::AppCounted => {}
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
        // With a per-app cap, until the app monitor's first count (`Event::AppCounted`).
        if !self.ctx.app_cap.counted() {
            return;
        }
        if self.claims_in_flight >= MAX_CLAIMS_IN_FLIGHT {
            return;
        }
        let concurrency = self.ctx.settings.worker.concurrency as usize;
        let send_by = now + self.ctx.settings.worker.send_deadline;
        let answer_by = now + self.ctx.answer_within();
        let mut batch: Vec<String> = Vec::new();
        while self.in_flight < concurrency {
            let Some(next) = self.take_ready(now, answer_by) else {
                break;
            };
            self.in_flight += 1;
            batch.push(next);
        }
        if !batch.is_empty() {
            // One claim statement for every account let through in this round.
            self.start_claim(batch, send_by, false);
        }
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
        !self.stopping && !self.app_stopped(now) && !self.fenced(now)
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
            account = next,
            "the app is stopped: one request probes whether its cause is gone"
        );
        self.start_claim(
            vec![next],
            now + self.ctx.settings.worker.send_deadline,
            true,
        );
    }

    /// The first account of the ready queue whose limiter lets it send now, marked busy.
    /// Accounts that must wait are put on their timers on the way.
    fn take_ready(&mut self, now: Instant, answer_by: Instant) -> Option<String> {
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
                    return Some(account);
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

    /// Puts an account where `phase` says: the ready queue, or a timer.
    fn enter(&mut self, account: String, phase: Phase) {
        if let Some(slot) = self.slots.get_mut(&account) {
            slot.phase = phase;
        }
        match phase {
            Phase::Ready => self.ready.push_back(account),
            Phase::Waiting { until, .. } => self.timers.push(Reverse((until, account))),
            _ => {}
        }
    }
}
