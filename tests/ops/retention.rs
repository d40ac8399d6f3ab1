//! Retention deletes finished jobs and ledger rows older than their ages, in batches, and
//! nothing else: not younger rows, not unfinished jobs however old.

use std::time::Duration;

use sqlx::PgPool;

use crate::ops_support::{OpsDaemon, with_http};
use crate::support::{Harness, serial, sim_config};

/// Rows on both sides of the 30-day cutoff. Returns nothing: the test counts by age.
async fn seed(pool: &PgPool) {
    sqlx::raw_sql(
        r#"
        -- Old finished jobs, of every finished state: 7 to delete.
        INSERT INTO followq.follow_jobs
            (source_user_id, target_user_id, state, following, pending_follow, created_at, finished_at)
        SELECT '100', (1000 + n)::text, 'succeeded', true, false,
               now() - interval '41 days', now() - interval '40 days' - n * interval '1 minute'
        FROM generate_series(1, 5) AS n;
        INSERT INTO followq.follow_jobs (source_user_id, target_user_id, state, created_at, finished_at)
        VALUES ('100', '1100', 'failed', now() - interval '41 days', now() - interval '31 days'),
               ('100', '1101', 'cancelled', now() - interval '41 days', now() - interval '400 days');
        -- Finished, but younger than 30 days: kept.
        INSERT INTO followq.follow_jobs
            (source_user_id, target_user_id, state, following, pending_follow, created_at, finished_at)
        VALUES ('100', '1200', 'succeeded', true, true, now() - interval '41 days', now() - interval '29 days'),
               ('100', '1201', 'succeeded', true, false, now(), now());
        -- Enqueued long ago and not finished: never deleted (not due, so the daemon leaves it).
        INSERT INTO followq.follow_jobs (source_user_id, target_user_id, created_at, run_at)
        VALUES ('100', '1300', now() - interval '90 days', now() + interval '1 day');

        -- The ledger: 6 old rows (one never answered), 3 younger ones.
        INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at, outcome)
        SELECT n, '100', 'old-daemon', now() - interval '30 days' - n * interval '1 hour', 'succeeded'
        FROM generate_series(1, 5) AS n;
        INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at)
        VALUES (6, '100', 'old-daemon', now() - interval '60 days');
        INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at, outcome)
        VALUES (7, '100', 'old-daemon', now() - interval '29 days', 'succeeded'),
               (8, '100', 'old-daemon', now() - interval '1 day', 'succeeded'),
               (9, '100', 'old-daemon', now(), 'succeeded');
        "#,
    )
    .execute(pool)
    .await
    .expect("seed old and young rows");
}

#[tokio::test]
async fn pruning_removes_only_what_is_old() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    harness.account("100").await;
    seed(&harness.db.pool).await;
    let mut settings = with_http(&harness.settings);
    settings.retention.interval = Duration::from_millis(100);
    // Several batches per table, the last one short.
    settings.retention.batch_size = 2;
    let daemon = OpsDaemon::start(&settings).await;

    harness
        .wait_until(
            Duration::from_secs(10),
            "the old rows deleted",
            "SELECT NOT EXISTS (SELECT 1 FROM followq.follow_jobs WHERE finished_at < now() - interval '30 days') \
             AND NOT EXISTS (SELECT 1 FROM followq.attempts WHERE sent_at < now() - interval '30 days')",
        )
        .await;
    // Another round or two: still nothing more goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scraped = daemon.scrape().await;
    daemon.stop().await;

    let jobs: Vec<String> = sqlx::query_scalar(
        "SELECT target_user_id FROM followq.follow_jobs ORDER BY target_user_id",
    )
    .fetch_all(&harness.db.pool)
    .await
    .expect("remaining jobs");
    assert_eq!(jobs, ["1200", "1201", "1300"]);
    let attempts: Vec<i64> =
        sqlx::query_scalar("SELECT job_id FROM followq.attempts ORDER BY job_id")
            .fetch_all(&harness.db.pool)
            .await
            .expect("remaining ledger rows");
    assert_eq!(attempts, [7, 8, 9]);

    let deleted = |table| scraped.value("followq_retention_deleted_total", &[("table", table)]);
    assert_eq!(deleted("follow_jobs"), 7.0);
    assert_eq!(deleted("attempts"), 6.0);
}

#[tokio::test]
async fn retention_turned_off_deletes_nothing() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    harness.account("100").await;
    seed(&harness.db.pool).await;
    let mut settings = harness.settings.clone();
    settings.retention.enabled = false;
    settings.retention.interval = Duration::from_millis(50);
    let daemon = crate::support::start_with(&settings).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs")
            .await,
        10
    );
    assert_eq!(
        harness.count("SELECT count(*) FROM followq.attempts").await,
        9
    );
}
