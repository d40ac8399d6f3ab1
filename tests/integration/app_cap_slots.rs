//! The per-app cap's slots (`store::app_cap_slots`): what a take counts, how two takers at
//! once are kept apart, and what goes away.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use followq::store::app_cap_slots;
use sqlx::Connection;

use crate::helpers::TestDb;

async fn db_now(db: &TestDb) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(&db.pool)
        .await
        .expect("clock")
}

async fn slots(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM followq.app_cap_slots")
        .fetch_one(&db.pool)
        .await
        .expect("slots")
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
    // Counted through an instant after both slots: the settled follows alone count.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = db_now(&db).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
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
    sqlx::query("INSERT INTO followq.app_cap_slots (attempt_id) VALUES (2)")
        .execute(&mut *taking)
        .await
        .expect("the other daemon's slot, not committed");

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

/// Guard: `give_back` deletes one slot, and `prune` only those taken before its horizon.
#[tokio::test]
async fn slots_go_back_one_by_one_and_age_out_after_the_horizon() {
    let db = TestDb::new().await;
    let counted_through = db_now(&db).await - TimeDelta::seconds(1);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = app_cap_slots::take(&db.pool, 1, 0, counted_through, 10)
            .await
            .expect("take")
            .expect("below the cap");
        ids.push(id);
    }
    app_cap_slots::give_back(&db.pool, ids[1])
        .await
        .expect("give back");
    assert_eq!(slots(&db).await, 2);

    sqlx::query(
        "UPDATE followq.app_cap_slots SET taken_at = now() - interval '2 hours' WHERE id = $1",
    )
    .bind(ids[0])
    .execute(&db.pool)
    .await
    .expect("an old slot");
    let pruned = app_cap_slots::prune(&db.pool, Duration::from_secs(3600))
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM followq.app_cap_slots")
        .fetch_all(&db.pool)
        .await
        .expect("slots");
    assert_eq!(left, vec![ids[2]]);
}
