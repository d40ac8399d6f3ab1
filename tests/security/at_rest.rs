//! Tokens at rest: sealed by `accounts add`, absent from a `pg_dump`, still usable by the
//! daemon; `credentials status` and `rekey` across a key rotation; rows in clear from an
//! earlier version read, then sealed; values that cannot be opened refused without echo.

use std::time::Duration;

use followq::accounts::sealed::{SEALED_PREFIX, TokenColumn};
use followq::accounts::{AuthError, Credentials, KeyRing, TokenStore};
use followq::config::{ConfigSources, CredentialsSettings, Settings, XApiSettings};
use followq::ids::UserId;
use followq::xapi::{RequestAuth, TokenClient};
use secrecy::{ExposeSecret, SecretString};

use crate::common::{TEST_KEY_ID, TestDb, describe, test_credentials, test_key_env};
use crate::support::{Harness, serial, sim_config};

/// The whole database as `pg_dump` writes it (what a backup holds).
fn pg_dump(db: &TestDb) -> String {
    let output = std::process::Command::new("pg_dump")
        .arg("--dbname")
        .arg(&db.url)
        .output()
        .expect("run pg_dump");
    assert!(output.status.success(), "pg_dump: {}", describe(&output));
    String::from_utf8(output.stdout).expect("a text dump")
}

fn x_api(base_url: &str) -> XApiSettings {
    let mut settings = Settings::load(&ConfigSources {
        config_dir: "/nonexistent".into(),
        environment: None,
    })
    .expect("built-in defaults")
    .x_api;
    settings.base_url = base_url.to_owned();
    settings.oauth1.consumer_key = "ck".into();
    settings.oauth1.consumer_secret = Some(SecretString::from("cs"));
    settings
}

/// A token store that never calls a token endpoint (nothing here expires), with `keys`.
fn token_store(db: &TestDb, keys: KeyRing) -> TokenStore {
    let settings = x_api("http://127.0.0.1:9");
    TokenStore::new(
        db.pool.clone(),
        TokenClient::new(&settings).expect("token client"),
        &settings,
        keys,
    )
}

fn bearer(auth: &RequestAuth) -> String {
    match auth {
        RequestAuth::Bearer(token) => token.expose_secret().to_owned(),
        RequestAuth::OAuth1 { token, .. } => token.expose_secret().to_owned(),
    }
}

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid user id")
}

/// Covers the sealing in `accounts::register` and the opening in the token store: without
/// them the dump holds the tokens, or the simulator refuses what the daemon sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_add_seals_the_tokens_a_dump_holds_none_and_the_daemon_sends_with_them() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    let tokens = harness.sim.add_user("700");
    let json = format!(
        r#"{{"access_token":"{}","refresh_token":"{}","expires_in":7200}}"#,
        tokens.access_token, tokens.refresh_token
    );
    let added = harness.db.followq(
        &["accounts", "add", "--user-id", "700", "--stdin"],
        &json,
        &[],
    );
    assert!(added.status.success(), "{}", describe(&added));

    let raw = harness
        .db
        .raw_token("700", TokenColumn::OAuth2AccessToken)
        .await
        .expect("a stored access token");
    assert!(raw.starts_with("followq:v1:test:"), "{raw}");
    let dump = pg_dump(&harness.db);
    assert!(dump.contains(&raw), "the dump holds the credentials row");
    assert!(
        !dump.contains(&tokens.access_token),
        "access token in clear"
    );
    assert!(
        !dump.contains(&tokens.refresh_token),
        "refresh token in clear"
    );

    harness.enqueue("700", 1_000, 3).await;
    let daemon = harness.start().await;
    harness.wait_all_finished(Duration::from_secs(15)).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let figures = harness.user("700").await;
    assert_eq!((figures.requests, figures.follows), (3, 3), "{figures:?}");
}

