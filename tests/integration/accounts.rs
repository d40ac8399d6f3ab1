//! Registering accounts and replacing their tokens.

use followq::accounts::sealed::TokenColumn;
use followq::accounts::{Credentials, NewAccount, Quota, Registered, register};
use followq::ids::UserId;

use crate::helpers::{TestDb, test_keys};

fn oauth2(access: &str) -> Credentials {
    Credentials::OAuth2 {
        access_token: access.to_owned().into(),
        refresh_token: Some(format!("{access}-refresh").into()),
        expires_at: None,
    }
}

#[tokio::test]
async fn new_tokens_bring_a_needs_reauth_account_back_and_keep_its_quota() {
    let db = TestDb::new().await;
    let user_id = UserId::parse("100").unwrap();
    let created = register(
        &db.pool,
        &test_keys(),
        &NewAccount {
            user_id: user_id.clone(),
            credentials: oauth2("first"),
            quota: Some(Quota {
                requests: 5,
                period_seconds: 900,
            }),
        },
    )
    .await
    .unwrap();
    assert_eq!(created, Registered::Created);

    sqlx::query(
        "UPDATE followq.accounts SET status = 'needs_reauth', pause_reason = 'refresh token spent' \
         WHERE user_id = '100'",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let updated = register(
        &db.pool,
        &test_keys(),
        &NewAccount {
            user_id,
            credentials: oauth2("second"),
            quota: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        updated,
        Registered::Updated {
            previous_status: "needs_reauth".into(),
            status: "active".into()
        }
    );
    let (status, reason, quota): (String, Option<String>, Option<i32>) = sqlx::query_as(
        "SELECT status, pause_reason, quota_requests FROM followq.accounts WHERE user_id = '100'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), reason, quota), ("active", None, Some(5)));
    let access = db.stored_token("100", TokenColumn::OAuth2AccessToken).await;
    assert_eq!(access.as_deref(), Some("second"));
}

#[tokio::test]
async fn switching_to_oauth1_replaces_the_oauth2_tokens() {
    let db = TestDb::new().await;
    let user_id = UserId::parse("100").unwrap();
    for credentials in [
        oauth2("first"),
        Credentials::OAuth1 {
            token: "t".to_owned().into(),
            token_secret: "s".to_owned().into(),
        },
    ] {
        register(
            &db.pool,
            &test_keys(),
            &NewAccount {
                user_id: user_id.clone(),
                credentials,
                quota: None,
            },
        )
        .await
        .unwrap();
    }
    let kind: String = sqlx::query_scalar("SELECT auth_kind FROM followq.accounts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(kind, "oauth1");
    assert_eq!(
        db.stored_token("100", TokenColumn::OAuth2AccessToken).await,
        None
    );
    assert_eq!(
        db.stored_token("100", TokenColumn::OAuth1Token)
            .await
            .as_deref(),
        Some("t")
    );
}

#[tokio::test]
async fn a_zero_quota_is_refused_before_any_write() {
    let db = TestDb::new().await;
    let result = register(
        &db.pool,
        &test_keys(),
        &NewAccount {
            user_id: UserId::parse("100").unwrap(),
            credentials: oauth2("x"),
            quota: Some(Quota {
                requests: 0,
                period_seconds: 900,
            }),
        },
    )
    .await;
    assert!(
        matches!(result, Err(followq::accounts::AccountError::BadQuota)),
        "{result:?}"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM followq.accounts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}
