//! Every row of README's "X answered" table, driven through the daemon against the simulator:
//! each test asserts what the simulator saw and what the rows (job, ledger, account, app stop)
//! say, and names in its doc comment the guard it covers (the code whose removal makes it
//! fail; each was removed once to check).
//!
//! | X answered | test |
//! | --- | --- |
//! | 200 | `a_200_succeeds_with_what_x_said` |
//! | 429 (window) | `a_429_snoozes_the_job_until_the_reset_and_pauses_the_account` |
//! | 429 (24-hour limit) | `a_429_of_the_24_hour_limit_waits_for_its_reset` |
//! | 429 usage-capped, account | `an_account_usage_cap_pauses_that_account_for_the_period` |
//! | 429 usage-capped, product | `a_product_usage_cap_stops_the_app_for_the_period` |
//! | 5xx (and a 200 whose body is not JSON) | `transient_failures_are_retried_with_backoff_and_fail_only_when_answered` |
//! | timeout, connection lost after sending | the same test |
//! | 401 → refresh → success | `failures::an_expired_token_is_refreshed_and_the_job_succeeds` |
//! | 401 → refresh → 401 | `a_second_401_after_a_refresh_parks_the_account` |
//! | 403 client-forbidden | `failures::client_forbidden_stops_every_account_without_burning_jobs` |
//! | 403 unsupported-authentication | `unsupported_authentication_stops_the_app` |
//! | 403 daily cap | `the_403_daily_cap_pauses_until_the_24_hour_reset_or_a_day` |
//! | 400, 404, other 403 | `a_400_404_or_other_403_fails_the_job_at_once` |

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{Datelike, TimeDelta, Utc};
use followq::accounts::Credentials;
use followq::sim::{DayLimit, FaultConfig, SimConfig, UsageCap, UsagePeriod, UsageScope};
use serde_json::json;

use crate::support::{Harness, LedgerRow, shared, sim_config};

/// The longest any wait below may take: generous, since these scenarios share the machine.
const LIMIT: Duration = Duration::from_secs(30);
/// How long a scenario watches for a request that must not come: several poll intervals
/// (200 ms) and heartbeats (1 s) of the test daemon, in which a broken one would have sent.
const QUIET: Duration = Duration::from_millis(1500);

fn targets(ledger: &[LedgerRow]) -> Vec<&str> {
    ledger.iter().map(|r| r.target_user_id.as_str()).collect()
}

/// 200: the job succeeds with X's `following` and `pending_follow`, after one request whose
/// ledger row holds the window X reported, and no error anywhere.
///
/// Guard: the `Followed` arm of `worker::decision::decide` (X's `following` and
/// `pending_follow` into the job). Checked by recording `pending_follow: false` there: the
/// protected target's row fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_succeeds_with_what_x_said() {
    let _scenario = shared().await;
    let mut config = sim_config(50, Duration::from_secs(60));
    config.targets.protected_ids = HashSet::from(["5002".to_owned()]);
    let harness = Harness::new(config).await;
    harness.account("1200").await;
    harness.enqueue("1200", 5001, 2).await;
    let daemon = harness.start().await;
    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let user = harness.user("1200").await;
    assert_eq!(
        (user.requests, user.follows, user.pending),
        (2, 1, 1),
        "{user:?}"
    );
    assert_eq!(user.by_status, BTreeMap::from([(200, 2)]));
    let jobs = harness.jobs_of("1200").await;
    let rows: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                j.target_user_id.as_str(),
                j.state.as_str(),
                j.attempts,
                j.following,
                j.pending_follow,
                j.last_error.clone(),
                j.finished_at.is_some(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("5001", "succeeded", 1, Some(true), Some(false), None, true),
            ("5002", "succeeded", 1, Some(false), Some(true), None, true),
        ]
    );
    let ledger = harness.ledger_of("1200").await;
    assert_eq!(targets(&ledger), ["5001", "5002"]);
    for (row, remaining) in ledger.iter().zip([49, 48]) {
        assert_eq!(row.http_status, Some(200), "{row:?}");
        assert_eq!(row.outcome.as_deref(), Some("succeeded"));
        assert_eq!(
            (row.rate_limit_limit, row.rate_limit_remaining),
            (Some(50), Some(remaining))
        );
        assert!(row.rate_limit_reset_at.is_some_and(|r| r > row.sent_at));
        assert!(row.completed_at.is_some_and(|c| c >= row.sent_at));
        assert_eq!(row.error, None);
    }
}

