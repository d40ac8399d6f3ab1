//! The budgets besides X's window: the per-app daily cap, an account's own quota, and a
//! smaller `x-rate-limit-limit` than configured. Each test names the guard it covers
//! (removed once to check).

use std::time::Duration;

use chrono::TimeDelta;
use followq::accounts::{Credentials, NewAccount, Quota};
use followq::ids::UserId;

use crate::support::{Harness, shared, sim_config};

/// The longest any wait below may take: generous, since these scenarios share the machine.
const LIMIT: Duration = Duration::from_secs(30);
/// How long a scenario watches for a request that must not come: several poll intervals
/// (200 ms) and heartbeats (1 s) of the test daemon, in which a broken one would have sent.
const QUIET: Duration = Duration::from_millis(1500);

/// `rate_limit.daily_follows_per_app`: once the app's follows in 24 hours reach it, the app
/// stops (`app_daily_cap`) until the oldest of them is a day old, rounded up to the end of
/// that minute (the app's follows are counted per minute); no account follows more.
///
/// Guards: the slot each request takes first (`worker::app_cap`; without it, all six follows
/// went out, the monitor's poll coming too late), and `enforce_app_daily_cap` in
/// `worker::housekeeping`, which writes the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_app_daily_cap_stops_the_app_for_a_day() {
    let _scenario = shared().await;
    let mut harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.settings.rate_limit.daily_follows_per_app = Some(4);
    for account in ["1700", "1701"] {
        harness.account(account).await;
        harness.enqueue(account, 5001, 3).await;
    }
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the app stopped",
            "SELECT count(*) = 1 FROM followq.app_pause WHERE reason = 'app_daily_cap'",
        )
        .await;
    tokio::time::sleep(QUIET).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let stats = harness.stats().await;
    assert_eq!(
        stats.totals.all_users.follows, 4,
        "the cap held: {:?}",
        stats.totals
    );
    let stop = harness.app_pause().await.expect("the stop");
    let oldest: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT min(completed_at) FROM followq.attempts WHERE outcome = 'succeeded'",
    )
    .fetch_one(&harness.db.pool)
    .await
    .unwrap();
    let until = stop.paused_until.expect("the stop's end");
    let day_old = oldest + TimeDelta::hours(24);
    assert!(
        until >= day_old && until < day_old + TimeDelta::minutes(1),
        "the stop ends {} after the oldest follow is a day old",
        until - day_old
    );
    assert_eq!(until.timestamp() % 60, 0, "at the end of a minute");
    assert_eq!(
        harness
            .count(
                "SELECT count(*) FROM followq.follow_jobs WHERE state = 'queued' AND attempts = 0"
            )
            .await,
        2
    );
}

/// With a per-app cap, no request starts before the app monitor has counted the app's
/// follows: the first read of the ledger (a day of it, over every shard on Citus) may take
/// longer than a claim may wait before its request goes out. Here that read is held up on the
/// cap's table for three send deadlines: nothing is claimed meanwhile, and once it is done
/// every job succeeds, none given up for a missed deadline.
///
/// Guard: `AppCapGate::counted` in the scheduler's `dispatch`. Without it, both accounts
/// claimed at once, and their requests waited for the read past their send deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_starts_before_the_apps_follows_are_counted() {
    let _scenario = shared().await;
    let mut harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.settings.rate_limit.daily_follows_per_app = Some(100);
    for account in ["1710", "1711"] {
        harness.account(account).await;
        harness.enqueue(account, 5101, 2).await;
    }
    let mut holder = harness.db.connection().await;
    let mut held = sqlx::Connection::begin(&mut holder).await.expect("begin");
    sqlx::query("LOCK TABLE followq.app_cap_slots IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .expect("hold the cap's table");
    let daemon = harness.start().await;
    tokio::time::sleep(harness.settings.worker.send_deadline * 3).await;
    let claimed = harness.count("SELECT count(*) FROM followq.attempts").await;
    held.commit().await.expect("let the count go");
    assert_eq!(
        claimed, 0,
        "claims made before the app's follows were counted"
    );

    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.attempts WHERE outcome = 'not_sent'")
            .await,
        0
    );
    assert_eq!(harness.stats().await.totals.all_users.follows, 4);
}

