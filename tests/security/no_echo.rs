//! No token, in clear or sealed, in what the daemon writes for people: its log events, the
//! jobs' `last_error`, or `/metrics`, through sends, a refresh that rotates and persists a
//! sealed pair, and an account whose stored value cannot be opened.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use followq::accounts::sealed::{SEALED_PREFIX, TokenColumn};
use tracing_subscriber::fmt::MakeWriter;

use crate::ops_support::{OpsDaemon, with_http};
use crate::support::{Harness, serial, sim_config};

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

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Every token of `user`, in clear and as stored, and the sealed payloads alone.
async fn secrets_of(harness: &Harness, user: &str, clear: &[String]) -> Vec<String> {
    let mut secrets: Vec<String> = clear.to_vec();
    for column in TokenColumn::ALL {
        if let Some(raw) = harness.db.raw_token(user, column).await {
            if let Some(payload) = raw.strip_prefix(SEALED_PREFIX) {
                let payload = payload.split_once(':').map_or(payload, |(_, p)| p);
                secrets.push(payload.chars().take(24).collect());
            }
            secrets.push(raw);
        }
    }
    secrets
}

/// Covers the sealing and the error paths of the token store: with a capturing subscriber on
/// this test's thread (a current-thread runtime runs the whole daemon on it), nothing the
/// daemon logs, stores in `last_error` or serves on `/metrics` holds a token or a sealed
/// value.
#[tokio::test]
async fn no_token_or_sealed_value_in_logs_last_error_or_metrics() {
    let _serial = serial().await;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    let mut clear = Vec::new();
    for user in ["700", "701", "702"] {
        let tokens = harness.sim.add_user(user);
        clear.push(tokens.access_token.clone());
        clear.push(tokens.refresh_token.clone());
        harness
            .db
            .add_account_with(
                user,
                followq::accounts::Credentials::OAuth2 {
                    access_token: tokens.access_token.into(),
                    refresh_token: Some(tokens.refresh_token.into()),
                    expires_at: None,
                },
            )
            .await;
    }
    // 701 refreshes (rotating its pair); 702's stored value is another account's.
    harness.sim.expire_access_token("701");
    let copied = harness
        .db
        .raw_token("700", TokenColumn::OAuth2AccessToken)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE followq.account_credentials SET oauth2_access_token = $1 WHERE user_id = '702'",
    )
    .bind(&copied)
    .execute(&harness.db.pool)
    .await
    .unwrap();
    let mut secrets = Vec::new();
    for user in ["700", "701", "702"] {
        secrets.extend(secrets_of(&harness, user, &clear).await);
    }
    for user in ["700", "701", "702"] {
        harness.enqueue(user, 1_000, 2).await;
    }

    let daemon = OpsDaemon::start(&with_http(&harness.settings)).await;
    harness
        .wait_finished(
            Duration::from_secs(20),
            "700 and 701 done, 702 retried",
            "SELECT count(*) = 4 FROM followq.follow_jobs WHERE state = 'succeeded' \
             AND source_user_id IN ('700', '701')",
        )
        .await;
    harness
        .wait_until(
            Duration::from_secs(20),
            "702's jobs back in the queue with a reason",
            "SELECT count(*) > 0 FROM followq.follow_jobs WHERE source_user_id = '702' \
             AND last_error->>'kind' = 'token_unavailable'",
        )
        .await;
    let metrics = daemon.scrape().await.text;
    daemon.stop().await;
    // The rotated pair, sealed, too.
    secrets.extend(secrets_of(&harness, "701", &[]).await);
    assert_eq!(harness.user("701").await.refreshes, 1);

    let last_errors: Vec<String> = sqlx::query_scalar(
        "SELECT last_error::text FROM followq.follow_jobs WHERE last_error IS NOT NULL",
    )
    .fetch_all(&harness.db.pool)
    .await
    .unwrap();
    assert!(
        last_errors.iter().any(|e| e.contains("does not decrypt")),
        "{last_errors:?}"
    );
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(logs.contains("refreshing OAuth 2.0 access token"), "{logs}");
    assert!(logs.contains("cannot be decrypted"), "{logs}");
    for text in last_errors.iter().chain([&logs, &metrics]) {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} leaked into: {text}"
            );
        }
    }
}
