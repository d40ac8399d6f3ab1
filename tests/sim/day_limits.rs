//! The 24-hour limits: `x-user-limit-24hour-*` per user and `x-app-limit-24hour-*` for every
//! user's requests together, reported on every counted answer and enforced with 429; off
//! unless configured, and left out with the other rate-limit headers.

use std::time::Duration;

use followq::sim::{DayLimit, SimConfig};

use crate::{Reply, Sim, epoch_now, roomy};

fn user_day(reply: &Reply) -> (Option<u64>, Option<u64>, Option<u64>) {
    (
        reply.number("x-user-limit-24hour-limit"),
        reply.number("x-user-limit-24hour-remaining"),
        reply.number("x-user-limit-24hour-reset"),
    )
}

fn app_day(reply: &Reply) -> (Option<u64>, Option<u64>, Option<u64>) {
    (
        reply.number("x-app-limit-24hour-limit"),
        reply.number("x-app-limit-24hour-remaining"),
        reply.number("x-app-limit-24hour-reset"),
    )
}

#[tokio::test]
async fn the_user_limit_counts_each_users_requests_in_its_own_window() {
    let window = Duration::from_secs(2);
    let sim = Sim::start(SimConfig {
        user_24h_limit: Some(DayLimit { limit: 3, window }),
        ..roomy()
    });
    let a = sim.handle.add_user("40");
    let b = sim.handle.add_user("41");

    let before = epoch_now();
    let first = sim.follow(&a.access_token, "40", "1001").await;
    let after = epoch_now();
    assert_eq!(first.status, 200);
    let (limit, remaining, reset) = user_day(&first);
    assert_eq!((limit, remaining), (Some(3), Some(2)));
    let reset = reset.expect("a reset header");
    assert!(
        reset as f64 >= before + 2.0 && reset as f64 <= (after + 2.0).ceil(),
        "reset {reset} not within [{before}+2, ceil({after}+2)]"
    );
    assert_eq!(
        first.remaining,
        Some(999),
        "the 15-minute window is reported too"
    );
    assert_eq!(
        app_day(&first),
        (None, None, None),
        "no app limit configured"
    );

    for (target, left) in [("1002", 1), ("1003", 0)] {
        let reply = sim.follow(&a.access_token, "40", target).await;
        assert_eq!(reply.status, 200);
        assert_eq!(user_day(&reply), (Some(3), Some(left), Some(reset)));
    }
    let over = sim.follow(&a.access_token, "40", "1004").await;
    assert_eq!(over.status, 429, "{}", over.text);
    assert_eq!(over.json["title"], "Too Many Requests");
    assert_eq!(user_day(&over), (Some(3), Some(0), Some(reset)));

    // Another user has a window of its own.
    let other = sim.follow(&b.access_token, "41", "1001").await;
    assert_eq!(other.status, 200);
    assert_eq!(user_day(&other).1, Some(2));

    // A new window once this one has passed.
    tokio::time::sleep(Duration::from_secs_f64(
        (reset as f64 - epoch_now()).max(0.0) + 0.1,
    ))
    .await;
    let again = sim.follow(&a.access_token, "40", "1004").await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(user_day(&again).1, Some(2));

    let stats = sim.handle.stats().await;
    let user = stats.user("40");
    assert_eq!(
        (
            user.requests,
            user.follows,
            user.user_24h_limited,
            user.rate_limited
        ),
        (5, 4, 1, 0)
    );
    assert_eq!(user.by_status.get(&429), Some(&1));
}

#[tokio::test]
async fn the_app_limit_counts_every_users_requests_together() {
    let sim = Sim::start(SimConfig {
        app_24h_limit: Some(DayLimit {
            limit: 3,
            window: Duration::from_secs(60),
        }),
        ..roomy()
    });
    let a = sim.handle.add_user("50");
    let b = sim.handle.add_user("51");
    let first = sim.follow(&a.access_token, "50", "1001").await;
    let (limit, remaining, reset) = app_day(&first);
    assert_eq!((limit, remaining), (Some(3), Some(2)));
    assert!(reset.is_some());
    assert_eq!(
        user_day(&first),
        (None, None, None),
        "no user limit configured"
    );
    assert_eq!(
        app_day(&sim.follow(&b.access_token, "51", "1001").await),
        (Some(3), Some(1), reset)
    );
    assert_eq!(
        app_day(&sim.follow(&a.access_token, "50", "1002").await),
        (Some(3), Some(0), reset)
    );
    let over = sim.follow(&b.access_token, "51", "1002").await;
    assert_eq!(over.status, 429);
    assert_eq!(app_day(&over), (Some(3), Some(0), reset));

    let stats = sim.handle.stats().await;
    assert_eq!(stats.user("51").app_24h_limited, 1);
    assert_eq!(stats.user("50").app_24h_limited, 0);
    assert_eq!(stats.totals.all_users.follows, 3);
}

#[tokio::test]
async fn without_rate_limit_headers_the_day_limits_are_enforced_unreported() {
    let sim = Sim::start(SimConfig {
        user_24h_limit: Some(DayLimit {
            limit: 1,
            window: Duration::from_secs(60),
        }),
        app_24h_limit: Some(DayLimit {
            limit: 10,
            window: Duration::from_secs(60),
        }),
        rate_limit_headers: false,
        ..roomy()
    });
    let a = sim.handle.add_user("60");
    let first = sim.follow(&a.access_token, "60", "1001").await;
    assert_eq!(first.status, 200);
    assert_eq!(user_day(&first), (None, None, None));
    assert_eq!(app_day(&first), (None, None, None));
    let over = sim.follow(&a.access_token, "60", "1002").await;
    assert_eq!(over.status, 429);
    assert_eq!(user_day(&over), (None, None, None));
}
