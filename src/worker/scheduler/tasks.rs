//! The job tasks the scheduler owns, and a job's trip through them, in one straight line:
//!
//! 1. a claim task claims the next job of every account let through in a round (one
//!    statement), and hands the jobs back;
//! 2. a turn task runs each job's turn (`worker/turn.rs`) and hands back its end: the outcome
//!    to write and what the account does next;
//! 3. the scheduler takes the answer (the account's limiter is fed at once), names the next
//!    account in line as the successor when one may send, and starts a record task, which
//!    writes the outcome with the successor's claim in the same statement (`worker/record.rs`);
//! 4. once written, the account may be claimed again, and the successor's turn starts (back
//!    to 2).
//!
//! Every task is in one `JoinSet`, reaped as it ends and aborted with the scheduler. A task
//! that panics is logged, counted and recovered from: the jobs it held wait in the queue with
//! their ledger rows unanswered (whoever sends for the account next counts them), and its
//! accounts are given back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::{Id, JoinError};
use tracing::{debug, error};

use super::super::claim;
use super::super::clock::instant_at;
use super::super::events::{AfterTurn, NoTurn, SuccessorClaim, TaskDone, TurnEnd};
use super::super::record;
use super::super::supervise::panic_message;
use super::super::turn::{self, TurnOrders};
use super::Scheduler;
use super::slot::Phase;
use crate::store::claim::ClaimedJob;

/// What a job task is doing: read when it ends, and to recover if it panics.
pub(super) enum TaskOf {
    Claim {
        accounts: Vec<String>,
        send_by: Instant,
        probe: bool,
    },
    NothingClaimed {
        accounts: Vec<String>,
    },
    Turn {
        account: String,
        job_id: i64,
    },
    Record {
        account: String,
        job_id: i64,
        /// The account whose next job the record claims, and by when its request must go out.
        successor: Option<(String, Instant)>,
    },
}

/// The scheduler's job tasks, each with what it is doing.
#[derive(Default)]
pub(super) struct Tasks {
    pub(super) set: tokio::task::JoinSet<TaskDone>,
    of: HashMap<Id, TaskOf>,
}

impl Tasks {
    fn spawn(&mut self, of: TaskOf, task: impl Future<Output = TaskDone> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.of.insert(handle.id(), of);
    }
}

impl Scheduler {
    /// Starts one claim statement for `accounts` (each marked busy and counted in flight).
    pub(super) fn start_claim(&mut self, accounts: Vec<String>, send_by: Instant, probe: bool) {
        let task = claim::claim(Arc::clone(&self.ctx), accounts.clone());
        self.tasks.spawn(
            TaskOf::Claim {
                accounts,
                send_by,
                probe,
            },
            task,
        );
        self.claims_in_flight += 1;
    }

    fn start_turn(&mut self, job: ClaimedJob, send_by: Instant, probe: bool) {
        let account = job.source_user_id.to_string();
        let unauthorized_streak = self
            .slots
            .get(&account)
            .map_or(0, |slot| slot.unauthorized_streak);
        let job_id = job.id;
        let task = turn::run(
            Arc::clone(&self.ctx),
            job,
            TurnOrders {
                unauthorized_streak,
                send_by,
                probe,
            },
        );
        self.tasks
            .spawn(TaskOf::Turn { account, job_id }, async move {
                TaskDone::Turn(task.await)
            });
    }

    /// Takes every job task that has ended.
    pub(super) fn reap_tasks(&mut self) {
        while let Some(joined) = self.tasks.set.try_join_next_with_id() {
            self.task_ended(joined);
        }
    }

