//! The typed states (`followq::states`) bind and read as the schema's text, and name exactly
//! the values the schema's CHECK constraints allow: a state added on one side only fails here.

use followq::ids::UserId;
use followq::states::{AccountStatus, JobState, PauseReason};

use crate::helpers::TestDb;

/// The quoted values of a CHECK (… IN (…)) constraint, as Postgres prints it back.
async fn allowed_values(db: &TestDb, constraint: &str) -> Vec<String> {
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1",
    )
    .bind(constraint)
    .fetch_one(&db.pool)
    .await
    .expect("the constraint exists");
    let mut values: Vec<String> = definition
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    values.sort();
    values
}

#[tokio::test]
async fn the_states_are_exactly_those_the_schema_allows() {
    let db = TestDb::new().await;
    let mut states: Vec<String> = JobState::STORED
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    states.sort();
    assert_eq!(
        allowed_values(&db, "follow_jobs_state_must_be_a_known_state").await,
        states,
        "running is shown, never stored"
    );
    let mut statuses: Vec<String> = AccountStatus::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(
        allowed_values(
            &db,
            "accounts_status_must_be_active_paused_needs_reauth_or_disabled"
        )
        .await,
        statuses
    );
}

#[tokio::test]
async fn states_bind_and_read_back_as_text() {
    let db = TestDb::new().await;
    for state in JobState::ALL {
        let back: JobState = sqlx::query_scalar("SELECT $1::text")
            .bind(state)
            .fetch_one(&db.pool)
            .await
            .expect("a state reads back");
        assert_eq!(back, state);
    }
    let reason: PauseReason = sqlx::query_scalar("SELECT $1::text")
        .bind(PauseReason::DailyCap)
        .fetch_one(&db.pool)
        .await
        .expect("a pause reason reads back");
    assert_eq!(reason, PauseReason::DailyCap);
    let words: PauseReason = sqlx::query_scalar("SELECT 'refresh token revoked'::text")
        .fetch_one(&db.pool)
        .await
        .expect("any words read as a pause reason");
    assert_eq!(
        words,
        PauseReason::Explained("refresh token revoked".into())
    );

    // A state the enum does not know is an error, not a silent default.
    let unknown = sqlx::query_scalar::<_, JobState>("SELECT 'paused'::text")
        .fetch_one(&db.pool)
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
}

#[tokio::test]
async fn user_ids_read_from_the_id_domains_and_are_checked_on_the_way_in() {
    let db = TestDb::new().await;
    db.add_account("2244994945").await;
    followq::queue::enqueue(
        &db.pool,
        &followq::queue::FollowRequest::new("2244994945", "783214").expect("valid"),
    )
    .await
    .expect("enqueue");
    // The columns are domains over text: no cast needed.
    let (source, target): (UserId, UserId) =
        sqlx::query_as("SELECT source_user_id, target_user_id FROM followq.follow_jobs")
            .fetch_one(&db.pool)
            .await
            .expect("ids read from their domains");
    assert_eq!((source.as_str(), target.as_str()), ("2244994945", "783214"));

    let ids: Vec<UserId> = sqlx::query_scalar("SELECT unnest($1::text[])")
        .bind(vec![source.clone(), target])
        .fetch_all(&db.pool)
        .await
        .expect("a list of ids binds as text[]");
    assert_eq!(ids.len(), 2);

    // Text that breaks the rule never becomes a UserId.
    let bad = sqlx::query_scalar::<_, UserId>("SELECT '0123'::text")
        .fetch_one(&db.pool)
        .await;
    assert!(bad.is_err(), "{bad:?}");
}
