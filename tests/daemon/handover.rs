//! Handovers between daemons in one process: a successor that inherits a window from a ledger
//! without rate-limit headers, an operator's pause and resume while a slow request is in
//! flight, a replica that joins mid-run, the leaser stopping at the first signal, requests cut
//! off at the end of the grace period, a panicking turn, and a successor that inherits a
//! spent daily cap.
//!
//! What each guards is said in its doc comment; each was checked to fail without it.

use std::time::{Duration, Instant};

use followq::ids::UserId;
use followq::sim::SimConfig;

use crate::support::{Harness, assert_within_quota, serial, sim_config};

fn without_headers(quota: u32, window: Duration) -> SimConfig {
    SimConfig {
        rate_limit_headers: false,
        ..sim_config(quota, window)
    }
}

/// Guard: the successor's limiter seeded with the latest arrivals of the predecessor's
/// requests (`LedgerSeed::arrivals`, the ledger rule in `ratelimit.rs`). Without it the
/// successor only has its token bucket and sends the 6th request inside the window that the
/// predecessor filled: one 429 per account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_without_any_headers_never_overruns_the_window() {
    let _serial = serial().await;
    let window = Duration::from_secs(6);
    let harness = Harness::new(without_headers(5, window)).await;
    let accounts = ["1100", "1101", "1102"];
    for account in accounts {
        harness.account(account).await;
        harness.enqueue(account, 10_000, 12).await;
    }
    let first = harness.start().await;
    // A success is recorded with its job, which finishes: a NOTIFY wakes the check.
    harness
        .wait_finished(
            Duration::from_secs(10),
            "each account's first window spent",
            "SELECT count(*) = 15 FROM followq.attempts WHERE outcome = 'succeeded'",
        )
        .await;
    // One SIGTERM: a graceful stop that releases every lease at once.
    first
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let second = harness.start().await;
    harness.wait_all_finished(Duration::from_secs(40)).await;
    second
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let stats = harness.stats().await;
    assert_within_quota(&stats, 5);
    for account in accounts {
        let user = stats.user(account);
        assert_eq!(user.requests, 12, "account {account}: {user:?}");
        // The successor's first request came at least one window after the predecessor's
        // first answer (both on the database's clock).
        let (first_answer, successor_first_send): (f64, f64) = sqlx::query_as(
            r#"
            SELECT extract(epoch FROM min(completed_at) FILTER (WHERE worker_id = w.first))::float8,
                   extract(epoch FROM min(sent_at) FILTER (WHERE worker_id <> w.first))::float8
            FROM followq.attempts,
                 (SELECT worker_id AS first FROM followq.attempts ORDER BY sent_at LIMIT 1) AS w
            WHERE account_user_id = $1
            "#,
        )
        .bind(account)
        .fetch_one(&harness.db.pool)
        .await
        .expect("send times");
        let gap = successor_first_send - first_answer;
        assert!(
            gap >= window.as_secs_f64() - 0.05,
            "account {account}: the successor sent {gap:.3} s after the predecessor's first answer, inside its {window:?} window"
        );
    }
}

