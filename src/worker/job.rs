//! Jobs, end to end: claim a batch (one committed statement for every account the scheduler
//! let through) → for each job, credentials → the request → decide → record the job row and
//! its ledger row (batched by the completer) → apply pauses. No transaction is open while a
//! request is in flight.
//!
//! Every state change of the job emits one event inside the job's span (`job_id`, `source`,
//! `target`, `attempt`); `event` names the change and `reason` says why a job waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use super::Context;
use super::decision::{AccountAction, Decision, JobFacts, decide};
use super::events::{Answered, Event, JobReport};
use super::retry::RetryPolicy;
use crate::accounts::token_store::AuthError;
use crate::ids::UserId;
use crate::ratelimit::ServerWindow;
use crate::states::{AppStopReason, ErrorKind, PauseReason};
use crate::store::claim::{ClaimedJob, claim_batch, next_run_at};
use crate::store::record::{AttemptRecord, Completion, NextState};
use crate::store::unanswered::Which;
use crate::store::{ledger, pauses};
use crate::xapi::{Fate, FollowOutcome, FollowResponse, RateLimitInfo};

/// What kind of turns a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turns {
    Regular,
    /// The one request that probes an app-wide stop (see `Event::Probe`): its answer says
    /// whether the stop's cause is gone.
    Probe,
}

/// Runs one turn of each of `accounts` (with its count of 401s in a row: a second one after
/// a refresh parks the account), reporting each turn's end to the scheduler as it happens.
/// A request not on the wire by `send_by` is not sent at all.
pub async fn run_batch(
    ctx: Arc<Context>,
    accounts: Vec<(String, u32)>,
    send_by: Instant,
    kind: Turns,
) {
    let names: Vec<String> = accounts.iter().map(|(name, _)| name.clone()).collect();
    let claim_pending = ClaimPending(&ctx);
    let claimed = claim_batch(&ctx.pool, &ctx.worker_id, &names, ctx.answer_within()).await;
    // The scheduler may start the next claim statement now.
    drop(claim_pending);
    let claimed = match claimed {
        Ok(claimed) => claimed,
        Err(e) => {
            warn!(error = %e, accounts = names.len(), "database error while claiming; the accounts retry in 1 s");
            for account in names {
                report(
                    &ctx,
                    account,
                    JobReport::RetryAt(Instant::now() + RetryPolicy::AFTER_DATABASE_ERROR),
                );
            }
            return;
        }
    };
    ctx.metrics.claimed_alone(claimed.len() as u64);
    let mut streaks: HashMap<String, u32> = accounts.into_iter().collect();
    let mut jobs = JoinSet::new();
    let mut turns: HashMap<tokio::task::Id, CurrentTurn> = HashMap::new();
    for job in claimed {
        let streak = streaks.remove(job.source_user_id.as_str()).unwrap_or(0);
        let current: CurrentTurn = Arc::new(std::sync::Mutex::new((
            job.source_user_id.to_string(),
            job.id,
        )));
        let handle = jobs.spawn(run_turns(
            Arc::clone(&ctx),
            job,
            streak,
            send_by,
            kind,
            Arc::clone(&current),
        ));
        turns.insert(handle.id(), current);
    }
    // The accounts left had nothing ready: say when their next job is due.
    let empty: Vec<String> = streaks.into_keys().collect();
    if !empty.is_empty() {
        for (account, outcome) in nothing_claimed(&ctx, empty).await {
            report(&ctx, account, outcome);
        }
    }
    while let Some(joined) = jobs.join_next_with_id().await {
        let Err(failure) = joined else { continue };
        let Some(current) = turns.remove(&failure.id()) else {
            continue;
        };
        let Ok((account, job_id)) = current.lock().map(|turn| turn.clone()) else {
            continue;
        };
        if failure.is_panic() {
            recover_panicked_turn(&ctx, account, job_id, failure).await;
        }
    }
}

/// The account and job a task is on now, for the recovery of a panicked turn (a task goes on
/// from job to job when the scheduler hands it a successor).
type CurrentTurn = Arc<std::sync::Mutex<(String, i64)>>;

