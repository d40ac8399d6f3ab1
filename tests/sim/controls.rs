//! The controls tests of the daemon use to stage handovers: answers without rate-limit
//! headers, slow answers for one user, a held token endpoint, and the in-flight figures that
//! prove one request per account at a time.

use std::time::Duration;

use followq::sim::SimConfig;

use crate::{Sim, roomy};

#[tokio::test]
async fn without_headers_the_window_is_still_enforced() {
    let sim = Sim::start(SimConfig {
        window_requests: 2,
        rate_limit_headers: false,
        ..roomy()
    });
    let tokens = sim.handle.add_user("10");
    for target in ["1001", "1002"] {
        let reply = sim.follow(&tokens.access_token, "10", target).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            (reply.limit, reply.remaining, reply.reset),
            (None, None, None),
            "no rate-limit headers"
        );
    }
    let over = sim.follow(&tokens.access_token, "10", "1003").await;
    assert_eq!(over.status, 429, "the third request is over the window");
    assert_eq!(over.remaining, None);

    sim.handle.set_rate_limit_headers(true);
    let with = sim.follow(&tokens.access_token, "10", "1004").await;
    assert_eq!((with.limit, with.remaining), (Some(2), Some(0)));
}

#[tokio::test]
async fn overlapping_requests_of_one_user_are_counted() {
    let sim = Sim::start(roomy());
    let tokens = sim.handle.add_user("10");
    sim.handle
        .set_answer_delay("10", Some(Duration::from_millis(400)));

    // Two different targets at once, then the same target twice at once.
    let (a, b) = tokio::join!(
        sim.follow(&tokens.access_token, "10", "1001"),
        sim.follow(&tokens.access_token, "10", "1002"),
    );
    assert_eq!((a.status, b.status), (200, 200));
    let stats = sim.handle.stats().await.user("10");
    assert_eq!(stats.max_in_flight, 2);
    assert_eq!(stats.same_target_overlaps, 0);

    let (c, d) = tokio::join!(
        sim.follow(&tokens.access_token, "10", "1003"),
        sim.follow(&tokens.access_token, "10", "1003"),
    );
    assert_eq!((c.status, d.status), (200, 200));
    let stats = sim.handle.stats().await.user("10");
    assert_eq!(stats.same_target_overlaps, 1);

    // One after the other: never more than one in flight for another user.
    let other = sim.handle.add_user("20");
    for target in ["1001", "1002", "1003"] {
        sim.follow(&other.access_token, "20", target).await;
    }
    assert_eq!(sim.handle.stats().await.user("20").max_in_flight, 1);
}

#[tokio::test]
async fn a_held_token_endpoint_answers_once_released() {
    let sim = Sim::start(roomy());
    let tokens = sim.handle.add_user("10");
    sim.handle.hold_token_endpoint(true);
    let refresh = {
        let sim_client = crate::client();
        let url = sim.url("/2/oauth2/token");
        let refresh_token = tokens.refresh_token.clone();
        tokio::spawn(async move {
            sim_client
                .post(url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.as_str()),
                    ("client_id", "followq-test"),
                ])
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let mut waiting = 0;
    for _ in 0..100 {
        waiting = sim.handle.token_requests_waiting();
        if waiting == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiting, 1, "the refresh waits on the hold");
    assert!(!refresh.is_finished());
    sim.handle.hold_token_endpoint(false);
    let status = refresh.await.expect("task").expect("answer");
    assert_eq!(status, 200);
    assert_eq!(sim.handle.token_requests_waiting(), 0);
}
