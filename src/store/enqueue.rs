//! Putting follow requests into the queue: the one UNNEST statement that inserts a chunk of
//! requests, idempotent on (source, target) over the active states, and reports per input row
//! what happened.
//!
//! Validation, chunking, retrying rows that lost a race and the errors a caller sees stay in
//! `queue::enqueue`, the public API; this file only runs the statement.

use super::Statement;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};

/// What the statement reports for one input row.
#[derive(Debug, Clone, FromRow)]
pub struct ChunkRow {
    /// The row's position in the input, from 1.
    pub ord: i64,
    pub known_account: bool,
    /// The job created or found; `None` for an unknown account, or when the conflicting job
    /// finished between the insert and the look-up.
    pub job_id: Option<i64>,
    pub created: bool,
}

/// One statement: insert the rows of known accounts, skip pairs that already have an active
/// job, and report per input row what happened.
const ENQUEUE_CHUNK: &str = r#"
WITH input AS MATERIALIZED (
    SELECT t.ord, t.source_user_id, t.target_user_id, t.priority, t.run_at, t.max_attempts,
           EXISTS (SELECT 1 FROM followq.accounts AS a WHERE a.user_id = t.source_user_id)
               AS known_account
    FROM UNNEST($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::int[])
         WITH ORDINALITY AS t(source_user_id, target_user_id, priority, run_at, max_attempts, ord)
),
inserted AS (
    INSERT INTO followq.follow_jobs
        (source_user_id, target_user_id, priority, run_at, max_attempts)
    SELECT i.source_user_id, i.target_user_id, i.priority, coalesce(i.run_at, now()), i.max_attempts
    FROM input AS i
    WHERE i.known_account
    ORDER BY i.ord
    ON CONFLICT (source_user_id, target_user_id) WHERE state IN ('queued', 'running')
    DO NOTHING
    RETURNING id, source_user_id, target_user_id
)
SELECT i.ord,
       i.known_account,
       -- A sub-select, evaluated only for rows that inserted nothing: one probe of the
       -- one-active-job index each. As a join, the planner read every active job for every
       -- chunk, which made a large import quadratic.
       CASE WHEN ins.id IS NOT NULL THEN ins.id
            WHEN i.known_account THEN (
                SELECT j.id FROM followq.follow_jobs AS j
                WHERE j.source_user_id = i.source_user_id
                  AND j.target_user_id = i.target_user_id
                  AND j.state = 'queued')
       END AS job_id,
       (ins.id IS NOT NULL
        AND i.ord = min(i.ord) OVER (PARTITION BY i.source_user_id, i.target_user_id)) AS created
FROM input AS i
LEFT JOIN inserted AS ins
       ON ins.source_user_id = i.source_user_id AND ins.target_user_id = i.target_user_id
ORDER BY i.ord
"#;

/// Inserts one chunk of requests, given column by column (the `n`th element of each slice is
/// the `n`th request; `None` takes the column's default: `run_at` now, `max_attempts` the
/// daemon's), and returns one [`ChunkRow`] per request, in order.
pub async fn enqueue_chunk<'e, E: PgExecutor<'e>>(
    executor: E,
    sources: &[&str],
    targets: &[&str],
    priorities: &[i32],
    run_ats: &[Option<DateTime<Utc>>],
    max_attempts: &[Option<i32>],
) -> Result<Vec<ChunkRow>, sqlx::Error> {
    sqlx::query_as::<_, ChunkRow>(ENQUEUE_CHUNK)
        .bind(sources)
        .bind(targets)
        .bind(priorities)
        .bind(run_ats)
        .bind(max_attempts)
        .fetch_all(executor)
        .await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[Statement {
    name: "enqueue::enqueue_chunk",
    sql: ENQUEUE_CHUNK,
}];
