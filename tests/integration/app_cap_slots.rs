//! The per-app cap's slots (`store::app_cap_slots`): what a take counts, how two takers at
//! once are kept apart, and what goes away.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use followq::store::app_cap_slots;
use sqlx::Connection;

use crate::helpers::TestDb;

async fn db_now(db: &TestDb) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(&db.pool)
        .await
        .expect("clock")
}

/// The slots, after checking that the count per second holds each of them once.
async fn slots(db: &TestDb) -> i64 {
    let (rows, per_second): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM followq.app_cap_slots), \
                (SELECT coalesce(sum(taken), 0)::bigint FROM followq.app_cap_slots_per_second)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("slots");
    assert_eq!(rows, per_second, "each slot counted once in its second");
    rows
}

/// Inserts a slot taken `ago` before now (and its count), as a take does, on `executor`.
async fn insert_slot(executor: impl sqlx::PgExecutor<'_>, attempt_id: i64, ago: &str) {
    sqlx::query(
        "WITH slot AS (INSERT INTO followq.app_cap_slots (attempt_id, taken_at) \
                       VALUES ($1, now() - $2::interval) RETURNING taken_at) \
         INSERT INTO followq.app_cap_slots_per_second (second, taken) \
         SELECT date_trunc('second', taken_at, 'UTC'), 1 FROM slot \
         ON CONFLICT (second) DO UPDATE SET taken = app_cap_slots_per_second.taken + 1",
    )
    .bind(attempt_id)
    .bind(ago)
    .execute(executor)
    .await
    .expect("a slot");
}

/// Guard: the take's condition: the caller's settled follows plus the slots taken after the
/// instant they were counted through stay below the cap; slots taken before that instant
/// are the settled rows' own and do not count twice.
#[tokio::test]
async fn a_slot_is_taken_while_the_settled_follows_and_the_slots_since_stay_below_the_cap() {
    let db = TestDb::new().await;
    let before = db_now(&db).await - TimeDelta::seconds(1);
    for expected in [true, true, false] {
        let taken = app_cap_slots::take(&db.pool, 1, 2, before, 4)
            .await
            .expect("take");
        assert_eq!(taken.is_some(), expected, "{taken:?}");
    }
    assert_eq!(slots(&db).await, 2);
    // Counted through the next second after both slots (the count is per second): the
    // settled follows alone count.
    let after = (db_now(&db).await + TimeDelta::seconds(1))
        .with_nanosecond(0)
        .expect("a whole second");
    tokio::time::sleep((after - db_now(&db).await).to_std().unwrap_or_default()).await;
    assert!(
        app_cap_slots::take(&db.pool, 1, 3, after, 4)
            .await
            .expect("take")
            .is_some()
    );
    assert!(
        app_cap_slots::take(&db.pool, 1, 4, after, 4)
            .await
            .expect("take")
            .is_none(),
        "the settled follows alone reach the cap"
    );
}

/// Guard: the table lock the take waits for before it counts (`app_cap_slots::take`). Another
/// daemon's slot, inserted and not yet committed, must be counted by a take that starts
/// meanwhile: the take waits for it, then counts in a statement of its own. Without the lock
/// the take counted without it and a third slot passed a cap of 2.
#[tokio::test]
async fn a_take_waits_for_a_slot_being_taken_and_counts_it() {
    let db = TestDb::new().await;
    let counted_through = db_now(&db).await - TimeDelta::seconds(1);
    app_cap_slots::take(&db.pool, 1, 0, counted_through, 2)
        .await
        .expect("take")
        .expect("below the cap");

    let mut other = db.connection().await;
    let mut taking = other.begin().await.expect("begin");
    // The other daemon's slot, not committed.
    insert_slot(&mut *taking, 2, "0 seconds").await;

    let pool = db.pool.clone();
    let take =
        tokio::spawn(async move { app_cap_slots::take(&pool, 3, 0, counted_through, 2).await });
    // The take waits on the lock (or, without it, has already finished).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT count(*) > 0 FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE followq.app_cap_slots%'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("activity");
        if waiting || take.is_finished() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    taking.commit().await.expect("commit");
    let late = take.await.expect("the take ran").expect("take");
    assert_eq!(
        late, None,
        "the cap of 2 was reached by the other daemon's slot"
    );
    assert_eq!(slots(&db).await, 2);
}

/// Guard: `give_back` deletes one slot and its count, and `prune` only the slots and counts
/// of the seconds before its horizon.
#[tokio::test]
async fn slots_go_back_one_by_one_and_age_out_after_the_horizon() {
    let db = TestDb::new().await;
    let counted_through = db_now(&db).await - TimeDelta::seconds(1);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = app_cap_slots::take(&db.pool, 1, 0, counted_through, 10)
            .await
            .expect("take")
            .expect("below the cap");
        ids.push(id);
    }
    app_cap_slots::give_back(&db.pool, ids[1])
        .await
        .expect("give back");
    assert_eq!(slots(&db).await, 1);

    insert_slot(&db.pool, 7, "2 hours").await;
    insert_slot(&db.pool, 8, "2 hours").await;
    insert_slot(&db.pool, 9, "50 minutes").await;
    assert_eq!(slots(&db).await, 4);
    let pruned = app_cap_slots::prune(&db.pool, Duration::from_secs(3600))
        .await
        .expect("prune");
    assert_eq!(pruned, 2);
    assert_eq!(slots(&db).await, 2);
    let left: Vec<i64> =
        sqlx::query_scalar("SELECT attempt_id FROM followq.app_cap_slots ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .expect("slots");
    assert_eq!(left, vec![1, 9]);
}