/// Runs `job`'s turn and, while the scheduler hands the task's slot on, the turns of the jobs
/// claimed for the successors, each in its own span.
async fn run_turns(
    ctx: Arc<Context>,
    mut job: ClaimedJob,
    mut unauthorized_streak: u32,
    mut send_by: Instant,
    mut turns: Turns,
    current: CurrentTurn,
) {
    loop {
        if let Ok(mut turn) = current.lock() {
            *turn = (job.source_user_id.to_string(), job.id);
        }
        let account = job.source_user_id.to_string();
        let span = job_span(
            job.id,
            job.source_user_id.as_str(),
            job.target_user_id.as_str(),
            job.attempts,
        );
        let turn = send_and_record(&ctx, job, unauthorized_streak, send_by, turns)
            .instrument(span)
            .await;
        // A successor's turn is a regular one.
        turns = Turns::Regular;
        match turn {
            Turn::Ended(outcome) => return report(&ctx, account, outcome),
            Turn::Done => return,
            Turn::SuccessorEnded {
                account,
                report: outcome,
            } => {
                return report(&ctx, account, outcome);
            }
            Turn::Next {
                job: next,
                unauthorized_streak: streak,
                send_by: deadline,
            } => {
                job = next;
                unauthorized_streak = streak;
                send_by = deadline;
            }
        }
    }
}

/// Tells the scheduler that a claim statement is over when dropped: once it returned, or if
/// the batch panicked or was aborted before it did (the scheduler must never wait for it).
struct ClaimPending<'a>(&'a Context);

impl Drop for ClaimPending<'_> {
    fn drop(&mut self) {
        let _ = self.0.events.send(Event::Claimed);
    }
}

/// A job's turn panicked: say so loudly, put the job back (its ledger row stays unanswered,
/// so whoever sends for the account next counts the request that may have gone out), and have
/// the scheduler give the account up. Every other account carries on.
async fn recover_panicked_turn(
    ctx: &Context,
    account: String,
    job_id: i64,
    failure: tokio::task::JoinError,
) {
    let cause = panic_message(failure.into_panic());
    ctx.metrics.task_panicked("job");
    error!(
        job_id,
        account,
        cause,
        "a job's turn panicked: the job goes back to the queue and the account is given up"
    );
    ctx.note_unanswered(Which::Jobs(&[job_id]), RETURNED_AFTER_PANIC)
        .await;
    report(ctx, account, JobReport::Panicked);
}

/// Why the job of a panicked turn went back to the queue (its `last_error`).
const RETURNED_AFTER_PANIC: &str = "the daemon's turn for this job failed unexpectedly (a panic, logged with its cause); the request may have gone out";

/// The text of a panic's payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The span every event about one job is logged in.
pub fn job_span(job_id: i64, source: &str, target: &str, attempt: i32) -> tracing::Span {
    info_span!("job", job_id, source, target, attempt)
}

fn report(ctx: &Context, account: String, report: JobReport) {
    let _ = ctx.events.send(Event::JobDone { account, report });
}

/// How a job's turn ended, for the loop of its task.
enum Turn {
    /// Report this for the job's account; the task ends.
    Ended(JobReport),
    /// Everything is reported; the task ends.
    Done,
    /// The scheduler handed the slot to another account, whose next job was claimed with the
    /// outcome's write: the task goes on with it.
    Next {
        job: ClaimedJob,
        unauthorized_streak: u32,
        send_by: Instant,
    },
    /// The slot went to `account`, which had no job to claim (or the claim failed): report
    /// this for it; the task ends.
    SuccessorEnded { account: String, report: JobReport },
}

