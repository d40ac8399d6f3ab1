//! Writing outcomes: the completer keeps a second statement going while one is held up, so a
//! statement that waits for a lock (an operator's transaction, a slow commit) does not stall
//! every other account's outcome behind it; and an account whose outcome is not written yet
//! sends nothing more.

use std::time::Duration;

use followq::sim::FaultConfig;
use sqlx::Connection;

use crate::support::{Harness, shared, sim_config};

/// Guards: `worker::completer::STATEMENTS_IN_FLIGHT`, and the scheduler's `Recording` phase.
/// The test holds the ledger row of one account's request locked while its answer comes
/// back, so the statement that records it waits; another account's job, enqueued then, is
/// sent and recorded meanwhile (with one statement at a time its outcome would wait behind
/// the held one), while the held account's next job is not sent until its outcome is written
/// (an account whose outcome is pending stays out of the ready queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_held_up_by_a_lock_does_not_hold_up_the_others() {
    let _shared = shared().await;
    let mut config = sim_config(50, Duration::from_secs(60));
    // Every answer takes a moment, so that the test can lock the ledger row of a request
    // before its answer arrives.
    config.faults = FaultConfig {
        delay: 1.0,
        delay_duration: Duration::from_millis(700),
        ..FaultConfig::default()
    };
    let harness = Harness::new(config).await;
    harness.account("3100").await;
    harness.account("3200").await;
    harness.enqueue("3100", 7_000, 2).await;
    let daemon = harness.start().await;

    // 3100's request is in the air: lock its ledger row until the test says otherwise.
    harness
        .wait_until(
            Duration::from_secs(10),
            "3100's request in flight",
            "SELECT EXISTS (SELECT 1 FROM followq.attempts WHERE account_user_id = '3100')",
        )
        .await;
    let mut holder = harness.db.connection().await;
    let mut held = holder.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM followq.attempts WHERE account_user_id = '3100' FOR UPDATE")
        .execute(&mut *held)
        .await
        .expect("lock the ledger row");
    // Its answer arrives and the statement recording it waits for the lock.
    harness
        .wait_until(
            Duration::from_secs(10),
            "the record of 3100's answer waiting for the lock",
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE datname = current_database() AND wait_event_type = 'Lock'
                              AND query LIKE '%input AS MATERIALIZED%')",
        )
        .await;

    // Another account's job is sent and recorded while that statement waits.
    harness.enqueue("3200", 8_000, 1).await;
    harness
        .wait_finished(
            Duration::from_secs(10),
            "3200's job, while 3100's outcome waits",
            "SELECT count(*) = 1 FROM followq.follow_jobs
             WHERE source_user_id = '3200' AND state = 'succeeded'",
        )
        .await;
    assert_eq!(
        harness.user("3100").await.requests,
        1,
        "3100 sent its next job before its outcome was written"
    );
    assert_eq!(
        harness
            .count(
                "SELECT count(*) FROM followq.follow_jobs
                 WHERE source_user_id = '3100' AND state = 'queued'"
            )
            .await,
        2,
        "3100's outcome is still held up"
    );

    // Released, the held statement completes: nothing was lost.
    held.rollback().await.expect("release the lock");
    harness
        .wait_finished(
            Duration::from_secs(10),
            "3100's jobs once the lock is released",
            "SELECT count(*) = 2 FROM followq.follow_jobs
             WHERE source_user_id = '3100' AND state = 'succeeded'",
        )
        .await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let stats = harness.stats().await;
    assert_eq!(
        stats.users["3100"].requests, 2,
        "3100's jobs were sent once each"
    );
    assert_eq!(stats.users["3100"].max_in_flight, 1);
    assert_eq!(stats.users["3200"].requests, 1, "3200's job was sent once");
}
