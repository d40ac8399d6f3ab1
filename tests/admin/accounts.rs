//! `admin::accounts`: list, show (never a token), pause, resume, disable, with refusals.

use chrono::{Datelike, TimeDelta, Utc};

use crate::support::*;
use followq::admin::accounts::{self, AccountStatus, AccountsError};
use followq::store::pauses::mark_needs_reauth;

async fn status_row(
    db: &TestDb,
    id: &str,
) -> (
    String,
    Option<chrono::DateTime<Utc>>,
    Option<String>,
    Option<String>,
) {
    sqlx::query_as(
        "SELECT status, paused_until, pause_reason, leased_by FROM followq.accounts WHERE user_id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn list_shows_status_job_counts_and_live_leases_filtered_by_status() {
    let db = db_with_accounts().await;
    db.add_account("99").await;
    enqueue(&db.pool, "100", "200").await;
    let running = enqueue(&db.pool, "100", "201").await;
    make_running(&db.pool, running, "host-a").await;
    lease(&db.pool, "100", "host-a").await;
    accounts::disable(&db.pool, &user("101")).await.unwrap();

    let all = accounts::list(&db.pool, None).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|a| a.user_id.as_str()).collect();
    assert_eq!(ids, vec!["99", "100", "101"], "numeric order");
    let a100 = &all[1];
    assert_eq!(
        (a100.queued, a100.running, a100.leased_by.as_deref()),
        (1, 1, Some("host-a"))
    );
    let disabled = accounts::list(&db.pool, Some(AccountStatus::Disabled))
        .await
        .unwrap();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].user_id, "101");
}

#[tokio::test]
async fn show_says_whether_credentials_exist_but_never_what_they_are() {
    let db = db_with_accounts().await;
    let id = enqueue(&db.pool, "100", "200").await;
    make_failed(&db.pool, id, 1, serde_json::json!({"kind": "permanent"})).await;
    attempt(&db.pool, id, "100", Some("permanent"), Some(400), 60.0).await;

    let detail = accounts::show(&db.pool, &user("100")).await.unwrap();
    let credentials = detail.credentials.clone().expect("credentials stored");
    assert_eq!(credentials.kind, "oauth2");
    assert!(credentials.has_refresh_token);
    assert_eq!(detail.jobs.failed, 1);
    assert_eq!(detail.requests.last_15_minutes, 1);
    let json = serde_json::to_string(&detail).unwrap();
    assert!(!json.contains("test-access-100"), "{json}");
    assert!(!json.contains("test-refresh-100"), "{json}");

    sqlx::query("DELETE FROM followq.account_credentials WHERE user_id = '101'")
        .execute(&db.pool)
        .await
        .unwrap();
    let detail = accounts::show(&db.pool, &user("101")).await.unwrap();
    assert!(detail.credentials.is_none());

    let err = accounts::show(&db.pool, &user("555")).await.unwrap_err();
    assert_eq!(err.to_string(), "account 555 is not registered");
}

