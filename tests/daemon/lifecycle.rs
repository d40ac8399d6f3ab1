//! Starting and stopping: a graceful shutdown with requests in flight, the NOTIFY wake-up
//! and the NOTIFY on terminal states.

use std::time::Duration;

use followq::sim::FaultConfig;
use sqlx::postgres::PgListener;

use crate::support::{Harness, serial, sim_config};

/// Shutdown with requests in flight: their answers are recorded, nothing is left running,
/// every lease is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_requests_in_flight_and_releases_everything() {
    let _serial = serial().await;
    let mut config = sim_config(50, Duration::from_secs(60));
    config.faults = FaultConfig {
        delay: 1.0,
        delay_duration: Duration::from_millis(1500),
        ..FaultConfig::default()
    };
    let harness = Harness::new(config).await;
    for account in ["1000", "1001", "1002", "1003"] {
        harness.account(account).await;
        harness.enqueue(account, 5_000, 2).await;
    }
    let daemon = harness.start().await;
    // Each account's first request, held 1.5 s by the simulator.
    harness
        .sim_wait(Duration::from_secs(10), "requests in flight", |s| {
            s.totals.all_users.requests >= 4
        })
        .await;
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.jobs_in_flight")
            .await,
        4,
        "four requests in flight"
    );
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.jobs_in_flight")
            .await,
        0,
        "nothing left in flight"
    );
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded'")
            .await,
        4,
        "the four requests in flight were recorded"
    );
    assert_eq!(
        harness
            .count(
                "SELECT count(*) FROM followq.follow_jobs WHERE state = 'queued' AND attempts = 0"
            )
            .await,
        4,
        "no new request started after the signal"
    );
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.accounts WHERE leased_by IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        harness.count("SELECT count(*) FROM followq.daemons").await,
        0
    );
}

/// An idle daemon wakes on the insert NOTIFY (well before its poll), and every finished job
/// is announced on `followq_job_finished`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_wakes_on_notify_and_announces_finished_jobs() {
    let _serial = serial().await;
    let mut harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    // A poll far slower than the wake-up we expect.
    harness.settings.worker.poll_interval = Duration::from_secs(30);
    harness.account("1100").await;
    let mut listener = PgListener::connect_with(&harness.db.pool).await.unwrap();
    listener
        .listen(followq::queue::JOB_FINISHED_CHANNEL)
        .await
        .unwrap();
    let daemon = harness.start().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    harness.enqueue("1100", 7_000, 1).await;
    // The bound is the assertion: the job finished well before the 30 s poll.
    let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("the job finished well before the 30 s poll")
        .unwrap();
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let id: i64 = sqlx::query_scalar("SELECT id FROM followq.follow_jobs")
        .fetch_one(&harness.db.pool)
        .await
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(notification.payload()).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"jobs": [{"id": id, "state": "succeeded", "source_user_id": "1100", "target_user_id": "7000"}]})
    );
}
