//! The counts tests of the daemon assert on: the most follows within any span of the daily
//! window (per user and for the app), the app's daily follow cap, the requests per (user,
//! target), and the request log with its times and statuses.

use std::time::{Duration, Instant};

use followq::sim::{FaultConfig, SimConfig, TargetRules};

use crate::{Sim, roomy};

#[tokio::test]
async fn max_follows_in_day_is_the_most_in_any_span_of_the_daily_window() {
    let sim = Sim::start(SimConfig {
        daily_cap: Some(3),
        daily_window: Duration::from_secs(2),
        targets: TargetRules {
            protected_ids: ["13".to_owned()].into(),
            ..TargetRules::default()
        },
        ..roomy()
    });
    let t = sim.handle.add_user("70");
    assert_eq!(sim.follow(&t.access_token, "70", "11").await.status, 200);
    // The sim's fixed daily window started before this point.
    let first_answered = Instant::now();
    assert_eq!(sim.follow(&t.access_token, "70", "11").await.status, 200);
    assert_eq!(
        sim.handle.stats().await.user("70").max_follows_in_day,
        1,
        "a repeat is no new follow"
    );

    tokio::time::sleep(Duration::from_millis(1400)).await;
    let late_in_day = Instant::now();
    for target in ["12", "13"] {
        assert_eq!(sim.follow(&t.access_token, "70", target).await.status, 200);
    }
    assert_eq!(
        sim.handle.stats().await.user("70").max_follows_in_day,
        3,
        "a pending follow counts too"
    );

    // The cap's fixed window ends 2 s after the first follow: three more are allowed at once,
    // five follows within 2 s, which a sliding count sees and a per-window count would not.
    tokio::time::sleep(
        (first_answered + Duration::from_millis(2100)).saturating_duration_since(Instant::now()),
    )
    .await;
    for target in ["14", "15", "16"] {
        let reply = sim.follow(&t.access_token, "70", target).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert!(
        late_in_day.elapsed() < Duration::from_secs(2),
        "the machine stalled: the test's premise no longer holds"
    );
    let user = sim.handle.stats().await.user("70");
    assert_eq!(user.daily_capped, 0);
    assert_eq!((user.follows, user.pending), (5, 1));
    assert_eq!(user.max_follows_in_day, 5);
    let totals = sim.handle.stats().await.totals;
    assert_eq!(totals.app_max_follows_in_day, 5);
}

#[tokio::test]
async fn the_app_daily_cap_counts_every_users_follows_together() {
    let sim = Sim::start(SimConfig {
        app_daily_cap: Some(3),
        daily_window: Duration::from_secs(2),
        ..roomy()
    });
    let a = sim.handle.add_user("71");
    let b = sim.handle.add_user("72");
    assert_eq!(sim.follow(&a.access_token, "71", "1").await.status, 200);
    let window_started = Instant::now();
    assert_eq!(sim.follow(&a.access_token, "71", "2").await.status, 200);
    assert_eq!(sim.follow(&b.access_token, "72", "1").await.status, 200);

    let capped = sim.follow(&b.access_token, "72", "2").await;
    assert_eq!(capped.status, 403, "{}", capped.text);
    assert!(
        capped.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("You are unable to follow more people at this time")),
        "the per-user cap's body: {}",
        capped.text
    );
    assert_eq!(
        sim.follow(&a.access_token, "71", "1").await.status,
        200,
        "a repeat is no new follow"
    );

    tokio::time::sleep(
        (window_started + Duration::from_millis(2100)).saturating_duration_since(Instant::now()),
    )
    .await;
    let next_day = sim.follow(&b.access_token, "72", "2").await;
    assert_eq!(next_day.status, 200, "a new app day: {}", next_day.text);

    let stats = sim.handle.stats().await;
    assert_eq!(stats.totals.app_daily_capped, 1);
    assert_eq!(stats.totals.app_max_follows_in_day, 3);
    let (ua, ub) = (stats.user("71"), stats.user("72"));
    assert_eq!((ua.follows, ub.follows), (2, 2));
    assert_eq!(
        (ua.daily_capped, ub.daily_capped),
        (0, 0),
        "not the user's own cap"
    );
    assert_eq!(ub.by_status.get(&403), Some(&1));
    assert_eq!(
        (ua.max_follows_in_day, ub.max_follows_in_day),
        (2, 1),
        "72's follows are more than a daily window apart"
    );
}

