//! The completer: writes job outcomes in batches. Record tasks (`record.rs`) hand it their
//! completion and wait for the answer; it writes whatever has queued up in one statement (job rows and ledger
//! rows), so under load a statement carries many jobs and when idle a lone job is written at
//! once, with no added delay. Two statements may be in flight at once: while one commits and
//! its answer travels back, the next one already runs.
//!
//! A record task for which the scheduler named the next account in line also asks for that
//! account's next job: the same statement claims it (`store::record::record_and_claim`), so
//! under load a request costs one statement and one commit, not a record and a claim.
//!
//! **X's answer is never dropped.** An outcome whose write fails (the database is restarting,
//! or cut off) waits here and is tried again, with backoff and at once when another write
//! succeeds, for as long as the daemon lives; its record task waits with it, so its account stays
//! in `Recording` and sends nothing more meanwhile. A retry writes the outcome alone: the claim
//! it carried is given up (its successor account tries again later). The record statement is
//! idempotent, so a retry after a commit whose reply was lost changes nothing. How many
//! outcomes wait shows in `followq_outcomes_waiting` and on `/readyz`. When the daemon stops,
//! each outcome still unwritten is logged at error level with what an operator needs to
//! reconcile it by hand.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Context;
use super::retry::RetryPolicy;
use crate::store::claim::ClaimedJob;
use crate::store::finished::{FinishedJob, announce_finished};
use crate::store::record::{
    Completion, MAX_OUTCOMES_PER_STATEMENT, NextState, RecordedAndClaimed, record_and_claim,
    record_batch,
};

/// Most statements in flight at once. A statement's time is not all Postgres's work: the
/// commit waits for the WAL to reach the disk, the answer travels back, the replies go out.
/// A second statement runs meanwhile. A third gains nothing: commits that send a NOTIFY
/// (every record does, through the finished-jobs trigger) take turns in Postgres, and each
/// statement would carry fewer jobs for the same fixed cost.
const STATEMENTS_IN_FLIGHT: usize = 2;

/// When the daemon stops with outcomes still waiting, they get one last try this long.
const LAST_TRY: Duration = Duration::from_secs(2);

/// A completion to write, and the account to claim the next job of in the same statement.
pub struct Request {
    completion: Completion,
    claim_for: Option<String>,
    /// Why the claim this request carried will not be made, once that is known.
    claim_not_made: Option<ClaimNotMade>,
    reply: oneshot::Sender<Written>,
}

/// What became of a [`Request`].
#[derive(Debug)]
pub struct Written {
    /// The job was still this daemon's and its outcome is recorded.
    pub recorded: bool,
    /// The claim asked for: `Ok(None)` when the account had no job ready or is no longer this
    /// daemon's to send for, `Err` when it was not made.
    pub claimed: Result<Option<ClaimedJob>, ClaimNotMade>,
}

/// Why the claim of a successor's job was not made with its predecessor's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimNotMade {
    /// A write failed (the outcome is tried again alone) or the completer is gone.
    Failed,
    /// The successor's rows are on another shard than the outcome's (Citus): one statement
    /// cannot write one and claim the other.
    OtherShard,
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

/// Where record tasks send their completions.
#[derive(Clone)]
pub struct Completer {
    sender: mpsc::UnboundedSender<Request>,
}

impl Completer {
    pub fn new() -> (Completer, mpsc::UnboundedReceiver<Request>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Completer { sender }, receiver)
    }

    /// Writes `completion`, however long the database takes to answer; true when the job was
    /// still this daemon's and is now recorded.
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
            claim_not_made: None,
            reply,
        };
        if self.sender.send(request).is_err() {
            return Written::failed();
        }
        answer.await.unwrap_or_else(|_| Written::failed())
    }
}

/// What one write did with its batch: the requests it could not write come back.
struct Attempt {
    unwritten: Vec<Request>,
    /// The server answered with an error (it is up): the batch may hold an outcome it
    /// refuses, so the next tries write each one alone, and one cannot hold up the others.
    refused: bool,
}

/// Outcomes whose write failed, waiting for the next try.
#[derive(Default)]
struct Waiting {
    requests: Vec<Request>,
    /// Tries in a row that failed.
    failures: u32,
    next_try: Option<Instant>,
    one_by_one: bool,
    /// A retry of these is in flight.
    retrying: bool,
}

