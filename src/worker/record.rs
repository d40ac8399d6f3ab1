//! The record task: writes one turn's outcome through the completer, with the claim of the
//! successor's next job in the same statement when the scheduler named one, then logs the
//! job's state change in its span and persists the pauses the answer calls for. X's answer is never dropped: the completer keeps trying
//! for as long as the daemon lives (see `completer.rs`).

use std::sync::Arc;

use tracing::{Instrument, error, info, warn};

use super::Context;
use super::claim::next_turns;
use super::completer::ClaimNotMade;
use super::decision::AccountAction;
use super::events::{Consequences, NoTurn, SuccessorClaim, TaskDone, Transition, TurnEnd};
use super::retry::RetryPolicy;
use super::turn::job_span;
use crate::states::AppStopReason;
use crate::store::record::NextState;
use crate::store::{ledger, pauses};

/// Why a job's outcome may not be recorded.
const NOT_RECORDED: &str = "the job's outcome was not recorded: it was taken back meanwhile (the answer is in the ledger), or the database is unreachable";

/// Writes `end`'s outcome; with `successor`, claims that account's next job in the same
/// statement.
pub async fn record(ctx: Arc<Context>, end: Box<TurnEnd>, successor: Option<String>) -> TaskDone {
    let TurnEnd {
        completion,
        attempt,
        transition,
        then: _,
        app_slot,
        consequences,
    } = *end;
    let span = job_span(
        completion.job_id,
        &completion.source_user_id,
        &completion.target_user_id,
        attempt,
    );
    let next = completion.next.clone();
    let error = completion.error.clone();
    let completion_source = completion.source_user_id.clone();
    let followed_nobody = !ledger::may_have_acted(
        Some(&completion.attempt.outcome),
        completion.attempt.http_status,
    );
    let (recorded, claimed) = match successor {
        Some(account) => {
            let written = ctx
                .completer
                .complete_and_claim(completion, account.clone())
                .await;
            (written.recorded, Some((account, written.claimed)))
        }
        None => (ctx.completer.complete(completion).await, None),
    };
    let source = completion_source;
    async {
        // Written: a slot of a request that followed nobody goes back (an outcome not
        // written leaves the ledger row counting as a follow, and so the slot).
        if let Some(slot) = app_slot
            && let Err(e) = ctx
                .app_cap
                .outcome_written(&ctx.pool, slot, recorded && followed_nobody)
                .await
        {
            warn!(error = %e, "could not give back the per-app cap's slot of a request that followed nobody; it counts until its ledger row settles");
        }
        if recorded {
            ctx.metrics.job_recorded(&next);
            log_transition(&next, error.as_ref(), &transition);
        } else {
            warn!(NOT_RECORDED);
        }
        // After the outcome, as whoever reads a pause expects to find the answer behind it.
        apply_consequences(&ctx, &source, &consequences, error.as_ref()).await;
    }
    .instrument(span)
    .await;
    let successor = match claimed {
        None => None,
        Some((_, Ok(Some(job)))) => {
            ctx.metrics.claimed_with_record();
            Some(SuccessorClaim::Job(job))
        }
        Some((account, Ok(None))) => {
            let turn = next_turns(&ctx, vec![account])
                .await
                .pop()
                .map_or(NoTurn::NoJob { next_run_at: None }, |(_, turn)| turn);
            Some(SuccessorClaim::None(turn))
        }
        Some((_, Err(ClaimNotMade::Failed))) => Some(SuccessorClaim::None(NoTurn::RetryAt(
            std::time::Instant::now() + RetryPolicy::AFTER_DATABASE_ERROR,
        ))),
        // Claimed on its own, at once.
        Some((_, Err(ClaimNotMade::OtherShard))) => Some(SuccessorClaim::None(NoTurn::RetryAt(
            std::time::Instant::now(),
        ))),
    };
    TaskDone::Recorded { successor }
}

/// Persists the account's pauses and the app-wide stop.
async fn apply_consequences(
    ctx: &Context,
    source: &str,
    consequences: &Consequences,
    error: Option<&serde_json::Value>,
) {
    for action in &consequences.account {
        if let AccountAction::Pause { until, reason } = action {
            if let Err(e) = pauses::pause_account(&ctx.pool, source, *until, reason).await {
                warn!(error = %e, reason = reason.as_str(), "could not persist the account pause");
            }
            info!(account = source, reason = reason.as_str(), until = %until, "account paused");
        }
    }
    if let Some(stop) = &consequences.app {
        if let Err(e) = pauses::pause_app(
            &ctx.pool,
            &stop.reason,
            error,
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
}

/// The job's state-change event, once its outcome is written.
fn log_transition(next: &NextState, error: Option<&serde_json::Value>, transition: &Transition) {
    match (next, transition) {
        (NextState::Queued { run_at, .. }, Transition::Unsent { reason, message }) => {
            info!(
                event = "job_requeued",
                state = "queued",
                reason,
                run_at = %run_at,
                "{message}"
            );
        }
        (
            NextState::Succeeded {
                following,
                pending_follow,
            },
            _,
        ) => {
            info!(
                event = "job_succeeded",
                state = "succeeded",
                following,
                pending_follow,
                "job succeeded"
            );
        }
        (NextState::Failed, Transition::Decided { outcome }) => {
            // A failed job is an outcome, not a fault of the daemon: info, like the others.
            info!(
                event = "job_failed",
                state = "failed",
                outcome,
                error = %error.cloned().unwrap_or(serde_json::Value::Null),
                "job failed"
            );
        }
        (NextState::Failed, Transition::Unsent { reason, .. }) => {
            info!(
                event = "job_failed",
                state = "failed",
                reason,
                error = %error.cloned().unwrap_or(serde_json::Value::Null),
                "job failed"
            );
        }
        (NextState::Queued { run_at, .. }, Transition::Decided { outcome }) => {
            info!(
                event = "job_requeued",
                state = "queued",
                reason = outcome,
                run_at = %run_at,
                "job back in the queue"
            );
        }
    }
}
