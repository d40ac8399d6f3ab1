//! The real `followq run` binary under what only processes show: a daemon frozen with SIGSTOP
//! between claim and send, replicas killed with kill -9 under load, SIGTERM, and a second
//! signal.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::child;
use crate::support::{Harness, assert_within_quota, serial, sim_config};

/// Guard: the send deadline checked right before the request goes out (`worker/turn.rs`). Daemon A claims a job, then stalls reading the account's credentials
/// (the test holds a lock on the credentials table) and is frozen with SIGSTOP past its lease.
/// Daemon B takes the account over, claims the job again once A's request can no longer
/// arrive, and fills the window. A resumes: without the guard it sends the stale claim into
/// B's full window (a 429, and the job sent a second time); with it A records `not_sent` and
/// sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_frozen_between_claim_and_send_never_sends_the_stale_claim() {
    let _serial = serial().await;
    let window = Duration::from_secs(6);
    let mut harness = Harness::new(sim_config(3, window)).await;
    harness.settings.x_api.request_timeout = Duration::from_secs(1);
    harness.settings.worker.account_lease = Duration::from_secs(3);
    harness.account("2000").await;
    harness.enqueue("2000", 10_000, 9).await;

    // Every read of the credentials waits until this transaction ends.
    let mut blocker = PgConnection::connect(&harness.db.url)
        .await
        .expect("blocker connection");
    sqlx::query("BEGIN")
        .execute(&mut blocker)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE followq.account_credentials IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .expect("lock");

    let frozen = child::Daemon::start(&harness, "frozen");
    harness
        .wait_until(
            Duration::from_secs(10),
            "the frozen daemon's claim",
            "SELECT count(*) = 1 FROM followq.attempts WHERE outcome IS NULL",
        )
        .await;
    harness
        .wait_until(
            Duration::from_secs(5),
            "its credentials read waiting on the lock",
            "SELECT count(*) > 0 FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%account_credentials%'",
        )
        .await;
    frozen.signal("STOP");
    sqlx::query("COMMIT")
        .execute(&mut blocker)
        .await
        .expect("commit");

    // The lease runs out (the frozen daemon cannot renew it); B takes over, counts A's
    // unanswered request until its answer deadline, and spends the window.
    let successor = harness.start().await;
    // A success is recorded with its job, which finishes: a NOTIFY wakes the check.
    harness
        .wait_finished(
            Duration::from_secs(15),
            "the successor's first window spent",
            "SELECT count(*) >= 3 FROM followq.attempts WHERE outcome = 'succeeded'",
        )
        .await;
    frozen.signal("CONT");
    harness
        .wait_until(
            Duration::from_secs(10),
            "the frozen daemon's claim settled",
            "SELECT coalesce(outcome NOT IN ('abandoned'), false) FROM followq.attempts \
             ORDER BY sent_at LIMIT 1",
        )
        .await;
    harness.wait_all_finished(Duration::from_secs(30)).await;
    successor
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let mut frozen = frozen;
    frozen.signal("TERM");
    frozen.exit_within(Duration::from_secs(10)).await;

    let stats = harness.stats().await;
    let user = stats.user("2000");
    assert_eq!(user.rate_limited, 0, "a 429: {user:?}\n{}", frozen.log());
    assert_eq!(user.max_in_flight, 1, "two in flight: {user:?}");
    assert_eq!(user.same_target_overlaps, 0);
    assert_eq!(user.requests, 9, "one request per job: {user:?}");
    assert_within_quota(&stats, 3);
    let stale: String =
        sqlx::query_scalar("SELECT outcome FROM followq.attempts ORDER BY sent_at LIMIT 1")
            .fetch_one(&harness.db.pool)
            .await
            .expect("the frozen daemon's claim");
    assert_eq!(stale, "not_sent");
}

