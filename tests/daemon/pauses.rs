//! Every pause reason of README's table, driven through the daemon: what pauses the account
//! (or the app), the row operators and other daemons read, that nothing is sent during the
//! pause, and that sending resumes at its end. `rate_limited` and `usage_capped` are in
//! `reactions.rs` (the 429 they come from). Each test names the guard it covers (removed
//! once to check).

use std::time::Duration;

use chrono::TimeDelta;
use followq::ids::UserId;
use followq::sim::{DayLimit, SimConfig};

use crate::support::{Harness, shared, sim_config};

/// The longest any wait below may take: generous, since these scenarios share the machine.
const LIMIT: Duration = Duration::from_secs(30);
/// How long a scenario watches for a request that must not come: several poll intervals
/// (200 ms) and heartbeats (1 s) of the test daemon, in which a broken one would have sent.
const QUIET: Duration = Duration::from_millis(1500);

/// `rate_limit_window`: the answer that says `x-rate-limit-remaining: 0` pauses the account
/// until the reset X named, in the row other daemons and operators read; the daemon sends
/// again once the window is over (never a 429), and the row becomes active again.
///
/// Guard: the `rate_limit_window` pause of `header_pauses` in `worker::decision` (the row;
/// removed, the account stays active). What keeps X from answering 429 is the limiter's
/// wait for the window's end, covered by `pacing.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_window_pauses_the_account_until_its_reset() {
    let _scenario = shared().await;
    let window = Duration::from_secs(3);
    let harness = Harness::new(sim_config(3, window)).await;
    harness.account("1600").await;
    harness.enqueue("1600", 5001, 5).await;
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the window's pause",
            "SELECT status = 'paused' FROM followq.accounts WHERE user_id = '1600'",
        )
        .await;

    let ledger = harness.ledger_of("1600").await;
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    assert_eq!(ledger[2].rate_limit_remaining, Some(0));
    let reset = ledger[2].rate_limit_reset_at.expect("a reset");
    let account = harness.account_row("1600").await;
    assert_eq!(
        (account.pause_reason.as_deref(), account.paused_until),
        (Some("rate_limit_window"), Some(reset))
    );
    assert_eq!(harness.sim.stats_now().user("1600").requests, 3);

    harness.wait_all_finished(LIMIT).await;
    harness
        .wait_until(
            LIMIT,
            "the row active again after the reset",
            "SELECT status = 'active' AND paused_until IS NULL FROM followq.accounts \
             WHERE user_id = '1600'",
        )
        .await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let user = harness.user("1600").await;
    assert_eq!(
        (
            user.requests,
            user.rate_limited,
            user.max_requests_in_window,
            user.windows
        ),
        (5, 0, 3, 2),
        "{user:?}"
    );
    let ledger = harness.ledger_of("1600").await;
    let window = TimeDelta::from_std(window).unwrap();
    assert!(
        ledger[3].sent_at >= ledger[0].sent_at + window,
        "the 4th request went out inside the first window"
    );
}

/// `daily_cap` from followq's own counter: `rate_limit.daily_follows_per_account` follows in
/// 24 hours pause the account until the oldest of them is a day old (counted from the latest
/// moment it could have reached X, its `answer_by`, and rounded up to the end of its 15-minute
/// bucket: the daily count is kept per bucket), in the row; a daemon started afterwards
/// honours the row and sends nothing either.
///
/// Guard: the daily-cap gate of `AccountLimiter::blocked_until` (`ratelimit.rs`), with
/// `Scheduler::persist_daily_cap` for the row. Checked by removing the gate: all five follows
/// go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_account_daily_cap_pauses_the_account_for_a_day() {
    let _scenario = shared().await;
    let mut harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.settings.rate_limit.daily_follows_per_account = 3;
    harness.account("1610").await;
    harness.enqueue("1610", 5001, 5).await;
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the daily cap's pause",
            "SELECT status = 'paused' FROM followq.accounts WHERE user_id = '1610'",
        )
        .await;
    tokio::time::sleep(QUIET).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");

    assert_eq!(
        harness.sim.stats_now().user("1610").follows,
        3,
        "the cap held"
    );
    let account = harness.account_row("1610").await;
    assert_eq!(account.pause_reason.as_deref(), Some("daily_cap"));
    let until = account.paused_until.expect("an end");
    let ledger = harness.ledger_of("1610").await;
    let day = TimeDelta::hours(24);
    // Never before the first follow's answer_by is a day old, at most one bucket after; a
    // second either way for the pause's trip through the wall clock.
    let expiry = ledger[0].answer_by.expect("answer_by") + day;
    let (bucket, second) = (TimeDelta::minutes(15), TimeDelta::seconds(1));
    assert!(
        until >= expiry - second && until <= expiry + bucket + second,
        "paused until {until}, not within a bucket of a day after the first follow ({:?})",
        ledger[0]
    );
    let states: Vec<_> = harness
        .jobs_of("1610")
        .await
        .into_iter()
        .map(|j| (j.state, j.attempts))
        .collect();
    assert_eq!(
        states,
        [
            ("succeeded".to_owned(), 1),
            ("succeeded".to_owned(), 1),
            ("succeeded".to_owned(), 1),
            ("queued".to_owned(), 0),
            ("queued".to_owned(), 0)
        ]
    );

    // Another daemon (or this one restarted) honours the pause.
    let successor = harness.start().await;
    tokio::time::sleep(QUIET).await;
    successor
        .stop()
        .await
        .expect("the daemon stops within its grace");
    assert_eq!(harness.user("1610").await.requests, 3);
}

