//! The token store against a fresh database and a wiremock token endpoint: refresh ahead of
//! expiry and after a 401, rotation persisted (sealed), public and confidential clients,
//! single-flight across two pools, a spent refresh token, and the refresh claim freed when a
//! refresh is cancelled.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use followq::accounts::sealed::TokenColumn;
use followq::accounts::{AuthError, Credentials, TokenStore};
use followq::ids::UserId;
use followq::xapi::{RequestAuth, TokenClient};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use wiremock::matchers::{body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::db::{TestDb, test_keys};
use crate::settings;

const USER: &str = "111";

fn oauth2(access: &str, refresh: Option<&str>, expires_in: Option<i64>) -> Credentials {
    Credentials::OAuth2 {
        access_token: SecretString::from(access),
        refresh_token: refresh.map(SecretString::from),
        expires_at: expires_in.map(|s| Utc::now() + TimeDelta::seconds(s)),
    }
}

fn store(pool: &PgPool, server: &MockServer) -> TokenStore {
    let settings = settings(&server.uri());
    TokenStore::new(
        pool.clone(),
        TokenClient::new(&settings).unwrap(),
        &settings,
        test_keys(),
    )
}

fn new_pair() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        r#"{"token_type":"bearer","expires_in":7200,"access_token":"new-access","scope":"tweet.read users.read follows.write offline.access","refresh_token":"new-refresh"}"#,
        "application/json",
    )
}

fn bearer_of(auth: &RequestAuth) -> &str {
    match auth {
        RequestAuth::Bearer(token) => token.expose_secret(),
        RequestAuth::OAuth1 { .. } => panic!("expected a bearer token"),
    }
}

struct StoredTokens {
    access: Option<String>,
    refresh: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    status: String,
    pause_reason: Option<String>,
}

/// The account's tokens, opened with the test key, and its status.
async fn stored(db: &TestDb, user: &UserId) -> StoredTokens {
    let (expires_at, status, pause_reason) = sqlx::query_as(
        "SELECT c.oauth2_expires_at, a.status, a.pause_reason
         FROM followq.accounts a JOIN followq.account_credentials c USING (user_id) WHERE a.user_id = $1",
    )
    .bind(user.as_str())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    StoredTokens {
        access: db
            .stored_token(user.as_str(), TokenColumn::OAuth2AccessToken)
            .await,
        refresh: db
            .stored_token(user.as_str(), TokenColumn::OAuth2RefreshToken)
            .await,
        expires_at,
        status,
        pause_reason,
    }
}

#[tokio::test]
async fn a_token_far_from_expiry_is_used_as_is() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(new_pair())
        .expect(0)
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("old-access", Some("old-refresh"), Some(7200)))
        .await;
    let auth = store(&db.pool, &server).auth_for(&user).await.unwrap();
    assert_eq!(bearer_of(&auth), "old-access");
}

#[tokio::test]
async fn a_token_within_the_margin_is_refreshed_and_the_rotated_pair_stored() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2/oauth2/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "grant_type=refresh_token&refresh_token=old-refresh&client_id=cid",
        ))
        .respond_with(new_pair())
        .expect(1)
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("old-access", Some("old-refresh"), Some(60)))
        .await;
    let auth = store(&db.pool, &server).auth_for(&user).await.unwrap();
    assert_eq!(bearer_of(&auth), "new-access");
    let row = stored(&db, &user).await;
    assert_eq!(row.access.as_deref(), Some("new-access"));
    assert_eq!(row.refresh.as_deref(), Some("new-refresh"));
    let lifetime = row.expires_at.unwrap() - Utc::now();
    assert!(
        (7100..=7200).contains(&lifetime.num_seconds()),
        "{lifetime:?}"
    );
    assert_eq!(row.status, "active");
}

#[tokio::test]
async fn a_confidential_client_authenticates_with_http_basic() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2/oauth2/token"))
        // base64("cid:csec-SECRET")
        .and(header("authorization", "Basic Y2lkOmNzZWMtU0VDUkVU"))
        .and(body_string(
            "grant_type=refresh_token&refresh_token=old-refresh",
        ))
        .respond_with(new_pair())
        .expect(1)
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("old-access", Some("old-refresh"), None))
        .await;
    let mut settings = settings(&server.uri());
    settings.oauth2.client_secret = Some(SecretString::from("csec-SECRET"));
    let tokens = TokenStore::new(
        db.pool.clone(),
        TokenClient::new(&settings).unwrap(),
        &settings,
        test_keys(),
    );
    let rejected = RequestAuth::Bearer(SecretString::from("old-access"));
    let auth = tokens
        .refresh_after_unauthorized(&user, &rejected)
        .await
        .unwrap();
    assert_eq!(bearer_of(&auth), "new-access");
}

