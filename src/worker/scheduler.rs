//! The scheduler: one task that owns every leased account's limiter and decides which account
//! sends next. No locks: everything reaches it as an [`Event`].
//!
//! - Accounts whose gates are open wait in a FIFO ready queue, so accounts are served round
//!   robin and a paused, limited or slow account never holds up another.
//! - An account has at most one job in flight; at most `worker.concurrency` are in flight in
//!   all (each job is a task holding one permit).
//! - An account that must wait sits on a timer heap until the exact instant its gate opens
//!   (governor's readiness, the window's end, a pause's end): no polling.
//! - Every `worker.heartbeat_interval` the leases are renewed in one statement, accounts idle
//!   for that long are given back, and a daemon holding more than its fair share (a replica
//!   joined) gives the surplus back, starting with accounts that have nothing in flight.
//! - While this daemon cannot confirm its liveness session it starts no request (fencing).
//! - On shutdown no new request starts; requests in flight get `worker.shutdown_grace` to
//!   finish and record their answers, and the leases are renewed meanwhile.
//! - A panic in the scheduler itself is logged, counted and recovered from: the jobs it was
//!   running go back to the queue (their ledger rows unanswered), every lease is given back,
//!   and a fresh scheduler starts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, error, info, warn};

use super::Context;
use super::budget::Ticket;
use super::events::{Answered, Event, JobReport, Successor};
use super::job::{self, panic_message};
use crate::ratelimit::{AccountLimiter, Gate, WaitReason};
use crate::states::PauseReason;
use crate::store::unanswered::Which;
use crate::store::{leases, pauses};

/// Claim statements the scheduler lets run at once (see `Scheduler::claims_in_flight`).
const MAX_CLAIMS_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In the ready queue.
    Ready,
    /// A job task is running for it.
    Busy,
    /// Its answer is taken ([`Event::Handoff`]) and its outcome is being written; then it
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

struct Slot {
    limiter: AccountLimiter,
    phase: Phase,
    unauthorized_streak: u32,
    /// The lease was lost while a job ran: drop the slot when it ends.
    lost: bool,
    /// Beyond this daemon's fair share: give the account back when its turn ends.
    hand_over: bool,
    /// The daily-cap pause already persisted for this wait.
    persisted_daily_cap: Option<Instant>,
    /// When the limiter first made the account wait (for the token-wait metric).
    limiter_wait_since: Option<Instant>,
    /// Where a `Recording` account goes once its outcome is written.
    after_record: Option<Phase>,
    /// Its request's places in the budgets, given back if the request proves unbilled.
    budget_ticket: Option<Ticket>,
}

/// The scheduler's end of its channel, shared so that a scheduler started again after a panic
/// takes up where the last one stopped.
pub struct Inbox(Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>>);

impl Inbox {
    pub fn new(receiver: mpsc::UnboundedReceiver<Event>) -> Inbox {
        Inbox(Arc::new(tokio::sync::Mutex::new(receiver)))
    }
}

/// Runs the scheduler until `shutdown` and the drain are over, starting a fresh one after a
/// panic. Returns how many requests were still in flight when the grace period ran out.
pub async fn run_supervised(ctx: Arc<Context>, inbox: Inbox, shutdown: CancellationToken) -> usize {
    loop {
        let events = Arc::clone(&inbox.0).lock_owned().await;
        let scheduler = Scheduler::new(Arc::clone(&ctx), events);
        // Aborted with this future, as a crash would end it.
        match AbortOnDropHandle::new(tokio::spawn(scheduler.run(shutdown.clone()))).await {
            Ok(abandoned) => return abandoned,
            Err(failure) => {
                let cause = if failure.is_panic() {
                    panic_message(failure.into_panic())
                } else {
                    "the scheduler task was cancelled".to_owned()
                };
                ctx.metrics.task_panicked("scheduler");
                error!(
                    cause,
                    "the scheduler panicked: its running jobs go back to the queue, its accounts are given back, and a fresh scheduler starts"
                );
                recover(&ctx).await;
                if shutdown.is_cancelled() {
                    return 0;
                }
            }
        }
    }
}

