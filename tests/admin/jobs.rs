//! `admin::jobs`: show (row, ledger, why), list, retry and cancel, with their refusals.

use serde_json::json;

use crate::support::*;
use followq::admin::jobs::{self, JobState, JobsError, ListFilter};

#[tokio::test]
async fn show_gives_the_row_its_ledger_in_order_and_why_it_waits() {
    let db = db_with_accounts().await;
    let id = enqueue(&db.pool, "100", "200").await;
    let first = attempt(&db.pool, id, "100", Some("transient"), Some(503), 30.0).await;
    let second = attempt(&db.pool, id, "100", Some("transient"), Some(503), 10.0).await;
    // What record() leaves after the second 503: back in the queue after a backoff.
    sqlx::query(
        "UPDATE followq.follow_jobs SET attempts = 2, run_at = now() + interval '2 minutes', \
         last_error = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(json!({"kind": "transient", "status": 503}))
    .execute(&db.pool)
    .await
    .unwrap();

    let detail = jobs::show(&db.pool, job_id(id), 8).await.unwrap();
    assert_eq!(detail.job.id, id);
    assert_eq!(detail.job.state, JobState::Queued);
    let ids: Vec<i64> = detail.attempts.iter().map(|a| a.id).collect();
    assert_eq!(ids, vec![first, second]);
    assert_eq!(detail.attempts[0].http_status, Some(503));
    assert!(
        detail.why.starts_with("queued until ")
            && detail.why.ends_with("after a 503 (attempt 3 of 8)"),
        "{}",
        detail.why
    );
}

#[tokio::test]
async fn show_counts_the_jobs_ahead_in_the_accounts_line() {
    let db = db_with_accounts().await;
    let a = enqueue(&db.pool, "100", "200").await;
    let b = enqueue(&db.pool, "100", "201").await;
    let urgent = enqueue(&db.pool, "100", "202").await;
    sqlx::query("UPDATE followq.follow_jobs SET priority = 5 WHERE id = $1")
        .bind(urgent)
        .execute(&db.pool)
        .await
        .unwrap();
    let why = |id| {
        let pool = db.pool.clone();
        async move { jobs::show(&pool, job_id(id), 8).await.unwrap().why }
    };
    assert!(
        why(urgent)
            .await
            .starts_with("ready: next in line for account 100")
    );
    assert!(why(a).await.starts_with("ready: 1 job ahead of it"));
    assert!(why(b).await.starts_with("ready: 2 jobs ahead of it"));
    lease(&db.pool, "100", "host-a").await;
    assert!(
        why(urgent)
            .await
            .contains("daemon host-a holds the account")
    );
}

#[tokio::test]
async fn show_explains_app_stops_and_running_jobs() {
    let db = db_with_accounts().await;
    let id = enqueue(&db.pool, "100", "200").await;
    sqlx::query("INSERT INTO followq.app_pause (reason) VALUES ('app_forbidden')")
        .execute(&db.pool)
        .await
        .unwrap();
    let why = jobs::show(&db.pool, job_id(id), 8).await.unwrap().why;
    assert_eq!(
        why,
        "waiting: the app is stopped (app_forbidden) until an operator runs `followq app resume`"
    );
    make_running(&db.pool, id, "host-b").await;
    let why = jobs::show(&db.pool, job_id(id), 8).await.unwrap().why;
    assert!(why.starts_with("running on daemon host-b since "), "{why}");
    assert!(
        why.contains("(attempt 1 of 8); its request may reach X until "),
        "{why}"
    );
}

#[tokio::test]
async fn show_of_an_unknown_job_is_not_found() {
    let db = db_with_accounts().await;
    let err = jobs::show(&db.pool, job_id(4242), 8).await.unwrap_err();
    assert!(
        matches!(err, JobsError::NotFound(id) if id.get() == 4242),
        "{err}"
    );
    assert_eq!(err.to_string(), "job 4242 does not exist");
}

#[tokio::test]
async fn list_filters_by_state_and_source_pages_by_id_and_checks_the_limit() {
    let db = db_with_accounts().await;
    let a = enqueue(&db.pool, "100", "200").await;
    let b = enqueue(&db.pool, "100", "201").await;
    let c = enqueue(&db.pool, "101", "200").await;
    let d = enqueue(&db.pool, "101", "201").await;
    make_failed(&db.pool, b, 8, json!({"kind": "transient", "status": 500})).await;
    make_failed(&db.pool, d, 1, json!({"kind": "permanent", "status": 403})).await;
    let ids = |rows: Vec<jobs::JobRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let filter = |state, source: Option<&str>, limit, after: Option<i64>| ListFilter {
        state,
        source: source.map(user),
        limit,
        after: after.map(job_id),
    };

    let all = jobs::list(&db.pool, &filter(None, None, 50, None))
        .await
        .unwrap();
    assert_eq!(ids(all), vec![a, b, c, d]);
    let failed = jobs::list(&db.pool, &filter(Some(JobState::Failed), None, 50, None))
        .await
        .unwrap();
    assert_eq!(ids(failed), vec![b, d]);
    let of_101 = jobs::list(&db.pool, &filter(None, Some("101"), 50, None))
        .await
        .unwrap();
    assert_eq!(ids(of_101), vec![c, d]);
    let both = jobs::list(
        &db.pool,
        &filter(Some(JobState::Queued), Some("101"), 50, None),
    )
    .await
    .unwrap();
    assert_eq!(ids(both), vec![c]);
    let page = jobs::list(&db.pool, &filter(None, None, 2, Some(a)))
        .await
        .unwrap();
    assert_eq!(ids(page), vec![b, c]);
    let err = jobs::list(&db.pool, &filter(None, None, 0, None))
        .await
        .unwrap_err();
    assert!(matches!(err, JobsError::BadLimit { given: 0, .. }), "{err}");
}

#[tokio::test]
async fn retry_requeues_a_failed_job_with_a_fresh_count_and_keeps_its_last_error() {
    let db = db_with_accounts().await;
    let id = enqueue(&db.pool, "100", "200").await;
    let error = json!({"kind": "transient", "status": 503});
    make_failed(&db.pool, id, 8, error.clone()).await;

    let change = jobs::retry(&db.pool, job_id(id)).await.unwrap();
    assert_eq!(change.to_string(), format!("job {id}: failed -> queued"));
    let (state, attempts, finished, due, last_error): (
        String,
        i32,
        Option<chrono::DateTime<chrono::Utc>>,
        bool,
        Option<serde_json::Value>,
    ) = sqlx::query_as(
        "SELECT state, attempts, finished_at, run_at <= now(), last_error \
             FROM followq.follow_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (state.as_str(), attempts, finished, due),
        ("queued", 0, None, true)
    );
    assert_eq!(last_error, Some(error));

    // Cancelled jobs can be retried too.
    let other = enqueue(&db.pool, "100", "201").await;
    jobs::cancel(&db.pool, job_id(other)).await.unwrap();
    let change = jobs::retry(&db.pool, job_id(other)).await.unwrap();
    assert_eq!(change.from, JobState::Cancelled);
}

#[tokio::test]
async fn retry_refuses_active_and_succeeded_jobs_and_unknown_ids() {
    let db = db_with_accounts().await;
    let queued = enqueue(&db.pool, "100", "200").await;
    let running = enqueue(&db.pool, "100", "201").await;
    make_running(&db.pool, running, "host-a").await;
    let done = enqueue(&db.pool, "100", "202").await;
    make_succeeded(&db.pool, done).await;

    for (id, state) in [
        (queued, "queued"),
        (running, "running"),
        (done, "succeeded"),
    ] {
        let err = jobs::retry(&db.pool, job_id(id)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("job {id} is {state}: only failed or cancelled jobs can be retried")
        );
        assert_eq!(state_of(&db.pool, id).await, state);
    }
    let err = jobs::retry(&db.pool, job_id(999)).await.unwrap_err();
    assert!(matches!(err, JobsError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn retry_of_a_failed_job_whose_pair_is_active_names_the_active_job() {
    let db = db_with_accounts().await;
    let old = enqueue(&db.pool, "100", "200").await;
    make_failed(
        &db.pool,
        old,
        1,
        json!({"kind": "permanent", "status": 400}),
    )
    .await;
    let active = enqueue(&db.pool, "100", "200").await;
    assert_ne!(old, active);

    let err = jobs::retry(&db.pool, job_id(old)).await.unwrap_err();
    assert!(
        matches!(&err, JobsError::PairActive { active: a, .. } if *a == active),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "job {old} cannot be retried: job {active} (queued) already asks for 100 to follow 200"
        )
    );
    assert_eq!(state_of(&db.pool, old).await, "failed");
}

#[tokio::test]
async fn bulk_retry_takes_the_newest_per_pair_and_skips_active_pairs() {
    let db = db_with_accounts().await;
    let error = json!({"kind": "permanent", "status": 400});
    // Two failed jobs of one pair: only the newer comes back.
    let older = enqueue(&db.pool, "100", "200").await;
    make_failed(&db.pool, older, 1, error.clone()).await;
    let newer = enqueue(&db.pool, "100", "200").await;
    make_failed(&db.pool, newer, 1, error.clone()).await;
    // A failed job whose pair is queued again: stays failed.
    let shadowed = enqueue(&db.pool, "100", "201").await;
    make_failed(&db.pool, shadowed, 1, error.clone()).await;
    let _active = enqueue(&db.pool, "100", "201").await;
    // Another account's failed job.
    let other = enqueue(&db.pool, "101", "200").await;
    make_failed(&db.pool, other, 1, error.clone()).await;

    let only_101 = jobs::retry_state(&db.pool, JobState::Failed, Some(&user("101")))
        .await
        .unwrap();
    assert_eq!((only_101.retried, only_101.skipped), (1, 0));
    assert_eq!(state_of(&db.pool, other).await, "queued");

    let done = jobs::retry_state(&db.pool, JobState::Failed, None)
        .await
        .unwrap();
    assert_eq!((done.retried, done.skipped), (1, 2));
    assert_eq!(state_of(&db.pool, newer).await, "queued");
    assert_eq!(state_of(&db.pool, older).await, "failed");
    assert_eq!(state_of(&db.pool, shadowed).await, "failed");

    let err = jobs::retry_state(&db.pool, JobState::Queued, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, JobsError::BadRetryState(JobState::Queued)),
        "{err}"
    );
    let err = jobs::retry_state(&db.pool, JobState::Failed, Some(&user("555")))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "account 555 is not registered");
}

#[tokio::test]
async fn cancel_takes_only_queued_jobs() {
    let db = db_with_accounts().await;
    let queued = enqueue(&db.pool, "100", "200").await;
    let running = enqueue(&db.pool, "100", "201").await;
    make_running(&db.pool, running, "host-a").await;
    let done = enqueue(&db.pool, "100", "202").await;
    make_succeeded(&db.pool, done).await;

    let change = jobs::cancel(&db.pool, job_id(queued)).await.unwrap();
    assert_eq!(
        change.to_string(),
        format!("job {queued}: queued -> cancelled")
    );
    let finished: bool =
        sqlx::query_scalar("SELECT finished_at IS NOT NULL FROM followq.follow_jobs WHERE id = $1")
            .bind(queued)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(finished);

    let err = jobs::cancel(&db.pool, job_id(running)).await.unwrap_err();
    assert!(
        matches!(&err, JobsError::CancelRunning { worker, .. } if worker == "host-a"),
        "{err:?}"
    );
    assert!(err.to_string().contains("may be in flight"), "{err}");
    assert_eq!(state_of(&db.pool, running).await, "running");

    let err = jobs::cancel(&db.pool, job_id(done)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("job {done} is succeeded: only queued jobs can be cancelled")
    );
    let err = jobs::cancel(&db.pool, job_id(queued)).await.unwrap_err();
    assert!(err.to_string().contains("is cancelled"), "{err}");
    let err = jobs::cancel(&db.pool, job_id(777)).await.unwrap_err();
    assert!(matches!(err, JobsError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn cancel_by_source_cancels_every_queued_job_and_leaves_running_ones() {
    let db = db_with_accounts().await;
    let a = enqueue(&db.pool, "100", "200").await;
    let b = enqueue(&db.pool, "100", "201").await;
    let running = enqueue(&db.pool, "100", "202").await;
    make_running(&db.pool, running, "host-a").await;
    let other = enqueue(&db.pool, "101", "200").await;

    let done = jobs::cancel_source(&db.pool, &user("100")).await.unwrap();
    assert_eq!((done.cancelled, done.running), (2, 1));
    for id in [a, b] {
        assert_eq!(state_of(&db.pool, id).await, "cancelled");
    }
    assert_eq!(state_of(&db.pool, running).await, "running");
    assert_eq!(state_of(&db.pool, other).await, "queued");

    let err = jobs::cancel_source(&db.pool, &user("555"))
        .await
        .unwrap_err();
    assert!(matches!(err, JobsError::UnknownAccount(_)), "{err}");
}
