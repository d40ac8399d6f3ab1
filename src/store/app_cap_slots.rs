//! The slots of the per-app daily cap (`followq.app_cap_slots`): one row per request the cap
//! let through lately, taken under the table's lock so that replicas never pass the cap
//! together. The migration says why the check reads them instead of the ledger's last seconds.

use super::Statement;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

/// Self-conflicting, and in conflict with every write: one daemon at a time counts and takes
/// a slot, and a slot deleted meanwhile waits for it. Reads (none but the take's) go on.
const LOCK: &str = "LOCK TABLE followq.app_cap_slots IN SHARE ROW EXCLUSIVE MODE";

/// Run after the lock, in a statement of its own: a statement's snapshot is taken when it
/// starts, so a count in the locking statement would miss a slot committed while it waited.
const TAKE: &str = r#"
        INSERT INTO followq.app_cap_slots (attempt_id)
        SELECT $1
        WHERE $2::bigint + (SELECT count(*) FROM followq.app_cap_slots
                            WHERE taken_at > $3::timestamptz) < $4::bigint
        RETURNING id
        "#;

/// Takes a slot for the request of ledger row `attempt_id` if `follows_before` (the app's follows the
/// caller counted up to `counted_through`) and the slots taken after `counted_through` stay
/// below `cap`; returns the slot's id, or `None` when the cap is reached.
pub async fn take(
    pool: &PgPool,
    attempt_id: i64,
    follows_before: u64,
    counted_through: DateTime<Utc>,
    cap: u32,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK).execute(&mut *tx).await?;
    let id: Option<i64> = sqlx::query_scalar(TAKE)
        .bind(attempt_id)
        .bind(i64::try_from(follows_before).unwrap_or(i64::MAX))
        .bind(counted_through)
        .bind(i64::from(cap))
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

const SLOTTED_ATTEMPTS: &str = r#"
        SELECT coalesce(array_agg(attempt_id), '{}')
        FROM followq.app_cap_slots
        WHERE taken_at > now() - make_interval(secs => $1::float8)
        "#;

/// The ledger rows whose requests took a slot in the last `within`.
pub async fn slotted_attempts(
    executor: impl PgExecutor<'_>,
    within: std::time::Duration,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(SLOTTED_ATTEMPTS)
        .bind(within.as_secs_f64())
        .fetch_one(executor)
        .await
}

const GIVE_BACK: &str = "DELETE FROM followq.app_cap_slots WHERE id = $1";

/// Deletes the slot of a request that proved to follow nobody.
pub async fn give_back(executor: impl PgExecutor<'_>, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(GIVE_BACK).bind(id).execute(executor).await?;
    Ok(())
}

const PRUNE: &str = r#"
        DELETE FROM followq.app_cap_slots
        WHERE taken_at < now() - make_interval(secs => $1::float8)
        "#;

/// Deletes the slots taken more than `older_than` ago; returns how many.
pub async fn prune(
    executor: impl PgExecutor<'_>,
    older_than: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(PRUNE)
        .bind(older_than.as_secs_f64())
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "app_cap_slots::lock",
        sql: LOCK,
    },
    Statement {
        name: "app_cap_slots::take",
        sql: TAKE,
    },
    Statement {
        name: "app_cap_slots::slotted_attempts",
        sql: SLOTTED_ATTEMPTS,
    },
    Statement {
        name: "app_cap_slots::give_back",
        sql: GIVE_BACK,
    },
    Statement {
        name: "app_cap_slots::prune",
        sql: PRUNE,
    },
];