async fn send_and_record(
    ctx: &Context,
    job: ClaimedJob,
    unauthorized_streak: u32,
    send_by: Instant,
    turns: Turns,
) -> Turn {
    info!(event = "job_claimed", state = "running", "job claimed");
    // The ids were checked on the way out of the database (and the schema's id domains let
    // no other kind in).
    let source = job.source_user_id.clone();
    let target = job.target_user_id.clone();

    let auth = match ctx.auth_for(&source).await {
        Ok(auth) => auth,
        Err(problem) => {
            return Turn::Ended(without_credentials(ctx, &job, &source, problem).await);
        }
    };

    ctx.inject_panic_for(job.target_user_id.as_str());
    // Held until the answer is recorded (the end of this function).
    let _app_slot = match ctx.app_cap.admit(&ctx.pool, &ctx.worker_id).await {
        Ok(Some(slot)) => slot,
        Ok(None) => return Turn::Ended(app_cap_reached(ctx, &job).await),
        Err(e) => {
            warn!(error = %e, "database error while checking the app's daily cap; retrying in 1 s");
            let next = NextState::Queued {
                run_at: Utc::now(),
                refund_attempt: true,
                rate_limited: false,
            };
            let error = json!({"kind": ErrorKind::Database, "detail": e.to_string()});
            finish(ctx, &job, next, Some(error), unsent(&job)).await;
            return Turn::Ended(JobReport::RetryAt(
                Instant::now() + RetryPolicy::AFTER_DATABASE_ERROR,
            ));
        }
    };

    // The claim's promise: a request not on the wire by its send deadline is never sent, so a
    // daemon that stalled here (a slow token refresh, a frozen process) cannot send into a
    // window that a successor has filled since.
    let sent_at = Instant::now();
    if sent_at >= send_by {
        let late_by = sent_at.saturating_duration_since(send_by);
        return Turn::Ended(deadline_missed(ctx, &job, late_by).await);
    }
    let response = ctx.client.follow(&source, &target, &auth).await;
    let completed_at = Instant::now();
    ctx.metrics.request_sent(
        response.http_status,
        completed_at.saturating_duration_since(sent_at),
    );
    let now = Utc::now();

    let retry = RetryPolicy::from_settings(&ctx.settings.retry);
    let facts = JobFacts {
        attempts: job.attempts,
        max_attempts: retry.max_attempts_for(job.max_attempts),
        rate_limited_count: job.rate_limited_count,
        answered: response.answered(),
    };
    let decision = decide(
        &response.outcome,
        &response.limits,
        facts,
        &retry,
        now,
        rand::random::<f64>(),
    );
    if decision.app.is_some() {
        // Before any write: no other account may start a request meanwhile.
        ctx.app_stop_seen();
    }
    if turns == Turns::Probe {
        settle_probe(ctx, &response).await;
    }
    let attempt = attempt_record(&job, &response, sent_at, completed_at);
    // The live limiter counts the follow by the same rule as the ledger seed and the app's
    // count (store::ledger): one definition of what X may have done.
    let may_have_followed = ledger::may_have_acted(Some(&attempt.outcome), attempt.http_status);
    ctx.metrics.request_billed(
        ledger::billed(attempt.http_status),
        ledger::possibly_billed(Some(&attempt.outcome), attempt.http_status),
    );
    let conclusive = matches!(
        response.outcome,
        FollowOutcome::Followed { .. } | FollowOutcome::Permanent(_)
    ) && response.answered();
    let unauthorized = matches!(response.outcome, FollowOutcome::Unauthorized(_));
    if decision.account.is_empty() && decision.app.is_none() && !unauthorized {
        // Nothing holds the account back: the scheduler may hand this slot on at once.
        let answered = Answered {
            sent_at,
            completed_at,
            server: server_window(&response.limits, now, completed_at),
            may_have_followed,
            unauthorized,
            pause_until: None,
        };
        let completion = Completion {
            job_id: job.id,
            source_user_id: job.source_user_id.to_string(),
            target_user_id: job.target_user_id.to_string(),
            next: decision.next.clone(),
            conclusive,
            error: decision.error.clone(),
            attempt,
        };
        return hand_off(ctx, answered, completion, &decision, &response.outcome).await;
    }
    let recorded = finish_with(
        ctx,
        &job,
        decision.next.clone(),
        conclusive,
        decision.error.clone(),
        attempt,
    )
    .await;
    if recorded {
        ctx.metrics.job_recorded(&decision.next);
        log_transition(&decision, &response.outcome);
    }

    let mut pause_until = apply_consequences(ctx, &source, &decision).await;
    if unauthorized {
        ctx.forget_auth(&source);
        match refresh_after_401(ctx, &source, &auth, unauthorized_streak).await {
            Ok(()) => {}
            Err(RefreshOutcome::Parked) => return Turn::Ended(JobReport::AccountParked),
            Err(RefreshOutcome::Later(at)) => {
                pause_until = Some(pause_until.map_or(at, |p| p.max(at)))
            }
        }
    }
    Turn::Ended(JobReport::Sent(Answered {
        sent_at,
        completed_at,
        server: server_window(&response.limits, now, completed_at),
        may_have_followed,
        unauthorized,
        pause_until,
    }))
}

