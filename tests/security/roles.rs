//! deploy/roles.sql and the functions' privileges: the enqueuing role cannot block or slow a
//! token refresh, the registrar stores tokens without reading them or owning anything, and no
//! followq function is callable by every role or resolves names through the caller's path.

use std::time::{Duration, Instant};

use followq::accounts::{Credentials, NewAccount, Registered, TokenStore, register};
use followq::config::{ConfigSources, Settings, XApiSettings};
use followq::ids::UserId;
use followq::xapi::{RequestAuth, TokenClient};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgConnection, PgPool};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{TestDb, test_keys};

const ROLES_SQL: &str = include_str!("../../deploy/roles.sql");
const INSUFFICIENT_PRIVILEGE: &str = "42501";

async fn apply_roles(pool: &PgPool) {
    sqlx::raw_sql(ROLES_SQL)
        .execute(pool)
        .await
        .expect("deploy/roles.sql applies");
}

async fn as_role(db: &TestDb, role: &'static str) -> PgConnection {
    let mut connection = db.connection().await;
    connection
        .execute(sqlx::AssertSqlSafe(format!("SET ROLE {role}")))
        .await
        .expect("SET ROLE");
    connection
}

/// A pool whose every connection acts as `role`, as a login role in it would.
async fn pool_as(db: &TestDb, role: &'static str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .after_connect(move |connection, _| {
            Box::pin(async move {
                connection
                    .execute(sqlx::AssertSqlSafe(format!("SET ROLE {role}")))
                    .await?;
                Ok(())
            })
        })
        .connect(&db.url)
        .await
        .expect("a pool for the role")
}

fn sqlstate<T: std::fmt::Debug>(result: Result<T, sqlx::Error>) -> String {
    match result {
        Ok(value) => panic!("expected a permission error, got {value:?}"),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
            .unwrap_or_else(|| panic!("not a database error: {e}")),
    }
}

fn x_api(base_url: &str) -> XApiSettings {
    let mut settings = Settings::load(&ConfigSources {
        config_dir: "/nonexistent".into(),
        environment: None,
    })
    .expect("built-in defaults")
    .x_api;
    settings.base_url = base_url.to_owned();
    settings.oauth2.client_id = "cid".into();
    settings
}

fn oauth2(access: &str, refresh: &str) -> Credentials {
    Credentials::OAuth2 {
        access_token: SecretString::from(access),
        refresh_token: Some(SecretString::from(refresh)),
        expires_at: None,
    }
}

/// Covers the refresh claim (a row the enqueuer has no privilege on) replacing the advisory
/// lock: with the old lock's key held by an enqueuer, and an enqueuer transaction left open
/// on the account's row (the key-share lock of its foreign-key check), a refresh by the
/// daemon role still completes at once. With an advisory lock it would wait out its deadline.
#[tokio::test]
async fn the_enqueuer_cannot_block_or_slow_a_refresh() {
    let db = TestDb::new().await;
    let user = db
        .add_account_with("111", oauth2("old-access", "old-refresh"))
        .await;
    apply_roles(&db.pool).await;
    let server = MockServer::start().await;
    Mock::given(path("/2/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"token_type":"bearer","expires_in":7200,"access_token":"new-access","refresh_token":"new-refresh"}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;

    // Everything an enqueuer can hold: the advisory lock the refresh used to take, and an
    // open transaction that enqueued a job for the account.
    let mut holder = as_role(&db, "followq_enqueuer").await;
    holder.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT followq.enqueue('111', '222')")
        .execute(&mut holder)
        .await
        .expect("the enqueuer enqueues");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('followq.oauth2_refresh:111', 0))")
        .execute(&mut holder)
        .await
        .expect("any role takes advisory locks");

    // And what it cannot take at all.
    let mut other = as_role(&db, "followq_enqueuer").await;
    for statement in [
        "SELECT 1 FROM followq.account_credentials FOR UPDATE",
        "SELECT 1 FROM followq.accounts FOR UPDATE",
        "SELECT 1 FROM followq.accounts FOR NO KEY UPDATE",
        "SELECT 1 FROM followq.accounts FOR SHARE",
        "DO $$ BEGIN LOCK TABLE followq.account_credentials IN ACCESS EXCLUSIVE MODE; END $$",
        "DO $$ BEGIN LOCK TABLE followq.accounts IN SHARE MODE; END $$",
        "UPDATE followq.account_credentials SET refresh_claimed_by = 'x', refresh_claimed_until = now() + interval '1 hour'",
    ] {
        let result = sqlx::query(statement).execute(&mut other).await;
        assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE, "{statement}");
    }

    let daemon_pool = pool_as(&db, "followq_daemon").await;
    let settings = x_api(&server.uri());
    let tokens = TokenStore::new(
        daemon_pool,
        TokenClient::new(&settings).unwrap(),
        &settings,
        test_keys(),
    );
    let started = Instant::now();
    let rejected = RequestAuth::Bearer(SecretString::from("old-access"));
    let fresh = tokio::time::timeout(
        Duration::from_secs(10),
        tokens.refresh_after_unauthorized(&user, &rejected),
    )
    .await
    .expect("the refresh is not blocked")
    .expect("the refresh succeeds");
    let took = started.elapsed();
    match &fresh {
        RequestAuth::Bearer(token) => assert_eq!(token.expose_secret(), "new-access"),
        RequestAuth::OAuth1 { .. } => panic!("expected a bearer token"),
    }
    assert!(took < Duration::from_secs(2), "the refresh took {took:?}");
    holder.execute("ROLLBACK").await.unwrap();
    server.verify().await;
}

