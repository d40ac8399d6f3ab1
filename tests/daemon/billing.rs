//! Pay-per-use X: credits that run out fail nothing and are probed until topped up, and
//! budgets that no replica goes beyond. Each test names the guard it covers (removed once to
//! check).

use std::time::Duration;

use followq::sim::SimConfig;

use crate::support::{Harness, shared, sim_config};

/// The longest any wait below may take: generous, since these scenarios share the machine.
const LIMIT: Duration = Duration::from_secs(30);
/// How long a scenario watches for what must not happen.
const QUIET: Duration = Duration::from_millis(2500);

/// 402 (the app's prepaid credits ran out, after 20 follows): every account stops with the
/// app-wide stop `credits_depleted`, nothing fails and no attempt is spent on a 402;
/// `followq status` says why and what to do. One request probes every
/// `billing.probe_interval`; once the credits are topped up, the probe goes through, the stop
/// ends and every job finishes, each after one attempt.
///
/// Guards: the `CreditsDepleted` arm of `worker::decision::decide` (with the 402 classified
/// as a permanent refusal, as it was, 20 jobs failed), and the probe (`settle_probe` in
/// `worker::turn`; without it the stop never ends and the jobs stay queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_that_run_out_fail_nothing_and_a_probe_resumes_after_a_top_up() {
    let _scenario = shared().await;
    let mut harness = Harness::new(SimConfig {
        credits: Some(20),
        ..sim_config(50, Duration::from_secs(60))
    })
    .await;
    harness.settings.billing.probe_interval = Duration::from_millis(700);
    for account in ["4100", "4101"] {
        harness.account(account).await;
        harness.enqueue(account, 6000, 20).await;
    }
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the app stopped for its credits",
            "SELECT count(*) = 1 FROM followq.app_pause WHERE reason = 'credits_depleted'",
        )
        .await;
    tokio::time::sleep(QUIET).await;

    let totals = harness.stats().await.totals;
    assert_eq!(totals.credits_spent, 20, "{totals:?}");
    assert!(totals.payment_required >= 1, "{totals:?}");
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT state, count(*), coalesce(sum(attempts), 0)::bigint FROM followq.follow_jobs
         GROUP BY state ORDER BY state",
    )
    .fetch_all(&harness.db.pool)
    .await
    .expect("jobs by state");
    assert_eq!(
        counts,
        vec![
            ("queued".to_owned(), 20, 0),
            ("succeeded".to_owned(), 20, 20)
        ],
        "nothing failed, no attempt spent on a 402"
    );
    let text = harness.db.followq(&["status"], "", &[]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("App-wide stop: credits_depleted")
            && stdout.contains("top up the app's credits"),
        "{stdout}"
    );
    // Probes were sent meanwhile (each answered 402), one at a time.
    let probes = totals.payment_required;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = harness.stats().await.totals.payment_required;
    assert!(
        later > probes && later <= probes + 3,
        "probes every 700 ms: {probes} then {later}"
    );

    harness.sim.top_up(100);
    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT state, count(*), coalesce(sum(attempts), 0)::bigint FROM followq.follow_jobs
         GROUP BY state ORDER BY state",
    )
    .fetch_all(&harness.db.pool)
    .await
    .expect("jobs by state");
    assert_eq!(counts, vec![("succeeded".to_owned(), 40, 40)]);
    assert!(harness.app_pause().await.is_none(), "the stop ended");
}

/// `billing.daily_budget` across three daemons: with a budget of 20 requests' worth (0.30 at
/// 0.015), exactly 20 requests reach X, then none, whatever the three do at once; the app-wide
/// stop `budget_reached` says why, the jobs stay queued, and daemons started with a raised
/// budget (40's worth) end the stop and send exactly 20 more.
///
/// Guard: the budget's place taken per request (`BudgetGate::take` in the scheduler's
/// `take_ready`): without it, every job is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_budget_holds_across_three_daemons_and_a_raised_one_resumes() {
    let _serial = crate::support::serial().await;
    let mut harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.settings.billing.price_per_request = "0.015".parse().expect("a price");
    harness.settings.billing.daily_budget = Some("0.30".parse().expect("a budget"));
    for account in 4200..4206 {
        harness.account(&account.to_string()).await;
        harness.enqueue(&account.to_string(), 7000, 10).await;
    }
    let daemons = [
        harness.start().await,
        harness.start().await,
        harness.start().await,
    ];
    harness
        .wait_until(
            LIMIT,
            "the budget reached",
            "SELECT count(*) = 1 FROM followq.app_pause WHERE reason = 'budget_reached'",
        )
        .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(harness.stats().await.totals.all_users.requests, 20);
    let text = harness.db.followq(&["status"], "", &[]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("App-wide stop: budget_reached"), "{stdout}");
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE state = 'queued'")
            .await,
        40,
        "the jobs stay queued"
    );
    for daemon in daemons {
        daemon
            .stop()
            .await
            .expect("the daemon stops within its grace");
    }

    harness.settings.billing.daily_budget = Some("0.60".parse().expect("a budget"));
    let raised = [harness.start().await, harness.start().await];
    harness
        .sim_wait(LIMIT, "40 requests in all", |s| {
            s.totals.all_users.requests >= 40
        })
        .await;
    tokio::time::sleep(QUIET).await;
    for daemon in raised {
        daemon
            .stop()
            .await
            .expect("the daemon stops within its grace");
    }
    assert_eq!(harness.stats().await.totals.all_users.requests, 40);
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded'")
            .await,
        40
    );
}