/// Guards: liveness sessions (a dead replica's accounts and jobs are freed within a liveness
/// interval, `store::daemons::reap`), and every handover rule above. Two replicas, one of them
/// killed with kill -9 every 2.5 s and started again, under load: no job lost, no 429, no
/// window over the quota, never two requests of one account in flight, and the work done
/// within 1.3 times the ideal time plus 5 s. Without the liveness sessions each death parks
/// its accounts for a whole account lease and the run misses the time bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_every_few_seconds_lose_nothing_and_keep_the_pace() {
    let _serial = serial().await;
    let quota: u32 = 5;
    let window = Duration::from_secs(3);
    let jobs: u64 = 30;
    let mut harness = Harness::new(sim_config(quota, window)).await;
    harness.settings.x_api.request_timeout = Duration::from_secs(1);
    harness.settings.worker.account_lease = Duration::from_secs(10);
    let accounts: Vec<String> = (0..8).map(|i| (2100 + i).to_string()).collect();
    for account in &accounts {
        harness.account(account).await;
        harness.enqueue(account, 10_000, jobs).await;
    }
    let mut replicas = [
        child::Daemon::start(&harness, "a0"),
        child::Daemon::start(&harness, "b0"),
    ];
    let started = Instant::now();
    let mut kills = 0;
    let limit = Duration::from_secs(60);
    loop {
        // The next kill is 2.5 s away, unless the last job finishes first.
        let done = harness
            .finished_within(
                Duration::from_millis(2500),
                "SELECT count(*) = 0 FROM followq.follow_jobs WHERE state IN ('queued', 'running')",
            )
            .await;
        if done.is_some() {
            break;
        }
        assert!(started.elapsed() < limit, "not done after {limit:?}");
        let victim = kills % 2;
        let fresh = child::Daemon::start(&harness, &format!("r{kills}"));
        let dead = std::mem::replace(&mut replicas[victim], fresh);
        dead.kill().await;
        kills += 1;
    }
    for mut replica in replicas {
        replica.signal("TERM");
        replica.exit_within(Duration::from_secs(10)).await;
    }

    let stats = harness.stats().await;
    assert_within_quota(&stats, u64::from(quota));
    for account in &accounts {
        let user = stats.user(account);
        assert_eq!(user.max_in_flight, 1, "account {account}: {user:?}");
        assert_eq!(user.same_target_overlaps, 0, "account {account}");
    }
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded'")
            .await,
        8 * i64::try_from(jobs).expect("jobs"),
        "every job done"
    );
    // From the first request to the last answer, on the database's clock.
    let took: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(completed_at) - min(sent_at))::float8 FROM followq.attempts",
    )
    .fetch_one(&harness.db.pool)
    .await
    .expect("duration");
    let windows_after_the_first = jobs / u64::from(quota) - 1;
    let ideal = window.as_secs_f64() * windows_after_the_first as f64;
    eprintln!("{kills} kills; the work took {took:.1} s (ideal {ideal:.1} s)");
    assert!(kills >= 4, "only {kills} kills");
    assert!(
        took <= ideal * 1.3 + 5.0,
        "the work took {took:.1} s with {kills} kills; ideal {ideal:.1} s, bound {:.1} s",
        ideal * 1.3 + 5.0
    );
}

/// Guard: `followq run`'s signal handling. SIGTERM lets the request in flight finish and be
/// recorded, releases every lease, leaves `followq.daemons`, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_and_exits_cleanly() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.account("2200").await;
    harness.enqueue("2200", 10_000, 1).await;
    harness
        .sim
        .set_answer_delay("2200", Some(Duration::from_millis(1000)));
    let mut daemon = child::Daemon::start(&harness, "term");
    harness
        .sim_wait(Duration::from_secs(10), "a request in flight", |s| {
            s.user("2200").requests >= 1
        })
        .await;
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.attempts WHERE outcome IS NULL")
            .await,
        1,
        "the request in flight has its ledger row, unanswered"
    );
    daemon.signal("TERM");
    let status = daemon.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded'")
            .await,
        1,
        "the request in flight was answered and recorded: {}",
        daemon.log()
    );
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.accounts WHERE leased_by IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        harness.count("SELECT count(*) FROM followq.daemons").await,
        0
    );
}

/// Guard: the second-signal branch of `followq run`. A second SIGTERM during the drain exits
/// at once (status 130) instead of waiting out the grace period; the request it cut off keeps
/// its ledger row unanswered, so a successor counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let _serial = serial().await;
    let mut harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.settings.x_api.request_timeout = Duration::from_secs(10);
    harness.settings.worker.account_lease = Duration::from_secs(20);
    harness.settings.worker.shutdown_grace = Duration::from_secs(30);
    harness.account("2300").await;
    harness.enqueue("2300", 10_000, 1).await;
    harness
        .sim
        .set_answer_delay("2300", Some(Duration::from_secs(8)));
    let mut daemon = child::Daemon::start(&harness, "twice");
    harness
        .sim_wait(Duration::from_secs(10), "a request in flight", |s| {
            s.user("2300").requests >= 1
        })
        .await;
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.attempts WHERE outcome IS NULL")
            .await,
        1,
        "the request in flight has its ledger row, unanswered"
    );
    daemon.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(daemon.is_running(), "still draining after the first signal");
    let second = Instant::now();
    daemon.signal("TERM");
    let status = daemon.exit_within(Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(130), "{}", daemon.log());
    assert!(second.elapsed() < Duration::from_secs(2));
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.attempts WHERE outcome IS NULL")
            .await,
        1,
        "the cut-off request still counts"
    );
}
