//! Claiming the next job of each of a batch of accounts: one short statement, committed before
//! any request goes out.
//!
//! The statement re-checks, atomically with the claim, that this daemon still holds the
//! account's lease for longer than one request can take, and writes the ledger row of the
//! request about to be sent, with the latest instant it can reach X (`answer_by`). The job row
//! is not written: it stays `queued`, and its ledger row says it is in flight (the view
//! `followq.jobs_in_flight`), so even a request whose answer is never recorded counts against
//! the account's window, a successor knows how long to wait for it, and no claim picks the job
//! again before its `answer_by`. The attempt is counted when the outcome is recorded.
//!
//! Pauses: the account row's automatic pauses (`rate_limited`, `rate_limit_window`, caps)
//! keep other daemons from leasing the account, and are timed precisely by the holder's own
//! limiter, so they do not block the holder's claims (a database clock a few milliseconds
//! off must not stall a window that the limiter knows has ended). An operator's pause, a
//! `needs_reauth` or a `disabled` account does.

use super::Statement;
use std::time::Duration;

use crate::ids::UserId;
use sqlx::{FromRow, PgPool};

/// A job this daemon now holds, with the ledger row of the request it is about to send.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedJob {
    pub id: i64,
    pub source_user_id: UserId,
    pub target_user_id: UserId,
    /// Attempts including this one.
    pub attempts: i32,
    pub max_attempts: Option<i32>,
    pub rate_limited_count: i32,
    pub attempt_id: i64,
}

