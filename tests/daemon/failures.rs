//! When X misbehaves: injected 5xx and dropped connections, expired and spent tokens, and the
//! app-wide 403. None of these asserts a duration's upper bound, so they share the machine.

use std::time::Duration;

use followq::accounts::sealed::TokenColumn;
use followq::sim::FaultConfig;

use crate::support::{Harness, shared, sim_config};

/// 20% injected 5xx and dropped connections: every job ends succeeded, or failed after
/// max_attempts, and the retries are spaced by the backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_with_backoff_then_fail_at_max_attempts() {
    let _scenario = shared().await;
    let mut config = sim_config(1_000, Duration::from_secs(60));
    config.faults = FaultConfig {
        seed: 7,
        fail_5xx: 0.1,
        drop: 0.1,
        ..FaultConfig::default()
    };
    let harness = Harness::new(config).await;
    for account in ["700", "701", "702"] {
        harness.account(account).await;
        harness.enqueue(account, 1_000, 40).await;
    }
    let daemon = harness.start().await;
    harness.wait_all_finished(Duration::from_secs(60)).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let stats = harness.stats().await;
    let faults =
        stats.totals.all_users.faults.server_errors + stats.totals.all_users.faults.dropped;
    assert!(faults >= 10, "the faults happened: {faults}");
    // Succeeded, or failed with every attempt spent on transient errors.
    assert_eq!(
        harness
            .count(
                "SELECT count(*) FROM followq.follow_jobs WHERE NOT (state = 'succeeded' \
                 OR (state = 'failed' AND attempts = 4 AND last_error->>'kind' = 'transient'))"
            )
            .await,
        0
    );
    assert!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE attempts > 1")
            .await
            > 0
    );
    // Backoff in the ledger: the n-th retry waits at least half of 100 ms * 2^(n-1).
    let gaps: Vec<(i64, i64, f64)> = sqlx::query_as(
        r#"
        SELECT job_id, n, (extract(epoch FROM sent_at - previous_sent) * 1000)::float8 AS gap_ms
        FROM (SELECT job_id, sent_at,
                     row_number() OVER w - 1 AS n,
                     lag(sent_at) OVER w AS previous_sent
              FROM followq.attempts WINDOW w AS (PARTITION BY job_id ORDER BY sent_at)) t
        WHERE previous_sent IS NOT NULL
        "#,
    )
    .fetch_all(&harness.db.pool)
    .await
    .unwrap();
    assert!(!gaps.is_empty());
    for (job, retry, gap_ms) in gaps {
        let exponent = u32::try_from(retry - 1).unwrap();
        let floor_ms = (100.0 * 2f64.powi(exponent as i32)).min(2_000.0) / 2.0;
        assert!(
            gap_ms >= floor_ms - 5.0,
            "job {job} retry {retry} came after {gap_ms:.0} ms, backoff floor {floor_ms} ms"
        );
    }
}

/// 401 → refresh → success: an expired access token is refreshed once (the new pair
/// stored), the job that got the 401 goes back without spending an attempt, and every job
/// then succeeds with the new token.
///
/// Guard: `worker::turn::refresh_after_401` after a 401. Checked by skipping it: the daemon
/// sends the expired token again and again, and no job finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_and_the_job_succeeds() {
    let _scenario = shared().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.account("800").await;
    harness.sim.expire_access_token("800");
    let before = harness
        .db
        .stored_token("800", TokenColumn::OAuth2AccessToken)
        .await
        .unwrap();
    harness.enqueue("800", 1_000, 3).await;
    let daemon = harness.start().await;
    harness.wait_all_finished(Duration::from_secs(15)).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let user = harness.user("800").await;
    assert_eq!(
        (
            user.unauthorized,
            user.refreshes,
            user.requests,
            user.follows
        ),
        (1, 1, 3, 3),
        "{user:?}"
    );
    let ledger = harness.ledger_of("800").await;
    let outcomes: Vec<_> = ledger
        .iter()
        .map(|r| (r.http_status, r.outcome.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Some(401), Some("unauthorized")),
            (Some(200), Some("succeeded")),
            (Some(200), Some("succeeded")),
            (Some(200), Some("succeeded")),
        ]
    );
    assert_eq!(harness.account_row("800").await.status, "active");
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded' AND attempts = 1")
            .await,
        3,
        "the 401 did not spend an attempt"
    );
    let after = harness
        .db
        .stored_token("800", TokenColumn::OAuth2AccessToken)
        .await
        .unwrap();
    assert_ne!(before, after, "the new token was stored");
}