/// 429 (the window, spent by another app of the user): the job goes back to the queue until
/// the reset X named, without spending an attempt and with `rate_limited_count` + 1; the
/// account is paused (`rate_limited`) until then; nothing is sent before the reset, and the
/// job succeeds after it.
///
/// Guard: the `RateLimited` arm of `worker::decision::decide` (refund and pause). Checked by
/// dropping its account pause (the row stays active) and by not refunding the attempt
/// (`attempts` ends at 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_snoozes_the_job_until_the_reset_and_pauses_the_account() {
    let _scenario = shared().await;
    let harness = Harness::new(sim_config(5, Duration::from_secs(4))).await;
    harness.account("1210").await;
    harness.enqueue("1210", 5001, 1).await;
    // The user's other app spends the whole window.
    harness.sim.prespend("1210", 5);
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the account paused after the 429",
            "SELECT status = 'paused' FROM followq.accounts WHERE user_id = '1210'",
        )
        .await;

    let ledger = harness.ledger_of("1210").await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let refused = &ledger[0];
    assert_eq!(
        (
            refused.http_status,
            refused.outcome.as_deref(),
            refused.rate_limit_remaining
        ),
        (Some(429), Some("rate_limited"), Some(0))
    );
    let reset = refused.rate_limit_reset_at.expect("the 429's reset");
    let account = harness.account_row("1210").await;
    assert_eq!(
        (account.pause_reason.as_deref(), account.paused_until),
        (Some("rate_limited"), Some(reset))
    );
    let job = &harness.jobs_of("1210").await[0];
    assert_eq!(
        (
            job.state.as_str(),
            job.attempts,
            job.rate_limited_count,
            job.run_at
        ),
        ("queued", 0, 1, reset),
        "snoozed to the reset, no attempt spent"
    );
    assert_eq!(
        job.last_error,
        Some(json!({"kind": "rate_limited", "status": 429, "retry_at": reset}))
    );
    let user = harness.sim.stats_now().user("1210");
    assert_eq!((user.requests, user.rate_limited), (1, 1), "{user:?}");

    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let ledger = harness.ledger_of("1210").await;
    assert_eq!(ledger.len(), 2);
    assert!(
        ledger[1].sent_at >= reset,
        "sent at {} before the reset {reset}",
        ledger[1].sent_at
    );
    let job = &harness.jobs_of("1210").await[0];
    assert_eq!(
        (job.state.as_str(), job.attempts, job.rate_limited_count),
        ("succeeded", 1, 1)
    );
    let user = harness.user("1210").await;
    assert_eq!((user.requests, user.rate_limited, user.follows), (2, 1, 1));
}

