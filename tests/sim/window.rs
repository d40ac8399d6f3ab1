//! The fixed window per user: counting, the `x-rate-limit-*` headers, 429 past the limit, a
//! new window after the old one ends, and requests spent by another app (`prespend`).

use std::time::Duration;

use followq::sim::SimConfig;

use crate::{Sim, epoch_now};

fn five_per(window: Duration) -> SimConfig {
    SimConfig {
        window_requests: 5,
        window,
        daily_cap: None,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn counts_requests_in_a_fixed_window_and_refuses_past_the_limit() {
    let window = Duration::from_secs(4);
    let sim = Sim::start(five_per(window));
    let tokens = sim.handle.add_user("10");

    let before = epoch_now();
    let first = sim.follow(&tokens.access_token, "10", "1001").await;
    let after = epoch_now();
    assert_eq!(first.status, 200);
    assert_eq!(first.limit, Some(5));
    assert_eq!(first.remaining, Some(4));
    let reset = first.reset.expect("reset header");
    // Window start + 4 s, rounded up to a whole second.
    assert!(
        reset as f64 >= before + 4.0 && reset as f64 <= (after + 4.0).ceil(),
        "reset {reset} not within [{before}+4, ceil({after}+4)]"
    );

    for (i, target) in ["1002", "1003", "1004", "1005"].iter().enumerate() {
        let reply = sim.follow(&tokens.access_token, "10", target).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.remaining, Some(3 - i as u64));
        assert_eq!(reply.reset, Some(reset), "one window, one reset");
    }

    let over = sim.follow(&tokens.access_token, "10", "1006").await;
    assert_eq!(over.status, 429);
    assert_eq!(over.content_type, "application/problem+json");
    assert_eq!(over.json["title"], "Too Many Requests");
    assert_eq!(over.json["status"], 429);
    assert_eq!(
        (over.limit, over.remaining, over.reset),
        (Some(5), Some(0), Some(reset))
    );
    let again = sim.follow(&tokens.access_token, "10", "1006").await;
    assert_eq!(again.status, 429, "rejected requests count too");

    let stats = sim.handle.stats().await.user("10");
    assert_eq!(stats.requests, 7);
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.max_requests_in_window, 7);
    assert_eq!(stats.follows, 5);
    assert_eq!(stats.windows, 1);

    // Past the reset second the next request opens a new window, starting at that request.
    let wait = reset as f64 - epoch_now() + 0.2;
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    let before = epoch_now();
    let fresh = sim.follow(&tokens.access_token, "10", "1006").await;
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.remaining, Some(4));
    let new_reset = fresh.reset.expect("reset header");
    assert!(
        new_reset as f64 >= before + 4.0,
        "the new window starts at its first request"
    );

    let stats = sim.handle.stats().await.user("10");
    assert_eq!(stats.windows, 2);
    assert_eq!(stats.requests, 8);
    assert_eq!(
        stats.max_requests_in_window, 7,
        "the first window held the most"
    );
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn an_idle_gap_does_not_carry_requests_over() {
    // A window is not sliding: 3 requests late in one window and 5 early in the next are all
    // allowed, although 8 fall within less than one window length.
    let window = Duration::from_secs(2);
    let sim = Sim::start(five_per(window));
    let tokens = sim.handle.add_user("11");
    for target in 1..=3 {
        let reply = sim
            .follow(&tokens.access_token, "11", &target.to_string())
            .await;
        assert_eq!(reply.status, 200);
    }
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    for target in 4..=8 {
        let reply = sim
            .follow(&tokens.access_token, "11", &target.to_string())
            .await;
        assert_eq!(reply.status, 200, "request {target}");
    }
    let sixth = sim.follow(&tokens.access_token, "11", "9").await;
    assert_eq!(sixth.status, 429);
    let stats = sim.handle.stats().await.user("11");
    assert_eq!((stats.windows, stats.max_requests_in_window), (2, 6));
}

#[tokio::test]
async fn requests_another_app_spent_shrink_the_window() {
    let sim = Sim::start(five_per(Duration::from_secs(60)));
    let tokens = sim.handle.add_user("12");
    sim.handle.prespend("12", 4);
    let first = sim.follow(&tokens.access_token, "12", "2").await;
    assert_eq!((first.status, first.remaining), (200, Some(0)));
    let second = sim.follow(&tokens.access_token, "12", "3").await;
    assert_eq!(second.status, 429);

    let stats = sim.handle.stats().await.user("12");
    assert_eq!(stats.requests, 2);
    assert_eq!(
        stats.max_requests_in_window, 2,
        "only requests received over HTTP"
    );
    assert_eq!(stats.max_window_usage, 6, "prespent ones included");
    assert_eq!(stats.rate_limited, 1);
}

#[tokio::test]
async fn users_have_separate_windows() {
    let sim = Sim::start(five_per(Duration::from_secs(60)));
    let a = sim.handle.add_user("13");
    let b = sim.handle.add_user("14");
    for target in 1..=5 {
        assert_eq!(
            sim.follow(&a.access_token, "13", &target.to_string())
                .await
                .status,
            200
        );
    }
    assert_eq!(sim.follow(&a.access_token, "13", "6").await.status, 429);
    let other = sim.follow(&b.access_token, "14", "6").await;
    assert_eq!((other.status, other.remaining), (200, Some(4)));
}
