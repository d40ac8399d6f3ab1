//! Recording what became of requests: job rows and their ledger rows, for a whole batch of
//! jobs in one statement.
//!
//! Every outcome goes through [`record_batch`]: succeeded, failed, or back to the queue (a
//! retry after backoff, a 429 snooze, or a pause of the account or the app). This is the only
//! write to the job row a request costs: the claim wrote the ledger row alone, and the job
//! stayed `queued` while its request was in flight. The update applies while this daemon's
//! claim is the job's latest.
//!
//! An answer is never thrown away. The ledger row is always completed. An answer that arrives
//! after the job was claimed again (its `answer_by` passed: its daemon froze, or a peer found
//! it gone)
//! still finishes the job when it is conclusive (a follow made, or a permanent refusal) and the
//! job has not finished since: it is the truth about that follow, and the request that may be
//! re-sending it is idempotent. An inconclusive late answer (a 5xx, a 429) leaves the job to
//! its new turn.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, FromRow, PgPool};

use super::Statement;
use super::claim::ClaimedJob;
use crate::ids::UserId;
use crate::states::JobState;

/// Most outcomes to record in one statement. The job rows are found by primary key, one
/// lookup per outcome; for several hundred outcomes Postgres may find reading the whole job
/// table cheaper (at about 400 on a table of 50,000 jobs), and such a statement takes several
/// times as long.
pub const MAX_OUTCOMES_PER_STATEMENT: usize = 256;

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
    /// The state the job is written with.
    pub fn state(&self) -> JobState {
        match self {
            NextState::Succeeded { .. } => JobState::Succeeded,
            NextState::Failed => JobState::Failed,
            NextState::Queued { .. } => JobState::Queued,
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
    /// The job's account: every statement names the accounts it touches (see the
    /// account-in-every-key migration).
    pub source_user_id: String,
    /// The job's target: not written (the job row has it), but logged with an outcome the
    /// daemon could not write before it stopped, for an operator to reconcile.
    pub target_user_id: String,
    pub next: NextState,
    /// The answer settles the job whoever holds it now: a follow made, or a permanent refusal.
    pub conclusive: bool,
    /// For the job's `last_error` and the ledger row's `error`.
    pub error: Option<Value>,
    pub attempt: AttemptRecord,
}

/// The record's common table expressions (`input`, `job`, `ledger`), for [`record_batch`]
/// and [`record_and_claim`]; parameters `$1` to `$17`.
///
/// On Citus every table is also filtered by the outcomes' accounts (`= ANY($17)`): outcomes
/// of one shard's accounts make the statement one routed to that shard, which Citus needs for
/// the correlated look-up in `checked`. On one Postgres `followq.routed_by_account()` folds
/// each filter away when the statement is planned.
macro_rules! record_ctes {
    () => {
        concat!(
        r#"
        input AS MATERIALIZED (
            SELECT * FROM UNNEST(
                $1::bigint[], $2::text[], $3::bool[], $4::bool[], $5::timestamptz[],
                $6::bool[], $7::bool[], $8::jsonb[], $9::bigint[], $10::int[],
                $11::smallint[], $12::text[], $13::int[], $14::int[], $15::timestamptz[],
                $16::bool[], $17::text[])
            AS t(job_id, state, refund, rate_limited, run_at,
                 following, pending_follow, error, attempt_id, latency_ms,
                 http_status, outcome, rl_limit, rl_remaining, rl_reset, conclusive, account)
        ),
        checked AS MATERIALIZED (
            -- Whether each claim is still its job's latest (no one claimed the job since),
            -- looked up once per outcome before the update. Inside the update's filter the
            -- planner charged this lookup to every job row it might read, which made reading
            -- the whole table look cheaper than a primary-key lookup per outcome for batches
            -- of about 100 outcomes.
            SELECT i.*, i.conclusive OR NOT EXISTS (
                       SELECT 1 FROM followq.attempts AS later
                       WHERE later.job_id = i.job_id AND later.account_user_id = i.account
                         AND (NOT followq.routed_by_account()
                              OR later.account_user_id = ANY($17::text[]))
                         AND later.id > i.attempt_id
                         AND later.outcome IS DISTINCT FROM 'not_sent') AS latest_or_conclusive
            FROM input AS i
        ),
        -- The ledger row first, written once: only while it has no final answer. A statement
        -- replayed after a commit whose reply was lost (or racing the original, still running
        -- on a connection the daemon gave up on) finds it answered, re-checked on the row
        -- itself, and changes nothing: no attempt or 429 counted twice, nothing claimed.
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
            FROM checked AS i
            WHERE t.id = i.attempt_id AND t.account_user_id = i.account
              AND (NOT followq.routed_by_account() OR t.account_user_id = ANY($17::text[]))
              AND "#,
        $crate::store::ledger::unanswered_sql!("t"),
        r#"
            -- completed_at is now(): the job's finished_at takes it from here, as Citus
            -- refuses a function that is not immutable inside a CASE of an UPDATE.
            RETURNING i.*, t.completed_at
        ),
        job AS (
            UPDATE followq.follow_jobs AS j
            SET state = i.state,
                -- The claim counted nothing: the attempt counts here, unless refunded.
                attempts = CASE WHEN i.refund THEN j.attempts ELSE j.attempts + 1 END,
                rate_limited_count = j.rate_limited_count + CASE WHEN i.rate_limited THEN 1 ELSE 0 END,
                run_at = coalesce(i.run_at, j.run_at),
                following = i.following,
                pending_follow = i.pending_follow,
                last_error = i.error,
                finished_at = CASE WHEN i.state IN ('succeeded', 'failed') THEN i.completed_at END,
                updated_at = now()
            FROM ledger AS i
            -- Written as a CASE, not an OR on j.state, so that the job rows are found by
            -- primary key, one per input row: an OR on the state would let the planner scan
            -- every queued job instead. A searched CASE: Citus deparses `CASE j.state WHEN
            -- 'queued'` for the worker as `CASE j.state WHEN NULL::boolean`.
            WHERE j.id = i.job_id AND j.source_user_id = i.account
              AND (NOT followq.routed_by_account() OR j.source_user_id = ANY($17::text[]))
              AND CASE
                      -- This claim is the job's latest (or it is a late answer that settles
                      -- the job anyway).
                      WHEN j.state = 'queued' THEN i.latest_or_conclusive
                      -- Finished since: the answer is only recorded in the ledger.
                      ELSE false
                  END
            RETURNING j.id
        )
        "#
        )
    };
}

