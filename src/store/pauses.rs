//! Pauses that outlive a restart: an account's (`status = 'paused'` until `paused_until`, with
//! a reason; or `needs_reauth`) and the app-wide stop (`followq.app_pause`).
//!
//! Pause reasons, as stored in `followq.accounts.pause_reason` and shown to operators:
//! `rate_limit_window` (X's 15-minute window is spent, until its reset), `rate_limited`
//! (X answered 429, until its reset), `daily_cap` (X's or our 24-hour follow cap),
//! `usage_capped` (X's usage cap for the account), `user_24h_limit` (the 24-hour header at 0),
//! `operator`. For `needs_reauth` the reason says why the tokens were refused.

use super::Statement;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgExecutor, PgPool};

use crate::states::{AppStopReason, PauseReason};

const PAUSE_ACCOUNT: &str = r#"
        UPDATE followq.accounts
        SET status = 'paused',
            paused_until = CASE WHEN status = 'paused' AND paused_until > $2
                                THEN paused_until ELSE $2 END,
            pause_reason = CASE WHEN status = 'paused' AND paused_until > $2
                                THEN pause_reason ELSE $3 END,
            updated_at = now()
        WHERE user_id = $1 AND status IN ('active', 'paused')
        "#;

/// Pauses an account until `until` (never shortening a longer pause already set).
pub async fn pause_account(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    until: DateTime<Utc>,
    reason: &PauseReason,
) -> Result<(), sqlx::Error> {
    sqlx::query(PAUSE_ACCOUNT)
        .bind(user_id)
        .bind(until)
        .bind(reason)
        .execute(executor)
        .await?;
    Ok(())
}

const RESUME_DUE: &str = r#"
        UPDATE followq.accounts
        SET status = 'active', paused_until = NULL, pause_reason = NULL, updated_at = now()
        WHERE leased_by = $1 AND status = 'paused' AND paused_until <= now()
        "#;

/// Ends the pauses that have run out among the accounts `worker_id` holds (the holder does
/// this at each heartbeat: its own limiter already resumed sending at the exact instant; this
/// keeps the row, which operators and other daemons read, truthful).
pub async fn resume_due(
    executor: impl PgExecutor<'_>,
    worker_id: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(RESUME_DUE)
        .bind(worker_id)
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}

const MARK_NEEDS_REAUTH: &str = r#"
        UPDATE followq.accounts
        SET status = 'needs_reauth', paused_until = NULL, pause_reason = $2, updated_at = now()
        WHERE user_id = $1 AND status <> 'disabled'
        "#;

/// Parks an account until a person stores new tokens. Its jobs stay queued.
pub async fn mark_needs_reauth(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(MARK_NEEDS_REAUTH)
        .bind(user_id)
        .bind(reason)
        .execute(executor)
        .await?;
    Ok(())
}

/// The app-wide stop (the row of `followq.app_pause`), as the daemon, `followq status` and the
/// status page read it.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct AppPause {
    pub reason: AppStopReason,
    pub detail: Option<Value>,
    /// `None`: until an operator ends it (`followq app resume`) or a probe finds its cause
    /// gone.
    pub paused_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When one request may next probe whether the cause is gone (`credits_depleted`).
    pub probe_at: Option<DateTime<Utc>>,
}

const PAUSE_APP: &str = r#"
        INSERT INTO followq.app_pause (scope, reason, detail, paused_until, probe_at)
        VALUES ('app', $1, $2, $3, now() + make_interval(secs => $4))
        ON CONFLICT (scope) DO UPDATE SET
            reason = EXCLUDED.reason,
            detail = EXCLUDED.detail,
            paused_until = CASE
                WHEN app_pause.paused_until IS NULL OR EXCLUDED.paused_until IS NULL THEN NULL
                ELSE greatest(app_pause.paused_until, EXCLUDED.paused_until) END,
            -- The same stop seen again (the answers of requests that were in the air) keeps
            -- its probe time; the probe itself moved it forward when it claimed it.
            probe_at = CASE WHEN app_pause.reason = EXCLUDED.reason
                            THEN coalesce(app_pause.probe_at, EXCLUDED.probe_at)
                            ELSE EXCLUDED.probe_at END
        "#;

