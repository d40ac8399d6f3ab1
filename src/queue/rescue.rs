//! Rescuing orphans: jobs left `running` by a daemon that died, once their job lease ran out.
//!
//! The job goes back to the queue (or fails, when it has used all its attempts: a job that
//! kills its daemon every time must not loop forever), and the ledger row of the request that
//! never got its answer is marked `abandoned`. It still counts against the account's window:
//! the request may well have reached X. The endpoint is idempotent, so sending it again is
//! safe, and it goes through the account's limiter like any other request.

use sqlx::{FromRow, PgPool};

/// A job the rescuer took back.
#[derive(Debug, Clone, FromRow)]
pub struct RescuedJob {
    pub id: i64,
    pub state: String,
    pub source_user_id: String,
    pub target_user_id: String,
    pub attempts: i32,
}

/// Takes back up to `limit` orphaned jobs. `default_max_attempts` applies to jobs without
/// their own `max_attempts`.
pub async fn rescue_orphans(
    pool: &PgPool,
    default_max_attempts: i32,
    limit: i64,
) -> Result<Vec<RescuedJob>, sqlx::Error> {
    sqlx::query_as::<_, RescuedJob>(
        r#"
        WITH orphans AS MATERIALIZED (
            SELECT j.id, j.attempts >= coalesce(j.max_attempts, $1) AS exhausted
            FROM followq.follow_jobs AS j
            WHERE j.state = 'running' AND j.lease_expires_at < now()
            ORDER BY j.lease_expires_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ),
        rescued AS (
            UPDATE followq.follow_jobs AS j
            SET state = CASE WHEN o.exhausted THEN 'failed' ELSE 'queued' END,
                finished_at = CASE WHEN o.exhausted THEN now() END,
                last_error = jsonb_build_object(
                    'kind', 'abandoned',
                    'detail', 'the daemon that sent the request stopped before recording its answer',
                    'worker_id', j.leased_by),
                run_at = now(),
                leased_by = NULL,
                lease_expires_at = NULL,
                updated_at = now()
            FROM orphans AS o
            WHERE j.id = o.id
            RETURNING j.id, j.state, j.source_user_id, j.target_user_id, j.attempts
        ),
        ledger AS (
            UPDATE followq.attempts AS t
            SET outcome = 'abandoned', completed_at = now()
            FROM rescued AS r
            WHERE t.job_id = r.id AND t.outcome IS NULL
        )
        SELECT * FROM rescued
        "#,
    )
    .bind(default_max_attempts)
    .bind(limit)
    .fetch_all(pool)
    .await
}