/// `user_24h_limit`: `x-user-limit-24hour-remaining: 0` pauses the account until that
/// header's reset (in the row, and in the daemon); X never answers 429, and the account
/// resumes after the reset.
///
/// Guard: the `user_24h_limit` pause of `header_pauses` in `worker::decision`. Checked by
/// removing it: the 4th request goes out at once and X answers 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_24_hour_limit_pauses_the_account_until_its_reset() {
    let _scenario = shared().await;
    let window = Duration::from_secs(3);
    let harness = Harness::new(SimConfig {
        user_24h_limit: Some(DayLimit { limit: 3, window }),
        ..sim_config(50, Duration::from_secs(60))
    })
    .await;
    harness.account("1620").await;
    harness.enqueue("1620", 5001, 5).await;
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the 24-hour limit's pause",
            "SELECT status = 'paused' FROM followq.accounts WHERE user_id = '1620'",
        )
        .await;
    let account = harness.account_row("1620").await;
    assert_eq!(account.pause_reason.as_deref(), Some("user_24h_limit"));
    let reset = account.paused_until.expect("an end");
    let ledger = harness.ledger_of("1620").await;
    assert_eq!(ledger.len(), 3);
    let window = TimeDelta::from_std(window).unwrap();
    assert!(
        reset >= ledger[0].sent_at + window
            && reset <= ledger[0].completed_at.unwrap() + window + TimeDelta::seconds(1),
        "paused until {reset}, not the 24-hour window's reset"
    );
    assert_eq!(harness.sim.stats_now().user("1620").requests, 3);

    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let user = harness.user("1620").await;
    assert_eq!(
        (user.requests, user.follows, user.user_24h_limited),
        (5, 5, 0),
        "{user:?}"
    );
    let ledger = harness.ledger_of("1620").await;
    assert!(
        ledger[3].sent_at >= reset,
        "sent at {} before the reset {reset}",
        ledger[3].sent_at
    );
}

/// `app_24h_limit` (the app-wide stop of README's `followq.app_pause`):
/// `x-app-limit-24hour-remaining: 0` stops every account until that header's reset, window
/// after window, those with work enqueued during a stop included; X never answers 429.
///
/// Guards: `app_header_stop` in `worker::decision` (removed: the 4th request goes out at
/// once and X answers 429), and the scheduler's `AppStopSeen` hold, which keeps a stop a job
/// has just met while the app monitor, having read the table before it was written, reports
/// the previous window's stop lifted (without it, a request went out into the spent window
/// and got a 429 in 8 runs of 10: the interleaving depends on the monitor's poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_24_hour_limit_stops_every_account_until_its_reset() {
    let _scenario = shared().await;
    let window = Duration::from_secs(2);
    let harness = Harness::new(SimConfig {
        app_24h_limit: Some(DayLimit { limit: 3, window }),
        ..sim_config(50, Duration::from_secs(60))
    })
    .await;
    harness.account("1630").await;
    harness.account("1631").await;
    harness.enqueue("1630", 5001, 7).await;
    let daemon = harness.start().await;
    harness
        .wait_until(
            LIMIT,
            "the app stopped",
            "SELECT count(*) = 1 FROM followq.app_pause WHERE reason = 'app_24h_limit'",
        )
        .await;
    let first = harness.app_pause().await.expect("the stop");
    let reset = first.paused_until.expect("an end");
    let ledger = harness.ledger_of("1630").await;
    assert_eq!(ledger.len(), 3);
    let window = TimeDelta::from_std(window).unwrap();
    assert!(
        reset >= ledger[0].sent_at + window
            && reset <= ledger[0].completed_at.unwrap() + window + TimeDelta::seconds(1),
        "stopped until {reset}, not the app's 24-hour window's reset"
    );

    // The second window's stop: work for another account arrives during it, and exactly
    // the third window's three requests are left.
    harness
        .wait_until(
            LIMIT,
            "the second stop",
            "SELECT (SELECT count(*) FROM followq.attempts WHERE outcome = 'succeeded') = 6 \
             AND EXISTS (SELECT 1 FROM followq.app_pause WHERE paused_until > now())",
        )
        .await;
    let second = harness.app_pause().await.expect("the stop");
    let reset = second.paused_until.expect("an end");
    harness.enqueue("1631", 5001, 2).await;

    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let stats = harness.stats().await;
    assert_eq!(stats.totals.all_users.follows, 9);
    assert_eq!(
        (
            stats.totals.all_users.app_24h_limited,
            stats.totals.all_users.by_status.get(&429)
        ),
        (0, None),
        "{stats:?}"
    );
    let ledger = harness.ledger_of("1631").await;
    assert!(
        ledger.iter().all(|r| r.sent_at >= reset),
        "sent before the reset {reset}: {ledger:?}"
    );
    let ledger = harness.ledger_of("1630").await;
    assert!(ledger[6].sent_at >= reset, "{ledger:?}");
}