/// Gives the answer to the scheduler before the outcome is written (see [`Event::Handoff`]),
/// then writes the outcome, with the claim of the successor's next job when the scheduler
/// named one, and says so; the account may be claimed again from then on.
async fn hand_off(
    ctx: &Context,
    answered: Answered,
    completion: Completion,
    decision: &Decision,
    outcome: &FollowOutcome,
) -> Turn {
    let account = completion.source_user_id.clone();
    let (reply, answer) = oneshot::channel();
    let handoff = Event::Handoff {
        account: account.clone(),
        answered,
        reply,
    };
    let successor = match ctx.events.send(handoff) {
        Ok(()) => answer.await.ok().flatten(),
        Err(_) => None,
    };
    let (recorded, claimed) = match &successor {
        Some(successor) => {
            let written = ctx
                .completer
                .complete_and_claim(completion, successor.account.clone())
                .await;
            (written.recorded, Some(written.claimed))
        }
        None => (ctx.completer.complete(completion).await, None),
    };
    if recorded {
        ctx.metrics.job_recorded(&decision.next);
        log_transition(decision, outcome);
    } else {
        warn!(NOT_RECORDED);
    }
    report(
        ctx,
        account,
        JobReport::Recorded {
            slot_kept: successor.is_some(),
        },
    );
    let (Some(successor), Some(claimed)) = (successor, claimed) else {
        return Turn::Done;
    };
    match claimed {
        Ok(Some(job)) => {
            ctx.metrics.claimed_with_record();
            Turn::Next {
                job,
                unauthorized_streak: successor.unauthorized_streak,
                send_by: successor.send_by,
            }
        }
        Ok(None) => {
            let account = successor.account;
            let report = nothing_claimed(ctx, vec![account.clone()])
                .await
                .pop()
                .map_or(JobReport::NoJob { next_run_at: None }, |(_, report)| report);
            Turn::SuccessorEnded { account, report }
        }
        Err(()) => Turn::SuccessorEnded {
            account: successor.account,
            report: JobReport::RetryAt(Instant::now() + RetryPolicy::AFTER_DATABASE_ERROR),
        },
    }
}

/// The probe's answer: anything X answered but a 402 (or a 5xx, or no answer at all) shows
/// the app's credits are back, so the `credits_depleted` stop ends and every daemon sends again
/// within its poll interval. Otherwise the stop stays, for the next probe.
async fn settle_probe(ctx: &Context, response: &FollowResponse) {
    let still = matches!(
        response.outcome,
        FollowOutcome::CreditsDepleted(_) | FollowOutcome::Transient(_)
    ) || !response.answered();
    if still {
        info!(
            outcome = response.outcome.kind(),
            next_probe_in = ?ctx.settings.billing.probe_interval,
            "probe: the app-wide stop stays"
        );
        return;
    }
    match pauses::end_app_stop(&ctx.pool, Some(&AppStopReason::CreditsDepleted)).await {
        Ok(Some(_)) => {
            info!(
                outcome = response.outcome.kind(),
                "probe went through: the app's credits are back, every account sends again"
            );
            ctx.app_check.notify_one();
        }
        Ok(None) => {}
        Err(e) => {
            warn!(error = %e, "could not end the credits_depleted stop after a probe went through; the next probe will")
        }
    }
}

