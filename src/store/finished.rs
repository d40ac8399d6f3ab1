//! Announcing finished jobs (`NOTIFY followq_job_finished`) where no trigger does: on Citus.
//!
//! On one Postgres the statement trigger of `follow_jobs` announces every job a statement
//! finishes. On Citus that trigger is gone (it would run on the worker that holds the shard,
//! out of reach of the services listening on the coordinator), and a statement that writes a
//! job cannot carry the NOTIFY either: Citus sends a statement about one shard's accounts to
//! that shard's worker whole. So whoever finished jobs there announces them right after, in a
//! statement of its own on the coordinator. Both paths write the payload with
//! `followq.announce_finished` (its migration says what a notification holds).

use sqlx::PgExecutor;

use super::Statement;
use crate::states::JobState;

/// A job that reached `succeeded`, `failed` or `cancelled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedJob {
    pub id: i64,
    /// `Succeeded`, `Failed` or `Cancelled`.
    pub state: JobState,
    pub source_user_id: String,
    pub target_user_id: String,
}

/// Where the trigger is gone only: `followq.routed_by_account()` is true where Citus is
/// installed, and it is folded when the statement is planned, so on one Postgres (where the
/// trigger has announced the jobs already) the statement sends nothing.
const ANNOUNCE_FINISHED: &str = "SELECT followq.announce_finished($1::bigint[], $2::text[], \
     $3::text[], $4::text[]) WHERE followq.routed_by_account()";

/// Announces `jobs` on the coordinator (on Citus; nothing on one Postgres, where the trigger
/// did). Inside a transaction the notifications go out when it commits.
pub async fn announce_finished(
    executor: impl PgExecutor<'_>,
    jobs: &[FinishedJob],
) -> Result<(), sqlx::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
    let states: Vec<&str> = jobs.iter().map(|job| job.state.as_str()).collect();
    let sources: Vec<&str> = jobs.iter().map(|job| job.source_user_id.as_str()).collect();
    let targets: Vec<&str> = jobs.iter().map(|job| job.target_user_id.as_str()).collect();
    sqlx::query(ANNOUNCE_FINISHED)
        .bind(ids)
        .bind(states)
        .bind(sources)
        .bind(targets)
        .execute(executor)
        .await?;
    Ok(())
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[Statement {
    name: "finished::announce_finished",
    sql: ANNOUNCE_FINISHED,
}];