/// A spent refresh token: the account waits as needs_reauth, its jobs stay queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_refresh_token_parks_the_account_and_keeps_its_jobs() {
    let _scenario = shared().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.account("810").await;
    let refresh = harness
        .db
        .stored_token("810", TokenColumn::OAuth2RefreshToken)
        .await
        .unwrap();
    // Someone else spends the refresh token first.
    let spent = reqwest::Client::new()
        .post(format!("{}/2/oauth2/token", harness.sim.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", "someone-else"),
        ])
        .send()
        .await
        .unwrap();
    assert!(spent.status().is_success());
    harness.sim.expire_access_token("810");
    harness.enqueue("810", 1_000, 4).await;

    let daemon = harness.start().await;
    harness
        .wait_until(
            Duration::from_secs(10),
            "the account parked",
            "SELECT status = 'needs_reauth' FROM followq.accounts WHERE user_id = '810'",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    assert_eq!(
        harness
            .count(
                "SELECT count(*) FROM followq.follow_jobs WHERE state = 'queued' AND attempts = 0"
            )
            .await,
        4
    );
    let user = harness.user("810").await;
    assert_eq!(user.unauthorized, 1, "one request, then no more: {user:?}");
    assert_eq!(
        harness.account_row("810").await.pause_reason.as_deref(),
        Some(
            "token refresh rejected by X: invalid_request: Value passed for the token was invalid."
        )
    );
}

/// 403 client-forbidden: every account stops, no job is burned, and the daemon resumes
/// once an operator lifts the stop.
///
/// Guard: the `AppForbidden` arm of `worker::decision::decide` (the app stop without an end,
/// and the refund). Checked by removing the stop: the accounts' other jobs are sent into
/// the 403 and the requests go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_forbidden_stops_every_account_without_burning_jobs() {
    let _scenario = shared().await;
    let mut config = sim_config(50, Duration::from_secs(60));
    config.app_forbidden = true;
    let harness = Harness::new(config).await;
    for account in ["900", "901", "902"] {
        harness.account(account).await;
        harness.enqueue(account, 1_000, 5).await;
    }
    let daemon = harness.start().await;
    harness
        .wait_until(
            Duration::from_secs(10),
            "the app stopped",
            "SELECT count(*) = 1 FROM followq.app_pause WHERE reason = 'app_forbidden'",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = harness.stats().await.totals.all_users.requests;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = harness.stats().await.totals.all_users.requests;
    assert_eq!(early, later, "no request after the stop");
    assert!(
        later <= 3,
        "at most one request per account was in flight: {later}"
    );
    assert_eq!(
        harness
            .count(
                "SELECT count(*) FROM followq.follow_jobs WHERE state = 'queued' AND attempts = 0"
            )
            .await,
        15
    );

    // An operator fixes the app and lifts the stop.
    harness.sim.set_app_forbidden(false);
    sqlx::query("DELETE FROM followq.app_pause")
        .execute(&harness.db.pool)
        .await
        .unwrap();
    harness.wait_all_finished(Duration::from_secs(10)).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    assert_eq!(
        harness
            .count(
                "SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded' \
                 AND attempts = 1 AND finished_at IS NOT NULL"
            )
            .await,
        15,
        "every job succeeded, the 403s not counted as attempts"
    );
    let stats = harness.stats().await.totals.all_users;
    assert_eq!(
        (stats.app_forbidden, stats.follows, stats.requests),
        (later, 15, later + 15)
    );
}
