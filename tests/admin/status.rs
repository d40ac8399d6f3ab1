//! `admin::status::report` over known rows: every number has one row that makes it.

use serde_json::json;

use crate::support::*;
use followq::admin::accounts;
use followq::admin::status::report;

#[tokio::test]
async fn an_empty_queue_reports_zeros_and_nothing_paused() {
    let db = TestDb::new().await;
    let r = report(&db.pool, rust_decimal::Decimal::ZERO).await.unwrap();
    assert_eq!(r.queue, Default::default());
    assert!(r.oldest_ready.is_none());
    assert_eq!(r.throughput.total, [0, 0, 0]);
    assert!(r.app_pause.is_none());
    assert!(r.paused_accounts.is_empty() && r.daemons.is_empty());
}

#[tokio::test]
async fn the_report_counts_each_known_row_once() {
    let db = db_with_accounts().await;
    db.add_account("102").await;
    db.add_account("103").await;
    // Account 100: one ready job (the oldest), one scheduled, one running, one of each
    // finished state.
    let oldest = enqueue(&db.pool, "100", "200").await;
    sqlx::query("UPDATE followq.follow_jobs SET run_at = now() - interval '90 seconds', created_at = now() - interval '10 minutes' WHERE id = $1")
        .bind(oldest)
        .execute(&db.pool)
        .await
        .unwrap();
    let later = enqueue(&db.pool, "100", "201").await;
    sqlx::query("UPDATE followq.follow_jobs SET run_at = now() + interval '1 hour' WHERE id = $1")
        .bind(later)
        .execute(&db.pool)
        .await
        .unwrap();
    let running = enqueue(&db.pool, "100", "202").await;
    make_running(&db.pool, running, "host-a").await;
    let ok = enqueue(&db.pool, "100", "203").await;
    make_succeeded(&db.pool, ok).await;
    let bad = enqueue(&db.pool, "100", "204").await;
    make_failed(&db.pool, bad, 1, json!({"kind": "permanent"})).await;
    let gone = enqueue(&db.pool, "100", "205").await;
    followq::admin::jobs::cancel(&db.pool, job_id(gone))
        .await
        .unwrap();
    // Accounts 101 (paused by X), 102 (needs_reauth), 103 (disabled): one blocked job each,
    // even an older one, which is not "the oldest ready".
    for source in ["101", "102", "103"] {
        let id = enqueue(&db.pool, source, "300").await;
        sqlx::query(
            "UPDATE followq.follow_jobs SET run_at = now() - interval '1 hour' WHERE id = $1",
        )
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    followq::store::pauses::pause_account(
        &db.pool,
        "101",
        chrono::Utc::now() + chrono::TimeDelta::minutes(10),
        &followq::states::PauseReason::RateLimited,
    )
    .await
    .unwrap();
    followq::store::pauses::mark_needs_reauth(&db.pool, "102", "refresh token revoked")
        .await
        .unwrap();
    accounts::disable(&db.pool, &user("103")).await.unwrap();
    // The ledger: 1 request 30 s ago, 1 at 3 min, 1 at 10 min, 1 in flight now (the running
    // job's, written by its claim above), and one 20 minutes ago that is outside every window.
    attempt(&db.pool, ok, "100", Some("succeeded"), Some(200), 30.0).await;
    attempt(&db.pool, bad, "100", Some("permanent"), Some(400), 180.0).await;
    attempt(&db.pool, ok, "100", Some("succeeded"), Some(200), 600.0).await;
    attempt(&db.pool, bad, "100", Some("transient"), Some(503), 1200.0).await;
    // Daemons: host-a live with a lease, host-old silent for 5 minutes, host-x only leasing.
    daemon(&db.pool, "host-a", 5.0).await;
    daemon(&db.pool, "host-old", 300.0).await;
    lease(&db.pool, "100", "host-a").await;
    lease(&db.pool, "101", "host-x").await;
    // An app stop that already ended is not reported.
    sqlx::query("INSERT INTO followq.app_pause (reason, paused_until) VALUES ('usage_capped', now() - interval '1 second')")
        .execute(&db.pool)
        .await
        .unwrap();

    let r = report(&db.pool, rust_decimal::Decimal::ZERO).await.unwrap();
    let q = &r.queue;
    assert_eq!(
        (
            q.queued_ready,
            q.queued_scheduled,
            q.queued_blocked,
            q.running
        ),
        (1, 1, 3, 1)
    );
    assert_eq!(
        (
            q.succeeded_last_24h,
            q.failed_last_24h,
            q.cancelled_last_24h
        ),
        (1, 1, 1)
    );
    let oldest_ready = r.oldest_ready.clone().unwrap();
    assert_eq!(oldest_ready.job_id, oldest);
    assert!(
        (89.0..100.0).contains(&oldest_ready.ready_for_seconds),
        "{oldest_ready:?}"
    );
    assert!(
        (599.0..610.0).contains(&oldest_ready.age_seconds),
        "{oldest_ready:?}"
    );

    assert_eq!(r.throughput.total, [2, 3, 4]);
    let by: Vec<(&str, [i64; 3])> = r
        .throughput
        .by_outcome
        .iter()
        .map(|o| (o.outcome.as_str(), o.counts))
        .collect();
    assert_eq!(
        by,
        vec![
            ("in_flight", [1, 1, 1]),
            ("permanent", [0, 1, 1]),
            ("succeeded", [1, 1, 2]),
        ]
    );
    assert!(r.app_pause.is_none());

    assert_eq!(r.paused_accounts.len(), 1);
    assert_eq!(r.paused_accounts[0].user_id, "101");
    assert_eq!(
        r.paused_accounts[0].pause_reason,
        Some(followq::states::PauseReason::RateLimited)
    );
    assert_eq!(r.paused_accounts[0].queued, 1);
    assert_eq!(r.needs_reauth_accounts.len(), 1);
    assert_eq!(
        r.needs_reauth_accounts[0].reason.as_deref(),
        Some("refresh token revoked")
    );
    assert_eq!(r.disabled_accounts[0].user_id, "103");

    let daemons: Vec<(&str, bool, i64, i64)> = r
        .daemons
        .iter()
        .map(|d| {
            (
                d.worker_id.as_str(),
                d.heartbeat_at.is_some(),
                d.accounts_leased,
                d.jobs_running,
            )
        })
        .collect();
    assert_eq!(
        daemons,
        vec![("host-a", true, 1, 1), ("host-x", false, 1, 0)]
    );
}

#[tokio::test]
async fn an_app_stop_in_force_is_reported_and_not_deleted() {
    let db = TestDb::new().await;
    sqlx::query("INSERT INTO followq.app_pause (reason, detail) VALUES ('app_forbidden', '{\"status\": 403}')")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = report(&db.pool, rust_decimal::Decimal::ZERO).await.unwrap();
    let stop = r.app_pause.unwrap();
    assert_eq!(stop.reason.as_str(), "app_forbidden");
    assert_eq!(stop.paused_until, None);
    assert_eq!(stop.detail, Some(json!({"status": 403})));
}

/// A job whose request may be on its way to X stays `queued` in the table: the per-account
/// counts of the report and of the status page show it in flight, not queued.
#[tokio::test]
async fn a_job_in_flight_is_not_counted_as_queued_for_its_account() {
    use followq::store::dashboard::{AccountsWithWork, accounts_with_work};

    let db = db_with_accounts().await;
    let sending = enqueue(&db.pool, "101", "200").await;
    enqueue(&db.pool, "101", "201").await;
    enqueue(&db.pool, "101", "202").await;
    // The claim's ledger row, unanswered, within its answer_by; then an operator's pause.
    sqlx::query(
        "INSERT INTO followq.attempts (job_id, account_user_id, worker_id, answer_by) \
         VALUES ($1, '101', 'host-a', now() + interval '1 minute')",
    )
    .bind(sending)
    .execute(&db.pool)
    .await
    .unwrap();
    lease(&db.pool, "101", "host-a").await;
    sqlx::query(
        "UPDATE followq.accounts SET status = 'paused', pause_reason = 'operator', \
         paused_until = now() + interval '1 hour' WHERE user_id = '101'",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let r = report(&db.pool, rust_decimal::Decimal::ZERO).await.unwrap();
    assert_eq!(r.queue.running, 1);
    assert_eq!(r.paused_accounts[0].user_id, "101");
    assert_eq!(r.paused_accounts[0].queued, 2, "{:?}", r.paused_accounts);

    let limits = |cap| AccountsWithWork {
        default_window_limit: 50,
        default_window_seconds: 900,
        app_stopped: false,
        daily_cap: 400,
        shown: 10,
        queued_count_cap: cap,
    };
    let mut conn = db.pool.acquire().await.unwrap();
    let (cards, _) = accounts_with_work(&mut conn, &limits(100)).await.unwrap();
    let card = cards.iter().find(|c| c.user_id == "101").unwrap();
    assert_eq!((card.queued, card.in_flight), (2, 1), "{card:?}");
    // Capped: at least the cap is still shown as the cap.
    let (cards, _) = accounts_with_work(&mut conn, &limits(2)).await.unwrap();
    let card = cards.iter().find(|c| c.user_id == "101").unwrap();
    assert_eq!(card.queued, 2, "{card:?}");
}