/// Guard: a successor waits for the unanswered requests the ledger shows
/// (`LedgerSeed::outstanding_until`, seeded from `answer_by`). Without it the second daemon
/// sends for the account while the first one's slow request is still in flight (two in
/// flight at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_and_resume_during_a_slow_request_never_puts_two_in_flight() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.account("1200").await;
    harness
        .sim
        .set_answer_delay("1200", Some(Duration::from_millis(1500)));
    // The first daemon leases only on the notification of a new job: after the resume the
    // account can only go to the second (this is the handover under test; the first taking
    // it back is covered by `an_account_leased_again_counts_what_another_daemon_sent_meanwhile`).
    let mut settings = harness.settings.clone();
    settings.worker.poll_interval = Duration::from_secs(3600);
    let first = crate::support::start_with(&settings).await;
    harness
        .wait_until(
            Duration::from_secs(10),
            "the first daemon's liveness session open",
            "SELECT EXISTS (SELECT 1 FROM followq.daemons WHERE session_pid IS NOT NULL)",
        )
        .await;
    harness.enqueue("1200", 10_000, 4).await;
    harness
        .sim_wait(Duration::from_secs(5), "the first request in flight", |s| {
            s.user("1200").requests >= 1
        })
        .await;
    let second = harness.start().await;
    // Both registered, so the first daemon (still holding its busy slot) is at its fair share
    // and the second one takes the account after the resume.
    harness
        .wait_until(
            Duration::from_secs(5),
            "both daemons registered",
            "SELECT count(*) = 2 FROM followq.daemons",
        )
        .await;
    let user = UserId::parse("1200").expect("id");
    followq::admin::accounts::pause(&harness.db.pool, &user, None)
        .await
        .expect("pause");
    followq::admin::accounts::resume(&harness.db.pool, &user)
        .await
        .expect("resume");
    harness.wait_all_finished(Duration::from_secs(30)).await;
    first
        .stop()
        .await
        .expect("the daemon stops within its grace");
    second
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let stats = harness.stats().await.user("1200");
    assert_eq!(stats.requests, 4, "{stats:?}");
    assert_eq!(
        stats.max_in_flight, 1,
        "two requests of one account were in flight at once: {stats:?}"
    );
    assert_eq!(stats.same_target_overlaps, 0);
    assert_eq!(
        harness
            .count("SELECT count(DISTINCT worker_id) FROM followq.attempts")
            .await,
        2,
        "the second daemon took the account over after the resume"
    );
}

/// Guard: `AccountLimiter::absorb` when an account is leased again while the daemon still has
/// a slot for it (`Event::Leased` in the scheduler). Daemon A's outcome for the account is held
/// up (the test locks its ledger row), an operator's pause and resume take the lease away, and
/// daemon B takes the account and spends its window; B dies and A leases the account again
/// while its old slot (which knows one request) still waits for the write. Keeping that stale
/// limiter, A sends two more requests into the window B filled: 5 in a window of 3, and 429s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_leased_again_counts_what_another_daemon_sent_meanwhile() {
    let _serial = serial().await;
    let quota = 3;
    let harness = Harness::new(without_headers(quota, Duration::from_secs(10))).await;
    harness.account("1250").await;
    // A leases only on the notification of a new job (and when a peer is found gone): after
    // the resume, the account goes to B.
    let mut settings_a = harness.settings.clone();
    settings_a.worker.poll_interval = Duration::from_secs(3600);
    let a = crate::support::start_with(&settings_a).await;
    harness
        .wait_until(
            Duration::from_secs(10),
            "A's liveness session open",
            "SELECT EXISTS (SELECT 1 FROM followq.daemons WHERE session_pid IS NOT NULL)",
        )
        .await;
    harness
        .sim
        .set_answer_delay("1250", Some(Duration::from_millis(1000)));
    harness.enqueue("1250", 10_000, 4).await;
    harness
        .wait_until(
            Duration::from_secs(10),
            "A's first request in the air",
            "SELECT EXISTS (SELECT 1 FROM followq.attempts)",
        )
        .await;
    let mut holder = harness.db.connection().await;
    let mut held = sqlx::Connection::begin(&mut holder).await.expect("begin");
    sqlx::query("SELECT 1 FROM followq.attempts WHERE account_user_id = '1250' FOR UPDATE")
        .execute(&mut *held)
        .await
        .expect("lock the ledger row");
    // Its answer arrives and the statement recording it waits for the lock: the account is
    // in A's `Recording` phase.
    harness
        .wait_until(
            Duration::from_secs(10),
            "the record of A's answer waiting for the lock",
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE datname = current_database() AND wait_event_type = 'Lock'
                              AND query LIKE '%input AS MATERIALIZED%')",
        )
        .await;
    harness.sim.set_answer_delay("1250", None);

    let user = UserId::parse("1250").expect("id");
    followq::admin::accounts::pause(&harness.db.pool, &user, None)
        .await
        .expect("pause");
    followq::admin::accounts::resume(&harness.db.pool, &user)
        .await
        .expect("resume");
    let b = harness.start().await;
    // B waits for A's unanswered request (its answer_by), then fills the window.
    harness
        .sim_wait(Duration::from_secs(15), "B's requests", |s| {
            s.user("1250").requests == u64::from(quota)
        })
        .await;
    b.kill().await;
    // A finds B gone and leases the account again; then its outcome is written.
    harness
        .wait_until(
            Duration::from_secs(10),
            "A holding the account again",
            // Free for a moment between B's reaping and A's lease: NULL, not yet.
            "SELECT (SELECT count(*) FROM followq.daemons) = 1
                    AND COALESCE(leased_by IN (SELECT worker_id FROM followq.daemons), false)
             FROM followq.accounts WHERE user_id = '1250'",
        )
        .await;
    held.rollback().await.expect("release the lock");
    harness.wait_all_finished(Duration::from_secs(40)).await;
    a.stop().await.expect("the daemon stops within its grace");

    let stats = harness.stats().await;
    assert_within_quota(&stats, u64::from(quota));
}

