//! Recording what became of requests: job rows and their ledger rows, for a whole batch of
//! jobs in one statement.
//!
//! Every transition out of `running` goes through [`record_batch`]: succeeded, failed, or back
//! to queued (a retry after backoff, a 429 snooze, or a pause of the account or the app). The
//! update applies while this daemon still holds the job.
//!
//! An answer is never thrown away. The ledger row is always completed. An answer that arrives
//! after the job was taken back (its daemon froze past the job lease, or a peer found it gone)
//! still finishes the job when it is conclusive (a follow made, or a permanent refusal) and the
//! job has not finished since: it is the truth about that follow, and the request that may be
//! re-sending it is idempotent. An inconclusive late answer (a 5xx, a 429) leaves the job to
//! its new turn.

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

/// One job's outcome, to be written.
#[derive(Debug, Clone)]
pub struct Completion {
    pub job_id: i64,
    pub next: NextState,
    /// The answer settles the job whoever holds it now: a follow made, or a permanent refusal.
    pub conclusive: bool,
    /// For the job's `last_error` and the ledger row's `error`.
    pub error: Option<Value>,
    pub attempt: AttemptRecord,
}

/// Writes the next state of every job in `completions` and completes their ledger rows, in
/// one statement. Returns the ids of the jobs updated: a job missing from it was no longer
/// this daemon's (its lease ran out and a rescuer took it back); its ledger row is completed
/// all the same.
pub async fn record_batch(
    pool: &PgPool,
    worker_id: &str,
    completions: &[Completion],
) -> Result<Vec<i64>, sqlx::Error> {
    let n = completions.len();
    let mut job_ids = Vec::with_capacity(n);
    let mut conclusive = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut refunds = Vec::with_capacity(n);
    let mut rate_limited = Vec::with_capacity(n);
    let mut run_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut following: Vec<Option<bool>> = Vec::with_capacity(n);
    let mut pending: Vec<Option<bool>> = Vec::with_capacity(n);
    let mut errors: Vec<Option<Value>> = Vec::with_capacity(n);
    let mut attempt_ids = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut outcomes = Vec::with_capacity(n);
    let mut limits = Vec::with_capacity(n);
    let mut remainings = Vec::with_capacity(n);
    let mut resets = Vec::with_capacity(n);
    for c in completions {
        job_ids.push(c.job_id);
        conclusive.push(c.conclusive && !matches!(c.next, NextState::Queued { .. }));
        states.push(c.next.state());
        match &c.next {
            NextState::Succeeded {
                following: f,
                pending_follow: p,
            } => {
                following.push(Some(*f));
                pending.push(Some(*p));
                run_ats.push(None);
                refunds.push(false);
                rate_limited.push(false);
            }
            NextState::Failed => {
                following.push(None);
                pending.push(None);
                run_ats.push(None);
                refunds.push(false);
                rate_limited.push(false);
            }
            NextState::Queued {
                run_at,
                refund_attempt,
                rate_limited: limited,
            } => {
                following.push(None);
                pending.push(None);
                run_ats.push(Some(*run_at));
                refunds.push(*refund_attempt);
                rate_limited.push(*limited);
            }
        }
        errors.push(c.error.clone());
        attempt_ids.push(c.attempt.attempt_id);
        latencies.push(c.attempt.latency_ms);
        statuses.push(c.attempt.http_status);
        outcomes.push(c.attempt.outcome.as_str());
        limits.push(c.attempt.rate_limit_limit);
        remainings.push(c.attempt.rate_limit_remaining);
        resets.push(c.attempt.rate_limit_reset_at);
    }
    sqlx::query_scalar(
        r#"
        WITH input AS MATERIALIZED (
            SELECT * FROM UNNEST(
                $2::bigint[], $3::text[], $4::bool[], $5::bool[], $6::timestamptz[],
                $7::bool[], $8::bool[], $9::jsonb[], $10::bigint[], $11::int[],
                $12::smallint[], $13::text[], $14::int[], $15::int[], $16::timestamptz[],
                $17::bool[])
            AS t(job_id, state, refund, rate_limited, run_at,
                 following, pending_follow, error, attempt_id, latency_ms,
                 http_status, outcome, rl_limit, rl_remaining, rl_reset, conclusive)
        ),
        job AS (
            UPDATE followq.follow_jobs AS j
            SET state = i.state,
                attempts = CASE WHEN i.refund THEN greatest(j.attempts - 1, 0) ELSE j.attempts END,
                rate_limited_count = j.rate_limited_count + CASE WHEN i.rate_limited THEN 1 ELSE 0 END,
                run_at = coalesce(i.run_at, j.run_at),
                following = i.following,
                pending_follow = i.pending_follow,
                last_error = i.error,
                finished_at = CASE WHEN i.state IN ('succeeded', 'failed') THEN now() END,
                leased_by = NULL,
                lease_expires_at = NULL,
                updated_at = now()
            FROM input AS i
            WHERE j.id = i.job_id
              AND ((j.state = 'running' AND j.leased_by = $1)
                   -- A late answer that settles the job, which has not finished since.
                   OR (i.conclusive AND j.state IN ('queued', 'running')))
            RETURNING j.id
        ),
        ledger AS (
            UPDATE followq.attempts AS t
            SET completed_at = now(),
                latency_ms = i.latency_ms,
                http_status = i.http_status,
                outcome = i.outcome,
                rate_limit_limit = i.rl_limit,
                rate_limit_remaining = i.rl_remaining,
                rate_limit_reset_at = i.rl_reset,
                error = i.error
            FROM input AS i
            WHERE t.id = i.attempt_id
        )
        SELECT id FROM job
        "#,
    )
    .bind(worker_id)
    .bind(&job_ids)
    .bind(&states)
    .bind(&refunds)
    .bind(&rate_limited)
    .bind(&run_ats)
    .bind(&following)
    .bind(&pending)
    .bind(&errors)
    .bind(&attempt_ids)
    .bind(&latencies)
    .bind(&statuses)
    .bind(&outcomes)
    .bind(&limits)
    .bind(&remainings)
    .bind(&resets)
    .bind(&conclusive)
    .fetch_all(pool)
    .await
}
