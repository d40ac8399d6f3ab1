//! Keeping the daemon's background tasks alive: a task that panics is logged as an error with
//! its cause, counted in `followq_task_panics_total{task}`, and started again a second later,
//! while every other task (and every other account) carries on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::error;

use super::Context;
use super::retry::RetryPolicy;

/// How long a task that panicked waits before it starts again.
const RESTART_DELAY: Duration = RetryPolicy::AFTER_TASK_PANIC;

/// The text of a panic's payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

pub struct Supervisor {
    name: &'static str,
    ctx: Arc<Context>,
}

impl Supervisor {
    pub fn new(name: &'static str, ctx: Arc<Context>) -> Supervisor {
        Supervisor { name, ctx }
    }

    /// Runs `task` until it returns (normally once `stop` is cancelled), starting it again
    /// after each panic.
    pub async fn run<F, Fut>(self, stop: CancellationToken, task: F)
    where
        F: Fn(Arc<Context>, CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            // Aborted with this future: a daemon dropped where it stands (a crash, in effect)
            // leaves no task of its running.
            let handle =
                AbortOnDropHandle::new(tokio::spawn(task(Arc::clone(&self.ctx), stop.clone())));
            match handle.await {
                Err(failure) if failure.is_panic() => {
                    self.ctx.metrics.task_panicked(self.name);
                    error!(
                        task = self.name,
                        cause = panic_message(failure.into_panic()),
                        "a daemon task panicked; it starts again in {RESTART_DELAY:?}"
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RESTART_DELAY) => {}
                    }
                }
                _ => return,
            }
        }
    }
}
