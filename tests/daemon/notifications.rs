//! `NOTIFY followq_job_finished`, what inserting services wait on: every job that reaches
//! succeeded, failed or cancelled is named exactly once, in the `jobs` list of the
//! notification sent by the statement that finished it; none for a job that only goes back to
//! the queue.

use std::collections::BTreeMap;
use std::time::Duration;

use followq::admin::jobs::{JobId, cancel};
use followq::queue::JOB_FINISHED_CHANNEL;
use serde_json::{Value, json};
use sqlx::postgres::PgListener;

use crate::support::{Harness, shared, sim_config};

const LIMIT: Duration = Duration::from_secs(30);
/// How long to listen for a notification that must not come.
const QUIET: Duration = Duration::from_millis(1500);

/// A succeeded job, a failed one (404), a cancelled one (an operator's `jobs cancel`) and
/// one snoozed by a 429 before it succeeded: four jobs announced, each exactly
/// `{"id", "state", "source_user_id", "target_user_id"}`, and no fifth (the snooze is not
/// announced).
///
/// Guard: on one Postgres the `follow_jobs_notify_finished` trigger and its filter on
/// finished states. Checked by dropping the trigger in the test database: no notification
/// comes; and by widening the clause to every state change: the snooze and the claims are
/// announced too. On Citus (no trigger) the completer's announcement after each record
/// statement and `jobs cancel`'s: without the completer's, no notification comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_finished_job_is_announced_with_its_id_and_state() {
    let _scenario = shared().await;
    let mut config = sim_config(5, Duration::from_secs(2));
    config.targets.unknown_ids = ["5002".to_owned()].into();
    let harness = Harness::new(config).await;
    for account in ["1900", "1901", "1902"] {
        harness.account(account).await;
    }
    let mut listener = PgListener::connect_with(&harness.db.pool).await.unwrap();
    listener.listen(JOB_FINISHED_CHANNEL).await.unwrap();

    harness.enqueue("1900", 5001, 2).await;
    harness.enqueue("1901", 5003, 1).await;
    // Account 1901's window is spent by another app: a 429 first.
    harness.sim.prespend("1901", 5);
    let later: i64 = sqlx::query_scalar(
        "SELECT followq.enqueue(source_user_id => '1902', target_user_id => '5004', \
         run_at => now() + interval '1 hour')",
    )
    .fetch_one(&harness.db.pool)
    .await
    .unwrap();
    let daemon = harness.start().await;
    cancel(&harness.db.pool, JobId::new(later).unwrap())
        .await
        .unwrap();

    let mut announced = BTreeMap::new();
    while announced.len() < 4 {
        let notification = tokio::time::timeout(LIMIT, listener.recv())
            .await
            .expect("a notification for each finished job")
            .unwrap();
        let payload: Value = serde_json::from_str(notification.payload()).unwrap();
        let jobs = payload["jobs"].as_array().expect("a list of jobs");
        assert!(!jobs.is_empty(), "an empty notification");
        for job in jobs {
            let id = job["id"].as_i64().expect("an id");
            assert!(
                announced.insert(id, job.clone()).is_none(),
                "job {id} announced twice"
            );
        }
    }
    let extra = tokio::time::timeout(QUIET, listener.recv()).await;
    assert!(extra.is_err(), "a fifth notification: {extra:?}");
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let jobs: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT id, state, source_user_id, target_user_id FROM followq.follow_jobs ORDER BY id",
    )
    .fetch_all(&harness.db.pool)
    .await
    .unwrap();
    let expected: BTreeMap<i64, Value> = jobs
        .iter()
        .map(|(id, state, source, target)| {
            (
                *id,
                json!({"id": id, "state": state, "source_user_id": source, "target_user_id": target}),
            )
        })
        .collect();
    assert_eq!(announced, expected);
    let states: Vec<&str> = jobs.iter().map(|(_, state, _, _)| state.as_str()).collect();
    assert_eq!(states, ["succeeded", "failed", "succeeded", "cancelled"]);
    let snoozed: i32 = sqlx::query_scalar(
        "SELECT rate_limited_count FROM followq.follow_jobs WHERE source_user_id = '1901'",
    )
    .fetch_one(&harness.db.pool)
    .await
    .unwrap();
    assert_eq!(snoozed, 1, "the 429 snooze happened, unannounced");
}