/// Runs until `stop` is cancelled and nothing is left to write (or what is left could not be
/// written in a last try, and is logged).
pub async fn run(ctx: Arc<Context>, inbox: Inbox, stop: CancellationToken) {
    let mut receiver = inbox.0.lock().await;
    let mut writing: JoinSet<(bool, Attempt)> = JoinSet::new();
    let mut waiting = Waiting::default();
    loop {
        let room = writing.len() < STATEMENTS_IN_FLIGHT;
        let retry_at = waiting
            .next_try
            .filter(|_| room && !waiting.retrying && !waiting.requests.is_empty());
        tokio::select! {
            biased;
            Some(done) = writing.join_next(), if !writing.is_empty() => {
                settle(&ctx, &mut waiting, done);
            }
            _ = sleep_until(retry_at), if retry_at.is_some() => {
                let batch = std::mem::take(&mut waiting.requests);
                waiting.retrying = true;
                waiting.next_try = None;
                let one_by_one = waiting.one_by_one;
                let ctx = Arc::clone(&ctx);
                writing.spawn(async move { (true, write(&ctx, batch, one_by_one).await) });
            }
            request = receiver.recv(), if room => {
                let Some(first) = request else { break };
                let batch = take_batch(first, &mut receiver);
                let ctx = Arc::clone(&ctx);
                writing.spawn(async move { (false, write(&ctx, batch, false).await) });
            }
            _ = stop.cancelled() => break,
        }
    }
    // Stopping: what is queued still gets written, then the writes in flight end.
    while let Ok(first) = receiver.try_recv() {
        let batch = take_batch(first, &mut receiver);
        let ctx = Arc::clone(&ctx);
        writing.spawn(async move { (false, write(&ctx, batch, false).await) });
    }
    while let Some(done) = writing.join_next().await {
        settle(&ctx, &mut waiting, done);
    }
    if waiting.requests.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut waiting.requests);
    let tried: Vec<Completion> = batch.iter().map(|r| r.completion.clone()).collect();
    let abandoned: Vec<Completion> =
        match tokio::time::timeout(LAST_TRY, write(&ctx, batch, waiting.one_by_one)).await {
            Ok(attempt) => attempt
                .unwritten
                .into_iter()
                .map(|r| r.completion)
                .collect(),
            // Still no answer from the database: none of them is known to be written.
            Err(_) => tried,
        };
    ctx.metrics.set_outcomes_waiting(0);
    if abandoned.is_empty() {
        return;
    }
    for completion in &abandoned {
        log_abandoned(completion);
    }
    error!(
        outcomes = abandoned.len(),
        "stopped with answers from X that could not be written, each logged above: their jobs stay queued and count for their accounts until their answer_by"
    );
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// `first` and whatever else is queued behind it, up to a statement's worth.
fn take_batch(first: Request, receiver: &mut mpsc::UnboundedReceiver<Request>) -> Vec<Request> {
    let mut batch = vec![first];
    while batch.len() < MAX_OUTCOMES_PER_STATEMENT {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    batch
}

/// Takes in the end of a write: its unwritten requests join the waiting ones (tried again
/// after a backoff), or, when it wrote everything while outcomes wait, they are tried at once.
fn settle(ctx: &Context, waiting: &mut Waiting, done: Result<(bool, Attempt), JoinError>) {
    let (retry, attempt) = match done {
        Ok(done) => done,
        // A write that panicked dropped its replies: its record tasks see the write as failed,
        // and their jobs stay queued with their ledger rows unanswered.
        Err(e) => {
            error!(error = %e, "a batch of job outcomes was not written");
            return;
        }
    };
    if retry {
        waiting.retrying = false;
    }
    let was_waiting = waiting.requests.len();
    if attempt.unwritten.is_empty() {
        if retry {
            info!(
                outcomes_still_waiting = was_waiting,
                "the database answers again: outcomes that waited are written"
            );
            waiting.failures = 0;
            waiting.one_by_one = false;
        }
        if !waiting.requests.is_empty() {
            // The database answers: try the waiting ones now.
            waiting.next_try = Some(Instant::now());
        }
    } else {
        if !retry {
            warn!(
                outcomes = attempt.unwritten.len(),
                "could not write X's answers; they wait in the daemon and are written once the database answers (their accounts send nothing meanwhile)"
            );
        }
        waiting.failures = waiting.failures.saturating_add(1);
        waiting.one_by_one |= attempt.refused;
        waiting.requests.extend(attempt.unwritten);
        waiting.next_try = Some(Instant::now() + RetryPolicy::record_retry_delay(waiting.failures));
    }
    ctx.metrics
        .set_outcomes_waiting(i64::try_from(waiting.requests.len()).unwrap_or(i64::MAX));
}

/// Writes `batch` in one statement, or one statement per outcome with `one_by_one`; each
/// request written gets its reply, the others come back.
///
/// On Citus a statement names one shard's accounts: the batch is written as one statement per
/// shard, in flight together, and a successor on another shard than its request's outcome is
/// not claimed with it (its claim is given up, as for a retried write, and it is claimed on
/// its own), so that every request can also be written alone.
async fn write(ctx: &Context, batch: Vec<Request>, one_by_one: bool) -> Attempt {
    let accounts: Vec<String> = batch
        .iter()
        .flat_map(|r| {
            [
                Some(r.completion.source_user_id.clone()),
                r.claim_for.clone(),
            ]
        })
        .flatten()
        .collect();
    let placement = match ctx.shards.place(&ctx.pool, &accounts).await {
        Ok(placement) => placement,
        Err(e) => {
            warn!(error = %e, jobs = batch.len(), "could not record job outcomes; they wait and are tried again");
            return Attempt {
                unwritten: batch
                    .into_iter()
                    .map(|request| without_claim(request, ClaimNotMade::Failed))
                    .collect(),
                refused: false,
            };
        }
    };
    let batch: Vec<Request> = batch
        .into_iter()
        .map(|request| match &request.claim_for {
            Some(successor)
                if placement.shard(successor)
                    != placement.shard(&request.completion.source_user_id) =>
            {
                without_claim(request, ClaimNotMade::OtherShard)
            }
            _ => request,
        })
        .collect();
    let statements: Vec<Vec<Request>> = if one_by_one {
        batch.into_iter().map(|request| vec![request]).collect()
    } else {
        placement.group(batch, |request| request.completion.source_user_id.as_str())
    };
    let mut unwritten = Vec::new();
    let mut refused = false;
    if one_by_one {
        // One at a time: an outcome the server refuses cannot hold up the others.
        for statement in statements {
            let attempt = write_together(ctx, statement).await;
            refused |= attempt.refused;
            unwritten.extend(attempt.unwritten);
        }
    } else {
        for attempt in join_all(statements.into_iter().map(|s| write_together(ctx, s))).await {
            refused |= attempt.refused;
            unwritten.extend(attempt.unwritten);
        }
    }
    Attempt { unwritten, refused }
}

/// `request` without the claim of its successor, for `why`: its successor is claimed on its
/// own.
fn without_claim(mut request: Request, why: ClaimNotMade) -> Request {
    if request.claim_for.take().is_some() {
        request.claim_not_made = Some(why);
    }
    request
}

async fn write_together(ctx: &Context, batch: Vec<Request>) -> Attempt {
    let completions: Vec<Completion> = batch.iter().map(|r| r.completion.clone()).collect();
    let claim_for: Vec<String> = batch.iter().filter_map(|r| r.claim_for.clone()).collect();
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
            let recorded: std::collections::HashSet<i64> = written.recorded.into_iter().collect();
            // Only where no trigger announced them (on Citus); the question is answered once
            // per daemon.
            let finished: Vec<FinishedJob> =
                if matches!(ctx.shards.distributed(&ctx.pool).await, Ok(true)) {
                    batch
                        .iter()
                        .filter(|request| recorded.contains(&request.completion.job_id))
                        .filter_map(|request| finished_job(&request.completion))
                        .collect()
                } else {
                    Vec::new()
                };
            let mut claimed: HashMap<String, ClaimedJob> = written
                .claimed
                .into_iter()
                .map(|job| (job.source_user_id.to_string(), job))
                .collect();
            for request in batch {
                let claimed = if let Some(why) = request.claim_not_made {
                    Err(why)
                } else {
                    Ok(request
                        .claim_for
                        .and_then(|account| claimed.remove(&account)))
                };
                let _ = request.reply.send(Written {
                    recorded: recorded.contains(&request.completion.job_id),
                    claimed,
                });
            }
            announce(ctx, &finished).await;
            Attempt {
                unwritten: Vec::new(),
                refused: false,
            }
        }
        Err(e) => {
            warn!(error = %e, jobs = batch.len(), "could not record job outcomes; they wait and are tried again");
            let refused = matches!(e, sqlx::Error::Database(_));
            // Tried again alone: by the time the database answers, the successor's send
            // deadline has passed; it takes its turn again instead.
            let unwritten = batch
                .into_iter()
                .map(|request| without_claim(request, ClaimNotMade::Failed))
                .collect();
            Attempt { unwritten, refused }
        }
    }
}

