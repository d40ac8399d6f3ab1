//! Noting why a daemon left requests without an answer: it stopped past its grace period, or
//! a turn (or its scheduler) failed. Such a job never left the queue (a job in flight stays
//! `queued`), and its ledger row keeps no answer: the request may have gone out, and whoever
//! sends for the account next counts it until its `answer_by`, after which the job is claimed
//! and sent again (the follow endpoint is idempotent). What is written here is for operators:
//! the job's `last_error` says why, and its `run_at` is now.
//!
//! A job left this way is never failed, whatever its attempts: its request may well have
//! reached X and made the follow, and failing the job would report a follow that may exist
//! as failed.

use super::Statement;
use crate::states::ErrorKind;
use sqlx::PgPool;

/// Which of a daemon's requests in flight [`note_unanswered`] is about.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    /// All of them (shutdown past the grace period, a scheduler that failed).
    All,
    /// These jobs' (a turn that failed).
    Jobs(&'a [i64]),
    /// The jobs of these accounts (a claim batch that failed).
    Accounts(&'a [String]),
}

const NOTE_UNANSWERED: &str = r#"
        UPDATE followq.follow_jobs AS j
        SET run_at = now(), updated_at = now(),
            last_error = jsonb_build_object('kind', $5::text, 'detail', $3::text)
        WHERE ($2::bigint[] IS NULL OR j.id = ANY($2))
          AND ($4::text[] IS NULL OR j.source_user_id = ANY($4))
          AND j.state = 'queued'
          AND j.id IN (SELECT f.job_id FROM followq.jobs_in_flight AS f WHERE f.worker_id = $1)
        "#;

/// Says why the jobs whose requests `worker_id` leaves without an answer are back in line:
/// `why` in their `last_error` (kind `abandoned`). Their ledger rows are left without an
/// answer. Returns how many jobs it noted.
pub async fn note_unanswered(
    pool: &PgPool,
    worker_id: &str,
    which: Which<'_>,
    why: &str,
) -> Result<u64, sqlx::Error> {
    let (jobs, accounts) = match which {
        Which::All => (None, None),
        Which::Jobs(ids) => (Some(ids), None),
        Which::Accounts(accounts) => (None, Some(accounts)),
    };
    let done = sqlx::query(NOTE_UNANSWERED)
        .bind(worker_id)
        .bind(jobs)
        .bind(why)
        .bind(accounts)
        .bind(ErrorKind::Abandoned.as_str())
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[Statement {
    name: "unanswered::note_unanswered",
    sql: NOTE_UNANSWERED,
}];