/// Guard: `give_back_surplus` at the heartbeat. Without it the two daemons already running
/// keep every account and the third holds nothing until some account runs dry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_mid_run_holds_its_share_within_a_heartbeat() {
    let _serial = serial().await;
    // Slow answers, so each account has work for longer than the test and is never paused.
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    let accounts: Vec<String> = (0..12).map(|i| (1300 + i).to_string()).collect();
    for account in &accounts {
        harness.account(account).await;
        harness.enqueue(account, 10_000, 40).await;
        harness
            .sim
            .set_answer_delay(account, Some(Duration::from_millis(250)));
    }
    let daemons = [harness.start().await, harness.start().await];
    harness
        .wait_until(
            Duration::from_secs(10),
            "every account leased",
            "SELECT count(*) = 12 FROM followq.accounts WHERE leased_by IS NOT NULL",
        )
        .await;
    let joined = Instant::now();
    let third = harness.start().await;
    let heartbeat = harness.settings.worker.heartbeat_interval;
    let took = harness
        .wait_until(
            heartbeat * 3,
            "the third replica holding a third of the accounts",
            "SELECT count(DISTINCT leased_by) = 3 AND min(n) >= 4 FROM \
             (SELECT leased_by, count(*) AS n FROM followq.accounts \
              WHERE leased_by IS NOT NULL GROUP BY 1) AS shares",
        )
        .await;
    let took = took.max(joined.elapsed());
    third
        .stop()
        .await
        .expect("the daemon stops within its grace");
    for daemon in daemons {
        daemon
            .stop()
            .await
            .expect("the daemon stops within its grace");
    }
    assert!(
        took <= heartbeat + harness.settings.worker.poll_interval + Duration::from_millis(800),
        "the new replica held its share after {took:?} (heartbeat {heartbeat:?})"
    );
    let stats = harness.stats().await;
    for account in &accounts {
        assert_eq!(stats.user(account).max_in_flight, 1, "account {account}");
    }
}