#[tokio::test]
async fn a_401_refreshes_once_and_rotates() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(new_pair())
        .expect(1)
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("old-access", Some("old-refresh"), None))
        .await;
    let tokens = store(&db.pool, &server);
    let rejected = tokens.auth_for(&user).await.unwrap();
    let fresh = tokens
        .refresh_after_unauthorized(&user, &rejected)
        .await
        .unwrap();
    assert_eq!(bearer_of(&fresh), "new-access");
    // The same 401 reported again (a second worker, late) does not refresh again.
    let again = tokens
        .refresh_after_unauthorized(&user, &rejected)
        .await
        .unwrap();
    assert_eq!(bearer_of(&again), "new-access");
    assert_eq!(
        stored(&db, &user).await.refresh.as_deref(),
        Some("new-refresh")
    );
}

#[tokio::test]
async fn two_processes_refreshing_at_once_call_the_endpoint_once() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        // Slow enough that the second refresher surely waits on the first.
        .respond_with(new_pair().set_delay(Duration::from_millis(400)))
        .expect(1)
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("old-access", Some("old-refresh"), None))
        .await;
    let first = store(&db.pool, &server);
    let second_pool = db.another_pool().await;
    let second = store(&second_pool, &server);
    let rejected = RequestAuth::Bearer(SecretString::from("old-access"));
    let (a, b) = tokio::join!(
        first.refresh_after_unauthorized(&user, &rejected),
        second.refresh_after_unauthorized(&user, &rejected),
    );
    assert_eq!(bearer_of(&a.unwrap()), "new-access");
    assert_eq!(bearer_of(&b.unwrap()), "new-access");
    let row = stored(&db, &user).await;
    assert_eq!(row.access.as_deref(), Some("new-access"));
    assert_eq!(row.refresh.as_deref(), Some("new-refresh"));
    server.verify().await;
}

#[tokio::test]
async fn two_processes_refreshing_ahead_of_expiry_call_the_endpoint_once() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(new_pair().set_delay(Duration::from_millis(400)))
        .expect(1)
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("old-access", Some("old-refresh"), Some(30)))
        .await;
    let second_pool = db.another_pool().await;
    let (first, second) = (store(&db.pool, &server), store(&second_pool, &server));
    let (a, b) = tokio::join!(first.auth_for(&user), second.auth_for(&user));
    assert_eq!(bearer_of(&a.unwrap()), "new-access");
    assert_eq!(bearer_of(&b.unwrap()), "new-access");
    server.verify().await;
}

#[tokio::test]
async fn a_spent_refresh_token_parks_the_account_and_keeps_its_jobs() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"error":"invalid_request","error_description":"Value passed for the token was invalid."}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("old-access", Some("spent-refresh"), None))
        .await;
    let job: i64 = sqlx::query_scalar("SELECT followq.enqueue('111', '222')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let tokens = store(&db.pool, &server);
    let rejected = RequestAuth::Bearer(SecretString::from("old-access"));
    let err = tokens
        .refresh_after_unauthorized(&user, &rejected)
        .await
        .unwrap_err();
    let AuthError::NeedsReauth { reason } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("invalid_request"), "{reason}");
    let row = stored(&db, &user).await;
    assert_eq!(row.status, "needs_reauth");
    assert_eq!(row.pause_reason.as_deref(), Some(reason.as_str()));
    let paused_until: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT paused_until FROM followq.accounts WHERE user_id = '111'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(paused_until, None);
    let state: String = sqlx::query_scalar("SELECT state FROM followq.follow_jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "queued");
    // Parked: no further call to the token endpoint (the mock expects exactly one).
    assert!(matches!(
        tokens.auth_for(&user).await,
        Err(AuthError::NeedsReauth { .. })
    ));
}

#[tokio::test]
async fn a_token_already_refreshed_elsewhere_is_used_without_a_call() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(new_pair())
        .expect(0)
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("newer-access", Some("newer-refresh"), None))
        .await;
    let rejected = RequestAuth::Bearer(SecretString::from("old-access"));
    let auth = store(&db.pool, &server)
        .refresh_after_unauthorized(&user, &rejected)
        .await
        .unwrap();
    assert_eq!(bearer_of(&auth), "newer-access");
}