    pub(super) fn task_ended(&mut self, joined: Result<(Id, TaskDone), JoinError>) {
        let (id, done) = match joined {
            Ok((id, done)) => (id, Ok(done)),
            Err(failure) => (failure.id(), Err(failure)),
        };
        let Some(of) = self.tasks.of.remove(&id) else {
            return;
        };
        match (of, done) {
            (
                TaskOf::Claim {
                    accounts,
                    send_by,
                    probe,
                },
                Ok(TaskDone::Claimed(claimed)),
            ) => self.claimed(accounts, send_by, probe, claimed),
            (TaskOf::NothingClaimed { .. }, Ok(TaskDone::NothingClaimed(turns))) => {
                for (account, no_turn) in turns {
                    self.no_turn(account, no_turn);
                }
            }
            (TaskOf::Turn { account, job_id }, Ok(TaskDone::Turn(end))) => {
                self.turn_ended(account, job_id, end)
            }
            (
                TaskOf::Record {
                    account, successor, ..
                },
                Ok(TaskDone::Recorded { successor: claim }),
            ) => self.recorded(account, successor, claim),
            (of, Ok(_)) => self.task_failed(of, "a job task handed back what it was not asked for"),
            (of, Err(failure)) => {
                let cause = if failure.is_panic() {
                    panic_message(failure.into_panic())
                } else {
                    "the task was cancelled".to_owned()
                };
                self.task_failed(of, &cause)
            }
        }
    }

    /// A claim statement returned: each claimed job's turn starts; the accounts it found
    /// nothing for learn when their next job is due.
    fn claimed(
        &mut self,
        accounts: Vec<String>,
        send_by: Instant,
        probe: bool,
        claimed: Result<Vec<ClaimedJob>, ()>,
    ) {
        self.claims_in_flight = self.claims_in_flight.saturating_sub(1);
        let Ok(jobs) = claimed else {
            let at = Instant::now() + super::super::retry::RetryPolicy::AFTER_DATABASE_ERROR;
            for account in accounts {
                self.no_turn(account, NoTurn::RetryAt(at));
            }
            return;
        };
        let mut empty: std::collections::HashSet<String> = accounts.into_iter().collect();
        for job in jobs {
            empty.remove(job.source_user_id.as_str());
            self.start_turn(job, send_by, probe);
        }
        if !empty.is_empty() {
            let accounts: Vec<String> = empty.into_iter().collect();
            let task = claim::nothing_claimed(Arc::clone(&self.ctx), accounts.clone());
            self.tasks.spawn(TaskOf::NothingClaimed { accounts }, task);
        }
    }

    /// A job's turn ended: its answer is taken now (the limiter fed, the budget place kept or
    /// given back), the account waits in `Recording` until the outcome is written, and the
    /// next account in line, if one may send, is named the successor whose next job the
    /// record claims. Its slot of `worker.concurrency` passes to the successor.
    fn turn_ended(&mut self, account: String, job_id: i64, end: Box<TurnEnd>) {
        let now = Instant::now();
        let mut successor = None;
        if let Some(slot) = self.slots.get_mut(&account) {
            if !end.then.may_have_followed() {
                // Nothing was sent, X refused it, or it showed no follow was made: unbilled.
                slot.unbilled(&self.ctx);
            }
            let next = match &end.then {
                AfterTurn::Answered(answered) => slot.answered(answered, now),
                AfterTurn::NotSent => {
                    slot.limiter.refund();
                    Phase::Ready
                }
                AfterTurn::RetryAt(until) => {
                    slot.limiter.refund();
                    Phase::Waiting {
                        until: (*until).max(now),
                        for_jobs: false,
                    }
                }
                AfterTurn::Parked => {
                    // Given back once the outcome is written.
                    slot.hand_over = true;
                    Phase::Ready
                }
            };
            slot.phase = Phase::Recording;
            slot.after_record = Some(next);
            if self.may_start(now) {
                let answer_by = now + self.ctx.answer_within();
                successor = self
                    .take_ready(now, answer_by)
                    .map(|next| (next, now + self.ctx.settings.worker.send_deadline));
            }
        }
        let task = record::record(
            Arc::clone(&self.ctx),
            end,
            successor.as_ref().map(|(next, _)| next.clone()),
        );
        self.tasks.spawn(
            TaskOf::Record {
                account,
                job_id,
                successor,
            },
            task,
        );
    }

