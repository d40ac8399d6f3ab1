//! Panics in the scheduler itself: logged, counted and recovered from. Its job tasks die with
//! it, so their jobs wait in the queue with their ledger rows unanswered (whoever sends for
//! the account next counts them), every account is given back, to be leased and seeded
//! afresh, and a fresh scheduler starts. (A job task's panic is recovered from in
//! `tasks.rs`.)

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{error, warn};

use super::super::Context;
use super::super::events::Event;
use super::super::supervise::panic_message;
use super::Scheduler;
use crate::store::leases;
use crate::store::unanswered::Which;

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
        // Its own task, so that a panic in it is caught here; aborted with this future, as a
        // crash would end it.
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

/// After a scheduler panic: its job tasks died with it, so their jobs wait in the queue and
/// every account is given back.
async fn recover(ctx: &Context) {
    ctx.note_unanswered(
        Which::All,
        "the daemon's scheduler failed unexpectedly (a panic, logged with its cause); the request may have gone out",
    )
    .await;
    if let Err(e) = leases::release_all(&ctx.pool, &ctx.shards, &ctx.worker_id).await {
        warn!(error = %e, "could not give the accounts back; their leases expire by themselves");
    }
}