/// Guard: the leaser asks the scheduler how many accounts it holds (`Event::Holding`), on the
/// poll and on a notification alike. Answering 0 there, the daemon leases every account with
/// a ready job at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_holds_at_most_max_accounts() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    let mut settings = harness.settings.clone();
    settings.worker.max_accounts = 3;
    let accounts: Vec<String> = (0..6).map(|i| (1350 + i).to_string()).collect();
    for account in &accounts {
        harness.account(account).await;
        harness
            .sim
            .set_answer_delay(account, Some(Duration::from_millis(200)));
    }
    // Half before the start (leased by the poll), half after (each a notification).
    for account in &accounts[..3] {
        harness.enqueue(account, 10_000, 3).await;
    }
    let daemon = crate::support::start_with(&settings).await;
    let pool = harness.db.pool.clone();
    let most = tokio::spawn(async move {
        let mut most = 0i64;
        loop {
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM followq.accounts WHERE leased_by IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .expect("count the leases");
            most = most.max(held);
            if sqlx::query_scalar::<_, bool>(
                "SELECT NOT EXISTS (SELECT 1 FROM followq.follow_jobs WHERE state = 'queued')
                    AND EXISTS (SELECT 1 FROM followq.follow_jobs)",
            )
            .fetch_one(&pool)
            .await
            .expect("read the queue")
                && most > 0
            {
                return most;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    harness
        .sim_wait(Duration::from_secs(10), "the first accounts sending", |s| {
            s.totals.all_users.requests >= 1
        })
        .await;
    for account in &accounts[3..] {
        harness.enqueue(account, 10_000, 3).await;
    }
    harness.wait_all_finished(Duration::from_secs(40)).await;
    let most = tokio::time::timeout(Duration::from_secs(10), most)
        .await
        .expect("the sampler ends once the queue is empty")
        .expect("the sampler");
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    assert_eq!(
        most, 3,
        "at most worker.max_accounts = 3 held at once, and that many used"
    );
    let stats = harness.stats().await;
    for account in &accounts {
        assert_eq!(stats.user(account).requests, 3, "account {account}");
    }
}

/// Guard: the leaser runs under the first-signal token (`Daemon::run`). Without it the
/// stopping daemon leases an account that was enqueued during its drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_daemon_leases_nothing_while_it_drains() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.account("1400").await;
    harness.account("1401").await;
    harness.enqueue("1400", 10_000, 1).await;
    harness
        .sim
        .set_answer_delay("1400", Some(Duration::from_millis(1500)));
    let daemon = harness.start().await;
    harness
        .sim_wait(Duration::from_secs(5), "a request in flight", |s| {
            s.user("1400").requests >= 1
        })
        .await;
    daemon.begin_stop();
    harness.enqueue("1401", 10_000, 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leased: i64 = harness
        .count("SELECT count(*) FROM followq.accounts WHERE user_id = '1401' AND leased_by IS NOT NULL")
        .await;
    assert!(!daemon.is_finished(), "still draining the slow request");
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    assert_eq!(leased, 0, "an account was leased after the first signal");
    assert_eq!(harness.user("1401").await.requests, 0);
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE source_user_id = '1400' AND state = 'succeeded'")
            .await,
        1,
        "the request in flight was answered and recorded during the drain"
    );
}

/// Guards: `return_jobs` leaves the ledger row of a request cut off at the end of the grace
/// period unanswered, and the successor waits for it until its `answer_by`. Without either,
/// the successor sends while the cut-off request is still being handled (two in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_off_at_the_grace_end_still_count_for_the_successor() {
    let _serial = serial().await;
    let mut harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.settings.worker.shutdown_grace = Duration::from_millis(200);
    harness.account("1500").await;
    harness.enqueue("1500", 10_000, 3).await;
    // Slower than the grace, within the request timeout (2 s).
    harness
        .sim
        .set_answer_delay("1500", Some(Duration::from_millis(1500)));
    let first = harness.start().await;
    harness
        .sim_wait(Duration::from_secs(5), "a request in flight", |s| {
            s.user("1500").requests >= 1
        })
        .await;
    first
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let (outcome, job_state): (Option<String>, String) = sqlx::query_as(
        "SELECT t.outcome, j.state FROM followq.attempts t JOIN followq.follow_jobs j \
         ON j.id = t.job_id AND j.source_user_id = t.account_user_id",
    )
    .fetch_one(&harness.db.pool)
    .await
    .expect("the cut-off request's rows");
    assert_eq!(
        outcome, None,
        "the cut-off request's ledger row stays unanswered"
    );
    assert_eq!(job_state, "queued", "its job went back to the queue");

    harness.sim.set_answer_delay("1500", None);
    let second = harness.start().await;
    harness.wait_all_finished(Duration::from_secs(20)).await;
    second
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let stats = harness.stats().await.user("1500");
    assert_eq!(stats.max_in_flight, 1, "{stats:?}");
    // Read apart and compared here: Citus runs no subquery correlated with a LIMITed one.
    let sends: Vec<(
        i64,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    )> = sqlx::query_as("SELECT id, sent_at, answer_by FROM followq.attempts ORDER BY sent_at, id")
        .fetch_all(&harness.db.pool)
        .await
        .expect("send times");
    let (_, _, cut_answer_by) = sends.first().expect("the cut-off request's row");
    let cut_answer_by = cut_answer_by.expect("the cut-off request's answer_by");
    let next_sent = sends.get(1).map(|(_, sent_at, _)| *sent_at);
    assert!(
        next_sent.is_some_and(|sent_at| sent_at >= cut_answer_by),
        "the successor sent at {next_sent:?}, before the cut-off request's answer_by {cut_answer_by}"
    );
}

/// Guard: a turn's panic is caught by its batch (`recover_panicked_turn`). Without it the
/// account stays busy forever and the panic is silent; with it the panic is counted, the job
/// goes back to the queue, and every other account carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_turn_is_logged_counted_and_recovered_from() {
    let _serial = serial().await;
    let mut harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.settings.http.enabled = true;
    harness.settings.http.listen = "127.0.0.1:0".parse().expect("address");
    harness.account("1600").await;
    harness.account("1601").await;
    harness.enqueue("1600", 10_000, 5).await;
    harness.enqueue("1601", 10_000, 5).await;
    harness.enqueue("1600", 66_666, 1).await;
    let daemon = crate::support::start_with_panic(&harness.settings, "66666").await;
    harness
        .wait_finished(
            Duration::from_secs(15),
            "every other job done",
            "SELECT count(*) = 10 FROM followq.follow_jobs WHERE state = 'succeeded'",
        )
        .await;
    harness
        .wait_until(
            Duration::from_secs(10),
            "the panicking job back in the queue",
            "SELECT coalesce(state = 'queued' AND last_error->>'detail' LIKE '%panic%', false) \
             FROM followq.follow_jobs WHERE target_user_id = '66666'",
        )
        .await;
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        daemon.http_addr().expect("the ops listener is on")
    ))
    .await
    .expect("scrape")
    .text()
    .await
    .expect("metrics text");
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let panics: f64 = metrics
        .lines()
        .find(|line| line.starts_with("followq_task_panics_total{task=\"job\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    assert!(panics >= 1.0, "the panic was not counted:\n{metrics}");
    assert_eq!(harness.user("1601").await.requests, 5);
}

/// Guard: the successor's daily count seeded from the ledger's follows, binned per 15 minutes
/// (`LedgerSeed::follows`, summed in SQL by `ledger_seeds`). An account whose predecessors
/// made `daily_follows_per_account` follows in the last day sends nothing, and its daily-cap
/// pause ends when the oldest follow's bucket does: not before that follow is a day old, at
/// most two buckets (30 minutes) after. Without the seed the daemon sent both queued follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_holds_an_account_at_its_daily_cap_until_the_oldest_follow_ages_out() {
    let _serial = serial().await;
    let mut harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.settings.rate_limit.daily_follows_per_account = 5;
    harness.account("1300").await;
    // Five follows by an earlier daemon, the oldest a day old in ten minutes.
    sqlx::query(
        r#"
        INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at, completed_at,
                                      answer_by, outcome, http_status)
        SELECT 0, '1300', 'earlier', at, at + interval '80 milliseconds',
               at + interval '3 seconds', 'succeeded', 200
        FROM generate_series(0, 4) AS g,
             LATERAL (SELECT now() - interval '23 hours 50 minutes'
                             + g * interval '2 hours' AS at) AS t
        "#,
    )
    .execute(&harness.db.pool)
    .await
    .expect("the ledger's follows");
    harness.enqueue("1300", 10_000, 2).await;
    let daemon = harness.start().await;
    harness
        .wait_until(
            Duration::from_secs(10),
            "the account paused for its daily cap",
            "SELECT count(*) = 1 FROM followq.accounts WHERE pause_reason = 'daily_cap'",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    assert_eq!(
        harness.user("1300").await.requests,
        0,
        "nothing sent past the cap"
    );
    let (frees_after_oldest_ages_out,): (f64,) = sqlx::query_as(
        r#"
        SELECT extract(epoch FROM a.paused_until
                                  - (SELECT min(completed_at) + interval '24 hours'
                                     FROM followq.attempts WHERE account_user_id = '1300'))::float8
        FROM followq.accounts AS a WHERE a.user_id = '1300'
        "#,
    )
    .fetch_one(&harness.db.pool)
    .await
    .expect("the pause");
    // The pause is written through the wall clock: allow a second for that.
    assert!(
        (-1.0..=1800.0).contains(&frees_after_oldest_ages_out),
        "the cap frees {frees_after_oldest_ages_out:.1} s after the oldest follow is a day old"
    );
}
