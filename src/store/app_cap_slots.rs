//! The slots of the per-app daily cap: one row per request the cap let through lately
//! (`followq.app_cap_slots`), counted per second (`followq.app_cap_slots_per_second`), taken
//! under the first table's lock so that replicas never pass the cap together. The migration
//! says why the check reads them instead of the ledger's last seconds.

use super::Statement;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

/// Self-conflicting, and in conflict with every write of the slots: one daemon at a time
/// counts and takes a slot, and a slot given back or pruned meanwhile waits for it. Reads go
/// on.
const LOCK: &str = "LOCK TABLE followq.app_cap_slots IN SHARE ROW EXCLUSIVE MODE";

/// Run after the lock, in a statement of its own: a statement's snapshot is taken when it
/// starts, so a count in the locking statement would miss a slot committed while it waited.
/// The seconds counted start at the second that holds `$3`: a slot taken in it before `$3`
/// counts too, on the safe side.
const TAKE: &str = r#"
        WITH counted AS (
            SELECT coalesce(sum(taken), 0)::bigint AS slots
            FROM followq.app_cap_slots_per_second
            WHERE second >= date_trunc('second', $3::timestamptz, 'UTC')
        ),
        slot AS (
            INSERT INTO followq.app_cap_slots (attempt_id)
            SELECT $1 FROM counted WHERE $2::bigint + counted.slots < $4::bigint
            RETURNING id, taken_at
        ),
        tallied AS (
            INSERT INTO followq.app_cap_slots_per_second (second, taken)
            SELECT date_trunc('second', slot.taken_at, 'UTC'), 1 FROM slot
            ON CONFLICT (second) DO UPDATE SET taken = app_cap_slots_per_second.taken + 1
        )
        SELECT id FROM slot
        "#;

/// Takes a slot for the request of ledger row `attempt_id` if `follows_before` (the app's
/// follows the caller counted up to `counted_through`) and the slots taken after
/// `counted_through` stay below `cap`; returns the slot's id, or `None` when the cap is
/// reached.
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

const GIVE_BACK: &str = r#"
        WITH gone AS (
            DELETE FROM followq.app_cap_slots WHERE id = $1 RETURNING taken_at
        )
        UPDATE followq.app_cap_slots_per_second AS s
        SET taken = s.taken - 1
        FROM gone
        WHERE s.second = date_trunc('second', gone.taken_at, 'UTC')
        "#;

/// Gives back the slot of a request that proved to follow nobody.
pub async fn give_back(executor: impl PgExecutor<'_>, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(GIVE_BACK).bind(id).execute(executor).await?;
    Ok(())
}

/// A second's count goes with its slots: every slot it counts was taken before the second
/// after it, so before the horizon.
const PRUNE: &str = r#"
        WITH horizon AS (
            SELECT date_trunc('second', now() - make_interval(secs => $1::float8), 'UTC') AS at
        ),
        slots AS (
            DELETE FROM followq.app_cap_slots AS s USING horizon
            WHERE s.taken_at < horizon.at
            RETURNING 1
        ),
        seconds AS (
            DELETE FROM followq.app_cap_slots_per_second AS c USING horizon
            WHERE c.second < horizon.at
            RETURNING 1
        )
        SELECT count(*) FROM slots
        "#;

/// Deletes the slots taken more than `older_than` ago (to the second); returns how many.
pub async fn prune(
    executor: impl PgExecutor<'_>,
    older_than: std::time::Duration,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(PRUNE)
        .bind(older_than.as_secs_f64())
        .fetch_one(executor)
        .await
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