/// 429 from the user's 24-hour limit (`x-user-limit-24hour-remaining: 0` on the 429, the
/// 15-minute window far from spent): the job goes back, and the account waits, until the
/// 24-hour reset, not the 15-minute window's; the next request goes no earlier.
///
/// Guard: `spent_day_reset` in the `RateLimited` arm of `worker::decision::decide`. Checked by
/// removing it: the job's `run_at` is the window's reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_of_the_24_hour_limit_waits_for_its_reset() {
    let _scenario = shared().await;
    let day = Duration::from_secs(6);
    let config = SimConfig {
        // Spent by the user's other apps: every request is over it.
        user_24h_limit: Some(DayLimit {
            limit: 0,
            window: day,
        }),
        ..sim_config(50, Duration::from_secs(2))
    };
    let harness = Harness::new(config).await;
    harness.account("1215").await;
    harness.enqueue("1215", 5001, 1).await;
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the account paused after the 429",
            "SELECT status = 'paused' FROM followq.accounts WHERE user_id = '1215'",
        )
        .await;
    let ledger = harness.ledger_of("1215").await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].http_status, Some(429));
    let window_reset = ledger[0].rate_limit_reset_at.expect("the window's reset");
    let job = &harness.jobs_of("1215").await[0];
    let day_reset = ledger[0].sent_at + TimeDelta::from_std(day).unwrap();
    assert!(
        job.run_at >= day_reset - TimeDelta::seconds(1)
            && job.run_at > window_reset + TimeDelta::seconds(2),
        "queued until {} (window reset {window_reset}, the day's about {day_reset})",
        job.run_at
    );
    let account = harness.account_row("1215").await;
    assert!(
        account
            .paused_until
            .is_some_and(|until| until >= job.run_at),
        "{account:?}"
    );
    harness
        .sim_wait(LIMIT, "a second request", |stats| {
            stats.user("1215").requests >= 2
        })
        .await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let ledger = harness.ledger_of("1215").await;
    assert!(
        ledger[1].sent_at >= job.run_at,
        "sent again at {} before the 24-hour reset {}",
        ledger[1].sent_at,
        job.run_at
    );
}

/// 429 usage-capped with scope Account: the job goes back until the period's end (a day for
/// `Daily`, whatever the window's reset says), no attempt spent; only that account is paused
/// (`usage_capped`) and the app keeps serving the others.
///
/// Guard: the `UsageCapped` arm of `worker::decision::decide`: its account pause (removed:
/// the row stays active and the account retries) and its end at the period rather than at
/// the 15-minute window's reset (which it took before this test: it retried every window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_usage_cap_pauses_that_account_for_the_period() {
    let _scenario = shared().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.account("1220").await;
    harness.account("1221").await;
    harness.sim.set_usage_capped(Some(UsageCap {
        period: UsagePeriod::Daily,
        scope: UsageScope::Account,
    }));
    harness.enqueue("1220", 5001, 2).await;
    let before = Utc::now();
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the capped account paused",
            "SELECT status = 'paused' FROM followq.accounts WHERE user_id = '1220'",
        )
        .await;
    let after = Utc::now();

    let account = harness.account_row("1220").await;
    assert_eq!(account.pause_reason.as_deref(), Some("usage_capped"));
    let until = account.paused_until.expect("a pause end");
    // The period ends at the next UTC midnight (the answer came between `before` and `after`).
    let midnight = |at: chrono::DateTime<Utc>| {
        (at.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
    };
    assert!(
        until == midnight(before) || until == midnight(after),
        "paused until {until}, not the next UTC midnight after the answer ({before} .. {after})"
    );
    let jobs = harness.jobs_of("1220").await;
    let capped = jobs
        .iter()
        .find(|j| j.last_error.is_some())
        .expect("the job that got the 429");
    assert_eq!(
        (
            capped.state.as_str(),
            capped.attempts,
            capped.rate_limited_count,
            capped.run_at
        ),
        ("queued", 0, 0, until)
    );
    let error = capped.last_error.clone().unwrap_or_default();
    assert_eq!(
        (&error["kind"], &error["period"], &error["scope"]),
        (&json!("usage_capped"), &json!("Daily"), &json!("Account"))
    );
    assert!(jobs.iter().all(|j| j.state == "queued" && j.attempts == 0));
    assert_eq!(harness.app_pause().await.map(|p| p.reason), None);

    // The cap is the account's: another account still follows.
    harness.sim.set_usage_capped(None);
    harness.enqueue("1221", 5001, 1).await;
    harness
        .wait_finished(
            LIMIT,
            "the other account's job",
            "SELECT state = 'succeeded' FROM followq.follow_jobs WHERE source_user_id = '1221'",
        )
        .await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let stats = harness.stats().await;
    assert_eq!(
        (stats.user("1220").requests, stats.user("1220").usage_capped),
        (1, 1),
        "the capped account sent nothing more"
    );
    assert_eq!(stats.user("1221").follows, 1);
}