/// Accounts whose claim found nothing: the report of each, saying when its next job is due
/// (see [`JobReport::NoJob`]), or to try again in a second after a database error.
async fn nothing_claimed(ctx: &Context, accounts: Vec<String>) -> Vec<(String, JobReport)> {
    match next_run_at(&ctx.pool, &accounts).await {
        Ok(due) => {
            let due: HashMap<String, DateTime<Utc>> = due.into_iter().collect();
            accounts
                .into_iter()
                .map(|account| {
                    let next_run_at = due.get(&account).copied();
                    (account, JobReport::NoJob { next_run_at })
                })
                .collect()
        }
        Err(e) => {
            warn!(error = %e, "database error while looking for the next jobs; retrying in 1 s");
            let at = Instant::now() + RetryPolicy::AFTER_DATABASE_ERROR;
            accounts
                .into_iter()
                .map(|account| (account, JobReport::RetryAt(at)))
                .collect()
        }
    }
}

/// The send deadline passed before the request went out: it is never sent. The job goes back
/// as it was (no attempt spent) and its ledger row says `not_sent`.
async fn deadline_missed(ctx: &Context, job: &ClaimedJob, late_by: Duration) -> JobReport {
    ctx.metrics.send_deadline_missed();
    let error = json!({
        "kind": ErrorKind::SendDeadline,
        "detail": "the request was not sent: its send deadline passed before it could go out",
        "late_ms": u64::try_from(late_by.as_millis()).unwrap_or(u64::MAX),
    });
    if requeue_unsent(ctx, job, Utc::now(), error).await {
        warn!(
            event = "job_requeued",
            state = "queued",
            reason = "send_deadline",
            late_ms = u64::try_from(late_by.as_millis()).unwrap_or(u64::MAX),
            "job back in the queue unsent: it was claimed too long ago to be sent safely"
        );
    }
    JobReport::NotSent
}

/// No usable credentials: the job goes back untouched (no attempt spent) and the account
/// either parks (needs_reauth) or waits for the token endpoint.
async fn without_credentials(
    ctx: &Context,
    job: &ClaimedJob,
    source: &UserId,
    problem: AuthError,
) -> JobReport {
    ctx.forget_auth(source);
    // The job waits exactly as long as its account does: both retry after the same pause.
    let wait = RetryPolicy::wait_after_credentials_problem(&problem);
    let (report, error) = match problem {
        AuthError::NeedsReauth { reason } => (
            JobReport::AccountParked,
            json!({"kind": ErrorKind::NeedsReauth, "detail": reason}),
        ),
        AuthError::NoCredentials => {
            let reason = "no credentials stored for the account";
            if let Err(e) = ctx.tokens.mark_needs_reauth(source, reason).await {
                warn!(error = %e, "could not mark the account needs_reauth");
            }
            warn!(account = %source, reason, "account marked needs_reauth");
            (
                JobReport::AccountParked,
                json!({"kind": ErrorKind::NeedsReauth, "detail": reason}),
            )
        }
        AuthError::Transient(detail) => (
            JobReport::RetryAt(Instant::now() + wait),
            json!({"kind": ErrorKind::TokenUnavailable, "detail": detail}),
        ),
        AuthError::Database(e) => (
            JobReport::RetryAt(Instant::now() + wait),
            json!({"kind": ErrorKind::Database, "detail": e.to_string()}),
        ),
    };
    let run_at = Utc::now() + chrono::TimeDelta::from_std(wait).unwrap_or_default();
    let kind = ErrorKind::of(&error).unwrap_or(ErrorKind::NeedsReauth);
    if requeue_unsent(ctx, job, run_at, error).await {
        info!(
            event = "job_requeued",
            state = "queued",
            reason = %kind,
            run_at = %run_at,
            "job back in the queue: the account has no usable token"
        );
    }
    report
}

/// The app's follows of the last 24 hours (with the requests that may still become follows)
/// reached `rate_limit.daily_follows_per_app`: the job goes back untouched, and the app
/// monitor is woken to write the app-wide stop every replica honours.
async fn app_cap_reached(ctx: &Context, job: &ClaimedJob) -> JobReport {
    ctx.app_check.notify_one();
    let run_at = Utc::now();
    let error = json!({"kind": ErrorKind::AppDailyCap, "detail": "the app's follows of the last 24 hours reached rate_limit.daily_follows_per_app"});
    if requeue_unsent(ctx, job, run_at, error).await {
        info!(
            event = "job_requeued",
            state = "queued",
            reason = "app_daily_cap",
            run_at = %run_at,
            "job back in the queue: the app's daily follow cap is reached"
        );
    }
    JobReport::RetryAt(Instant::now() + ctx.settings.worker.poll_interval)
}