/// A claim batch panicked with these accounts' turns unreported: their jobs wait in the queue
/// (ledger rows unanswered) and the accounts are given back.
async fn give_back_after_panic(ctx: &Context, accounts: &[String]) {
    ctx.note_unanswered(
        Which::Accounts(accounts),
        "the daemon's claim batch failed unexpectedly (a panic, logged with its cause); the request may have gone out",
    )
    .await;
    if let Err(e) = leases::release(&ctx.pool, &ctx.worker_id, accounts).await {
        warn!(error = %e, "could not give the accounts back; their leases expire by themselves");
    }
}

/// After a scheduler panic: its job tasks died with it, so their jobs wait in the queue
/// (ledger rows unanswered: whoever sends for the account next counts them) and every account
/// is given back, to be leased and seeded afresh.
async fn recover(ctx: &Context) {
    ctx.note_unanswered(
        Which::All,
        "the daemon's scheduler failed unexpectedly (a panic, logged with its cause); the request may have gone out",
    )
    .await;
    if let Err(e) = leases::release_all(&ctx.pool, &ctx.worker_id).await {
        warn!(error = %e, "could not give the accounts back; their leases expire by themselves");
    }
    ctx.held_clear();
}

pub struct Scheduler {
    ctx: Arc<Context>,
    events: tokio::sync::OwnedMutexGuard<mpsc::UnboundedReceiver<Event>>,
    sender: mpsc::UnboundedSender<Event>,
    slots: HashMap<String, Slot>,
    ready: VecDeque<String>,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    jobs: JoinSet<()>,
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
                    Some(Event::Heartbeat { lost, .. }) => {
                        self.heartbeat_running = false;
                        for account in lost {
                            self.forget_or_mark_lost(&account);
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                // The leases of the accounts still in flight are renewed while they drain.
                _ = tokio::time::sleep_until(self.next_heartbeat.into()) => self.heartbeat(),
            }
            self.reap_batches();
        }
        let abandoned = self.in_flight;
        self.jobs.abort_all();
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
            Event::Leased(accounts) => {
                for (account, limiter) in accounts {
                    match self.slots.get_mut(&account) {
                        Some(slot) => {
                            // Leased again while this daemon still had a slot for it (its
                            // last request was still out, or its loss not yet noticed):
                            // another daemon may have sent for it in between, which only the
                            // fresh seed knows; the old limiter knows the request still out.
                            // Both count, the stricter of each.
                            slot.limiter.absorb(limiter, Instant::now());
                            slot.lost = false;
                            Self::wake_slot(slot, &account, &mut self.ready);
                        }
                        None => {
                            self.ctx.held_insert(&account);
                            self.slots.insert(
                                account.clone(),
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
                                },
                            );
                            self.ready.push_back(account);
                        }
                    }
                }
            }
            Event::Wake(accounts) => {
                for account in accounts {
                    if let Some(slot) = self.slots.get_mut(&account) {
                        Self::wake_slot(slot, &account, &mut self.ready);
                    }
                }
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
                        if let Some(ticket) = slot.budget_ticket.take() {
                            self.ctx.budget.give_back(ticket);
                        }
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
            } => {
                self.heartbeat_running = false;
                for account in lost {
                    warn!(
                        account,
                        "lease lost: another daemon may now send for this account"
                    );
                    self.forget_or_mark_lost(&account);
                }
                for account in released {
                    if matches!(
                        self.slots.get(&account).map(|s| s.phase),
                        Some(Phase::Releasing)
                    ) {
                        self.slots.remove(&account);
                        self.ctx.held_remove(&account);
                    }
                }
                for account in kept_idle {
                    if let Some(slot) = self.slots.get_mut(&account)
                        && slot.phase == Phase::Releasing
                    {
                        slot.phase = Phase::Ready;
                        self.ready.push_back(account);
                    }
                }
                if let Some(share) = share {
                    self.give_back_surplus(share);
                }
            }
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

    fn forget_or_mark_lost(&mut self, account: &str) {
        if let Some(slot) = self.slots.get_mut(account) {
            if matches!(slot.phase, Phase::Busy | Phase::Recording) {
                slot.lost = true;
            } else {
                self.slots.remove(account);
                self.ctx.held_remove(account);
            }
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

    /// Whether this daemon is fenced: it cannot confirm its liveness session, so its peers may
    /// take its accounts over at any moment. A fenced daemon starts no request, leases and
    /// renews nothing, and, once fenced for longer than a heartbeat, gives back what it holds
    /// (see [`Scheduler::heartbeat`]). It goes on when the session is back.
    fn fenced(&mut self, now: Instant) -> bool {
        if self.ctx.is_alive(now) {
            if let Some(since) = self.fenced_since.take() {
                info!(
                    fenced_for = ?now.saturating_duration_since(since),
                    "liveness session confirmed again: sending resumes"
                );
            }
            return false;
        }
        // Before the session first opens (at start) there is nothing to fence or give back.
        if self.fenced_since.is_none() && self.ctx.was_alive() {
            warn!(
                "liveness session not confirmed: fenced, no request starts and no lease is renewed"
            );
            self.fenced_since = Some(now);
        }
        true
    }

    /// Fenced for longer than a heartbeat: gives back every account, at once those with
    /// nothing in the air, the others once their request is answered and its outcome written
    /// (so that whoever takes the account next reads the answer in the ledger). Their leases
    /// are not renewed meanwhile; the releases are tried now, and the leases run out by
    /// themselves if the database cannot be reached.
    fn give_back_while_fenced(&mut self) {
        let mut now_free = Vec::new();
        for (account, slot) in &mut self.slots {
            match slot.phase {
                Phase::Busy | Phase::Recording => slot.hand_over = true,
                Phase::Releasing => {}
                Phase::Ready | Phase::Waiting { .. } | Phase::Idle { .. } => {
                    now_free.push(account.clone())
                }
            }
        }
        if now_free.is_empty() {
            return;
        }
        warn!(
            accounts = now_free.len(),
            "fenced for longer than a heartbeat: giving every account back"
        );
        for account in &now_free {
            self.slots.remove(account);
            self.ctx.held_remove(account);
        }
        let ctx = Arc::clone(&self.ctx);
        tokio::spawn(async move {
            if let Err(e) = leases::release(&ctx.pool, &ctx.worker_id, &now_free).await {
                warn!(error = %e, "could not give the accounts back; their leases run out by themselves");
            }
        });
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
                        Self::persist_daily_cap(&self.ctx, &account, until);
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
        let next = Self::phase_after(&self.ctx, slot, answered, now);
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

    /// Feeds an answered request to the account's limiter (and gives its budget places back
    /// when X's answer shows it billed nothing): where the account goes next.
    fn phase_after(ctx: &Context, slot: &mut Slot, answered: Answered, now: Instant) -> Phase {
        let Answered {
            sent_at,
            completed_at,
            server,
            may_have_followed,
            unauthorized,
            pause_until,
        } = answered;
        slot.limiter
            .record_response(sent_at, completed_at, server, may_have_followed);
        // What may have reached X may be billed; the rest gives its places back.
        if let Some(ticket) = slot.budget_ticket.take()
            && !may_have_followed
        {
            ctx.budget.give_back(ticket);
        }
        slot.unauthorized_streak = if unauthorized {
            slot.unauthorized_streak + 1
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

    /// Reaps finished claim batches (their turns' results arrive as events). A batch that
    /// panicked outside its jobs' turns reported nothing for its accounts that are still busy:
    /// their jobs go back to the queue and the accounts are given back.
    fn reap_batches(&mut self) {
        while let Some(joined) = self.jobs.try_join_next_with_id() {
            let (id, failure) = match joined {
                Ok((id, ())) => (id, None),
                Err(failure) => (failure.id(), Some(failure)),
            };
            let accounts = self.batches.remove(&id).unwrap_or_default();
            let Some(failure) = failure else { continue };
            let cause = if failure.is_panic() {
                panic_message(failure.into_panic())
            } else {
                "the claim batch was cancelled".to_owned()
            };
            self.ctx.metrics.task_panicked("claim_batch");
            error!(
                cause,
                accounts = accounts.len(),
                "a claim batch panicked: its running jobs go back to the queue and its accounts are given back"
            );
            let busy: Vec<String> = accounts
                .into_iter()
                .filter(|a| matches!(self.slots.get(a).map(|s| s.phase), Some(Phase::Busy)))
                .collect();
            if busy.is_empty() {
                continue;
            }
            self.in_flight = self.in_flight.saturating_sub(busy.len());
            for account in &busy {
                self.slots.remove(account);
                self.ctx.held_remove(account);
            }
            let ctx = Arc::clone(&self.ctx);
            tokio::spawn(async move {
                give_back_after_panic(&ctx, &busy).await;
            });
        }
    }

    fn persist_daily_cap(ctx: &Arc<Context>, account: &str, until: Instant) {
        let ctx = Arc::clone(ctx);
        let account = account.to_owned();
        let until_wall = chrono::Utc::now()
            + chrono::TimeDelta::from_std(until.saturating_duration_since(Instant::now()))
                .unwrap_or(chrono::TimeDelta::zero());
        info!(account, until = %until_wall, reason = "daily_cap", "account paused: its follows in the last 24 hours reached rate_limit.daily_follows_per_account");
        tokio::spawn(async move {
            if let Err(e) =
                pauses::pause_account(&ctx.pool, &account, until_wall, &PauseReason::DailyCap).await
            {
                warn!(account, error = %e, "could not persist the daily-cap pause");
            }
        });
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
        ) && let Some(ticket) = slot.budget_ticket.take()
        {
            self.ctx.budget.give_back(ticket);
        }
        if slot.lost {
            self.slots.remove(&account);
            self.ctx.held_remove(&account);
            return;
        }
        if slot.hand_over {
            // Its answer is recorded in the ledger, which is all a successor needs.
            self.give_back(account);
            return;
        }
        let next = match report {
            JobReport::Sent(answered) => Self::phase_after(&self.ctx, slot, answered, now),
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

    /// A replica joined: give back the accounts beyond this daemon's fair share, so that it
    /// gets its part within a heartbeat. Accounts with a request in flight stay (they move
    /// later, once answered). Accounts that could send now go first, so the new replica has
    /// work at once; then those waiting for their limiter, the longest waits first (an
    /// account paused for its window can only be taken once the pause ends).
    fn give_back_surplus(&mut self, share: usize) {
        let leaving = self.slots.values().filter(|slot| slot.hand_over).count();
        let surplus = self.slots.len().saturating_sub(share + leaving);
        if surplus == 0 {
            return;
        }
        let mut movable: Vec<(Option<Instant>, String)> = self
            .slots
            .iter()
            .filter_map(|(account, slot)| match slot.phase {
                Phase::Waiting { until, .. } => Some((Some(until), account.clone())),
                Phase::Ready | Phase::Idle { .. } => Some((None, account.clone())),
                Phase::Busy | Phase::Recording | Phase::Releasing => None,
            })
            .collect();
        // `None` (could send now) first, then the latest `until` first.
        movable.sort_by_key(|(until, _)| until.map(Reverse));
        let moving: Vec<String> = movable
            .into_iter()
            .take(surplus)
            .map(|(_, account)| account)
            .collect();
        // The rest of the surplus is busy: those go when their request has been answered.
        let mut after_turn = 0;
        for slot in self.slots.values_mut() {
            if after_turn + moving.len() >= surplus {
                break;
            }
            if matches!(slot.phase, Phase::Busy | Phase::Recording) && !slot.hand_over {
                slot.hand_over = true;
                after_turn += 1;
            }
        }
        info!(
            now = moving.len(),
            after_their_request = after_turn,
            share,
            "holding more than a fair share: giving accounts back for other replicas"
        );
        if moving.is_empty() {
            return;
        }
        for account in &moving {
            self.slots.remove(account);
            self.ctx.held_remove(account);
        }
        let ctx = Arc::clone(&self.ctx);
        tokio::spawn(async move {
            if let Err(e) = leases::release(&ctx.pool, &ctx.worker_id, &moving).await {
                warn!(error = %e, "could not give accounts back; their leases expire by themselves");
            }
        });
    }

    /// Forgets an account and releases its lease (in a task).
    fn give_back(&mut self, account: String) {
        self.slots.remove(&account);
        self.ctx.held_remove(&account);
        let ctx = Arc::clone(&self.ctx);
        tokio::spawn(async move {
            if let Err(e) = leases::release(&ctx.pool, &ctx.worker_id, &[account]).await {
                warn!(error = %e, "could not release an account's lease; it expires by itself");
            }
        });
    }

    /// Renews every lease and gives back accounts idle for a whole interval, in a task. A
    /// fenced daemon renews nothing, and gives everything back once fenced for longer than
    /// an interval.
    fn heartbeat(&mut self) {
        let interval = self.ctx.settings.worker.heartbeat_interval;
        let now = Instant::now();
        self.next_heartbeat = now + interval;
        if self.fenced(now) {
            if self
                .fenced_since
                .is_some_and(|since| now.saturating_duration_since(since) >= interval)
            {
                self.give_back_while_fenced();
            }
            return;
        }
        if self.heartbeat_running {
            return;
        }
        let mut held = Vec::with_capacity(self.slots.len());
        let mut idle = Vec::new();
        for (account, slot) in &mut self.slots {
            match slot.phase {
                Phase::Idle { since } if now.saturating_duration_since(since) >= interval => {
                    slot.phase = Phase::Releasing;
                    idle.push(account.clone());
                }
                Phase::Releasing => {}
                _ => held.push(account.clone()),
            }
        }
        self.heartbeat_running = true;
        let ctx = Arc::clone(&self.ctx);
        let sender = self.sender.clone();
        tokio::spawn(async move {
            let lease_length = ctx.settings.worker.account_lease;
            if let Err(e) = pauses::resume_due(&ctx.pool, &ctx.worker_id).await {
                warn!(error = %e, "could not mark ended pauses as over");
            }
            if let Err(e) = crate::store::daemons::heartbeat(&ctx.pool, &ctx.worker_id).await {
                warn!(error = %e, "could not renew this daemon's heartbeat");
            }
            let share = super::registry::fair_share(&ctx.pool, &ctx.worker_id, lease_length)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %e, "could not work out this daemon's share of accounts");
                    None
                });
            let lost = match leases::renew(&ctx.pool, &ctx.worker_id, &held, lease_length).await {
                Ok(kept) => {
                    let kept: std::collections::HashSet<String> = kept.into_iter().collect();
                    held.into_iter().filter(|a| !kept.contains(a)).collect()
                }
                Err(e) => {
                    warn!(error = %e, "could not renew account leases; trying again next heartbeat");
                    Vec::new()
                }
            };
            let released = if idle.is_empty() {
                Vec::new()
            } else {
                leases::release_idle(&ctx.pool, &ctx.worker_id, &idle)
                    .await
                    .unwrap_or_else(|e| {
                        warn!(error = %e, "could not release idle accounts");
                        Vec::new()
                    })
            };
            let released_set: std::collections::HashSet<&String> = released.iter().collect();
            let kept_idle = idle
                .into_iter()
                .filter(|a| !released_set.contains(a))
                .collect();
            let _ = sender.send(Event::Heartbeat {
                lost,
                released,
                kept_idle,
                share,
            });
        });
    }
}