#[tokio::test]
async fn requests_are_counted_per_user_and_target_whatever_their_answer() {
    let sim = Sim::start(SimConfig {
        window_requests: 4,
        ..roomy()
    });
    let a = sim.handle.add_user("73");
    let b = sim.handle.add_user("74");
    for target in ["5", "5", "6"] {
        sim.follow(&a.access_token, "73", target).await;
    }
    let bad = sim
        .follow_raw(
            &a.access_token,
            "73",
            "application/json",
            r#"{"target_user_id":"x"}"#.into(),
        )
        .await
        .expect("an answer");
    assert_eq!(bad.status, 400);
    let over = sim.follow(&a.access_token, "73", "7").await;
    assert_eq!(over.status, 429);
    sim.follow(&b.access_token, "74", "5").await;

    let by_target = sim.handle.requests_by_target("73");
    let expected: Vec<(&str, u64)> = vec![("5", 2), ("6", 1), ("7", 1)];
    assert_eq!(
        by_target
            .iter()
            .map(|(t, n)| (t.as_str(), *n))
            .collect::<Vec<_>>(),
        expected,
        "an invalid body names no target"
    );
    let pairs = sim.handle.requests_by_pair();
    assert_eq!(pairs.len(), 4);
    assert_eq!(pairs.get(&("74".to_owned(), "5".to_owned())), Some(&1));
    assert!(sim.handle.requests_by_target("75").is_empty());
}

#[tokio::test]
async fn the_request_log_has_every_request_with_its_times_and_status() {
    let sim = Sim::start(roomy());
    let t = sim.handle.add_user("76");
    let before = Instant::now();
    assert_eq!(sim.follow(&t.access_token, "76", "5").await.status, 200);
    assert_eq!(sim.follow("no-such-token", "77", "6").await.status, 401);
    sim.handle
        .set_answer_delay("76", Some(Duration::from_millis(300)));
    assert_eq!(sim.follow(&t.access_token, "76", "7").await.status, 200);
    sim.handle.set_answer_delay("76", None);
    sim.handle.set_faults(FaultConfig {
        drop: 1.0,
        ..FaultConfig::default()
    });
    let dropped = sim
        .follow_raw(
            &t.access_token,
            "76",
            "application/json",
            r#"{"target_user_id":"8"}"#.into(),
        )
        .await;
    assert!(dropped.is_err(), "{dropped:?}");
    let after = Instant::now();
    sim.handle.stats().await;

    let log = sim.handle.request_log();
    let seen: Vec<(&str, Option<&str>, Option<u16>)> = log
        .iter()
        .map(|r| (r.user_id.as_str(), r.target.as_deref(), r.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("76", Some("5"), Some(200)),
            ("77", Some("6"), Some(401)),
            ("76", Some("7"), Some(200)),
            ("76", Some("8"), None),
        ]
    );
    for entry in &log {
        assert!(before <= entry.received_at, "{entry:?}");
        assert!(entry.received_at <= entry.answered_at, "{entry:?}");
        assert!(entry.answered_at <= after, "{entry:?}");
    }
    assert!(
        log[2].answered_at - log[2].received_at >= Duration::from_millis(300),
        "the slow answer: {:?}",
        log[2]
    );
    assert!(log[0].answered_at - log[0].received_at < Duration::from_millis(300));
    for pair in log.windows(2) {
        assert!(pair[0].answered_at <= pair[1].received_at, "one at a time");
    }

    let quiet = Sim::start(SimConfig {
        request_log: false,
        ..roomy()
    });
    let q = quiet.handle.add_user("78");
    assert_eq!(quiet.follow(&q.access_token, "78", "5").await.status, 200);
    assert!(quiet.handle.request_log().is_empty());
}