const RECORD_BATCH: &str = concat!("WITH", record_ctes!(), "SELECT id FROM job");

const RECORD_AND_CLAIM: &str = concat!(
    "WITH",
    record_ctes!(),
    ",",
    // Nothing is claimed by a statement that recorded nothing (a replay).
    super::claim::claim_ctes!("$18", "$19", "$20", "EXISTS (SELECT 1 FROM ledger)"),
    r#"
        SELECT 'recorded' AS kind, job.id, NULL::text AS source_user_id,
               NULL::text AS target_user_id, NULL::int AS attempts, NULL::int AS max_attempts,
               NULL::int AS rate_limited_count, NULL::bigint AS attempt_id
        FROM job
        UNION ALL
        SELECT 'claimed', claimed_row.*
        FROM ("#,
    super::claim::claimed_jobs!("$18"),
    r#") AS claimed_row
        "#
);

/// Writes the next state of every job in `completions` and completes their ledger rows, in
/// one statement. Returns the ids of the jobs updated: a job missing from it was not this
/// claim's any more (claimed again after the request's `answer_by`, or finished meanwhile);
/// its ledger row is completed all the same.
pub async fn record_batch(
    pool: &PgPool,
    completions: &[Completion],
) -> Result<Vec<i64>, sqlx::Error> {
    let arguments = completion_arguments(completions).map_err(sqlx::Error::Encode)?;
    sqlx::query_scalar_with(RECORD_BATCH, arguments)
        .fetch_all(pool)
        .await
}

/// What [`record_and_claim`] did.
#[derive(Debug, Default)]
pub struct RecordedAndClaimed {
    /// The jobs whose outcome was written (as [`record_batch`] returns them).
    pub recorded: Vec<i64>,
    /// The next job of each account of `claim_for` that had one ready and is still this
    /// daemon's (as [`super::claim::claim_batch`] returns them).
    pub claimed: Vec<ClaimedJob>,
}

#[derive(FromRow)]
struct RecordedOrClaimed {
    kind: String,
    id: i64,
    source_user_id: Option<UserId>,
    target_user_id: Option<UserId>,
    attempts: Option<i32>,
    max_attempts: Option<i32>,
    rate_limited_count: Option<i32>,
    attempt_id: Option<i64>,
}

/// [`record_batch`] and [`super::claim::claim_batch`] for the accounts `claim_for`, in one
/// statement and one commit: the daemon hands each slot a finished request leaves to the next
/// account in line without a statement of its own. The two parts touch different accounts
/// (an account whose outcome is being recorded is never in `claim_for`), and the claim keeps
/// every check of the standalone one: the lease, the account's status, its rows locked in key
/// order for the statement's life.
pub async fn record_and_claim(
    pool: &PgPool,
    completions: &[Completion],
    worker_id: &str,
    claim_for: &[String],
    answer_within: Duration,
) -> Result<RecordedAndClaimed, sqlx::Error> {
    let mut arguments = completion_arguments(completions).map_err(sqlx::Error::Encode)?;
    arguments.add(claim_for).map_err(sqlx::Error::Encode)?;
    arguments.add(worker_id).map_err(sqlx::Error::Encode)?;
    arguments
        .add(answer_within.as_secs_f64())
        .map_err(sqlx::Error::Encode)?;
    let rows: Vec<RecordedOrClaimed> = sqlx::query_as_with(RECORD_AND_CLAIM, arguments)
        .fetch_all(pool)
        .await?;
    let mut done = RecordedAndClaimed::default();
    for row in rows {
        match row {
            RecordedOrClaimed {
                kind,
                id,
                source_user_id: Some(source_user_id),
                target_user_id: Some(target_user_id),
                attempts: Some(attempts),
                max_attempts,
                rate_limited_count: Some(rate_limited_count),
                attempt_id: Some(attempt_id),
            } if kind == "claimed" => done.claimed.push(ClaimedJob {
                id,
                source_user_id,
                target_user_id,
                attempts,
                max_attempts,
                rate_limited_count,
                attempt_id,
            }),
            row => done.recorded.push(row.id),
        }
    }
    Ok(done)
}

/// The seventeen arrays of `$1` to `$17`, one element per completion.
fn completion_arguments(completions: &[Completion]) -> Result<PgArguments, BoxDynError> {
    let n = completions.len();
    let mut job_ids = Vec::with_capacity(n);
    let mut accounts = Vec::with_capacity(n);
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
        accounts.push(c.source_user_id.as_str());
        conclusive.push(c.conclusive && !matches!(c.next, NextState::Queued { .. }));
        states.push(c.next.state().as_str());
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
    let mut arguments = PgArguments::default();
    arguments.add(&job_ids)?;
    arguments.add(&states)?;
    arguments.add(&refunds)?;
    arguments.add(&rate_limited)?;
    arguments.add(&run_ats)?;
    arguments.add(&following)?;
    arguments.add(&pending)?;
    arguments.add(&errors)?;
    arguments.add(&attempt_ids)?;
    arguments.add(&latencies)?;
    arguments.add(&statuses)?;
    arguments.add(&outcomes)?;
    arguments.add(&limits)?;
    arguments.add(&remainings)?;
    arguments.add(&resets)?;
    arguments.add(&conclusive)?;
    arguments.add(&accounts)?;
    Ok(arguments)
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "record::record_batch",
        sql: RECORD_BATCH,
    },
    Statement {
        name: "record::record_and_claim",
        sql: RECORD_AND_CLAIM,
    },
];