/// An operator's `pause`, then `disable`, while the daemon runs: the request in flight is
/// answered and recorded, no other starts, the jobs stay queued without spending an attempt;
/// after `resume` the daemon carries on.
///
/// Guards: `admin::accounts::{pause, disable}` drop the lease, and the claim statement
/// (`store::claim`) re-checks the account's status. Either alone keeps the account quiet;
/// checked by removing both: the daemon goes on sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pause_or_disable_stops_the_running_daemon() {
    let _scenario = shared().await;
    let harness = Harness::new(sim_config(50, Duration::from_secs(60))).await;
    harness.account("1640").await;
    harness.enqueue("1640", 5001, 6).await;
    // Slow answers: when a request is seen, it is still in flight for a while.
    harness
        .sim
        .set_answer_delay("1640", Some(Duration::from_millis(400)));
    let user = UserId::parse("1640").unwrap();
    let daemon = harness.start().await;

    let recorded = [
        "SELECT count(*) = 2 FROM followq.attempts WHERE outcome IS NOT NULL",
        "SELECT count(*) = 4 FROM followq.attempts WHERE outcome IS NOT NULL",
    ];
    for ((seen, stop_it), recorded) in [(2, "pause"), (4, "disable")].into_iter().zip(recorded) {
        harness
            .sim_wait(LIMIT, "the request in flight", |s| {
                s.user("1640").requests == seen
            })
            .await;
        if stop_it == "pause" {
            followq::admin::accounts::pause(&harness.db.pool, &user, None)
                .await
                .unwrap();
        } else {
            followq::admin::accounts::disable(&harness.db.pool, &user)
                .await
                .unwrap();
        }
        // Recorded with its job, which finishes: a NOTIFY wakes the wait.
        harness
            .wait_finished(LIMIT, "the answer in flight recorded", recorded)
            .await;
        tokio::time::sleep(QUIET).await;
        assert_eq!(
            harness.sim.stats_now().user("1640").requests,
            seen,
            "no request after the {stop_it}"
        );
        let jobs = harness.jobs_of("1640").await;
        let succeeded = jobs.iter().filter(|j| j.state == "succeeded").count();
        assert_eq!(succeeded, seen as usize, "{stop_it}: {jobs:?}");
        assert!(
            jobs.iter()
                .filter(|j| j.state != "succeeded")
                .all(|j| j.state == "queued" && j.attempts == 0),
            "{stop_it}: {jobs:?}"
        );
        let account = harness.account_row("1640").await;
        let expected = if stop_it == "pause" {
            ("paused", Some("operator"))
        } else {
            ("disabled", None)
        };
        assert_eq!(
            (account.status.as_str(), account.pause_reason.as_deref()),
            expected
        );
        followq::admin::accounts::resume(&harness.db.pool, &user)
            .await
            .unwrap();
    }

    harness.wait_all_finished(LIMIT).await;
    daemon
        .stop()
        .await
        .expect("the daemon stops within its grace");
    let stats = harness.user("1640").await;
    assert_eq!(
        (stats.requests, stats.follows, stats.max_in_flight),
        (6, 6, 1)
    );
}
