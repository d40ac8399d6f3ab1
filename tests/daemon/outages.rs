//! The daemon and its database apart: a daemon that cannot confirm its liveness session
//! (fenced), a database cut off while answers are in the air, and a restart that ends every
//! session at once. What X did must be what the ledger says, and no account may change hands
//! while its daemon lives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use followq::sim::{FaultConfig, LoggedRequest};
use sqlx::Connection;

use crate::common::tcp_proxy::{CuttableProxy, socket_addr_of};
use crate::support::{Harness, assert_within_quota, serial, sim_config, start_with};

/// How long a scenario watches for something that must not happen: several heartbeats (1 s)
/// and poll intervals (200 ms) of the test daemon.
const QUIET: Duration = Duration::from_millis(2500);

/// Guards: the fencing of `Scheduler::heartbeat` (`give_back_while_fenced`) and of the leaser
/// (`leaser::fenced`). The test fences the daemon: it ends its liveness session and holds its
/// registry row locked, so the session cannot be opened again. Fenced for longer than a
/// heartbeat, the daemon gives its account back (without `give_back_while_fenced`, the row
/// keeps naming it), and a new account's job is not leased while it is fenced (without the
/// leaser's check it is). Once the lock goes, the daemon goes on and finishes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_daemon_gives_its_accounts_back_and_takes_none() {
    let _serial = serial().await;
    // Two requests per window of 30 s: the account stays leased, waiting for its window.
    let harness = Harness::new(sim_config(2, Duration::from_secs(30))).await;
    harness.account("3400").await;
    harness.account("3401").await;
    harness.enqueue("3400", 9_000, 4).await;
    let daemon = harness.start().await;
    harness
        .sim_wait(Duration::from_secs(10), "the window spent", |s| {
            s.user("3400").requests == 2
        })
        .await;
    assert!(
        harness.account_row("3400").await.leased_by.is_some(),
        "the account waits for its window, leased"
    );

    let mut holder = harness.db.connection().await;
    let mut held = holder.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM followq.daemons FOR UPDATE")
        .execute(&mut *held)
        .await
        .expect("lock the registry row");
    let ended: bool = sqlx::query_scalar(
        "SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'followq liveness'",
    )
    .fetch_one(&harness.db.pool)
    .await
    .expect("end the liveness session");
    assert!(ended, "the daemon's liveness session was found");

    harness
        .wait_until(
            Duration::from_secs(10),
            "the account given back",
            "SELECT leased_by IS NULL FROM followq.accounts WHERE user_id = '3400'",
        )
        .await;
    harness.enqueue("3401", 9_100, 1).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        harness.account_row("3401").await.leased_by,
        None,
        "a fenced daemon leased an account"
    );
    assert_eq!(harness.user("3401").await.requests, 0);

    held.rollback().await.expect("release the registry row");
    harness
        .wait_finished(
            Duration::from_secs(15),
            "the new account's job, once the session is back",
            "SELECT count(*) = 1 FROM followq.follow_jobs
             WHERE source_user_id = '3401' AND state = 'succeeded'",
        )
        .await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    assert_within_quota(&harness.stats().await, 2);
}

