//! The scheduler's database writes: lease renewals and releases, daily-cap pauses, the
//! give-back after a claim batch panicked. Each runs as a task of [`Writes`], so the
//! scheduler's loop never waits on the database; the scheduler reaps them as they finish
//! and waits for the last ones when it stops.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{error, warn};

use super::super::Context;
use super::super::events::Event;
use super::super::supervise::panic_message;
use crate::states::PauseReason;
use crate::store::unanswered::Which;
use crate::store::{daemons, leases, pauses};

pub(super) struct Writes {
    ctx: Arc<Context>,
    tasks: JoinSet<()>,
}

/// What a heartbeat renews and gives back.
pub(super) struct HeartbeatPlan {
    /// Accounts to keep: their leases are renewed.
    pub(super) held: Vec<String>,
    /// Accounts idle for a whole interval: given back unless a job arrived meanwhile.
    pub(super) idle: Vec<String>,
}

impl Writes {
    pub(super) fn new(ctx: Arc<Context>) -> Writes {
        Writes {
            ctx,
            tasks: JoinSet::new(),
        }
    }

    /// Gives `accounts` back (if that fails, their leases run out by themselves).
    pub(super) fn release(&mut self, accounts: Vec<String>) {
        if accounts.is_empty() {
            return;
        }
        let ctx = Arc::clone(&self.ctx);
        self.tasks.spawn(async move {
            if let Err(e) =
                leases::release(&ctx.pool, &ctx.shards, &ctx.worker_id, &accounts, leases::Release::Now).await
            {
                warn!(error = %e, accounts = accounts.len(), "could not give accounts back; their leases run out by themselves");
            }
        });
    }

    /// Persists an account's daily-cap pause, so that operators see it and a successor
    /// waits too.
    pub(super) fn pause_for_daily_cap(&mut self, account: String, until: DateTime<Utc>) {
        let ctx = Arc::clone(&self.ctx);
        self.tasks.spawn(async move {
            if let Err(e) =
                pauses::pause_account(&ctx.pool, &account, until, &PauseReason::DailyCap).await
            {
                warn!(account, error = %e, "could not persist the daily-cap pause");
            }
        });
    }

    /// A job task panicked with these accounts' turns unreported: their jobs (`job`, or any
    /// of theirs in flight) wait in the queue with their ledger rows unanswered, and the
    /// accounts are given back.
    pub(super) fn give_back_after_panic(&mut self, accounts: Vec<String>, job: Option<i64>) {
        let ctx = Arc::clone(&self.ctx);
        self.tasks.spawn(async move {
            let why = "the daemon's turn for this job failed unexpectedly (a panic, logged with its cause); the request may have gone out";
            match job {
                Some(job_id) => ctx.note_unanswered(Which::Jobs(&[job_id]), why).await,
                None => ctx.note_unanswered(Which::Accounts(&accounts), why).await,
            }
            if let Err(e) =
                leases::release(&ctx.pool, &ctx.shards, &ctx.worker_id, &accounts, leases::Release::Now).await
            {
                warn!(error = %e, "could not give the accounts back; their leases run out by themselves");
            }
        });
    }

    /// The heartbeat's writes: ended pauses marked over, this daemon's own heartbeat, its fair
    /// share read, the leases of `plan.held` renewed and `plan.idle` given back. The result
    /// comes back to the scheduler as [`Event::Heartbeat`].
    pub(super) fn heartbeat(&mut self, plan: HeartbeatPlan, events: mpsc::UnboundedSender<Event>) {
        let ctx = Arc::clone(&self.ctx);
        self.tasks.spawn(async move {
            let HeartbeatPlan { held, idle } = plan;
            let lease_length = ctx.settings.worker.account_lease;
            if let Err(e) = pauses::resume_due(&ctx.pool, &ctx.worker_id).await {
                warn!(error = %e, "could not mark ended pauses as over");
            }
            if let Err(e) = daemons::heartbeat(&ctx.pool, &ctx.worker_id).await {
                warn!(error = %e, "could not renew this daemon's heartbeat");
            }
            let share = super::super::registry::fair_share(&ctx.pool, &ctx.worker_id, lease_length)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %e, "could not work out this daemon's share of accounts");
                    None
                });
            let lost = match leases::renew(&ctx.pool, &ctx.shards, &ctx.worker_id, &held, lease_length).await {
                Ok(kept) => {
                    let kept: HashSet<String> = kept.into_iter().collect();
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
                leases::release(&ctx.pool, &ctx.shards, &ctx.worker_id, &idle, leases::Release::IfIdle)
                    .await
                    .unwrap_or_else(|e| {
                        warn!(error = %e, "could not release idle accounts");
                        Vec::new()
                    })
            };
            let released_set: HashSet<&String> = released.iter().collect();
            let kept_idle = idle
                .into_iter()
                .filter(|a| !released_set.contains(a))
                .collect();
            let _ = events.send(Event::Heartbeat {
                lost,
                released,
                kept_idle,
                share,
            });
        });
    }

    /// Collects the writes that finished, logging any that panicked.
    pub(super) fn reap(&mut self) {
        while let Some(joined) = self.tasks.try_join_next() {
            self.log_failure(joined);
        }
    }

    /// Waits for the writes still running, until `deadline`; those still running then are
    /// cut (the daemon's stop releases every lease anyway).
    pub(super) async fn finish(mut self, deadline: tokio::time::Instant) {
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(joined)) => self.log_failure(joined),
                Ok(None) => return,
                Err(_) => {
                    warn!(
                        writes = self.tasks.len(),
                        "the scheduler stopped with database writes still running; they are cut"
                    );
                    self.tasks.abort_all();
                    return;
                }
            }
        }
    }

    fn log_failure(&self, joined: Result<(), tokio::task::JoinError>) {
        if let Err(failure) = joined
            && failure.is_panic()
        {
            self.ctx.metrics.task_panicked("scheduler_write");
            error!(
                cause = panic_message(failure.into_panic()),
                "a scheduler write panicked; the leases it would have changed run out by themselves"
            );
        }
    }
}