enum RefreshOutcome {
    Parked,
    Later(Instant),
}

/// After a 401: refresh once; a second 401 in a row (the fresh token was refused too)
/// parks the account.
async fn refresh_after_401(
    ctx: &Context,
    source: &UserId,
    rejected: &crate::xapi::RequestAuth,
    unauthorized_streak: u32,
) -> Result<(), RefreshOutcome> {
    if unauthorized_streak >= 1 {
        let reason = "X refused the account's token twice in a row (401), even after a refresh";
        if let Err(e) = ctx.tokens.mark_needs_reauth(source, reason).await {
            warn!(error = %e, "could not mark the account needs_reauth");
        }
        warn!(account = %source, reason, "account marked needs_reauth");
        return Err(RefreshOutcome::Parked);
    }
    match ctx
        .tokens
        .refresh_after_unauthorized(source, rejected)
        .await
    {
        Ok(_) => {
            info!(account = %source, "access token refreshed after a 401");
            Ok(())
        }
        Err(AuthError::NeedsReauth { .. } | AuthError::NoCredentials) => {
            Err(RefreshOutcome::Parked)
        }
        Err(AuthError::Transient(detail)) => {
            warn!(account = %source, detail, "token refresh failed; the account waits");
            Err(RefreshOutcome::Later(
                Instant::now() + RetryPolicy::AFTER_TOKEN_ENDPOINT_ERROR,
            ))
        }
        Err(AuthError::Database(e)) => {
            warn!(account = %source, error = %e, "token refresh failed; the account waits");
            Err(RefreshOutcome::Later(
                Instant::now() + RetryPolicy::AFTER_TOKEN_ENDPOINT_ERROR,
            ))
        }
    }
}

/// Persists account pauses and the app stop; returns when this account may send again.
async fn apply_consequences(
    ctx: &Context,
    source: &UserId,
    decision: &Decision,
) -> Option<Instant> {
    let mut resume: Option<Instant> = None;
    for action in &decision.account {
        if let AccountAction::Pause { until, reason } = action {
            if let Err(e) = pauses::pause_account(&ctx.pool, source.as_str(), *until, reason).await
            {
                warn!(error = %e, reason = reason.as_str(), "could not persist the account pause");
            }
            info!(account = %source, reason = reason.as_str(), until = %until, "account paused");
            if *reason == PauseReason::RateLimitWindow {
                // The limiter knows this window's end to the millisecond; the header's
                // whole-second reset stays in the row for operators and other daemons.
                continue;
            }
            let at = instant_at(*until);
            resume = Some(resume.map_or(at, |r| r.max(at)));
        }
    }
    if let Some(stop) = &decision.app {
        if let Err(e) = pauses::pause_app(
            &ctx.pool,
            &stop.reason,
            decision.error.as_ref(),
            stop.until,
            // X lifts it without telling: one request probes, now and then.
            (stop.reason == AppStopReason::CreditsDepleted)
                .then_some(ctx.settings.billing.probe_interval),
        )
        .await
        {
            error!(error = %e, "could not persist the app-wide stop");
        }
        error!(
            reason = %stop.reason,
            meaning = stop.reason.meaning(),
            until = ?stop.until,
            remedy = stop.reason.remedy(),
            "app-wide stop: no account sends until it ends"
        );
    }
    resume
}

fn log_transition(decision: &Decision, outcome: &FollowOutcome) {
    match &decision.next {
        NextState::Succeeded {
            following,
            pending_follow,
        } => {
            info!(
                event = "job_succeeded",
                state = "succeeded",
                following,
                pending_follow,
                "job succeeded"
            );
        }
        NextState::Failed => {
            // A failed job is an outcome, not a fault of the daemon: info, like the others.
            info!(
                event = "job_failed",
                state = "failed",
                outcome = outcome.kind(),
                error = %decision.error.clone().unwrap_or(serde_json::Value::Null),
                "job failed"
            );
        }
        NextState::Queued { run_at, .. } => {
            info!(
                event = "job_requeued",
                state = "queued",
                reason = outcome.kind(),
                run_at = %run_at,
                "job back in the queue"
            );
        }
    }
}

