//! One job's turn, from its claim to its end: credentials → the per-app cap → the send
//! deadline → the request → the decision → a refresh after a 401. A turn writes nothing about
//! its job: it ends with the outcome to write and the pauses it calls for ([`TurnEnd`]), which
//! the scheduler hands to the record task (`record.rs`). No
//! transaction is open while a request is in flight.
//!
//! Every state change of the job emits one event inside the job's span (`job_id`, `source`,
//! `target`, `attempt`); `event` names the change and `reason` says why a job waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::{Instrument, info, info_span, warn};

use super::Context;
use super::clock::instant_at;
use super::decision::{AccountAction, Decision, JobFacts, decide};
use super::events::{AfterTurn, Answered, Consequences, Transition, TurnEnd};
use super::retry::RetryPolicy;
use crate::accounts::token_store::AuthError;
use crate::ids::UserId;
use crate::ratelimit::ServerWindow;
use crate::states::{AppStopReason, ErrorKind, PauseReason};
use crate::store::claim::ClaimedJob;
use crate::store::record::{AttemptRecord, Completion, NextState};
use crate::store::{ledger, pauses};
use crate::xapi::{Fate, FollowOutcome, FollowResponse, RateLimitInfo};

/// What the scheduler gives a turn besides its job.
#[derive(Debug, Clone, Copy)]
pub struct TurnOrders {
    /// The account's count of 401s in a row: a second one after a refresh parks it.
    pub unauthorized_streak: u32,
    /// The request is not sent at all after this instant.
    pub send_by: Instant,
    /// This turn's request probes an app-wide stop (see `Event::Probe`).
    pub probe: bool,
}

/// The span every event about one job is logged in.
pub fn job_span(job_id: i64, source: &str, target: &str, attempt: i32) -> tracing::Span {
    info_span!("job", job_id, source, target, attempt)
}

/// Runs `job`'s turn in its span.
pub async fn run(ctx: Arc<Context>, job: ClaimedJob, orders: TurnOrders) -> Box<TurnEnd> {
    let span = job_span(
        job.id,
        job.source_user_id.as_str(),
        job.target_user_id.as_str(),
        job.attempts,
    );
    Box::new(turn(&ctx, job, orders).instrument(span).await)
}