/// A request that proved to follow nobody (here X's 404 for a target that does not exist)
/// gives its slot under the per-app cap back once its outcome is written: the two refused
/// requests leave room for both follows under a cap of 3, and the slots left are the
/// follows' own.
///
/// Guard: the give-back after the write (`AppCapGate::outcome_written` in `worker::record`).
/// Without it, all four slots stayed until their ledger rows settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_followed_nobody_gives_its_slot_back() {
    let _scenario = shared().await;
    let mut config = sim_config(50, Duration::from_secs(60));
    config.targets.unknown_ids = ["5201".to_owned(), "5202".to_owned()].into();
    let mut harness = Harness::new(config).await;
    harness.settings.rate_limit.daily_follows_per_app = Some(3);
    harness.account("1720").await;
    harness.enqueue("1720", 5201, 4).await;
    let daemon = harness.start().await;
    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    assert_eq!(harness.stats().await.totals.all_users.follows, 2);
    // Read apart: on Citus the slots are on the coordinator, the ledger on the workers.
    let slotted: Vec<i64> = sqlx::query_scalar("SELECT attempt_id FROM followq.app_cap_slots")
        .fetch_all(&harness.db.pool)
        .await
        .unwrap();
    let follows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM followq.attempts WHERE id = ANY($1) AND outcome = 'succeeded'",
    )
    .bind(&slotted)
    .fetch_one(&harness.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (slotted.len(), follows),
        (2, 2),
        "the slots left are the follows'"
    );
}

/// An account's own quota (`quota_requests` per `quota_period_seconds`, `accounts add
/// --quota-requests`) paces it below the configured one, even when X sends no rate-limit
/// headers to correct it.
///
/// Guard: the leaser's use of the account's quota columns (`worker::leaser::hand_over`).
/// Checked by ignoring them: the daemon sends at the configured 50 per window and X answers
/// 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_own_quota_paces_it() {
    let _scenario = shared().await;
    let window = Duration::from_secs(2);
    let mut config = sim_config(3, window);
    // Nothing but the override can tell the daemon this account's tier.
    config.rate_limit_headers = false;
    let mut harness = Harness::new(config).await;
    harness.settings.rate_limit.requests_per_period = 50;
    let tokens = harness.sim.add_user("1710");
    followq::accounts::register(
        &harness.db.pool,
        &crate::common::test_keys(),
        &NewAccount {
            user_id: UserId::parse("1710").unwrap(),
            credentials: Credentials::OAuth2 {
                access_token: tokens.access_token.into(),
                refresh_token: Some(tokens.refresh_token.into()),
                expires_at: None,
            },
            quota: Some(Quota {
                requests: 3,
                period_seconds: 2,
            }),
        },
    )
    .await
    .unwrap();
    harness.enqueue("1710", 5001, 7).await;
    let daemon = harness.start().await;
    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let user = harness.user("1710").await;
    assert_eq!(
        (
            user.requests,
            user.follows,
            user.rate_limited,
            user.max_requests_in_window
        ),
        (7, 7, 0, 3),
        "{user:?}"
    );
    let ledger = harness.ledger_of("1710").await;
    let window = TimeDelta::from_std(window).unwrap();
    assert!(
        ledger[3].sent_at >= ledger[0].sent_at + window
            && ledger[6].sent_at >= ledger[3].sent_at + window,
        "three per window: {ledger:?}"
    );
}

/// X's `x-rate-limit-limit` smaller than the configured quota is adopted: after one answer
/// carried it, the daemon keeps to it in later windows even once X stops sending headers.
///
/// Guard: the smaller server limit kept by the limiter (`AccountLimiter::record_response`
/// adopts it as the quota, and `AccountLimiter::limit` applies the last one X sent). Either
/// alone holds; checked by removing both: the second window gets more than 3 requests and X
/// answers 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_limit_from_x_is_adopted() {
    let _scenario = shared().await;
    let window = Duration::from_secs(2);
    let mut harness = Harness::new(sim_config(3, window)).await;
    harness.settings.rate_limit.requests_per_period = 50;
    harness.account("1720").await;
    harness.enqueue("1720", 5001, 7).await;
    let daemon = harness.start().await;
    // The first answer says `x-rate-limit-limit: 3`; later ones say nothing.
    harness
        .sim_wait(LIMIT, "the first request", |s| s.user("1720").requests >= 1)
        .await;
    harness.sim.set_rate_limit_headers(false);
    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let user = harness.user("1720").await;
    assert_eq!(
        (
            user.requests,
            user.follows,
            user.rate_limited,
            user.max_requests_in_window
        ),
        (7, 7, 0, 3),
        "{user:?}"
    );
    let ledger = harness.ledger_of("1720").await;
    assert_eq!(ledger[0].rate_limit_limit, Some(3));
    assert_eq!(ledger[6].rate_limit_limit, None, "no headers at the end");
}