/// The job `completion` finished, for its announcement; `None` when it goes back to the queue.
fn finished_job(completion: &Completion) -> Option<FinishedJob> {
    match completion.next {
        NextState::Succeeded { .. } | NextState::Failed => Some(FinishedJob {
            id: completion.job_id,
            state: completion.next.state(),
            source_user_id: completion.source_user_id.clone(),
            target_user_id: completion.target_user_id.clone(),
        }),
        NextState::Queued { .. } => None,
    }
}

/// Announces the jobs a record statement finished on Citus (`followq_job_finished`; on one
/// Postgres the trigger did, in the statement itself, and `finished` is empty). After the
/// replies: the accounts go on meanwhile. A failure is logged and not retried: the jobs are
/// recorded, and a service that waits for them also reads `finished_at` (README,
/// "Notifications").
async fn announce(ctx: &Context, finished: &[FinishedJob]) {
    if finished.is_empty() {
        return;
    }
    if let Err(e) = announce_finished(&ctx.pool, finished).await {
        warn!(error = %e, jobs = finished.len(), "could not announce finished jobs on followq_job_finished; they are recorded");
    }
}

/// An answer from X the daemon stops without writing: everything an operator needs to
/// reconcile it, at error level.
fn log_abandoned(completion: &Completion) {
    error!(
        job_id = completion.job_id,
        account = completion.source_user_id,
        target = completion.target_user_id,
        outcome = completion.attempt.outcome,
        http_status = completion.attempt.http_status,
        next_state = completion.next.state().as_str(),
        attempt_id = completion.attempt.attempt_id,
        "an answer from X could not be written before the daemon stopped"
    );
}

impl Written {
    fn failed() -> Written {
        Written {
            recorded: false,
            claimed: Err(ClaimNotMade::Failed),
        }
    }
}
