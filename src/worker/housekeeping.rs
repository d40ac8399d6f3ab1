//! The daemon's background chores, each a loop until shutdown:
//!
//! - the app monitor follows the app-wide stop (`followq.app_pause`, set by any replica or
//!   lifted by an operator), takes its turn to probe a stop X lifts without telling (402:
//!   credits depleted), enforces the per-app daily follow cap (from the app's follows
//!   counted per minute, shared with the check before each request in `app_cap.rs`), and
//!   logs an error every summary interval while the app is stopped;
//! - the summary logs one line per interval: what was sent and how it ended (the counters
//!   `/metrics` serves), the queue depth, the accounts held and the paused accounts by reason.

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Context;
use super::clock::instant_at;
use super::events::Event;
use crate::states::AppStopReason;
use crate::store::pauses::{self, AppPause};
use crate::store::status::{daemon_gauges, paused_accounts_by_reason, queued_and_in_flight};

pub async fn app_monitor(
    ctx: Arc<Context>,
    events: mpsc::UnboundedSender<Event>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(ctx.settings.worker.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current: Option<AppPause> = None;
    let mut last_complaint: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = ctx.app_check.notified() => {}
        }
        if let Some(cap) = ctx.settings.rate_limit.daily_follows_per_app {
            match enforce_app_daily_cap(&ctx, cap).await {
                Ok(()) => {
                    let _ = events.send(Event::AppCounted);
                }
                Err(e) => {
                    warn!(error = %e, "could not count the app's follows of the last 24 hours")
                }
            }
        }
        let pause = match pauses::current_app_pause(&ctx.pool).await {
            Ok(pause) => pause,
            Err(e) => {
                warn!(error = %e, "could not read the app-wide stop");
                continue;
            }
        };
        ctx.budget.saw_budget_stop(
            pause
                .as_ref()
                .is_some_and(|p| p.reason == AppStopReason::BudgetReached),
        );
        match &pause {
            None => {
                if current.is_some() {
                    let _ = events.send(Event::AppStop(None));
                }
                last_complaint = None;
            }
            Some(pause) => {
                // A stop X lifts without telling (credits topped up) is probed: one request
                // by one daemon per billing.probe_interval, the turn claimed in the row.
                if pause.probe_at.is_some_and(|at| at <= chrono::Utc::now()) {
                    match pauses::claim_probe(&ctx.pool, ctx.settings.billing.probe_interval).await
                    {
                        Ok(Some(_)) => {
                            let _ = events.send(Event::Probe);
                        }
                        Ok(None) => {}
                        Err(e) => warn!(error = %e, "could not claim the app-wide stop's probe"),
                    }
                }
                // A stop without an end lasts until an operator deletes the row: re-read
                // every poll, so extend it one poll at a time.
                let until = pause.paused_until.map_or_else(
                    || Instant::now() + ctx.settings.worker.poll_interval * 2,
                    instant_at,
                );
                // A daemon with budgets keeps them by itself: it starts only what it reserved,
                // so the places a replica reserved before the budget ran out still go out. The
                // stop is for operators to see (and for a daemon without budgets to honour).
                let kept_by_budget =
                    pause.reason == AppStopReason::BudgetReached && ctx.budget.is_on();
                let _ = events.send(Event::AppStop((!kept_by_budget).then_some(until)));
                let due = last_complaint
                    .is_none_or(|at| at.elapsed() >= ctx.settings.worker.summary_interval);
                if due {
                    last_complaint = Some(Instant::now());
                    error!(
                        reason = %pause.reason,
                        meaning = pause.reason.meaning(),
                        since = %pause.created_at,
                        until = ?pause.paused_until,
                        detail = %pause.detail.clone().unwrap_or_default(),
                        remedy = pause.reason.remedy(),
                        "app-wide stop in force: no account sends"
                    );
                }
            }
        }
        current = pause;
    }
}

/// Stops the app, when its follows of the last 24 hours reach `cap`, until enough of them
/// age out: at the end of the minute in which the oldest that must go is a day old. A follow
/// counts from the moment it may have happened: succeeded, in flight, or abandoned (sent,
/// fate unknown).
async fn enforce_app_daily_cap(ctx: &Context, cap: u32) -> Result<(), sqlx::Error> {
    let Some(count) = ctx.app_cap.count(&ctx.pool).await? else {
        return Ok(());
    };
    if let Some(until) = count.frees_at {
        pauses::pause_app(
            &ctx.pool,
            &AppStopReason::AppDailyCap,
            None,
            Some(until),
            None,
        )
        .await?;
        info!(follows = count.follows, cap, until = %until, "the app's follows in the last 24 hours reached rate_limit.daily_follows_per_app");
    }
    Ok(())
}

pub async fn summary(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.settings.worker.summary_interval);
    tick.tick().await;
    let mut previous = ctx.metrics.tally();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = ctx.metrics.tally();
        let delta = now.since(previous);
        previous = now;
        let (queued, running) = match queued_and_in_flight(&ctx.pool).await {
            Ok(depth) => (depth.queued, depth.running),
            Err(e) => {
                warn!(error = %e, "could not read the queue depth");
                (-1, -1)
            }
        };
        // The same count as the `followq_accounts_held` gauge.
        let accounts_held = match daemon_gauges(&ctx.pool, &ctx.worker_id).await {
            Ok(gauges) => gauges.accounts_held,
            Err(e) => {
                warn!(error = %e, "could not read the accounts held");
                -1
            }
        };
        let paused = paused_accounts(&ctx.pool).await.unwrap_or_else(|e| {
            warn!(error = %e, "could not read the paused accounts");
            String::new()
        });
        info!(
            sent = delta.sent,
            succeeded = delta.succeeded,
            pending = delta.pending,
            failed = delta.failed,
            rate_limited = delta.rate_limited,
            requeued = delta.requeued,
            queued,
            running,
            accounts_held,
            paused = %paused,
            "summary of the last {:?}",
            ctx.settings.worker.summary_interval
        );
    }
}

/// `reason=count, …` for paused, needs_reauth and disabled accounts, sorted by reason: the
/// same counts as the `followq_accounts_paused` gauge.
async fn paused_accounts(pool: &PgPool) -> Result<String, sqlx::Error> {
    let mut rows = paused_accounts_by_reason(pool).await?;
    rows.sort();
    Ok(rows
        .iter()
        .map(|(reason, count)| format!("{reason}={count}"))
        .collect::<Vec<_>>()
        .join(","))
}
