//! The controls tests of the daemon use to stage scenarios: answers without rate-limit
//! headers, slow answers for one user, refused tokens, a held token endpoint, the in-flight
//! figures that prove one request per account at a time, and waiting for a figure.

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
async fn refused_tokens_get_401_while_refreshes_still_work() {
    let sim = Sim::start(roomy());
    let tokens = sim.handle.add_user("10");
    sim.handle.set_tokens_refused("10", true);
    assert_eq!(
        sim.follow(&tokens.access_token, "10", "1001").await.status,
        401
    );
    let (status, body) = sim.refresh(&tokens.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["access_token"].as_str().expect("access token");
    assert_eq!(
        sim.follow(fresh, "10", "1001").await.status,
        401,
        "a fresh token is refused too"
    );
    sim.handle.set_tokens_refused("10", false);
    assert_eq!(sim.follow(fresh, "10", "1001").await.status, 200);
    let user = sim.handle.stats().await.user("10");
    assert_eq!(
        (user.unauthorized, user.refreshes, user.requests),
        (2, 1, 1),
        "refused requests are not counted in the window: {user:?}"
    );
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

#[tokio::test]
async fn a_test_can_wait_for_a_figure_without_polling() {
    let sim = Sim::start(roomy());
    let tokens = sim.handle.add_user("10");
    sim.handle
        .set_answer_delay("10", Some(Duration::from_millis(800)));
    let request = {
        let (client, url, token) = (
            crate::client(),
            sim.url("/2/users/10/following"),
            tokens.access_token.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({"target_user_id": "1001"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let arrived = sim
        .handle
        .wait_for(Duration::from_secs(5), |s| s.user("10").requests == 1)
        .await
        .expect("the request is counted on arrival");
    assert_eq!(arrived.user("10").requests, 1);
    assert!(
        !request.is_finished(),
        "seen on arrival, before its slow answer"
    );
    assert_eq!(request.await.expect("task").expect("answer"), 200);

    let never = sim
        .handle
        .wait_for(Duration::from_millis(200), |s| s.user("10").requests == 2)
        .await;
    assert!(
        never.is_err_and(|last| last.user("10").requests == 1),
        "a figure that never comes times out with the last figures"
    );
}
