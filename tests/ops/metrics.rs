//! /metrics after a small run against the simulator, parsed as Prometheus text: the counters
//! say what the simulator saw, and the gauges what the database holds.

use std::time::Duration;

use crate::ops_support::{OpsDaemon, with_http};
use crate::support::{Harness, serial, sim_config};

#[tokio::test]
async fn metrics_count_what_a_small_run_did() {
    let _serial = serial().await;
    // Another app of account 100 has spent its window: the first request meets a 429, is
    // snoozed until the window ends, and the five jobs go through in the next one.
    let harness = Harness::new(sim_config(5, Duration::from_secs(2))).await;
    let settings = with_http(&harness.settings);
    harness.account("100").await;
    harness.account("101").await;
    harness.enqueue("100", 1000, 5).await;
    // Still queued at the end: not due for an hour.
    sqlx::query("SELECT followq.enqueue('100', '2000', run_at => now() + interval '1 hour')")
        .execute(&harness.db.pool)
        .await
        .expect("enqueue a later job");
    // Paused by an operator: shows among the paused accounts.
    sqlx::query("UPDATE followq.accounts SET status = 'disabled' WHERE user_id = '101'")
        .execute(&harness.db.pool)
        .await
        .expect("disable an account");

    harness.sim.prespend("100", 5);
    let daemon = OpsDaemon::start(&settings).await;
    harness
        .wait_finished(
            Duration::from_secs(20),
            "the five due jobs succeeded",
            "SELECT count(*) = 5 FROM followq.follow_jobs WHERE state = 'succeeded'",
        )
        .await;
    let scraped = daemon.scrape().await;
    let sim = harness.user("100").await;
    daemon.stop().await;

    let value = |metric: &str, labels: &[(&str, &str)]| scraped.value(metric, labels);
    assert!(
        scraped.is_counter("followq_job_outcomes_total"),
        "{}",
        scraped.text
    );
    assert_eq!(
        value("followq_job_outcomes_total", &[("outcome", "succeeded")]),
        5.0
    );
    assert_eq!(
        value("followq_job_outcomes_total", &[("outcome", "failed")]),
        0.0
    );
    assert_eq!(value("followq_follows_pending_total", &[]), 0.0);

    assert!(sim.rate_limited >= 1, "the scenario needs a 429: {sim:?}");
    let rate_limited = sim.rate_limited as f64;
    assert_eq!(value("followq_rate_limited_total", &[]), rate_limited);
    assert_eq!(
        value("followq_job_outcomes_total", &[("outcome", "requeued")]),
        rate_limited,
        "each 429 snoozed its job once"
    );
    assert_eq!(
        value("followq_requests_total", &[("status_class", "2xx")]),
        5.0
    );
    assert_eq!(
        value("followq_requests_total", &[("status_class", "4xx")]),
        rate_limited
    );
    assert_eq!(
        value("followq_requests_total", &[("status_class", "5xx")]),
        0.0
    );
    assert_eq!(
        value("followq_requests_total", &[("status_class", "none")]),
        0.0
    );
    assert_eq!(
        value("followq_request_duration_seconds_count", &[]),
        sim.requests as f64,
        "one latency per request the simulator received"
    );
    assert!(value("followq_request_duration_seconds_sum", &[]) > 0.0);
    // At least one turn per request; turns that found no job due count too.
    assert!(value("followq_token_wait_seconds_count", &[]) >= sim.requests as f64);

    assert_eq!(value("followq_queue_jobs", &[("state", "queued")]), 1.0);
    assert_eq!(value("followq_queue_jobs", &[("state", "running")]), 0.0);
    assert_eq!(
        value("followq_accounts_paused", &[("reason", "disabled")]),
        1.0
    );
    assert_eq!(
        value("followq_accounts_paused", &[("reason", "needs_reauth")]),
        0.0
    );
    assert_eq!(value("followq_app_stopped", &[]), 0.0);
    assert_eq!(
        value("followq_accounts_held", &[]),
        1.0,
        "account 100 (with a job queued) is leased"
    );
}