/// 429 usage-capped with scope Product: the whole app stops until the period's end (the first
/// of next month, UTC, for `Monthly`) in `followq.app_pause`; accounts are not paused one by one; no job spends
/// an attempt; no request follows the stop; once an operator deletes the stop, the jobs never
/// sent and new ones flow, while those X refused wait for the period's end.
///
/// Guard: the `Product` branch of the `UsageCapped` arm (the app stop). Checked by removing
/// it: each account's second job is sent and no app stop is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_usage_cap_stops_the_app_for_the_period() {
    let _scenario = shared().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    let accounts = ["1230", "1231", "1232"];
    for account in accounts {
        harness.account(account).await;
        harness.enqueue(account, 5001, 2).await;
    }
    harness.sim.set_usage_capped(Some(UsageCap {
        period: UsagePeriod::Monthly,
        scope: UsageScope::Product,
    }));
    let before = Utc::now();
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the app stopped",
            "SELECT count(*) = 1 FROM followq.app_pause WHERE reason = 'usage_capped'",
        )
        .await;
    // Requests already in flight are answered (and may extend the stop) meanwhile.
    tokio::time::sleep(QUIET).await;
    let after = Utc::now();

    let stats = harness.sim.stats_now();
    let sent = stats.totals.all_users.requests;
    assert!(
        (1..=3).contains(&sent),
        "one request per account at most was in flight: {sent}"
    );
    assert_eq!(stats.totals.all_users.usage_capped, sent);
    assert_eq!(
        harness.count("SELECT count(*) FROM followq.attempts").await,
        i64::try_from(sent).unwrap()
    );
    let stop = harness.app_pause().await.expect("the app stop");
    let until = stop.paused_until.expect("an end");
    // The period ends on the first of next month, UTC.
    let next_month = |at: chrono::DateTime<Utc>| {
        let (year, month) = match at.month() {
            12 => (at.year() + 1, 1),
            m => (at.year(), m + 1),
        };
        chrono::NaiveDate::from_ymd_opt(year, month, 1)
            .and_then(|first| first.and_hms_opt(0, 0, 0))
            .expect("a first of the month")
            .and_utc()
    };
    assert!(
        until == next_month(before) || until == next_month(after),
        "stopped until {until}, not the first of next month after the answers ({before} .. {after})"
    );
    let detail = stop.detail.unwrap_or_default();
    assert_eq!(
        (&detail["period"], &detail["scope"]),
        (&json!("Monthly"), &json!("Product"))
    );
    for account in accounts {
        assert_eq!(harness.account_row(account).await.status, "active");
        for job in harness.jobs_of(account).await {
            assert_eq!((job.state.as_str(), job.attempts), ("queued", 0), "{job:?}");
        }
    }

    // An operator lifts the stop (the cap was raised): the jobs never sent go out, and new
    // ones; those X refused wait for the period's end.
    harness.sim.set_usage_capped(None);
    let resumed = followq::admin::app::resume(&harness.db.pool)
        .await
        .expect("followq app resume");
    assert!(
        matches!(&resumed, followq::admin::app::Resumed::Ended(stop) if stop.reason.as_str() == "usage_capped"),
        "{resumed:?}"
    );
    harness.enqueue("1230", 6000, 1).await;
    harness
        .wait_finished(
            LIMIT,
            "every ready job done after the stop",
            "SELECT count(*) = 0 FROM followq.follow_jobs \
             WHERE state = 'running' OR (state = 'queued' AND run_at <= now())",
        )
        .await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    assert_eq!(harness.stats().await.totals.all_users.requests, 7);
    // Each refused job waits for the end its own answer named; the stop keeps the latest.
    let refused: Vec<(String, i32, bool)> = sqlx::query_as(
        "SELECT state, attempts, run_at <= $1 FROM followq.follow_jobs \
         WHERE state = 'queued' AND last_error->>'kind' = 'usage_capped' ORDER BY id",
    )
    .bind(until)
    .fetch_all(&harness.db.pool)
    .await
    .unwrap();
    assert_eq!(refused, vec![("queued".to_owned(), 0, true); sent as usize]);
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded'")
            .await,
        7 - i64::try_from(sent).unwrap()
    );
}

