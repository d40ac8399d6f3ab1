//! The typed states (`followq::states`) bind and read as the schema's text, and name exactly
//! the values the schema's CHECK constraints allow: a state added on one side only fails here.

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
    let mut states: Vec<String> = JobState::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    states.sort();
    assert_eq!(
        allowed_values(&db, "follow_jobs_state_must_be_a_known_state").await,
        states
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