    /// A turn's outcome is written: the account may be claimed again, and the successor's
    /// turn starts with the job claimed for it.
    fn recorded(
        &mut self,
        account: String,
        successor: Option<(String, Instant)>,
        claim: Option<SuccessorClaim>,
    ) {
        if successor.is_none() {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        if let Some(slot) = self.slots.get_mut(&account) {
            let next = slot.after_record.take().unwrap_or(Phase::Ready);
            if slot.lost {
                self.slots.remove(&account);
            } else if slot.hand_over {
                // Its answer is in the ledger, which is all whoever takes it next needs.
                self.give_back(account);
            } else {
                self.enter(account, next);
            }
        }
        let Some((next, send_by)) = successor else {
            return;
        };
        match claim {
            Some(SuccessorClaim::Job(job)) => self.start_turn(job, send_by, false),
            Some(SuccessorClaim::None(no_turn)) => self.no_turn(next, no_turn),
            None => self.no_turn(next, NoTurn::RetryAt(Instant::now())),
        }
    }

    /// An account let through has no turn: its slot is free again, and so are its limiter's
    /// token and its budget place.
    fn no_turn(&mut self, account: String, no_turn: NoTurn) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let now = Instant::now();
        let Some(slot) = self.slots.get_mut(&account) else {
            return;
        };
        slot.unbilled(&self.ctx);
        slot.limiter.refund();
        if slot.lost {
            self.slots.remove(&account);
            return;
        }
        if slot.hand_over {
            self.give_back(account);
            return;
        }
        let next = match no_turn {
            NoTurn::RetryAt(until) => Phase::Waiting {
                until: until.max(now),
                for_jobs: false,
            },
            NoTurn::NoJob { next_run_at: None } => Phase::Idle { since: now },
            NoTurn::NoJob {
                next_run_at: Some(at),
            } if instant_at(at) <= now + Duration::from_millis(50) => {
                // A job is ready but could not be claimed: an operator paused or disabled
                // the account, it needs re-authorization, or the lease is gone. Give it back
                // rather than ask again and again; the leaser takes it again once it can be
                // served.
                debug!(account, "ready job not claimable: giving the account back");
                self.give_back(account);
                return;
            }
            NoTurn::NoJob {
                next_run_at: Some(at),
            } => {
                let until = instant_at(at);
                if until > now + self.ctx.settings.worker.account_lease / 2 {
                    Phase::Idle { since: now }
                } else {
                    Phase::Waiting {
                        until,
                        for_jobs: true,
                    }
                }
            }
        };
        self.enter(account, next);
    }

    /// A job task panicked (or handed back something else): its jobs wait in the queue and
    /// its accounts are given back.
    fn task_failed(&mut self, of: TaskOf, cause: &str) {
        let (task, accounts, job) = match of {
            TaskOf::Claim { accounts, .. } => {
                self.claims_in_flight = self.claims_in_flight.saturating_sub(1);
                ("claim_batch", accounts, None)
            }
            TaskOf::NothingClaimed { accounts } => ("claim_batch", accounts, None),
            TaskOf::Turn { account, job_id } => ("job", vec![account], Some(job_id)),
            TaskOf::Record {
                account,
                job_id,
                successor,
            } => {
                // The pair holds one slot between them.
                self.in_flight = self.in_flight.saturating_sub(1);
                self.ctx.metrics.task_panicked("record");
                error!(
                    cause,
                    job_id,
                    account,
                    "a job's record panicked: the job waits in the queue and its account (and the successor's) are given back"
                );
                let accounts: Vec<String> = [Some(account), successor.map(|(next, _)| next)]
                    .into_iter()
                    .flatten()
                    .collect();
                for account in &accounts {
                    self.slots.remove(account);
                }
                self.writes.give_back_after_panic(accounts, Some(job_id));
                return;
            }
        };
        self.ctx.metrics.task_panicked(task);
        // The accounts still waiting for this task's result.
        let busy: Vec<String> = accounts
            .into_iter()
            .filter(|a| matches!(self.slots.get(a).map(|s| s.phase), Some(Phase::Busy)))
            .collect();
        error!(
            cause,
            task,
            job_id = job,
            accounts = busy.len(),
            "a job task panicked: its jobs go back to the queue and its accounts are given back"
        );
        if busy.is_empty() {
            return;
        }
        self.in_flight = self.in_flight.saturating_sub(busy.len());
        for account in &busy {
            self.slots.remove(account);
        }
        self.writes.give_back_after_panic(busy, job);
    }
}