/// One transient failure on every try. `unanswered`: X may have made the follow (no answer
/// came), so the job never fails: wait until it has been tried once more than
/// `max_attempts`, then stop. Otherwise: wait until it fails.
async fn always_failing(
    faults: FaultConfig,
    request_timeout: Duration,
    unanswered: bool,
) -> Harness {
    let mut config = sim_config(1_000, Duration::from_secs(60));
    config.faults = faults;
    let mut harness = Harness::new(config).await;
    harness.settings.retry.max_attempts = 3;
    harness.settings.retry.base_delay = Duration::from_millis(400);
    harness.settings.x_api.request_timeout = request_timeout;
    harness.account("1500").await;
    harness.enqueue("1500", 5001, 1).await;
    let daemon = harness.start().await;
    if unanswered {
        harness
            .sim_wait(LIMIT, "a try past max_attempts", |s| {
                s.user("1500").requests >= 4
            })
            .await;
    } else {
        harness.wait_all_finished(LIMIT).await;
    }
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    harness
}

/// Answers that say the follow was not made (a 5xx, a 200 whose body is not JSON): the job
/// is retried with exponential backoff and fails after `max_attempts` (3 here) with the last
/// error, one request and one ledger row per try. A timeout or a connection lost after
/// sending (X may have made the follow): retried with backoff too, but never failed: past
/// `max_attempts` it goes back again without spending the attempt. The four run at once,
/// each with its own database and simulator.
///
/// Guard: the `Transient` arm of `worker::decision::decide`: its `attempts >= max_attempts`
/// check (removed: the answered jobs are retried for ever and the wait times out), its
/// `answered` condition (removed: the unanswered jobs fail at the third try), and its
/// `backoff` (zero: the gaps between tries fall below the floor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_backoff_and_fail_only_when_answered() {
    let _scenario = shared().await;
    let every = |faults: FaultConfig| FaultConfig { seed: 5, ..faults };
    let (server_error, unreadable, timeout, reset) = tokio::join!(
        always_failing(
            every(FaultConfig {
                fail_5xx: 1.0,
                ..FaultConfig::default()
            }),
            Duration::from_secs(2),
            false,
        ),
        always_failing(
            every(FaultConfig {
                malformed: 1.0,
                ..FaultConfig::default()
            }),
            Duration::from_secs(2),
            false,
        ),
        always_failing(
            every(FaultConfig {
                delay: 1.0,
                delay_duration: Duration::from_secs(3),
                ..FaultConfig::default()
            }),
            Duration::from_millis(500),
            true,
        ),
        always_failing(
            every(FaultConfig {
                drop: 1.0,
                ..FaultConfig::default()
            }),
            Duration::from_secs(2),
            true,
        ),
    );
    let cases = [
        ("5xx", &server_error),
        ("unreadable body", &unreadable),
        ("timeout", &timeout),
        ("connection lost", &reset),
    ];
    for (what, harness) in cases {
        let answered = matches!(what, "5xx" | "unreadable body");
        let requests = harness.sim.stats_now().user("1500").requests;
        let job = harness.jobs_of("1500").await.remove(0);
        let ledger = harness.ledger_of("1500").await;
        if answered {
            assert_eq!(requests, 3, "{what}: one request per attempt");
            assert_eq!(
                (job.state.as_str(), job.attempts),
                ("failed", 3),
                "{what}: {job:?}"
            );
        } else {
            assert!(requests >= 4, "{what}: {requests} requests");
            assert_eq!(job.state, "queued", "{what}: never failed: {job:?}");
            assert!(job.attempts < 3, "{what}: the last try not spent: {job:?}");
        }
        assert_eq!(
            ledger.len() as u64,
            requests,
            "{what}: a ledger row per try"
        );
        let error = job.last_error.clone().unwrap_or_default();
        assert_eq!(error["kind"], "transient", "{what}: {error}");
        match what {
            "5xx" => assert!(error["status"] == 500 || error["status"] == 503, "{error}"),
            "unreadable body" => {
                assert_eq!(error["status"], 200, "{error}");
                assert!(error["body_excerpt"].is_string(), "{error}");
            }
            "timeout" => assert_eq!(
                (&error["reason"], error.get("status")),
                (&json!("timeout"), None),
                "{error}"
            ),
            _ => assert_eq!(
                (&error["reason"], error.get("status")),
                (&json!("connection"), None),
                "{error}"
            ),
        }
        assert!(
            ledger
                .iter()
                .all(|r| r.outcome.as_deref() == Some("transient")),
            "{what}: {ledger:?}"
        );
        // The n-th retry waits at least half of 400 ms * 2^(n-1); past max_attempts the
        // attempt count, hence the backoff, stays at the third's.
        for (retry, pair) in ledger.windows(2).enumerate() {
            let gap = pair[1].sent_at - pair[0].sent_at;
            let floor = TimeDelta::milliseconds(200 << retry.min(2));
            assert!(
                gap >= floor,
                "{what}: retry {} came {gap} after the previous try, floor {floor}",
                retry + 1
            );
        }
    }
    let faults = |harness: &Harness| harness.sim.stats_now().user("1500").faults;
    assert_eq!(faults(&server_error).server_errors, 3);
    assert_eq!(faults(&unreadable).malformed, 3);
    assert!(faults(&timeout).delayed >= 4);
    assert!(faults(&reset).dropped >= 4);
}