/// The simulator for the daily-cap scenarios: X applies half of the follows and still
/// answers 5xx (the fault's pattern is the same on every run), answers take a moment, and
/// the window is far from binding.
fn applied_then_5xx() -> followq::sim::SimConfig {
    followq::sim::SimConfig {
        faults: followq::sim::FaultConfig {
            applied_5xx: 0.5,
            delay: 1.0,
            delay_duration: Duration::from_millis(250),
            ..followq::sim::FaultConfig::default()
        },
        daily_window: Duration::from_secs(3600),
        ..sim_config(50, Duration::from_secs(60))
    }
}

/// A follow X applied before answering 5xx counts against the account's daily cap, in the
/// successor's seed too: with a cap of 8 (X's and followq's), the daemon is killed (-9) mid-way
/// and a successor takes the accounts over. X never answers its own daily-cap 403 and never
/// counts more than 6 follows for an account.
///
/// Guard: `store::ledger::may_have_acted_sql!` in `ledger_seeds`. With the seed reading only
/// succeeded, abandoned and unanswered rows (as it did), the successor forgot the follows
/// behind the 5xx answers and went over: X's 403s and 9 or more follows in its day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_applied_behind_a_5xx_count_for_a_successor() {
    let _serial = crate::support::serial().await;
    let cap = 8;
    let mut harness = Harness::new(followq::sim::SimConfig {
        daily_cap: Some(cap),
        ..applied_then_5xx()
    })
    .await;
    harness.settings.rate_limit.daily_follows_per_account = cap;
    let accounts = ["1760", "1761", "1762"];
    for account in accounts {
        harness.account(account).await;
        harness.enqueue(account, 5001, 12).await;
    }
    let first = crate::child::Daemon::start(&harness, "applied-5xx-first");
    harness
        .sim_wait(LIMIT, "five requests of each account", |s| {
            accounts.iter().all(|a| s.user(a).requests >= 5)
        })
        .await;
    first.kill().await;
    let second = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "every account at its daily cap",
            "SELECT bool_and(status = 'paused' AND pause_reason = 'daily_cap')
             FROM followq.accounts",
        )
        .await;
    tokio::time::sleep(QUIET).await;
    second
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let stats = harness.stats().await;
    assert!(
        stats.totals.all_users.faults.applied_then_failed > 0,
        "X applied follows behind 5xx answers: {:?}",
        stats.totals.all_users.faults
    );
    for account in accounts {
        let user = stats.user(account);
        assert_eq!(user.daily_capped, 0, "account {account}: {user:?}");
        assert!(
            user.max_follows_in_day <= u64::from(cap),
            "account {account} followed {} in a day (cap {cap})",
            user.max_follows_in_day
        );
    }
}

/// The same for the app: with a per-app cap of 8 (X's and followq's) and one daemon, the
/// follows X applied behind 5xx answers count, and X never answers its app-wide daily-cap
/// 403 nor counts more than 8 follows for the app.
///
/// Guard: `store::ledger::may_have_acted_sql!` in the app's count (`store::app_follows`).
/// Reading only succeeded, abandoned and unanswered rows, the app went over its cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_applied_behind_a_5xx_count_for_the_apps_cap() {
    let _scenario = shared().await;
    let cap = 8;
    let mut harness = Harness::new(followq::sim::SimConfig {
        app_daily_cap: Some(cap),
        ..applied_then_5xx()
    })
    .await;
    harness.settings.rate_limit.daily_follows_per_app = Some(cap);
    for account in ["1770", "1771", "1772"] {
        harness.account(account).await;
        harness.enqueue(account, 5001, 8).await;
    }
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the app stopped",
            "SELECT count(*) = 1 FROM followq.app_pause WHERE reason = 'app_daily_cap'",
        )
        .await;
    tokio::time::sleep(QUIET).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let totals = harness.stats().await.totals;
    assert!(
        totals.all_users.faults.applied_then_failed > 0,
        "{totals:?}"
    );
    assert_eq!(totals.app_daily_capped, 0, "{totals:?}");
    assert!(
        totals.app_max_follows_in_day <= u64::from(cap),
        "the app followed {} in a day (cap {cap})",
        totals.app_max_follows_in_day
    );
}
