//! The follow endpoint's rules past the window: authentication, the strict body, who may act,
//! protected, repeated and unknown targets, the daily cap, and the app-wide switches.

use std::time::Duration;

use followq::sim::{SimConfig, TargetRules, UsageCap, UsagePeriod, UsageScope};

use crate::{Sim, read, roomy};

#[tokio::test]
async fn protected_targets_are_pending_and_repeats_are_no_ops() {
    let sim = Sim::start(SimConfig {
        targets: TargetRules {
            protected_every: Some(7),
            ..TargetRules::default()
        },
        ..roomy()
    });
    let t = sim.handle.add_user("20");

    let pending = sim.follow(&t.access_token, "20", "14").await;
    assert_eq!(pending.status, 200);
    assert_eq!(pending.json["data"]["following"], false);
    assert_eq!(pending.json["data"]["pending_follow"], true);
    let pending_again = sim.follow(&t.access_token, "20", "14").await;
    assert_eq!(
        pending_again.json, pending.json,
        "a repeated request stays pending"
    );

    let public = sim.follow(&t.access_token, "20", "15").await;
    assert_eq!(public.json["data"]["following"], true);
    assert_eq!(public.json["data"]["pending_follow"], false);
    let public_again = sim.follow(&t.access_token, "20", "15").await;
    assert_eq!(
        (public_again.status, &public_again.json),
        (200, &public.json)
    );

    let stats = sim.handle.stats().await.user("20");
    assert_eq!((stats.follows, stats.pending, stats.repeated), (1, 1, 2));
    assert_eq!(stats.requests, 4);
}

#[tokio::test]
async fn unknown_targets_are_not_found() {
    let sim = Sim::start(SimConfig {
        targets: TargetRules {
            unknown_every: Some(1000),
            unknown_ids: ["77".to_owned()].into(),
            ..TargetRules::default()
        },
        ..roomy()
    });
    let t = sim.handle.add_user("21");
    for target in ["3000", "77"] {
        let reply = sim.follow(&t.access_token, "21", target).await;
        assert_eq!(reply.status, 404, "target {target}");
        assert!(reply.problem_type().ends_with("/resource-not-found"));
        assert!(
            reply.remaining.is_some(),
            "rate headers on every user answer"
        );
    }
    assert_eq!(sim.follow(&t.access_token, "21", "3001").await.status, 200);
    assert_eq!(sim.handle.stats().await.user("21").follows, 1);
}

#[tokio::test]
async fn the_body_must_be_exactly_one_target_id() {
    let sim = Sim::start(roomy());
    let t = sim.handle.add_user("22");
    let bad_bodies = [
        r#"{"target_user_id":"5","extra":1}"#,
        r#"{"target_user_id":5}"#,
        r#"{"target_user_id":"12345678901234567890"}"#,
        r#"{"target_user_id":""}"#,
        r#"{"target_user_id":"5a"}"#,
        r#"{}"#,
        r#"["5"]"#,
        r#"{"target_user_id":"5""#,
        "",
    ];
    for body in bad_bodies {
        let reply = sim
            .follow_raw(&t.access_token, "22", "application/json", body.to_owned())
            .await
            .expect("an answer");
        assert_eq!(reply.status, 400, "body {body}");
        assert_eq!(reply.json["title"], "Invalid Request", "body {body}");
        assert!(reply.problem_type().ends_with("/invalid-request"));
        assert!(reply.json["errors"][0]["message"].is_string());
        assert!(reply.json["errors"][0]["parameters"].is_object());
    }
    let wrong_type = sim
        .follow_raw(
            &t.access_token,
            "22",
            "text/plain",
            r#"{"target_user_id":"5"}"#.into(),
        )
        .await
        .expect("an answer");
    assert_eq!(wrong_type.status, 400);
    let bad_path = sim.follow(&t.access_token, "2x2", "5").await;
    assert_eq!(bad_path.status, 400);
    let self_follow = sim.follow(&t.access_token, "22", "22").await;
    assert_eq!(self_follow.status, 400);
    assert!(self_follow.problem_type().ends_with("/invalid-request"));

    // Whitespace is still exactly one field, and the charset parameter is fine.
    let spaced = sim
        .follow_raw(
            &t.access_token,
            "22",
            "application/json; charset=utf-8",
            "{ \"target_user_id\" : \"5\" }".into(),
        )
        .await
        .expect("an answer");
    assert_eq!(spaced.status, 200);

    let stats = sim.handle.stats().await.user("22");
    assert_eq!(stats.requests, bad_bodies.len() as u64 + 4);
    assert_eq!(
        stats.by_status.get(&400),
        Some(&(bad_bodies.len() as u64 + 3))
    );
    assert_eq!(stats.follows, 1);
}