/// 401 → refresh → 401 again: X refused the fresh token too, so the account is parked as
/// `needs_reauth` (its jobs stay queued, no attempt spent) and nothing more is sent or
/// refreshed for it.
///
/// Guard: the `unauthorized_streak >= 1` check in `worker::turn::refresh_after_401`. Checked by
/// removing it: the daemon refreshes and retries again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_401_after_a_refresh_parks_the_account() {
    let _scenario = shared().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.account("1240").await;
    harness.enqueue("1240", 5001, 3).await;
    let stored =
        "SELECT oauth2_access_token FROM followq.account_credentials WHERE user_id = '1240'";
    let (before,): (String,) = sqlx::query_as(stored)
        .fetch_one(&harness.db.pool)
        .await
        .unwrap();
    // X refuses this user's tokens, even fresh ones; the token endpoint still refreshes.
    harness.sim.set_tokens_refused("1240", true);
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the account parked",
            "SELECT status = 'needs_reauth' FROM followq.accounts WHERE user_id = '1240'",
        )
        .await;
    tokio::time::sleep(QUIET).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let user = harness.user("1240").await;
    assert_eq!(
        (user.unauthorized, user.refreshes, user.requests),
        (2, 1, 0),
        "two 401s, one refresh between them, nothing after: {user:?}"
    );
    let account = harness.account_row("1240").await;
    assert_eq!(
        account.pause_reason.as_deref(),
        Some("X refused the account's token twice in a row (401), even after a refresh")
    );
    assert_eq!(account.leased_by, None);
    let jobs = harness.jobs_of("1240").await;
    assert!(
        jobs.iter().all(|j| j.state == "queued" && j.attempts == 0),
        "{jobs:?}"
    );
    let ledger = harness.ledger_of("1240").await;
    assert_eq!(ledger.len(), 2);
    for row in &ledger {
        assert_eq!(
            (row.http_status, row.outcome.as_deref()),
            (Some(401), Some("unauthorized"))
        );
        assert_eq!(
            row.error.as_ref().map(|e| e["kind"].clone()),
            Some(json!("unauthorized"))
        );
    }
    // The fresh token was stored: the refresh itself worked.
    let (after,): (String,) = sqlx::query_as(stored)
        .fetch_one(&harness.db.pool)
        .await
        .unwrap();
    assert_ne!(before, after);
}