/// Guards: the completer keeps an answer it could not write and tries it again until the
/// database is back (`worker::completer`), and the account waits in `Recording` meanwhile.
/// Postgres is cut off (a proxy in front of it drops every connection) for 4 s while 40
/// requests with answers of 1.5 s are in the air. Afterwards every follow was sent exactly
/// once, every job succeeded with its one ledger row holding X's answer, no account had two
/// requests in flight, and no account sent while its last answer waited to be written. When
/// the completer gave answers up after three tries (as it did), the jobs were sent again once
/// their `answer_by` passed: 40 follows twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_arrive_while_the_database_is_away_are_kept_and_nothing_is_sent_twice() {
    let _serial = serial().await;
    let mut config = sim_config(50, Duration::from_secs(60));
    config.faults = FaultConfig {
        delay: 1.0,
        delay_duration: Duration::from_millis(1500),
        ..FaultConfig::default()
    };
    let harness = Harness::new(config).await;
    let accounts: Vec<String> = (0..20).map(|i| (3500 + i).to_string()).collect();
    for account in &accounts {
        harness.account(account).await;
        harness.enqueue(account, 50_000, 2).await;
    }
    let proxy = CuttableProxy::start(socket_addr_of(&harness.db.url).await);
    let mut settings = harness.settings.clone();
    settings.database.url = proxy.url_through(&harness.db.url).into();
    let daemon = start_with(&settings).await;

    harness
        .sim_wait(
            Duration::from_secs(15),
            "a request of every account in the air",
            |s| s.totals.all_users.requests >= 20,
        )
        .await;
    let cut_at = Instant::now();
    proxy.cut().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restored_at = Instant::now();
    proxy.restore();
    let answered_while_cut = harness
        .sim
        .request_log()
        .iter()
        .filter(|r| r.answered_at > cut_at && r.answered_at < restored_at)
        .count();
    assert!(
        answered_while_cut >= 10,
        "only {answered_while_cut} answers came while the database was away"
    );

    harness.wait_all_finished(Duration::from_secs(60)).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let pairs = harness.sim.requests_by_pair();
    assert_eq!(pairs.len(), 40, "{pairs:?}");
    let twice: Vec<_> = pairs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "follows sent more than once: {twice:?}");
    let stats = harness.stats().await;
    for (user, figures) in &stats.users {
        assert_eq!(figures.max_in_flight, 1, "user {user}: {figures:?}");
    }
    let recorded: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT j.state, count(t.id), count(t.id) FILTER (WHERE t.http_status = 200)
         FROM followq.follow_jobs AS j
         LEFT JOIN followq.attempts AS t ON t.job_id = j.id AND t.account_user_id = j.source_user_id
         GROUP BY j.id, j.source_user_id, j.state ORDER BY j.id",
    )
    .fetch_all(&harness.db.pool)
    .await
    .expect("jobs and their ledger rows");
    assert_eq!(recorded.len(), 40);
    for row in &recorded {
        assert_eq!(row, &("succeeded".to_owned(), 1, 1), "{recorded:?}");
    }

    // No account sent while its last answer waited to be written (from its arrival during
    // the cut until the database was back).
    let mut by_user: BTreeMap<String, Vec<LoggedRequest>> = BTreeMap::new();
    for request in harness.sim.request_log() {
        by_user
            .entry(request.user_id.clone())
            .or_default()
            .push(request);
    }
    for (user, mut requests) in by_user {
        requests.sort_by_key(|r| r.received_at);
        for pair in requests.windows(2) {
            let waited = pair[0].answered_at > cut_at && pair[0].answered_at < restored_at;
            assert!(
                !waited || pair[1].received_at >= restored_at,
                "user {user} sent while its answer waited to be written"
            );
        }
    }
}

/// Guards: `worker::liveness` judges peers only once its own session has been up a few
/// intervals (`REAP_AFTER_OWN_SESSION`). A Postgres restart, or a cut between every daemon and
/// Postgres, ends every liveness session at once; the first daemon back must not take the
/// accounts of a peer that is alive and opening its session again. Two daemons behind one
/// proxy share ten accounts; the proxy is cut for 0.3 s, then for 2 s (8 liveness
/// intervals): no account changes hands, both daemons stay registered, and the rate limits
/// hold. Without the wait, the first daemon back reaps the other and takes its accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_takes_no_account_from_a_daemon_that_is_alive() {
    let _serial = serial().await;
    let quota = 2;
    let harness = Harness::new(sim_config(quota, Duration::from_secs(3))).await;
    let accounts: Vec<String> = (0..10).map(|i| (3600 + i).to_string()).collect();
    for account in &accounts {
        harness.account(account).await;
        harness.enqueue(account, 60_000, 8).await;
    }
    let proxy = CuttableProxy::start(socket_addr_of(&harness.db.url).await);
    let mut settings = harness.settings.clone();
    settings.database.url = proxy.url_through(&harness.db.url).into();
    // Heartbeats and leases long enough that neither the fenced give-back (after a heartbeat)
    // nor a lease running out can move an account during these cuts.
    settings.worker.heartbeat_interval = Duration::from_secs(5);
    settings.worker.account_lease = Duration::from_secs(15);
    let first = start_with(&settings).await;
    let second = start_with(&settings).await;
    harness
        .wait_until(
            Duration::from_secs(20),
            "the accounts shared by both daemons",
            "SELECT count(DISTINCT leased_by) = 2 AND count(leased_by) = 10
             FROM followq.accounts",
        )
        .await;
    let holders = || async {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT user_id, leased_by FROM followq.accounts ORDER BY user_id",
        )
        .fetch_all(&harness.db.pool)
        .await
        .expect("holders")
    };
    let before = holders().await;
    for cut in [Duration::from_millis(300), Duration::from_secs(2)] {
        proxy.cut().await;
        tokio::time::sleep(cut).await;
        proxy.restore();
        // Time for both to open their sessions again, and for a reap to happen if it would.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            holders().await,
            before,
            "an account changed hands after a cut of {cut:?}"
        );
        assert_eq!(
            harness
                .count("SELECT count(*) FROM followq.daemons WHERE session_pid IS NOT NULL")
                .await,
            2,
            "both daemons registered again after a cut of {cut:?}"
        );
    }
    harness.wait_all_finished(Duration::from_secs(60)).await;
    first
        .stop()
        .await
        .expect("the daemon stops within its grace");
    second
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let stats = harness.stats().await;
    assert_within_quota(&stats, u64::from(quota));
    for (user, figures) in &stats.users {
        assert_eq!(figures.max_in_flight, 1, "user {user}: {figures:?}");
    }
}