#[tokio::test]
async fn tokens_act_only_for_their_own_user() {
    let sim = Sim::start(roomy());
    let a = sim.handle.add_user("23");
    sim.handle.add_user("24");
    let reply = sim.follow(&a.access_token, "24", "5").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.content_type, "application/problem+json");
    let stats = sim.handle.stats().await;
    assert_eq!(stats.user("23").requests, 1, "charged to the token's user");
    assert_eq!(stats.user("24").requests, 0);
    assert_eq!(stats.user("24").follows + stats.user("23").follows, 0);
}

#[tokio::test]
async fn unknown_expired_and_app_only_tokens_are_refused() {
    let sim = Sim::start(roomy());
    let t = sim.handle.add_user("25");
    sim.handle.add_app_only_token("app-only");

    let unknown = sim.follow("no-such-token", "25", "5").await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.content_type, "application/problem+json");
    assert_eq!(unknown.json["title"], "Unauthorized");
    assert_eq!(unknown.remaining, None);
    let none = read(
        sim.client
            .post(sim.url("/2/users/25/following"))
            .json(&serde_json::json!({"target_user_id": "5"}))
            .send()
            .await
            .expect("answer"),
    )
    .await
    .expect("body");
    assert_eq!(none.status, 401);

    let app = sim.follow("app-only", "25", "5").await;
    assert_eq!(app.status, 403);
    assert!(app.problem_type().ends_with("/unsupported-authentication"));

    assert_eq!(sim.follow(&t.access_token, "25", "5").await.status, 200);
    sim.handle.expire_access_token("25");
    let expired = sim.follow(&t.access_token, "25", "6").await;
    assert_eq!(expired.status, 401);

    let stats = sim.handle.stats().await;
    assert_eq!(stats.totals.unauthenticated, 2);
    assert_eq!(stats.totals.app_only, 1);
    let user = stats.user("25");
    assert_eq!((user.requests, user.unauthorized, user.follows), (1, 1, 1));
}

#[tokio::test]
async fn the_daily_cap_stops_new_follows_but_not_repeats() {
    let sim = Sim::start(SimConfig {
        daily_cap: Some(3),
        daily_window: Duration::from_secs(3),
        ..roomy()
    });
    let t = sim.handle.add_user("27");
    for target in ["1", "2", "3"] {
        assert_eq!(sim.follow(&t.access_token, "27", target).await.status, 200);
    }
    let capped = sim.follow(&t.access_token, "27", "4").await;
    assert_eq!(capped.status, 403);
    assert!(
        capped.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("You are unable to follow more people at this time")),
        "{}",
        capped.text
    );
    let repeat = sim.follow(&t.access_token, "27", "1").await;
    assert_eq!(repeat.status, 200, "a repeat is a no-op, not a new follow");

    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(
        sim.follow(&t.access_token, "27", "4").await.status,
        200,
        "a new day"
    );
    let stats = sim.handle.stats().await.user("27");
    assert_eq!(
        (stats.follows, stats.daily_capped, stats.repeated),
        (4, 1, 1)
    );
}

#[tokio::test]
async fn app_wide_switches_refuse_everyone_until_turned_off() {
    let sim = Sim::start(roomy());
    let t = sim.handle.add_user("28");

    sim.handle.set_app_forbidden(true);
    let forbidden = sim.follow(&t.access_token, "28", "5").await;
    assert_eq!(forbidden.status, 403);
    assert!(forbidden.problem_type().ends_with("/client-forbidden"));
    assert_eq!(forbidden.json["reason"], "client-not-enrolled");
    sim.handle.set_app_forbidden(false);

    sim.handle.set_usage_capped(Some(UsageCap {
        period: UsagePeriod::Monthly,
        scope: UsageScope::Product,
    }));
    let capped = sim.follow(&t.access_token, "28", "5").await;
    assert_eq!(capped.status, 429);
    assert!(capped.problem_type().ends_with("/usage-capped"));
    assert_eq!(capped.json["period"], "Monthly");
    assert_eq!(capped.json["scope"], "Product");
    sim.handle.set_usage_capped(None);

    assert_eq!(sim.follow(&t.access_token, "28", "5").await.status, 200);
    let stats = sim.handle.stats().await.user("28");
    assert_eq!(
        (stats.app_forbidden, stats.usage_capped, stats.follows),
        (1, 1, 1)
    );
    assert_eq!(stats.rate_limited, 0, "a usage cap is not the window");
}

#[tokio::test]
async fn switches_can_be_on_from_the_start() {
    let sim = Sim::start(SimConfig {
        app_forbidden: true,
        ..roomy()
    });
    let t = sim.handle.add_user("29");
    assert_eq!(sim.follow(&t.access_token, "29", "5").await.status, 403);
}