/// Covers `credentials status`, `credentials rekey` and the reading of clear rows: the
/// counts per key, a clear row read before and sealed after, and every row readable with
/// the new key alone once rekey reports nothing left under the old one.
#[tokio::test]
async fn rekey_moves_every_row_to_the_new_key_and_seals_rows_left_in_clear() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    db.add_account("101").await;
    db.add_account_with(
        "102",
        Credentials::OAuth1 {
            token: SecretString::from("o1-token-102"),
            token_secret: SecretString::from("o1-secret-102"),
        },
    )
    .await;
    // As an earlier version stored it: in clear.
    sqlx::query("INSERT INTO followq.accounts (user_id, auth_kind) VALUES ('103', 'oauth2')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO followq.account_credentials (user_id, oauth2_access_token, oauth2_refresh_token) \
         VALUES ('103', 'legacy-access-103', 'legacy-refresh-103')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let read_before = token_store(&db, crate::common::test_keys())
        .auth_for(&user("103"))
        .await
        .expect("a clear row is read");
    assert_eq!(bearer(&read_before), "legacy-access-103");

    let status = db.followq(&["credentials", "status"], "", &[]);
    assert!(status.status.success(), "{}", describe(&status));
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("4 credentials rows"), "{text}");
    assert!(text.contains("key test: 3 rows (active)"), "{text}");
    assert!(text.contains("clear: 1 rows"), "{text}");

    let new_key = db.followq_without_key(&["credentials", "new-key"], "", &[]);
    assert!(new_key.status.success(), "{}", describe(&new_key));
    let new_key = String::from_utf8(new_key.stdout).unwrap().trim().to_owned();
    let mut env = test_key_env();
    env.retain(|(name, _)| name != "FOLLOWQ_CREDENTIALS__ACTIVE_KEY");
    env.push(("FOLLOWQ_CREDENTIALS__KEYS__K2".into(), new_key.clone()));
    env.push(("FOLLOWQ_CREDENTIALS__ACTIVE_KEY".into(), "k2".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let rekeyed = db.followq_without_key(&["credentials", "rekey", "--batch-size", "2"], "", &env);
    assert!(rekeyed.status.success(), "{}", describe(&rekeyed));
    let text = String::from_utf8_lossy(&rekeyed.stdout).into_owned();
    assert!(text.contains("re-encrypted 4 rows under key k2"), "{text}");
    assert!(text.contains("key test: 0"), "{text}");
    assert!(text.contains("clear: 0"), "{text}");
    assert!(text.contains("key k2: 4"), "{text}");
    assert!(!text.contains(&new_key), "{text}");

    // The old key can go: the new one alone reads every account.
    let only_k2 = KeyRing::from_settings(&CredentialsSettings {
        active_key: Some("k2".into()),
        keys: [("k2".to_owned(), SecretString::from(new_key))].into(),
    })
    .unwrap();
    let store = token_store(&db, only_k2);
    for (id, expected) in [
        ("100", "test-access-100"),
        ("101", "test-access-101"),
        ("102", "o1-token-102"),
        ("103", "legacy-access-103"),
    ] {
        let auth = store
            .auth_for(&user(id))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(bearer(&auth), expected);
    }
    let legacy = db
        .raw_token("103", TokenColumn::OAuth2RefreshToken)
        .await
        .unwrap();
    assert!(legacy.starts_with("followq:v1:k2:"), "{legacy}");
    let dump = pg_dump(&db);
    for token in ["legacy-access-103", "legacy-refresh-103", "o1-secret-102"] {
        assert!(!dump.contains(token), "{token} in the dump");
    }
}

/// Covers the key check of `accounts add` and `run`: each stops before touching anything,
/// with the way to make a key.
#[tokio::test]
async fn without_a_key_accounts_add_and_run_stop_saying_how_to_make_one() {
    let db = TestDb::new().await;
    let added = db.followq_without_key(
        &["accounts", "add", "--user-id", "100", "--stdin"],
        r#"{"access_token":"AT-SECRET"}"#,
        &[],
    );
    assert_eq!(added.status.code(), Some(1), "{}", describe(&added));
    let text = describe(&added);
    assert!(text.contains("followq credentials new-key"), "{text}");
    assert!(text.contains("FOLLOWQ_CREDENTIALS__KEYS__"), "{text}");
    assert!(!text.contains("AT-SECRET"), "{text}");
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM followq.accounts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(accounts, 0);

    let run = db.followq_without_key(&["run"], "", &[]);
    assert_eq!(run.status.code(), Some(1), "{}", describe(&run));
    assert!(
        describe(&run).contains("followq credentials new-key"),
        "{}",
        describe(&run)
    );
}

/// Covers the associated data and the token store's handling of values it cannot open: a
/// sealed value copied into another account's row, or sealed with a key this process does not
/// have, is a transient error naming the key, never the value, and parks nothing.
#[tokio::test]
async fn a_value_copied_to_another_row_or_under_an_unknown_key_is_refused_without_echo() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    db.add_account("101").await;
    let copied = db
        .raw_token("100", TokenColumn::OAuth2AccessToken)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE followq.account_credentials SET oauth2_access_token = $1 WHERE user_id = '101'",
    )
    .bind(&copied)
    .execute(&db.pool)
    .await
    .unwrap();
    let store = token_store(&db, crate::common::test_keys());
    let error = store.auth_for(&user("101")).await.unwrap_err();
    let AuthError::Transient(message) = &error else {
        panic!("{error:?}");
    };
    assert!(message.contains("does not decrypt"), "{message}");
    let payload = copied.trim_start_matches(SEALED_PREFIX);
    assert!(!message.contains(payload), "{message}");
    assert!(!message.contains("test-access"), "{message}");

    let other_key =
        KeyRing::from_settings(&followq::accounts::keyring::fresh_settings("other").unwrap())
            .unwrap();
    let error = token_store(&db, other_key)
        .auth_for(&user("100"))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("FOLLOWQ_CREDENTIALS__KEYS__TEST"),
        "{error}"
    );
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM followq.accounts ORDER BY user_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["active", "active"], "nothing parked");
    assert_eq!(test_credentials().active_key.as_deref(), Some(TEST_KEY_ID));
}

