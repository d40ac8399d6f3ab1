//! The daemon registry (`followq.daemons`): each daemon registers at start, heartbeats with
//! its leases and leaves on a clean stop, so replicas can share the accounts fairly and
//! operators can see who is running.

use std::time::Duration;

use sqlx::PgPool;

pub async fn register(pool: &PgPool, worker_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO followq.daemons (worker_id) VALUES ($1) \
         ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()",
    )
    .bind(worker_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Renews this daemon's heartbeat and forgets daemons silent for longer than `dead_after`.
pub async fn heartbeat(
    pool: &PgPool,
    worker_id: &str,
    dead_after: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        WITH me AS (
            INSERT INTO followq.daemons (worker_id) VALUES ($1)
            ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()
        )
        DELETE FROM followq.daemons
        WHERE heartbeat_at < now() - make_interval(secs => $2) AND worker_id <> $1
        "#,
    )
    .bind(worker_id)
    .bind(dead_after.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn leave(pool: &PgPool, worker_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM followq.daemons WHERE worker_id = $1")
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many accounts this daemon should hold at most so that live daemons share the work:
/// the accounts that are leased or have a ready job, divided by the live daemons, rounded up.
/// `None` when this daemon is the only one (no need to count).
pub async fn fair_share(
    pool: &PgPool,
    worker_id: &str,
    dead_after: Duration,
) -> Result<Option<usize>, sqlx::Error> {
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM followq.daemons \
         WHERE heartbeat_at > now() - make_interval(secs => $1) OR worker_id = $2",
    )
    .bind(dead_after.as_secs_f64())
    .bind(worker_id)
    .fetch_one(pool)
    .await?;
    if live <= 1 {
        return Ok(None);
    }
    let wanting: i64 = sqlx::query_scalar(
        r#"
        SELECT count(*) FROM followq.accounts AS a
        WHERE (a.leased_by IS NOT NULL AND a.lease_expires_at > now())
           OR (a.status IN ('active', 'paused')
               AND EXISTS (SELECT 1 FROM followq.follow_jobs AS j
                           WHERE j.source_user_id = a.user_id
                             AND j.state = 'queued' AND j.run_at <= now()))
        "#,
    )
    .fetch_one(pool)
    .await?;
    let share = (wanting + live - 1) / live;
    Ok(Some(usize::try_from(share).unwrap_or(0).max(1)))
}
