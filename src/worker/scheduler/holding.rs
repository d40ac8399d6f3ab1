//! Which accounts this daemon keeps: every `worker.heartbeat_interval` the leases are renewed
//! and accounts idle for that long are given back; a daemon holding more than its fair share
//! (a replica joined) gives the surplus back, accounts with nothing in flight first; a daemon
//! that cannot confirm its liveness session is fenced: it starts nothing, renews nothing, and
//! gives everything back once fenced for longer than a heartbeat. The leaser asks here which
//! accounts are held (see `Event::Holding`).

use std::cmp::Reverse;
use std::time::Instant;

use tracing::{info, warn};

use super::Scheduler;
use super::slot::{Phase, Slot};
use super::writes::HeartbeatPlan;
use crate::ratelimit::AccountLimiter;
use crate::worker::events::Holding;

impl Scheduler {
    /// Renews every lease and gives back accounts idle for a whole interval (the writes run
    /// in a task; their result comes back as `Event::Heartbeat`).
    pub(super) fn heartbeat(&mut self) {
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
        let mut plan = HeartbeatPlan {
            held: Vec::with_capacity(self.slots.len()),
            idle: Vec::new(),
        };
        for (account, slot) in &mut self.slots {
            match slot.phase {
                Phase::Idle { since } if now.saturating_duration_since(since) >= interval => {
                    slot.phase = Phase::Releasing;
                    plan.idle.push(account.clone());
                }
                Phase::Releasing => {}
                _ => plan.held.push(account.clone()),
            }
        }
        self.heartbeat_running = true;
        self.writes.heartbeat(plan, self.sender.clone());
    }

    /// The heartbeat's result: leases lost, idle accounts given back or kept (a job arrived
    /// meanwhile), and this daemon's fair share (`None`: it runs alone).
    pub(super) fn heartbeat_done(
        &mut self,
        lost: Vec<String>,
        released: Vec<String>,
        kept_idle: Vec<String>,
        share: Option<usize>,
    ) {
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

    /// Newly leased accounts join; one this daemon still had a slot for merges its limiters.
    pub(super) fn leased(&mut self, accounts: Vec<(String, AccountLimiter)>) {
        for (account, limiter) in accounts {
            match self.slots.get_mut(&account) {
                Some(slot) => {
                    // Leased again while this daemon still had a slot for it (its last
                    // request was still out, or its loss not yet noticed): another daemon may
                    // have sent for it in between, which only the fresh seed knows; the old
                    // limiter knows the request still out. Both count, the stricter of each.
                    slot.limiter.absorb(limiter, Instant::now());
                    slot.lost = false;
                    Self::wake_slot(slot, &account, &mut self.ready);
                }
                None => {
                    self.slots.insert(account.clone(), Slot::new(limiter));
                    self.ready.push_back(account);
                }
            }
        }
    }

    /// The leaser's question (see `Event::Holding`): wakes the held accounts among
    /// `enqueued`, and answers with the others and how many accounts are held.
    pub(super) fn holding(&mut self, enqueued: Vec<String>) -> Holding {
        let mut not_held = Vec::new();
        for account in enqueued {
            match self.slots.get_mut(&account) {
                Some(slot) => Self::wake_slot(slot, &account, &mut self.ready),
                None => not_held.push(account),
            }
        }
        Holding {
            not_held,
            count: self.slots.len(),
        }
    }

    pub(super) fn forget_or_mark_lost(&mut self, account: &str) {
        if let Some(slot) = self.slots.get_mut(account) {
            if slot.phase.in_turn() {
                slot.lost = true;
            } else {
                self.slots.remove(account);
            }
        }
    }

    /// Forgets an account and releases its lease.
    pub(super) fn give_back(&mut self, account: String) {
        self.slots.remove(&account);
        self.writes.release(vec![account]);
    }

    /// Whether this daemon is fenced: it cannot confirm its liveness session, so its peers may
    /// take its accounts over at any moment. A fenced daemon starts no request, leases and
    /// renews nothing, and, once fenced for longer than a heartbeat, gives back what it holds
    /// (see [`Scheduler::heartbeat`]). It goes on when the session is back.
    pub(super) fn fenced(&mut self, now: Instant) -> bool {
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
        }
        self.writes.release(now_free);
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
            if slot.phase.in_turn() && !slot.hand_over {
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
        for account in &moving {
            self.slots.remove(account);
        }
        self.writes.release(moving);
    }
}
