//! The Rust enqueue API: one request, batches, and the errors each bad input gets.

use followq::queue::{
    EnqueueError, EnqueueOutcome, FollowRequest, enqueue, enqueue::BATCH_CHUNK, enqueue_batch,
};

use crate::helpers::TestDb;

fn request(source: &str, target: &str) -> FollowRequest {
    FollowRequest::new(source, target).expect("valid request")
}

#[tokio::test]
async fn one_request_then_a_duplicate_returns_the_same_job() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    let first = enqueue(&db.pool, &request("100", "200")).await.unwrap();
    let EnqueueOutcome::Created(id) = first else {
        panic!("expected a new job, got {first:?}");
    };
    let second = enqueue(&db.pool, &request("100", "200")).await.unwrap();
    assert_eq!(second, EnqueueOutcome::Existing(id));
}

#[tokio::test]
async fn bad_input_gets_its_own_error() {
    assert!(matches!(
        FollowRequest::new("12a", "200"),
        Err(EnqueueError::MalformedSource(_))
    ));
    assert!(matches!(
        FollowRequest::new("100", "x"),
        Err(EnqueueError::MalformedTarget(_))
    ));
    assert!(matches!(
        FollowRequest::new("100", "100"),
        Err(EnqueueError::SelfFollow(_))
    ));
    assert!(matches!(
        request("100", "200").with_max_attempts(0),
        Err(EnqueueError::BadMaxAttempts(0))
    ));

    let db = TestDb::new().await;
    let unknown = enqueue(&db.pool, &request("999", "200")).await;
    assert!(
        matches!(&unknown, Err(EnqueueError::UnknownAccount(user)) if user.as_str() == "999"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_batch_reports_every_row_in_order() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    db.add_account("101").await;
    let EnqueueOutcome::Created(existing) =
        enqueue(&db.pool, &request("101", "300")).await.unwrap()
    else {
        panic!("setup job");
    };
    let batch = vec![
        request("100", "200"),
        request("999", "200"), // unknown account
        request("101", "300"), // already queued
        request("100", "200"), // repeated inside the batch
        request("100", "201").with_priority(9).unwrap(),
    ];
    let outcomes = enqueue_batch(&db.pool, &batch).await.unwrap();
    assert_eq!(outcomes.len(), 5);
    let EnqueueOutcome::Created(first) = outcomes[0] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(outcomes[1], EnqueueOutcome::UnknownAccount);
    assert_eq!(outcomes[2], EnqueueOutcome::Existing(existing));
    assert_eq!(outcomes[3], EnqueueOutcome::Existing(first));
    assert!(matches!(outcomes[4], EnqueueOutcome::Created(_)));

    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT source_user_id, target_user_id, priority FROM followq.follow_jobs ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("101".into(), "300".into(), 0),
            ("100".into(), "200".into(), 0),
            ("100".into(), "201".into(), 9),
        ]
    );
}

#[tokio::test]
async fn a_batch_larger_than_one_statement_is_split_and_complete() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    let total = BATCH_CHUNK * 2 + 17;
    let batch: Vec<FollowRequest> = (0..total)
        .map(|i| request("100", &(1_000_000 + i).to_string()))
        .collect();
    let outcomes = enqueue_batch(&db.pool, &batch).await.unwrap();
    assert_eq!(outcomes.len(), total);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, EnqueueOutcome::Created(_)))
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM followq.follow_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count as usize, total);
}
