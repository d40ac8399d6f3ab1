//! The completer: writes job outcomes in batches. Job tasks hand it their completion and wait
//! for the answer; it writes whatever has queued up in one statement (job rows and ledger
//! rows), so under load a statement carries many jobs and when idle a lone job is written at
//! once, with no added delay. Two statements may be in flight at once: while one commits and
//! its answer travels back, the next one already runs.
//!
//! A job task whose slot the scheduler handed to the next account in line also asks for that
//! account's next job: the same statement claims it (`store::record::record_and_claim`), so
//! under load a request costs one statement and one commit, not a record and a claim.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Context;
use crate::store::claim::ClaimedJob;
use crate::store::record::{
    Completion, MAX_OUTCOMES_PER_STATEMENT, RecordedAndClaimed, record_and_claim, record_batch,
};

/// Most statements in flight at once. A statement's time is not all Postgres's work: the
/// commit waits for the WAL to reach the disk, the answer travels back, the replies go out.
/// A second statement runs meanwhile. A third gains nothing: commits that send a NOTIFY
/// (every record does, through the finished-jobs trigger) take turns in Postgres, and each
/// statement would carry fewer jobs for the same fixed cost.
const STATEMENTS_IN_FLIGHT: usize = 2;

/// A completion to write, and the account to claim the next job of in the same statement.
pub struct Request {
    completion: Completion,
    claim_for: Option<String>,
    reply: oneshot::Sender<Written>,
}

/// What became of a [`Request`].
#[derive(Debug)]
pub struct Written {
    /// The job was still this daemon's and its outcome is recorded.
    pub recorded: bool,
    /// The claim asked for: `Ok(None)` when the account had no job ready or is no longer this
    /// daemon's to send for, `Err(())` when the statement failed (nothing was claimed).
    pub claimed: Result<Option<ClaimedJob>, ()>,
}

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
        self.write(completion, None).await.recorded
    }

    /// Writes `completion` and claims the next job of `successor` in the same statement.
    pub async fn complete_and_claim(&self, completion: Completion, successor: String) -> Written {
        self.write(completion, Some(successor)).await
    }

    async fn write(&self, completion: Completion, claim_for: Option<String>) -> Written {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            completion,
            claim_for,
            reply,
        };
        if self.sender.send(request).is_err() {
            return Written::failed();
        }
        answer.await.unwrap_or_else(|_| Written::failed())
    }
}

/// Runs until `stop` is cancelled and nothing is left to write.
pub async fn run(ctx: Arc<Context>, inbox: Inbox, stop: CancellationToken) {
    let mut receiver = inbox.0.lock().await;
    let mut writing = JoinSet::new();
    loop {
        while writing.len() >= STATEMENTS_IN_FLIGHT {
            finished(writing.join_next().await);
        }
        let first = tokio::select! {
            request = receiver.recv() => match request {
                Some(request) => request,
                None => break,
            },
            Some(done) = writing.join_next() => {
                finished(Some(done));
                continue;
            }
            _ = stop.cancelled() => match receiver.try_recv() {
                Ok(request) => request,
                Err(_) => break,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_OUTCOMES_PER_STATEMENT {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let ctx = Arc::clone(&ctx);
        writing.spawn(async move { write(&ctx, batch).await });
    }
    while let Some(done) = writing.join_next().await {
        finished(Some(done));
    }
}

/// A write that panicked dropped its replies: its job tasks see the write as failed, and
/// their jobs stay queued with their ledger rows unanswered (see [`write`]).
fn finished(done: Option<Result<(), JoinError>>) {
    if let Some(Err(e)) = done {
        error!(error = %e, "a batch of job outcomes was not written");
    }
}

/// Writes a batch, retrying through a database blip. A job whose answer cannot be recorded
/// stays queued with its ledger row unanswered: it counts for its account until its
/// `answer_by`, after which the job is claimed and sent again, safely (follows are idempotent).
async fn write(ctx: &Context, batch: Vec<Request>) {
    let mut completions = Vec::with_capacity(batch.len());
    let mut asks = Vec::with_capacity(batch.len());
    for request in batch {
        completions.push(request.completion);
        asks.push((request.claim_for, request.reply));
    }
    let claim_for: Vec<String> = asks.iter().filter_map(|(a, _)| a.clone()).collect();
    for delay_ms in [0u64, 200, 1000] {
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let written = if claim_for.is_empty() {
            record_batch(&ctx.pool, &completions)
                .await
                .map(|recorded| RecordedAndClaimed {
                    recorded,
                    claimed: Vec::new(),
                })
        } else {
            record_and_claim(
                &ctx.pool,
                &completions,
                &ctx.worker_id,
                &claim_for,
                ctx.answer_within(),
            )
            .await
        };
        match written {
            Ok(written) => {
                let recorded: std::collections::HashSet<i64> =
                    written.recorded.into_iter().collect();
                let mut claimed: HashMap<String, ClaimedJob> = written
                    .claimed
                    .into_iter()
                    .map(|job| (job.source_user_id.to_string(), job))
                    .collect();
                for (completion, (claim_for, reply)) in completions.iter().zip(asks) {
                    let _ = reply.send(Written {
                        recorded: recorded.contains(&completion.job_id),
                        claimed: Ok(claim_for.and_then(|account| claimed.remove(&account))),
                    });
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
    for (_, reply) in asks {
        let _ = reply.send(Written::failed());
    }
}

impl Written {
    fn failed() -> Written {
        Written {
            recorded: false,
            claimed: Err(()),
        }
    }
}