/// Covers deploy/roles.sql's followq_registrar: what `accounts add` does (create, replace
/// tokens, bring a needs_reauth account back) works with it, and it can read no token, touch
/// no job and change no schema.
#[tokio::test]
async fn the_registrar_stores_tokens_without_reading_them_or_owning_the_schema() {
    let db = TestDb::new().await;
    apply_roles(&db.pool).await;
    let registrar = pool_as(&db, "followq_registrar").await;
    let account = |access: &str| NewAccount {
        user_id: UserId::parse("100").unwrap(),
        credentials: oauth2(access, "refresh"),
        quota: None,
    };
    let created = register(&registrar, &test_keys(), &account("first"))
        .await
        .expect("the registrar registers");
    assert_eq!(created, Registered::Created);
    sqlx::query("UPDATE followq.accounts SET status = 'needs_reauth', pause_reason = 'x'")
        .execute(&db.pool)
        .await
        .unwrap();
    let updated = register(&registrar, &test_keys(), &account("second"))
        .await
        .expect("the registrar stores new tokens");
    assert_eq!(
        updated,
        Registered::Updated {
            previous_status: "needs_reauth".into(),
            status: "active".into()
        }
    );
    assert_eq!(
        db.stored_token(
            "100",
            followq::accounts::sealed::TokenColumn::OAuth2AccessToken
        )
        .await
        .as_deref(),
        Some("second")
    );

    let mut connection = as_role(&db, "followq_registrar").await;
    for statement in [
        "SELECT oauth2_access_token FROM followq.account_credentials",
        "SELECT refresh_claimed_by FROM followq.account_credentials",
        "UPDATE followq.accounts SET leased_by = 'me', lease_expires_at = now()",
        "SELECT 1 FROM followq.follow_jobs",
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) VALUES ('100', '200')",
        "SELECT followq.enqueue('100', '200')",
        "CREATE TABLE followq.mine (x int)",
        "ALTER TABLE followq.accounts ADD COLUMN mine int",
        "DELETE FROM followq.account_credentials",
    ] {
        let result = sqlx::query(statement).execute(&mut connection).await;
        assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE, "{statement}");
    }
}

/// Covers the migration that revokes EXECUTE from PUBLIC and pins search_path: every
/// function of the schema (those added later too) must have both, and a role with nothing
/// but USAGE on the schema cannot enqueue.
#[tokio::test]
async fn no_followq_function_is_public_and_each_pins_its_search_path() {
    let db = TestDb::new().await;
    let functions: Vec<(String, bool, Option<Vec<String>>)> = sqlx::query_as(
        r#"
        SELECT p.oid::regprocedure::text,
               p.proacl IS NULL OR EXISTS (
                   SELECT 1 FROM aclexplode(p.proacl) AS acl
                   WHERE acl.grantee = 0 AND acl.privilege_type = 'EXECUTE'),
               p.proconfig
        FROM pg_proc AS p
        WHERE p.pronamespace = 'followq'::regnamespace
        "#,
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(functions.len() >= 3, "{functions:?}");
    for (name, public, config) in &functions {
        assert!(!public, "{name} is executable by PUBLIC");
        let pinned = config
            .iter()
            .flatten()
            .any(|setting| setting == "search_path=pg_catalog, pg_temp");
        assert!(pinned, "{name} does not pin search_path: {config:?}");
    }

    let mut connection = db.connection().await;
    connection
        .execute(
            "DO $$ BEGIN CREATE ROLE followq_test_outsider NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )
        .await
        .unwrap();
    connection
        .execute("GRANT USAGE ON SCHEMA followq TO followq_test_outsider")
        .await
        .unwrap();
    db.add_account("100").await;
    connection
        .execute("SET ROLE followq_test_outsider")
        .await
        .unwrap();
    let result = sqlx::query("SELECT followq.enqueue('100', '200')")
        .execute(&mut connection)
        .await;
    assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE);
}