/// The claim's common table expressions, for this statement and for the one that records
/// outcomes and claims in one go ([`super::record::record_and_claim`]): `held` (the accounts
/// still this daemon's), `next` (each one's next ready job, locked) and `claimed` (their
/// ledger rows). The arguments are the placeholders of the account ids, the worker id and the
/// seconds within which the request may still reach X.
macro_rules! claim_ctes {
    ($accounts:literal, $worker:literal, $answer_within:literal) => {
        $crate::store::claim::claim_ctes!($accounts, $worker, $answer_within, "true")
    };
    ($accounts:literal, $worker:literal, $answer_within:literal, $only_if:literal) => {
        concat!(
            r#"
        held AS MATERIALIZED (
            -- By primary key: the cost follows the batch, not the number of accounts.
            SELECT a.user_id
            FROM followq.accounts AS a
            WHERE a.user_id = ANY("#,
            $accounts,
            r#"::text[])
              AND a.leased_by = "#,
            $worker,
            r#"::text
              AND a.lease_expires_at > now() + make_interval(secs => "#,
            $answer_within,
            r#"::float8)
              -- Automatic pauses (429 reset, window, caps) are this holder's own and its
              -- limiter times them precisely; only an operator's pause stops a claim here.
              -- Every pause stops other daemons from leasing the account.
              -- A CASE, not an OR of statuses: an OR let the planner read the accounts
              -- through the status indexes (every active account, whatever the batch)
              -- instead of by primary key.
              AND CASE a.status
                      WHEN 'active' THEN true
                      WHEN 'paused' THEN a.paused_until <= now() OR a.pause_reason <> 'operator'
                      ELSE false
                  END
              AND "#,
            $only_if,
            r#"
            ORDER BY a.user_id
            FOR SHARE OF a
        ),
        next AS MATERIALIZED (
            SELECT j.id, j.source_user_id
            FROM held AS a
            CROSS JOIN LATERAL (
                SELECT j.id, j.source_user_id
                FROM followq.follow_jobs AS j
                WHERE j.source_user_id = a.user_id
                  -- On Citus, with the same filter on every table, a batch of accounts of one
                  -- shard is routed to that shard as one statement (row locks and all), which
                  -- Citus does not do for a join alone. On one Postgres the planner folds
                  -- the filter away (see followq.routed_by_account()).
                  AND (NOT followq.routed_by_account() OR j.source_user_id = ANY("#,
            $accounts,
            r#"::text[]))
                  AND j.state = 'queued'
                  AND j.run_at <= now()
                  -- Never a job whose request may still reach X: a job is in flight once at
                  -- most, whatever the scheduler believes (its account's limiter waits for
                  -- that request anyway).
                  -- An `abandoned` row (a peer reaped its daemon) is still in the air until
                  -- its answer_by, like one without an answer.
                  AND NOT EXISTS (
                      SELECT 1 FROM followq.attempts AS t
                      WHERE t.job_id = j.id AND t.account_user_id = j.source_user_id
                        AND (NOT followq.routed_by_account() OR t.account_user_id = ANY("#,
            $accounts,
            r#"::text[]))
                        AND "#,
            $crate::store::ledger::unanswered_sql!("t"),
            r#" AND t.answer_by > now()
                      -- OFFSET 0 keeps this a look-up of the job's own ledger rows, made for
                      -- each job the scan reaches (one, with the LIMIT). As an anti-join the
                      -- planner read every ledger row of the account instead, a cost that
                      -- grows with the account's history.
                      OFFSET 0)
                ORDER BY j.priority DESC, j.run_at, j.id
                LIMIT 1
                -- Locked, not written: an operator's cancel waits for the claim to commit and
                -- then sees its ledger row.
                FOR NO KEY UPDATE SKIP LOCKED
            ) AS j
        ),
        claimed AS (
            INSERT INTO followq.attempts (job_id, account_user_id, worker_id, answer_by)
            SELECT n.id, n.source_user_id, "#,
            $worker,
            r#", now() + make_interval(secs => "#,
            $answer_within,
            r#")
            FROM next AS n
            WHERE (NOT followq.routed_by_account() OR n.source_user_id = ANY("#,
            $accounts,
            r#"::text[]))
            RETURNING id, job_id, account_user_id
        )
        "#
        )
    };
}
pub(crate) use claim_ctes;

/// The jobs [`claim_ctes!`] claimed, as [`ClaimedJob`] columns: each ledger row the claim
/// wrote, with its job read by primary key. (Joining `next` to `claimed` instead compared
/// every claimed row with every other, as the planner expects one row from each.) The job
/// rows read are those before the statement, which the claim only locked.
macro_rules! claimed_jobs {
    ($accounts:literal) => {
        concat!(
            r#"
        SELECT claimed_job.id, claimed_job.source_user_id::text,
               claimed_job.target_user_id::text, claimed_job.attempts + 1 AS attempts,
               claimed_job.max_attempts, claimed_job.rate_limited_count, c.id AS attempt_id
        FROM claimed AS c
        JOIN followq.follow_jobs AS claimed_job
          ON claimed_job.id = c.job_id AND claimed_job.source_user_id = c.account_user_id
         AND (NOT followq.routed_by_account() OR claimed_job.source_user_id = ANY("#,
            $accounts,
            r#"::text[]))
        "#
        )
    };
}
pub(crate) use claimed_jobs;

const CLAIM_BATCH: &str = concat!("WITH", claim_ctes!("$1", "$2", "$3"), claimed_jobs!("$1"));

/// Claims, for each of `accounts`, its next ready job (highest priority, then oldest
/// `run_at`), in one statement. Accounts with nothing ready (or no valid lease) are simply
/// absent from the answer.
///
/// `answer_within` is how long after the claim the request may still reach X (the send
/// deadline plus the request timeout): the account lease must outlast it, and the ledger row
/// says until when a successor must count the request.
///
/// The account rows are locked `FOR SHARE`, in key order, for the statement's short life: a
/// lease change (another daemon taking the account, a peer reaping this daemon, an operator's
/// pause) waits for the claim to commit, so whoever takes the account next reads this claim's
/// ledger row when it seeds its limiter. Other statements that lock several account rows take
/// them in the same order, so none deadlocks with a claim.
pub async fn claim_batch(
    pool: &PgPool,
    worker_id: &str,
    accounts: &[String],
    answer_within: Duration,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    sqlx::query_as::<_, ClaimedJob>(CLAIM_BATCH)
        .bind(accounts)
        .bind(worker_id)
        .bind(answer_within.as_secs_f64())
        .fetch_all(pool)
        .await
}

const NEXT_RUN_AT: &str = r#"
        SELECT source_user_id, min(run_at)
        FROM followq.follow_jobs
        WHERE source_user_id = ANY($1) AND state = 'queued'
        GROUP BY source_user_id
        "#;

/// For each of `accounts`, when its earliest queued job becomes ready. An account with no
/// queued job is absent from the answer.
pub async fn next_run_at(
    pool: &PgPool,
    accounts: &[String],
) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
    sqlx::query_as(NEXT_RUN_AT)
        .bind(accounts)
        .fetch_all(pool)
        .await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "claim::claim_batch",
        sql: CLAIM_BATCH,
    },
    Statement {
        name: "claim::next_run_at",
        sql: NEXT_RUN_AT,
    },
];