/// Covers rekey's respect of a refresh claim: re-sealing the refresh token under a refresher
/// would make the refresher's compare-and-set fail and lose the pair X just rotated. The
/// claimed row is left alone (reported busy) and re-sealed once the claim is gone.
#[tokio::test]
async fn rekey_leaves_a_row_alone_while_its_refresh_is_claimed() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    db.add_account("101").await;
    sqlx::query(
        "UPDATE followq.account_credentials SET refresh_claimed_by = 'a refresher', \
         refresh_claimed_until = now() + interval '1 minute' WHERE user_id = '100'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let before = db
        .raw_token("100", TokenColumn::OAuth2RefreshToken)
        .await
        .unwrap();
    let mut credentials = test_credentials();
    credentials
        .keys
        .insert("k2".into(), followq::accounts::keyring::new_key().unwrap());
    credentials.active_key = Some("k2".into());
    let keys = KeyRing::from_settings(&credentials).unwrap();

    let report = followq::accounts::rekey::rekey(&db.pool, &keys, 10)
        .await
        .unwrap();
    assert_eq!((report.resealed, report.busy), (1, 1), "{report:?}");
    assert_eq!(
        db.raw_token("100", TokenColumn::OAuth2RefreshToken).await,
        Some(before),
        "the claimed row is untouched"
    );

    sqlx::query(
        "UPDATE followq.account_credentials SET refresh_claimed_by = NULL, \
         refresh_claimed_until = NULL WHERE user_id = '100'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let report = followq::accounts::rekey::rekey(&db.pool, &keys, 10)
        .await
        .unwrap();
    assert_eq!((report.resealed, report.busy), (1, 0), "{report:?}");
    let status = followq::accounts::rekey::status(&db.pool).await.unwrap();
    assert_eq!(status.rows_under(Some("k2")), 2);
    assert_eq!(status.rows_not_under("k2"), 0);
}

/// Covers the refresh's compare-and-set on the sealed refresh token it read: tokens an
/// operator stores while a refresh is on the wire win over the pair the refresh brings back,
/// and the refresher uses the operator's.
#[tokio::test]
async fn tokens_stored_during_a_refresh_win_over_the_refreshed_pair() {
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let db = TestDb::new().await;
    let user = db
        .add_account_with(
            "100",
            Credentials::OAuth2 {
                access_token: SecretString::from("old-access"),
                refresh_token: Some(SecretString::from("old-refresh")),
                expires_at: None,
            },
        )
        .await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(
                    r#"{"access_token":"refreshed-access","refresh_token":"refreshed-refresh","expires_in":7200}"#,
                    "application/json",
                )
                .set_delay(Duration::from_secs(2)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut settings = x_api(&server.uri());
    settings.oauth2.client_id = "cid".into();
    let store = TokenStore::new(
        db.pool.clone(),
        TokenClient::new(&settings).unwrap(),
        &settings,
        crate::common::test_keys(),
    );
    let refreshing = tokio::spawn({
        let user = user.clone();
        async move {
            let rejected = RequestAuth::Bearer(SecretString::from("old-access"));
            store.refresh_after_unauthorized(&user, &rejected).await
        }
    });
    // The refresh is on the wire (the endpoint has it and holds its answer): store new tokens.
    let started = std::time::Instant::now();
    while server
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no refresh request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.add_account_with(
        "100",
        Credentials::OAuth2 {
            access_token: SecretString::from("operator-access"),
            refresh_token: Some(SecretString::from("operator-refresh")),
            expires_at: None,
        },
    )
    .await;
    let registered_after = started.elapsed();
    assert!(
        registered_after < Duration::from_millis(1500),
        "stored {registered_after:?} after the request arrived: not while its answer was held"
    );
    let used = refreshing.await.unwrap().expect("the refresh ends well");
    assert_eq!(bearer(&used), "operator-access");
    assert_eq!(
        db.stored_token("100", TokenColumn::OAuth2RefreshToken)
            .await
            .as_deref(),
        Some("operator-refresh")
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the register ran mid-refresh"
    );
}
