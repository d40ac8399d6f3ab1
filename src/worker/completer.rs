//! The completer: writes job outcomes in batches. Job tasks hand it their completion and wait
//! for the answer; it writes whatever has queued up since its last write in one statement
//! (job rows and ledger rows), so under load a statement carries many jobs and when idle a
//! lone job is written at once, with no added delay.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Context;
use crate::store::record::{Completion, record_batch};

/// Most completions in one statement.
const MAX_BATCH: usize = 512;

pub type Request = (Completion, oneshot::Sender<bool>);

/// The completer's end of the channel, shared so that a completer restarted after a panic
/// takes up where the last one stopped.
#[derive(Clone)]
pub struct Inbox(Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>>);

impl Inbox {
    pub fn new(receiver: mpsc::UnboundedReceiver<Request>) -> Inbox {
        Inbox(Arc::new(tokio::sync::Mutex::new(receiver)))
    }
}

/// Where job tasks send their completions.
#[derive(Clone)]
pub struct Completer {
    sender: mpsc::UnboundedSender<Request>,
}

impl Completer {
    pub fn new() -> (Completer, mpsc::UnboundedReceiver<Request>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Completer { sender }, receiver)
    }

    /// Writes `completion`; true when the job was still this daemon's and is now recorded.
    pub async fn complete(&self, completion: Completion) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.sender.send((completion, reply)).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

/// Runs until `stop` is cancelled and nothing is left to write.
pub async fn run(ctx: Arc<Context>, inbox: Inbox, stop: CancellationToken) {
    let mut receiver = inbox.0.lock().await;
    loop {
        let first = tokio::select! {
            request = receiver.recv() => match request {
                Some(request) => request,
                None => return,
            },
            _ = stop.cancelled() => match receiver.try_recv() {
                Ok(request) => request,
                Err(_) => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        write(&ctx, batch).await;
    }
}

/// Writes a batch, retrying through a database blip. A job whose answer cannot be recorded
/// stays queued with its ledger row unanswered: it counts for its account until its
/// `answer_by`, after which the job is claimed and sent again, safely (follows are idempotent).
async fn write(ctx: &Context, batch: Vec<Request>) {
    let (completions, replies): (Vec<Completion>, Vec<oneshot::Sender<bool>>) =
        batch.into_iter().unzip();
    for delay_ms in [0u64, 200, 1000] {
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        match record_batch(&ctx.pool, &completions).await {
            Ok(updated) => {
                let updated: std::collections::HashSet<i64> = updated.into_iter().collect();
                for (completion, reply) in completions.iter().zip(replies) {
                    let _ = reply.send(updated.contains(&completion.job_id));
                }
                return;
            }
            Err(e) => {
                warn!(error = %e, jobs = completions.len(), "could not record job outcomes; retrying")
            }
        }
    }
    error!(
        jobs = completions.len(),
        "gave up recording job outcomes; they are sent again once their requests' answer_by has passed"
    );
    for reply in replies {
        let _ = reply.send(false);
    }
}