/// 403 `unsupported-authentication` (an app-only token where a user token belongs): an
/// app-wide stop (`app_forbidden`) until an operator deletes it; the job goes back without
/// spending an attempt, the account is not blamed, and nothing more is sent.
///
/// Guard: `unsupported-authentication` among `APP_FORBIDDEN_PROBLEMS` in
/// `xapi::classify`, with the `AppForbidden` arm's app stop. Checked by removing it from the
/// list: the job fails as permanent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_authentication_stops_the_app() {
    let _scenario = shared().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.sim.add_app_only_token("app-only-token");
    harness
        .db
        .add_account_with(
            "1260",
            Credentials::OAuth2 {
                access_token: "app-only-token".to_owned().into(),
                refresh_token: None,
                expires_at: None,
            },
        )
        .await;
    harness.enqueue("1260", 5001, 2).await;
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the app stopped",
            "SELECT count(*) = 1 FROM followq.app_pause WHERE reason = 'app_forbidden'",
        )
        .await;
    tokio::time::sleep(QUIET).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let stats = harness.stats().await;
    assert_eq!(stats.totals.app_only, 1, "one request, then none");
    assert_eq!(stats.user("1260").requests, 0);
    let stop = harness.app_pause().await.expect("the stop");
    assert_eq!(stop.paused_until, None, "until an operator acts");
    let detail = stop.detail.unwrap_or_default();
    assert_eq!(detail["kind"], "app_forbidden");
    assert!(
        detail["problem_type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/2/problems/unsupported-authentication")),
        "{detail}"
    );
    assert_eq!(harness.account_row("1260").await.status, "active");
    let jobs = harness.jobs_of("1260").await;
    assert!(
        jobs.iter().all(|j| j.state == "queued" && j.attempts == 0),
        "{jobs:?}"
    );
}

/// The daily-cap scenario: a cap of 2 follows per `daily_window`, 4 jobs, and the user's
/// 24-hour limit reported (not reached) when `day_limit` is set.
async fn daily_capped(day_limit: Option<DayLimit>, daily_window: Duration) -> Harness {
    let config = SimConfig {
        daily_cap: Some(2),
        daily_window,
        user_24h_limit: day_limit,
        ..sim_config(50, Duration::from_secs(60))
    };
    let harness = Harness::new(config).await;
    harness.account("1250").await;
    harness.enqueue("1250", 5001, 4).await;
    harness
}

/// 403 "You are unable to follow more people at this time": the job goes back until the
/// 24-hour header's reset when X sent one (the account then resumes there), else for a day;
/// the account is paused (`daily_cap`) until then; no attempt is spent.
///
/// Guard: the `AccountDailyCap` arm of `worker::decision::decide` (pause, refund, and the
/// `x-user-limit-24hour-reset` preference). Checked by ignoring the header: the reported
/// scenario waits a day and times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_403_daily_cap_pauses_until_the_24_hour_reset_or_a_day() {
    let _scenario = shared().await;
    let window = Duration::from_secs(3);
    let (unreported, reported) = tokio::join!(
        daily_capped(None, Duration::from_secs(3600)),
        daily_capped(Some(DayLimit { limit: 100, window }), window),
    );
    let before = Utc::now();
    let (first, second) = tokio::join!(unreported.start(), reported.start());
    let paused = "SELECT status = 'paused' FROM followq.accounts WHERE user_id = '1250'";
    tokio::join!(
        unreported.wait_until(LIMIT, "the account paused", paused),
        reported.wait_until(LIMIT, "the account paused", paused),
    );
    let after = Utc::now();

    // Without a 24-hour header: a day.
    let account = unreported.account_row("1250").await;
    assert_eq!(account.pause_reason.as_deref(), Some("daily_cap"));
    let until = account.paused_until.expect("an end");
    let day = TimeDelta::hours(24);
    assert!(
        until >= before + day && until <= after + day,
        "paused until {until}"
    );
    let jobs = unreported.jobs_of("1250").await;
    let states: Vec<_> = jobs
        .iter()
        .map(|j| (j.state.as_str(), j.attempts))
        .collect();
    assert_eq!(
        states,
        [
            ("succeeded", 1),
            ("succeeded", 1),
            ("queued", 0),
            ("queued", 0)
        ]
    );
    assert_eq!(jobs[2].run_at, until);
    assert_eq!(
        jobs[2].last_error.as_ref().map(|e| e["kind"].clone()),
        Some(json!("daily_cap"))
    );
    let user = unreported.sim.stats_now().user("1250");
    assert_eq!((user.requests, user.follows, user.daily_capped), (3, 2, 1));

    // With one: until its reset, then the account resumes and finishes.
    let account = reported.account_row("1250").await;
    assert_eq!(account.pause_reason.as_deref(), Some("daily_cap"));
    let reset = account.paused_until.expect("an end");
    let ledger = reported.ledger_of("1250").await;
    let window = TimeDelta::from_std(window).unwrap();
    assert!(
        reset >= ledger[0].sent_at + window
            && reset <= ledger[0].completed_at.unwrap() + window + TimeDelta::seconds(1),
        "paused until {reset}, not the 24-hour window's reset"
    );
    reported.wait_all_finished(LIMIT).await;
    tokio::time::sleep(QUIET).await;
    let (first, second) = tokio::join!(first.stop(), second.stop());
    first.expect("the first daemon stops within its grace");
    second.expect("the second daemon stops within its grace");
    assert_eq!(
        unreported.sim.stats_now().user("1250").requests,
        3,
        "nothing sent during the day's pause"
    );
    let ledger = reported.ledger_of("1250").await;
    assert_eq!(ledger.len(), 5, "4 follows and the refused one");
    assert!(
        ledger[3].sent_at >= reset,
        "resumed at {} before the reset {reset}",
        ledger[3].sent_at
    );
    let user = reported.sim.stats_now().user("1250");
    assert_eq!((user.follows, user.daily_capped), (4, 1));
    assert!(
        reported
            .jobs_of("1250")
            .await
            .iter()
            .all(|j| j.state == "succeeded" && j.attempts == 1)
    );
}