async fn turn(ctx: &Context, job: ClaimedJob, orders: TurnOrders) -> TurnEnd {
    info!(event = "job_claimed", state = "running", "job claimed");
    // The ids were checked on the way out of the database (and the schema's id domains let
    // no other kind in).
    let source = job.source_user_id.clone();
    let target = job.target_user_id.clone();

    let auth = match ctx.auth_for(&source).await {
        Ok(auth) => auth,
        Err(problem) => return without_credentials(ctx, job, &source, problem).await,
    };

    ctx.inject_panic_for(job.target_user_id.as_str());
    // Travels with the outcome to its write, where it goes back if the request followed nobody.
    let app_slot = match ctx.app_cap.admit(&ctx.pool, job.attempt_id).await {
        Ok(Some(slot)) => slot,
        Ok(None) => return app_cap_reached(ctx, job),
        Err(e) => {
            warn!(error = %e, "database error while checking the app's daily cap; retrying in 1 s");
            let error = json!({"kind": ErrorKind::Database, "detail": e.to_string()});
            return unsent(
                job,
                Utc::now(),
                error,
                "database",
                "job back in the queue: the app's daily cap could not be checked",
                AfterTurn::RetryAt(Instant::now() + RetryPolicy::AFTER_DATABASE_ERROR),
            );
        }
    };

    // The claim's promise: a request not on the wire by its send deadline is never sent, so a
    // daemon that stalled here (a slow token refresh, a frozen process) cannot send into a
    // window that a successor has filled since.
    let sent_at = Instant::now();
    if sent_at >= orders.send_by {
        let mut end = deadline_missed(ctx, job, sent_at.saturating_duration_since(orders.send_by));
        // Unsent: the slot goes back once the outcome is written.
        end.app_slot = Some(app_slot);
        return end;
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
    if orders.probe {
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

    let mut pause_until = resume_after(&decision);
    let mut then = None;
    if unauthorized {
        ctx.forget_auth(&source);
        match refresh_after_401(ctx, &source, &auth, orders.unauthorized_streak).await {
            Ok(()) => {}
            Err(RefreshOutcome::Parked) => then = Some(AfterTurn::Parked),
            Err(RefreshOutcome::Later(at)) => {
                pause_until = Some(pause_until.map_or(at, |p| p.max(at)))
            }
        }
    }
    let then = then.unwrap_or(AfterTurn::Answered(Answered {
        sent_at,
        completed_at,
        server: server_window(&response.limits, now, completed_at),
        may_have_followed,
        unauthorized,
        pause_until,
    }));
    TurnEnd {
        attempt: job.attempts,
        completion: Completion {
            job_id: job.id,
            source_user_id: job.source_user_id.to_string(),
            target_user_id: job.target_user_id.to_string(),
            next: decision.next,
            conclusive,
            error: decision.error,
            attempt,
        },
        transition: Transition::Decided {
            outcome: response.outcome.kind(),
        },
        then,
        app_slot: Some(app_slot),
        consequences: Consequences {
            account: decision.account,
            app: decision.app,
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

/// The send deadline passed before the request went out: it is never sent. The job goes back
/// as it was (no attempt spent) and its ledger row says `not_sent`.
fn deadline_missed(ctx: &Context, job: ClaimedJob, late_by: Duration) -> TurnEnd {
    ctx.metrics.send_deadline_missed();
    let late_ms = u64::try_from(late_by.as_millis()).unwrap_or(u64::MAX);
    warn!(
        late_ms,
        "the request was not sent: it was claimed too long ago to be sent safely"
    );
    let error = json!({
        "kind": ErrorKind::SendDeadline,
        "detail": "the request was not sent: its send deadline passed before it could go out",
        "late_ms": late_ms,
    });
    unsent(
        job,
        Utc::now(),
        error,
        "send_deadline",
        "job back in the queue unsent: it was claimed too long ago to be sent safely",
        AfterTurn::NotSent,
    )
}

/// No usable credentials: the job goes back untouched (no attempt spent) and the account
/// either parks (needs_reauth) or waits for the token endpoint.
async fn without_credentials(
    ctx: &Context,
    job: ClaimedJob,
    source: &UserId,
    problem: AuthError,
) -> TurnEnd {
    ctx.forget_auth(source);
    // The job waits exactly as long as its account does: both retry after the same pause.
    let wait = RetryPolicy::wait_after_credentials_problem(&problem);
    let (then, kind, detail) = match problem {
        AuthError::NeedsReauth { reason } => (AfterTurn::Parked, ErrorKind::NeedsReauth, reason),
        AuthError::NoCredentials => {
            let reason = "no credentials stored for the account";
            if let Err(e) = ctx.tokens.mark_needs_reauth(source, reason).await {
                warn!(error = %e, "could not mark the account needs_reauth");
            }
            warn!(account = %source, reason, "account marked needs_reauth");
            (AfterTurn::Parked, ErrorKind::NeedsReauth, reason.to_owned())
        }
        AuthError::Transient(detail) => (
            AfterTurn::RetryAt(Instant::now() + wait),
            ErrorKind::TokenUnavailable,
            detail,
        ),
        AuthError::Database(e) => (
            AfterTurn::RetryAt(Instant::now() + wait),
            ErrorKind::Database,
            e.to_string(),
        ),
    };
    let run_at = Utc::now() + chrono::TimeDelta::from_std(wait).unwrap_or_default();
    unsent(
        job,
        run_at,
        json!({"kind": kind, "detail": detail}),
        kind.as_str(),
        "job back in the queue: the account has no usable token",
        then,
    )
}

/// The app's follows of the last 24 hours (with the requests that may still become follows)
/// reached `rate_limit.daily_follows_per_app`: the job goes back untouched, and the app
/// monitor is woken to write the app-wide stop every replica honours.
fn app_cap_reached(ctx: &Context, job: ClaimedJob) -> TurnEnd {
    ctx.app_check.notify_one();
    let error = json!({"kind": ErrorKind::AppDailyCap, "detail": "the app's follows of the last 24 hours reached rate_limit.daily_follows_per_app"});
    unsent(
        job,
        Utc::now(),
        error,
        "app_daily_cap",
        "job back in the queue: the app's daily follow cap is reached",
        AfterTurn::RetryAt(Instant::now() + ctx.settings.worker.poll_interval),
    )
}

/// The end of a turn whose request was never sent: the job goes back to the queue at
/// `run_at`, its attempt given back and its ledger row marked `not_sent`, with `error` as the
/// reason.
fn unsent(
    job: ClaimedJob,
    run_at: DateTime<Utc>,
    error: Value,
    reason: &str,
    message: &'static str,
    then: AfterTurn,
) -> TurnEnd {
    TurnEnd {
        attempt: job.attempts,
        completion: Completion {
            job_id: job.id,
            source_user_id: job.source_user_id.to_string(),
            target_user_id: job.target_user_id.to_string(),
            next: NextState::Queued {
                run_at,
                refund_attempt: true,
                rate_limited: false,
            },
            conclusive: false,
            error: Some(error),
            attempt: AttemptRecord {
                attempt_id: job.attempt_id,
                outcome: ledger::NOT_SENT.into(),
                ..AttemptRecord::default()
            },
        },
        transition: Transition::Unsent {
            reason: reason.to_owned(),
            message,
        },
        then,
        app_slot: None,
        consequences: Consequences::default(),
    }
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

/// When this account may send again, from the pauses the decision calls for. The limiter
/// knows a window's end to the millisecond: a `rate_limit_window` pause (the header's
/// whole-second reset, for operators and other daemons) does not hold it.
fn resume_after(decision: &Decision) -> Option<Instant> {
    decision
        .account
        .iter()
        .filter_map(|action| match action {
            AccountAction::Pause { until, reason } if *reason != PauseReason::RateLimitWindow => {
                Some(instant_at(*until))
            }
            _ => None,
        })
        .max()
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
