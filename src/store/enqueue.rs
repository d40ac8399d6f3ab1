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
///
/// Written for Citus as well (README, "Scaling past one Postgres"), which runs no subquery
/// correlated with a set-returning function and no function but an immutable one inside
/// `coalesce`: the known accounts and the active jobs of the input's pairs are read once each,
/// into CTEs, and joined to the input (each pair one probe of the one-active-job index; the
/// accounts an `= ANY` on their key, which Citus routes to the shards that hold them).
const ENQUEUE_CHUNK: &str = r#"
WITH input AS MATERIALIZED (
    SELECT t.ord, t.source_user_id, t.target_user_id, t.priority,
           coalesce(t.run_at, n.now) AS run_at, t.max_attempts
    FROM UNNEST($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::int[])
         WITH ORDINALITY AS t(source_user_id, target_user_id, priority, run_at, max_attempts, ord),
         (SELECT now() AS now) AS n
),
known AS MATERIALIZED (
    SELECT a.user_id FROM followq.accounts AS a WHERE a.user_id = ANY ($1::text[])
),
-- The active jobs the input's pairs already have (rows this statement inserts are not
-- visible here).
existing AS MATERIALIZED (
    SELECT j.id, j.source_user_id, j.target_user_id
    FROM followq.follow_jobs AS j
    WHERE j.state = 'queued'
      AND (j.source_user_id, j.target_user_id) IN
          (SELECT u.source_user_id, u.target_user_id
           FROM UNNEST($1::text[], $2::text[]) AS u(source_user_id, target_user_id))
),
inserted AS (
    INSERT INTO followq.follow_jobs
        (source_user_id, target_user_id, priority, run_at, max_attempts)
    SELECT i.source_user_id, i.target_user_id, i.priority, i.run_at, i.max_attempts
    FROM input AS i
    WHERE i.source_user_id IN (SELECT k.user_id FROM known AS k)
    ORDER BY i.ord
    ON CONFLICT (source_user_id, target_user_id) WHERE state IN ('queued', 'running')
    DO NOTHING
    RETURNING id, source_user_id, target_user_id
),
-- The wake-up of the daemons (NOTIFY followq_job_enqueued, payload the account), once per
-- account given a new job. On Citus the inserting trigger is gone (a worker node's NOTIFY
-- reaches no daemon), so it is sent here: this statement spans shards, so Citus runs this
-- step on the coordinator, where the daemons listen. On one Postgres the trigger sends it.
-- (The catalog is asked, once per statement, rather than followq.routed_by_account(): the
-- enqueuing role may not call that.)
woken AS (
    SELECT count(pg_notify('followq_job_enqueued', w.source_user_id)) AS accounts
    FROM (SELECT DISTINCT ins.source_user_id FROM inserted AS ins) AS w
    WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')
)
SELECT i.ord,
       k.user_id IS NOT NULL AS known_account,
       coalesce(ins.id, e.id) AS job_id,
       (ins.id IS NOT NULL
        AND i.ord = min(i.ord) OVER (PARTITION BY i.source_user_id, i.target_user_id)) AS created
FROM input AS i
LEFT JOIN known AS k ON k.user_id = i.source_user_id
LEFT JOIN inserted AS ins
       ON ins.source_user_id = i.source_user_id AND ins.target_user_id = i.target_user_id
LEFT JOIN existing AS e
       ON e.source_user_id = i.source_user_id AND e.target_user_id = i.target_user_id
CROSS JOIN woken
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
