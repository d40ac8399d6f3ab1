//! The daemon and its database apart: a daemon that cannot confirm its liveness session
//! (fenced), a database cut off while answers are in the air, and a restart that ends every
//! session at once. What X did must be what the ledger says, and no account may change hands
//! while its daemon lives.

use std::time::Duration;

use sqlx::Connection;

use crate::support::{Harness, assert_within_quota, serial, sim_config};

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
    daemon.stop().await;
    assert_within_quota(&harness.stats().await, 2);
}