/// 400, 404 and another 403 (a target that blocks the user): the job fails at once with X's
/// details, after one request each; the account goes on with its other jobs.
///
/// Guard: the `Permanent` arm of `worker::decision::decide` (failed, not retried), fed by
/// `xapi::classify`'s 4xx rules. Checked by retrying it like a transient error: `attempts`
/// reaches `max_attempts` and the simulator sees every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_404_or_other_403_fails_the_job_at_once() {
    let _scenario = shared().await;
    let mut config = sim_config(50, Duration::from_secs(60));
    config.targets.invalid_ids = HashSet::from(["5001".to_owned()]);
    config.targets.blocking_ids = HashSet::from(["5002".to_owned()]);
    config.targets.unknown_ids = HashSet::from(["5003".to_owned()]);
    let harness = Harness::new(config).await;
    harness.account("1270").await;
    harness.enqueue("1270", 5001, 4).await;
    let daemon = harness.start().await;
    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    let user = harness.user("1270").await;
    assert_eq!(user.requests, 4, "no retry: {user:?}");
    assert_eq!(
        user.by_status,
        BTreeMap::from([(200, 1), (400, 1), (403, 1), (404, 1)])
    );
    let jobs = harness.jobs_of("1270").await;
    let outcome: Vec<_> = jobs
        .iter()
        .map(|j| {
            let error = j.last_error.clone().unwrap_or_default();
            (
                j.target_user_id.as_str(),
                j.state.as_str(),
                j.attempts,
                error["kind"].as_str().map(str::to_owned),
                error["status"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            ("5001", "failed", 1, Some("permanent".into()), Some(400)),
            ("5002", "failed", 1, Some("permanent".into()), Some(403)),
            ("5003", "failed", 1, Some("permanent".into()), Some(404)),
            ("5004", "succeeded", 1, None, None),
        ]
    );
    let detail = |i: usize| {
        jobs[i].last_error.as_ref().unwrap()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        detail(1),
        "You cannot follow an account that is blocking you."
    );
    assert_eq!(
        detail(2),
        "Could not find user with target_user_id: [5003]."
    );
    assert!(jobs.iter().all(|j| j.finished_at.is_some()));
    let ledger = harness.ledger_of("1270").await;
    let outcomes: Vec<_> = ledger
        .iter()
        .map(|r| (r.target_user_id.as_str(), r.outcome.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("5001", Some("permanent")),
            ("5002", Some("permanent")),
            ("5003", Some("permanent")),
            ("5004", Some("succeeded")),
        ]
    );
    assert_eq!(harness.account_row("1270").await.status, "active");
}