/// Puts a job whose request was never sent back in the queue at `run_at`, its attempt given
/// back and its ledger row marked `not_sent`, with `error` as the reason; true when recorded
/// (and counted). The caller logs the event with its own reason.
async fn requeue_unsent(
    ctx: &Context,
    job: &ClaimedJob,
    run_at: DateTime<Utc>,
    error: Value,
) -> bool {
    let next = NextState::Queued {
        run_at,
        refund_attempt: true,
        rate_limited: false,
    };
    let recorded = finish(ctx, job, next.clone(), Some(error), unsent(job)).await;
    if recorded {
        ctx.metrics.job_recorded(&next);
    }
    recorded
}

/// Why a job's outcome may not be recorded.
const NOT_RECORDED: &str = "the job's outcome was not recorded: it was taken back meanwhile (the answer is in the ledger), or the database is unreachable";

/// Records the job's next state through the completer; false when the job was no longer
/// this daemon's (another daemon took the account over and claimed it since) or could not be
/// written.
async fn finish(
    ctx: &Context,
    job: &ClaimedJob,
    next: NextState,
    error: Option<Value>,
    attempt: AttemptRecord,
) -> bool {
    finish_with(ctx, job, next, false, error, attempt).await
}

/// [`finish`] for an answer that may settle the job even after it was taken back.
async fn finish_with(
    ctx: &Context,
    job: &ClaimedJob,
    next: NextState,
    conclusive: bool,
    error: Option<Value>,
    attempt: AttemptRecord,
) -> bool {
    let recorded = ctx
        .completer
        .complete(Completion {
            job_id: job.id,
            source_user_id: job.source_user_id.to_string(),
            target_user_id: job.target_user_id.to_string(),
            next,
            conclusive,
            error,
            attempt,
        })
        .await;
    if !recorded {
        warn!(NOT_RECORDED);
    }
    recorded
}

fn unsent(job: &ClaimedJob) -> AttemptRecord {
    AttemptRecord {
        attempt_id: job.attempt_id,
        outcome: ledger::NOT_SENT.into(),
        ..AttemptRecord::default()
    }
}

fn attempt_record(
    job: &ClaimedJob,
    response: &FollowResponse,
    sent_at: Instant,
    completed_at: Instant,
) -> AttemptRecord {
    let limits = &response.limits;
    let latency = completed_at.saturating_duration_since(sent_at);
    AttemptRecord {
        attempt_id: job.attempt_id,
        latency_ms: i32::try_from(latency.as_millis()).ok(),
        http_status: response.http_status.and_then(|s| i16::try_from(s).ok()),
        // A request that never left (the connection to X could not be made) is `not_sent`
        // in the ledger, whatever the job makes of it: X saw nothing.
        outcome: if response.fate == Fate::NotSent {
            ledger::NOT_SENT.to_owned()
        } else {
            response.outcome.kind().to_owned()
        },
        rate_limit_limit: limits.limit.and_then(|v| i32::try_from(v).ok()),
        rate_limit_remaining: limits.remaining.and_then(|v| i32::try_from(v).ok()),
        rate_limit_reset_at: limits.reset_at,
    }
}

/// The response's window in local instants, for the limiter.
fn server_window(limits: &RateLimitInfo, now: DateTime<Utc>, at: Instant) -> ServerWindow {
    ServerWindow {
        limit: limits.limit,
        remaining: limits.remaining,
        reset_at: limits
            .reset_at
            .map(|reset| (reset - now).to_std().map_or(at, |ahead| at + ahead)),
    }
}

/// A wall-clock instant as a monotonic one (now, if it is already past).
pub fn instant_at(at: DateTime<Utc>) -> Instant {
    let now = Instant::now();
    (at - Utc::now()).to_std().map_or(now, |ahead| now + ahead)
}