#[tokio::test]
async fn accounts_that_cannot_refresh_are_parked() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(new_pair())
        .expect(0)
        .mount(&server)
        .await;
    let tokens = store(&db.pool, &server);

    // OAuth 1.0a: its tokens do not expire, so a 401 means they were revoked.
    let oauth1_user = db
        .add_account_with(
            "222",
            Credentials::OAuth1 {
                token: SecretString::from("t1"),
                token_secret: SecretString::from("s1"),
            },
        )
        .await;
    let auth = tokens.auth_for(&oauth1_user).await.unwrap();
    let RequestAuth::OAuth1 { consumer_key, .. } = &auth else {
        panic!("{auth:?}");
    };
    assert_eq!(consumer_key, "ck");
    let err = tokens
        .refresh_after_unauthorized(&oauth1_user, &auth)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::NeedsReauth { .. }), "{err:?}");
    assert_eq!(stored_status(&db.pool, "222").await, "needs_reauth");

    // OAuth 2.0 without a refresh token.
    let user = db
        .add_account_with(USER, oauth2("only-access", None, None))
        .await;
    let rejected = RequestAuth::Bearer(SecretString::from("only-access"));
    let err = tokens
        .refresh_after_unauthorized(&user, &rejected)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::NeedsReauth { .. }), "{err:?}");
    assert_eq!(stored_status(&db.pool, USER).await, "needs_reauth");
}

async fn stored_status(pool: &PgPool, user: &str) -> String {
    sqlx::query_scalar("SELECT status FROM followq.accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_token_endpoint_outage_is_transient_and_changes_nothing() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(ResponseTemplate::new(503))
        .expect(2)
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("old-access", Some("old-refresh"), None))
        .await;
    let tokens = store(&db.pool, &server);
    let rejected = RequestAuth::Bearer(SecretString::from("old-access"));
    let err = tokens
        .refresh_after_unauthorized(&user, &rejected)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Transient(_)), "{err:?}");
    let row = stored(&db, &user).await;
    assert_eq!(row.status, "active");
    assert_eq!(row.refresh.as_deref(), Some("old-refresh"));

    // Expiring soon but still valid: the outage does not stop sending with it.
    sqlx::query(
        "UPDATE followq.account_credentials SET oauth2_expires_at = now() + interval '1 minute'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let auth = tokens.auth_for(&user).await.unwrap();
    assert_eq!(bearer_of(&auth), "old-access");
}

#[tokio::test]
async fn unknown_accounts_have_no_credentials() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    let err = store(&db.pool, &server)
        .auth_for(&UserId::parse("999").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::NoCredentials), "{err:?}");
}

/// The refresh holds the account's lock (the key below is the one it takes: it is seen
/// held while the refresh waits for the token endpoint), and a cancelled refresh frees it.
#[tokio::test]
async fn a_cancelled_refresh_frees_the_claim() {
    let db = TestDb::new().await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(new_pair().set_delay(Duration::from_secs(2)))
        .mount(&server)
        .await;
    let user = db
        .add_account_with(USER, oauth2("old-access", Some("old-refresh"), None))
        .await;
    let tokens = store(&db.pool, &server);
    let rejected = RequestAuth::Bearer(SecretString::from("old-access"));
    let claimed = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT refresh_claimed_by IS NOT NULL FROM followq.account_credentials WHERE user_id = $1",
        )
        .bind(USER)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    assert!(!claimed().await, "free before");

    let mut refresh = Box::pin(tokens.refresh_after_unauthorized(&user, &rejected));
    // While the refresh waits for the token endpoint, the claim is seen held.
    let held = tokio::select! {
        done = &mut refresh => panic!("the refresh should still be waiting: {done:?}"),
        held = async {
            for _ in 0..40 {
                if claimed().await {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        } => held,
    };
    assert!(held, "the refresh never held the claim");
    // Cancelled: the future is dropped mid-refresh.
    drop(refresh);

    // The claim is released within moments, long before it would expire by itself.
    let mut free = false;
    for _ in 0..40 {
        free = !claimed().await;
        if free {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(free, "the refresh claim outlived its cancelled future");
    // And the stored pair is untouched: nothing was persisted.
    assert_eq!(
        stored(&db, &user).await.refresh.as_deref(),
        Some("old-refresh")
    );
}