/// Stops every account: until `until`, or until an operator ends it (or, with `probe_after`,
/// a probe request finds its cause gone) when `None`.
pub async fn pause_app(
    executor: impl PgExecutor<'_>,
    reason: &AppStopReason,
    detail: Option<&Value>,
    until: Option<DateTime<Utc>>,
    probe_after: Option<Duration>,
) -> Result<(), sqlx::Error> {
    sqlx::query(PAUSE_APP)
        .bind(reason)
        .bind(detail)
        .bind(until)
        .bind(probe_after.map(|after| after.as_secs_f64()))
        .execute(executor)
        .await?;
    Ok(())
}

const CLAIM_PROBE: &str = r#"
        UPDATE followq.app_pause
        SET probe_at = now() + make_interval(secs => $1)
        WHERE scope = 'app' AND probe_at <= now()
          AND (paused_until IS NULL OR paused_until > now())
        RETURNING reason
        "#;

/// Takes the turn to send the one request that probes whether the stop's cause is gone, if
/// it is due; the next is due `interval` later. At most one daemon gets each turn.
pub async fn claim_probe(
    executor: impl PgExecutor<'_>,
    interval: Duration,
) -> Result<Option<AppStopReason>, sqlx::Error> {
    sqlx::query_scalar(CLAIM_PROBE)
        .bind(interval.as_secs_f64())
        .fetch_optional(executor)
        .await
}

const END_APP_STOP: &str = r#"
        DELETE FROM followq.app_pause
        WHERE scope = 'app' AND ($1::text IS NULL OR reason = $1)
        RETURNING reason, detail, paused_until, created_at, probe_at
        "#;

/// Ends the app-wide stop (only one for `reason`, when given); returns what it ended.
pub async fn end_app_stop(
    executor: impl PgExecutor<'_>,
    reason: Option<&AppStopReason>,
) -> Result<Option<AppPause>, sqlx::Error> {
    sqlx::query_as(END_APP_STOP)
        .bind(reason)
        .fetch_optional(executor)
        .await
}

const DELETE_EXPIRED_APP_PAUSE: &str = "DELETE FROM followq.app_pause WHERE paused_until <= now()";

/// The app-wide stop in force now, if any (an expired timed stop is deleted).
pub async fn current_app_pause(pool: &PgPool) -> Result<Option<AppPause>, sqlx::Error> {
    sqlx::query(DELETE_EXPIRED_APP_PAUSE).execute(pool).await?;
    app_pause_in_force(pool).await
}

const APP_PAUSE_IN_FORCE: &str = r#"
        SELECT reason, detail, paused_until, created_at, probe_at FROM followq.app_pause
        WHERE scope = 'app' AND (paused_until IS NULL OR paused_until > now())
        "#;

/// The app-wide stop in force now, if any, read-only (a timed stop whose end has passed is
/// not in force, whether or not a daemon has deleted its row yet). The one query every
/// reader of the stop uses: the daemon, `followq status`, the status page and `/readyz`.
pub async fn app_pause_in_force<'e, E: PgExecutor<'e>>(
    executor: E,
) -> Result<Option<AppPause>, sqlx::Error> {
    sqlx::query_as::<_, AppPause>(APP_PAUSE_IN_FORCE)
        .fetch_optional(executor)
        .await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "pauses::pause_account",
        sql: PAUSE_ACCOUNT,
    },
    Statement {
        name: "pauses::claim_probe",
        sql: CLAIM_PROBE,
    },
    Statement {
        name: "pauses::end_app_stop",
        sql: END_APP_STOP,
    },
    Statement {
        name: "pauses::resume_due",
        sql: RESUME_DUE,
    },
    Statement {
        name: "pauses::mark_needs_reauth",
        sql: MARK_NEEDS_REAUTH,
    },
    Statement {
        name: "pauses::pause_app",
        sql: PAUSE_APP,
    },
    Statement {
        name: "pauses::current_app_pause",
        sql: DELETE_EXPIRED_APP_PAUSE,
    },
    Statement {
        name: "pauses::app_pause_in_force",
        sql: APP_PAUSE_IN_FORCE,
    },
];