#[tokio::test]
async fn pause_is_an_operator_pause_that_drops_the_lease() {
    let db = db_with_accounts().await;
    let job = enqueue(&db.pool, "100", "200").await;
    lease(&db.pool, "100", "host-a").await;
    let until = Utc::now() + TimeDelta::minutes(30);

    let change = accounts::pause(&db.pool, &user("100"), Some(until))
        .await
        .unwrap();
    assert_eq!(
        (change.from.as_str(), change.to.as_str()),
        ("active", "paused")
    );
    assert!(
        change
            .to_string()
            .starts_with("account 100: active -> paused until ")
    );
    let (status, paused_until, reason, leased_by) = status_row(&db, "100").await;
    assert_eq!(status, "paused");
    assert_eq!(reason.as_deref(), Some("operator"));
    assert_eq!(leased_by, None);
    let stored = paused_until.unwrap();
    assert!(
        (stored - until).num_milliseconds().abs() < 1,
        "{stored} vs {until}"
    );
    assert_eq!(state_of(&db.pool, job).await, "queued", "jobs stay queued");
    // The claim statement honours an operator pause even for the lease holder.
    lease(&db.pool, "100", "host-a").await;
    let claimed = followq::store::claim::claim_batch(
        &db.pool,
        "host-a",
        &["100".to_owned()],
        std::time::Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert!(claimed.is_empty());

    // Without a time: until resumed. An automatic pause is replaced by the operator's.
    sqlx::query("UPDATE followq.accounts SET pause_reason = 'rate_limited' WHERE user_id = '100'")
        .execute(&db.pool)
        .await
        .unwrap();
    let change = accounts::pause(&db.pool, &user("100"), None).await.unwrap();
    assert_eq!(change.from, AccountStatus::Paused);
    assert!(change.to_string().ends_with("until resumed"), "{change}");
    let (_, paused_until, reason, _) = status_row(&db, "100").await;
    assert_eq!(paused_until.map(|t| t.year()), Some(9999));
    assert_eq!(reason.as_deref(), Some("operator"));
}

#[tokio::test]
async fn pause_refuses_the_past_needs_reauth_and_unknown_accounts() {
    let db = db_with_accounts().await;
    let past = Utc::now() - TimeDelta::minutes(1);
    let err = accounts::pause(&db.pool, &user("100"), Some(past))
        .await
        .unwrap_err();
    assert!(matches!(err, AccountsError::PauseInPast(_)), "{err}");
    assert_eq!(status_row(&db, "100").await.0, "active");

    mark_needs_reauth(&db.pool, "101", "refresh token revoked")
        .await
        .unwrap();
    let err = accounts::pause(&db.pool, &user("101"), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("account 101 is needs_reauth: store new tokens"),
        "{err}"
    );
    assert_eq!(status_row(&db, "101").await.0, "needs_reauth");

    let err = accounts::pause(&db.pool, &user("555"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, AccountsError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn resume_ends_pauses_and_disables_and_refuses_active_accounts() {
    let db = db_with_accounts().await;
    accounts::pause(&db.pool, &user("100"), None).await.unwrap();
    let change = accounts::resume(&db.pool, &user("100")).await.unwrap();
    assert_eq!(change.to_string(), "account 100: paused -> active");
    assert_eq!(
        status_row(&db, "100").await,
        ("active".into(), None, None, None)
    );

    accounts::disable(&db.pool, &user("100")).await.unwrap();
    let change = accounts::resume(&db.pool, &user("100")).await.unwrap();
    assert_eq!(change.from, AccountStatus::Disabled);

    let err = accounts::resume(&db.pool, &user("100")).await.unwrap_err();
    assert_eq!(err.to_string(), "account 100 is active: nothing to resume");

    // Ending the daemon's own pause early is allowed, with a warning.
    followq::store::pauses::pause_account(
        &db.pool,
        "101",
        Utc::now() + TimeDelta::minutes(5),
        &followq::states::PauseReason::RateLimited,
    )
    .await
    .unwrap();
    let change = accounts::resume(&db.pool, &user("101")).await.unwrap();
    assert!(
        change.to_string().starts_with(
            "account 101: paused -> active; it was paused by the daemon (rate_limited) until "
        ),
        "{change}"
    );
    let err = accounts::resume(&db.pool, &user("555")).await.unwrap_err();
    assert!(matches!(err, AccountsError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn resume_clears_needs_reauth_only_with_credentials_and_says_how_old_they_are() {
    let db = db_with_accounts().await;
    mark_needs_reauth(&db.pool, "100", "X refused the token twice")
        .await
        .unwrap();
    // Tokens stored before the account was parked: cleared, with a warning.
    sqlx::query(
        "UPDATE followq.account_credentials SET updated_at = now() - interval '1 hour' WHERE user_id = '100'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let change = accounts::resume(&db.pool, &user("100")).await.unwrap();
    assert_eq!(change.from, AccountStatus::NeedsReauth);
    let note = change.note.clone().unwrap();
    assert!(note.contains("before the account was parked"), "{note}");
    assert_eq!(
        status_row(&db, "100").await,
        ("active".into(), None, None, None)
    );

    // Tokens stored after it was parked (by another tool writing the table): cleared.
    mark_needs_reauth(&db.pool, "100", "again").await.unwrap();
    sqlx::query(
        "UPDATE followq.accounts SET updated_at = now() - interval '1 minute' WHERE user_id = '100'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE followq.account_credentials SET updated_at = now() WHERE user_id = '100'")
        .execute(&db.pool)
        .await
        .unwrap();
    let change = accounts::resume(&db.pool, &user("100")).await.unwrap();
    assert!(
        change
            .note
            .unwrap()
            .contains("after the account was parked"),
        "new tokens are recognised"
    );

    // No credentials at all: refused, status unchanged.
    mark_needs_reauth(&db.pool, "101", "no credentials stored for the account")
        .await
        .unwrap();
    sqlx::query("DELETE FROM followq.account_credentials WHERE user_id = '101'")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = accounts::resume(&db.pool, &user("101")).await.unwrap_err();
    assert!(matches!(err, AccountsError::NoCredentials(_)), "{err}");
    assert!(
        err.to_string()
            .contains("followq accounts add --user-id 101"),
        "{err}"
    );
    assert_eq!(status_row(&db, "101").await.0, "needs_reauth");
}

#[tokio::test]
async fn disable_keeps_jobs_queued_and_refuses_twice() {
    let db = db_with_accounts().await;
    let job = enqueue(&db.pool, "100", "200").await;
    lease(&db.pool, "100", "host-a").await;
    let change = accounts::disable(&db.pool, &user("100")).await.unwrap();
    assert_eq!(
        change.to_string(),
        "account 100: active -> disabled; its 1 queued job(s) stay queued and are not sent until `followq accounts resume 100`"
    );
    assert_eq!(
        status_row(&db, "100").await,
        ("disabled".into(), None, None, None)
    );
    assert_eq!(state_of(&db.pool, job).await, "queued");

    let err = accounts::disable(&db.pool, &user("100")).await.unwrap_err();
    assert_eq!(err.to_string(), "account 100 is disabled: already disabled");
    let err = accounts::disable(&db.pool, &user("555")).await.unwrap_err();
    assert!(matches!(err, AccountsError::NotFound(_)), "{err}");
}

/// An account's state for the claim: account, status, pause reason, seconds until the pause
/// ends, and whether the claim sends for it.
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<f64>,
    bool,
);

/// Which account states the lease holder's claim statement sends for: automatic pauses are
/// the holder's own (its limiter times them), an operator's pause holds until it ends, and
/// needs_reauth and disabled accounts never send.
#[tokio::test]
async fn the_claim_sends_through_automatic_pauses_only() {
    let db = TestDb::new().await;
    let cases: [Case; 6] = [
        ("201", "active", None, None, true),
        ("202", "paused", Some("rate_limited"), Some(3600.0), true),
        ("203", "paused", Some("operator"), Some(-1.0), true),
        ("204", "paused", Some("operator"), Some(3600.0), false),
        ("205", "needs_reauth", None, None, false),
        ("206", "disabled", None, None, false),
    ];
    for (account, status, reason, ends_in, _) in cases {
        db.add_account(account).await;
        enqueue(&db.pool, account, "300").await;
        lease(&db.pool, account, "host-a").await;
        sqlx::query(
            "UPDATE followq.accounts SET status = $2, pause_reason = $3, \
             paused_until = now() + make_interval(secs => $4) WHERE user_id = $1",
        )
        .bind(account)
        .bind(status)
        .bind(reason)
        .bind(ends_in)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let accounts: Vec<String> = cases.iter().map(|case| case.0.to_owned()).collect();
    // As the daemon's claim task sends it: one statement per shard's accounts (one statement
    // on one Postgres; on Citus a claim locks its accounts' rows, which runs on one shard only).
    let groups = followq::store::shards::Shards::new()
        .group(&db.pool, &accounts)
        .await
        .unwrap();
    let mut claimed = Vec::new();
    for group in &groups {
        claimed.extend(
            followq::store::claim::claim_batch(
                &db.pool,
                "host-a",
                group,
                std::time::Duration::from_secs(1),
            )
            .await
            .unwrap(),
        );
    }
    let mut sent: Vec<&str> = claimed
        .iter()
        .map(|job| job.source_user_id.as_str())
        .collect();
    sent.sort();
    let expected: Vec<&str> = cases
        .iter()
        .filter(|case| case.4)
        .map(|case| case.0)
        .collect();
    assert_eq!(sent, expected);
}
