//! OAuth 1.0a accounts through the daemon, against a simulator that verifies every
//! signature with the consumer's and the token's secrets.

use std::time::Duration;

use followq::accounts::Credentials;
use followq::config::OAuth1AppSettings;
use followq::sim::{OAuth1Consumer, SimConfig};
use secrecy::SecretString;

use crate::support::{Harness, shared, sim_config};

const LIMIT: Duration = Duration::from_secs(30);
/// Several polls and heartbeats in which a broken daemon would have sent again.
const QUIET: Duration = Duration::from_millis(1500);

/// An OAuth 1.0a account's follows are signed so that X accepts them; an account whose
/// stored token secret X does not accept gets one 401 and is parked as `needs_reauth` (an
/// OAuth 1.0a token cannot be refreshed), its jobs kept.
///
/// Guard: the OAuth 1.0a signing in `xapi::client` (`oauth1::authorization_header` over the
/// request's method and URL). Checked by signing the follow as a GET: every signature is
/// refused and the first account is parked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth1_requests_are_signed_and_a_refused_signature_parks_the_account() {
    let _scenario = shared().await;
    let mut harness = Harness::new(SimConfig {
        oauth1_consumer: Some(OAuth1Consumer {
            key: "followq-consumer".into(),
            secret: "consumer-secret".into(),
        }),
        ..sim_config(50, Duration::from_secs(60))
    })
    .await;
    harness.settings.x_api.oauth1 = OAuth1AppSettings {
        consumer_key: "followq-consumer".into(),
        consumer_secret: Some(SecretString::from("consumer-secret")),
    };
    harness
        .oauth1_account("1800", "1800-token", "token-secret")
        .await;
    harness.enqueue("1800", 5001, 3).await;
    // followq holds a secret X no longer accepts for this token.
    harness
        .sim
        .add_oauth1_user("1801", "1801-token", "the-current-secret");
    harness
        .db
        .add_account_with(
            "1801",
            Credentials::OAuth1 {
                token: "1801-token".to_owned().into(),
                token_secret: "a-stale-secret".to_owned().into(),
            },
        )
        .await;
    harness.enqueue("1801", 5001, 2).await;

    let daemon = harness.start().await;
    harness
        .wait_finished(
            LIMIT,
            "the signed follows done",
            "SELECT count(*) = 3 FROM followq.follow_jobs \
             WHERE source_user_id = '1800' AND state = 'succeeded'",
        )
        .await;
    // Parking an account announces nothing: polled.
    harness
        .wait_until(
            LIMIT,
            "the refused account parked",
            "SELECT status = 'needs_reauth' FROM followq.accounts WHERE user_id = '1801'",
        )
        .await;
    tokio::time::sleep(QUIET).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let stats = harness.stats().await;
    let signed = stats.user("1800");
    assert_eq!(
        (signed.requests, signed.follows, signed.bad_signatures),
        (3, 3, 0),
        "{signed:?}"
    );
    let refused = stats.user("1801");
    assert_eq!(
        (
            refused.requests,
            refused.bad_signatures,
            refused.unauthorized
        ),
        (0, 1, 1),
        "one refused request, then none: {refused:?}"
    );
    assert!(
        harness
            .jobs_of("1800")
            .await
            .iter()
            .all(|j| j.state == "succeeded" && j.attempts == 1)
    );
    let account = harness.account_row("1801").await;
    assert_eq!(
        account.pause_reason.as_deref(),
        Some("X rejected the OAuth 1.0a token (401)")
    );
    assert!(
        harness
            .jobs_of("1801")
            .await
            .iter()
            .all(|j| j.state == "queued" && j.attempts == 0)
    );
    let ledger = harness.ledger_of("1801").await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].http_status, ledger[0].outcome.as_deref()),
        (Some(401), Some("unauthorized"))
    );
}
