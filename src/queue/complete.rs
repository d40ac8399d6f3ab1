//! Recording what became of a request: the job row and its ledger row, in one statement.
//!
//! Every transition out of `running` goes through [`record`]: succeeded, failed, or back to
//! queued (a retry after backoff, a 429 snooze, or a pause of the account or the app). The
//! update only applies while this daemon still holds the job, so an answer that arrives after
//! a rescuer took the job back changes nothing but the ledger.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// Where the job goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum NextState {
    Succeeded {
        following: bool,
        pending_follow: bool,
    },
    Failed,
    /// Back to the queue, not before `run_at`.
    Queued {
        run_at: DateTime<Utc>,
        /// The request is not the job's fault (429, pause, refresh): give the attempt back.
        refund_attempt: bool,
        /// A 429 window snooze.
        rate_limited: bool,
    },
}

impl NextState {
    pub fn state(&self) -> &'static str {
        match self {
            NextState::Succeeded { .. } => "succeeded",
            NextState::Failed => "failed",
            NextState::Queued { .. } => "queued",
        }
    }
}

/// What the request got, for the ledger.
#[derive(Debug, Clone, Default)]
pub struct AttemptRecord {
    pub attempt_id: i64,
    pub latency_ms: Option<i32>,
    pub http_status: Option<i16>,
    /// The client's classification (`succeeded`, `rate_limited`, …).
    pub outcome: String,
    pub rate_limit_limit: Option<i32>,
    pub rate_limit_remaining: Option<i32>,
    pub rate_limit_reset_at: Option<DateTime<Utc>>,
}

/// Writes the job's next state and completes its ledger row. Returns false when the job was
/// no longer this daemon's (its lease ran out and a rescuer took it back).
pub async fn record(
    pool: &PgPool,
    worker_id: &str,
    job_id: i64,
    next: &NextState,
    last_error: Option<&Value>,
    attempt: &AttemptRecord,
) -> Result<bool, sqlx::Error> {
    let (following, pending_follow) = match next {
        NextState::Succeeded {
            following,
            pending_follow,
        } => (Some(*following), Some(*pending_follow)),
        _ => (None, None),
    };
    let (run_at, refund, rate_limited) = match next {
        NextState::Queued {
            run_at,
            refund_attempt,
            rate_limited,
        } => (Some(*run_at), *refund_attempt, *rate_limited),
        _ => (None, false, false),
    };
    let updated: i64 = sqlx::query_scalar(
        r#"
        WITH job AS (
            UPDATE followq.follow_jobs AS j
            SET state = $3,
                attempts = CASE WHEN $4 THEN greatest(j.attempts - 1, 0) ELSE j.attempts END,
                rate_limited_count = j.rate_limited_count + CASE WHEN $5 THEN 1 ELSE 0 END,
                run_at = coalesce($6, j.run_at),
                following = $7,
                pending_follow = $8,
                last_error = $9,
                finished_at = CASE WHEN $3 IN ('succeeded', 'failed') THEN now() END,
                leased_by = NULL,
                lease_expires_at = NULL,
                updated_at = now()
            WHERE j.id = $1 AND j.state = 'running' AND j.leased_by = $2
            RETURNING j.id
        ),
        ledger AS (
            UPDATE followq.attempts
            SET completed_at = now(),
                latency_ms = $11,
                http_status = $12,
                outcome = $13,
                rate_limit_limit = $14,
                rate_limit_remaining = $15,
                rate_limit_reset_at = $16,
                error = $9
            WHERE id = $10
        )
        SELECT count(*) FROM job
        "#,
    )
    .bind(job_id)
    .bind(worker_id)
    .bind(next.state())
    .bind(refund)
    .bind(rate_limited)
    .bind(run_at)
    .bind(following)
    .bind(pending_follow)
    .bind(last_error)
    .bind(attempt.attempt_id)
    .bind(attempt.latency_ms)
    .bind(attempt.http_status)
    .bind(&attempt.outcome)
    .bind(attempt.rate_limit_limit)
    .bind(attempt.rate_limit_remaining)
    .bind(attempt.rate_limit_reset_at)
    .fetch_one(pool)
    .await?;
    Ok(updated == 1)
}
