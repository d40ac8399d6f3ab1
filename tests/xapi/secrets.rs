//! No token or client secret in any log line (every level, every crate, `log` records
//! included), error value, `last_error` JSON or `Debug` output, through a refresh, a
//! rejected refresh and failed follow calls with both kinds of credentials.

use std::io::Write;
use std::sync::{Arc, Mutex};

use followq::accounts::{Credentials, TokenStore};
use followq::ids::UserId;
use followq::xapi::{RequestAuth, TokenClient, XClient};
use secrecy::SecretString;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::db::TestDb;
use crate::settings;

/// Every secret the test hands out; each contains this marker.
const MARKER: &str = "SECRET";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

fn json(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json")
}

#[tokio::test]
async fn no_secret_reaches_logs_errors_or_debug_output() {
    let capture = Capture::default();
    let writer = capture.clone();
    // The only test in this binary that installs a global subscriber. At TRACE, with the
    // `log` bridge, so reqwest's, hyper's and sqlx's records are captured too.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("install the capturing subscriber");

    let db = TestDb::new().await;
    let server = MockServer::start().await;
    let mut settings = settings(&server.uri());
    settings.oauth2.client_secret = Some(SecretString::from("client-SECRET-5"));

    // A rotating refresh for account 111, a rejected one for account 333.
    Mock::given(path("/2/oauth2/token"))
        .and(body_string_contains("refresh-SECRET-2"))
        .respond_with(json(
            200,
            r#"{"token_type":"bearer","expires_in":7200,"access_token":"new-access-SECRET-3","refresh_token":"new-refresh-SECRET-4"}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/2/oauth2/token"))
        .and(body_string_contains("refresh-SECRET-7"))
        .respond_with(json(
            400,
            r#"{"error":"invalid_grant","error_description":"Value passed for the token was invalid."}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    // The follow endpoint: 401 to the old token, 200 to the new one, 403 to OAuth 1.0a.
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer old-access-SECRET-1"))
        .respond_with(json(
            401,
            r#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#,
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer new-access-SECRET-3"))
        .respond_with(json(
            200,
            r#"{"data":{"following":true,"pending_follow":false}}"#,
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(json(
            403,
            r#"{"title":"Forbidden","type":"about:blank","detail":"You cannot follow an account that is blocking you."}"#,
        ))
        .mount(&server)
        .await;

    let user = db
        .add_account_with(
            "111",
            Credentials::OAuth2 {
                access_token: SecretString::from("old-access-SECRET-1"),
                refresh_token: Some(SecretString::from("refresh-SECRET-2")),
                expires_at: None,
            },
        )
        .await;
    let parked = db
        .add_account_with(
            "333",
            Credentials::OAuth2 {
                access_token: SecretString::from("access-SECRET-6"),
                refresh_token: Some(SecretString::from("refresh-SECRET-7")),
                expires_at: None,
            },
        )
        .await;
    let oauth1_user = db
        .add_account_with(
            "444",
            Credentials::OAuth1 {
                token: SecretString::from("o1-token-SECRET-8"),
                token_secret: SecretString::from("o1-secret-SECRET-9"),
            },
        )
        .await;

    let client = XClient::new(&settings).unwrap();
    let tokens = TokenStore::new(
        db.pool.clone(),
        TokenClient::new(&settings).unwrap(),
        &settings,
        crate::db::test_keys(),
    );
    let target = UserId::parse("2244994945").unwrap();
    let mut printed = Vec::new();

    // A failed call, the refresh it triggers, and the retry.
    let old = tokens.auth_for(&user).await.unwrap();
    let failed = client.follow(&user, &target, &old).await;
    assert_eq!(failed.outcome.kind(), "unauthorized");
    let fresh = tokens
        .refresh_after_unauthorized(&user, &old)
        .await
        .unwrap();
    let retried = client.follow(&user, &target, &fresh).await;
    assert_eq!(retried.outcome.kind(), "succeeded");

    // A refresh X rejects.
    let stale = RequestAuth::Bearer(SecretString::from("access-SECRET-6"));
    let rejected = tokens
        .refresh_after_unauthorized(&parked, &stale)
        .await
        .unwrap_err();

    // A failed OAuth 1.0a call.
    let oauth1 = tokens.auth_for(&oauth1_user).await.unwrap();
    let forbidden = client.follow(&oauth1_user, &target, &oauth1).await;
    assert_eq!(forbidden.outcome.kind(), "permanent");

    for response in [&failed, &retried, &forbidden] {
        printed.push(format!("{response:?}"));
        if let Some(details) = response.outcome.details() {
            printed.push(serde_json::to_string(details).unwrap());
        }
    }
    printed.push(format!("{rejected:?} {rejected}"));
    printed.push(format!("{old:?} {fresh:?} {oauth1:?}"));
    printed.push(format!("{tokens:?} {client:?} {settings:?}"));

    let logs = capture.text();
    // The capture works: our own events, and other crates' records, are in it.
    assert!(logs.contains("refreshing OAuth 2.0 access token"), "{logs}");
    assert!(logs.contains("follow request answered"), "{logs}");
    assert!(logs.contains("account marked needs_reauth"), "{logs}");
    for text in printed.iter().chain([&logs]) {
        assert!(!text.contains(MARKER), "a secret leaked: {text}");
    }
}
