//! Prepaid credits (X's pay-per-use billing): what spends one, the 402 `CreditsDepleted` once
//! none is left (outside the window, costing nothing), topping up, and exactness when many
//! requests race for the last credits.

use followq::sim::{FaultConfig, SimConfig, TargetRules};

use crate::{Sim, client, roomy};

fn with_credits(credits: u64) -> SimConfig {
    SimConfig {
        credits: Some(credits),
        targets: TargetRules {
            blocking_ids: ["99".to_owned()].into(),
            ..TargetRules::default()
        },
        ..roomy()
    }
}

#[tokio::test]
async fn requests_acted_on_spend_credits_and_none_left_means_402() {
    let sim = Sim::start(with_credits(3));
    let a = sim.handle.add_user("80");
    let b = sim.handle.add_user("81");
    assert_eq!(sim.follow(&a.access_token, "80", "1").await.status, 200);
    let blocked = sim.follow(&a.access_token, "80", "99").await;
    assert_eq!(blocked.status, 403, "a refusal costs nothing");
    assert_eq!(
        sim.follow(&a.access_token, "80", "1").await.status,
        200,
        "a repeat is a 200 too"
    );
    let stats = sim.handle.stats().await.totals;
    assert_eq!((stats.credits_spent, stats.credits_left), (2, Some(1)));
    let last = sim.follow(&a.access_token, "80", "2").await;
    assert_eq!((last.status, last.remaining), (200, Some(996)));

    let depleted = sim.follow(&a.access_token, "80", "3").await;
    assert_eq!(depleted.status, 402, "{}", depleted.text);
    assert!(depleted.content_type.starts_with("application/json"));
    assert_eq!(depleted.json["title"], "CreditsDepleted");
    assert_eq!(
        depleted.text.len(),
        185,
        "the content-length of X's recorded 402s: {}",
        depleted.text
    );
    assert!(depleted.problem_type().ends_with("/2/problems/credits"));
    let detail = depleted.json["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("Your enrolled account [")
            && detail.ends_with("] does not have any credits to fulfill this request."),
        "{detail}"
    );
    assert_eq!(
        (depleted.limit, depleted.remaining, depleted.reset),
        (None, None, None),
        "not counted in the window"
    );
    assert_eq!(
        sim.follow(&b.access_token, "81", "3").await.status,
        402,
        "credits are the app's"
    );

    let stats = sim.handle.stats().await;
    assert_eq!(stats.totals.credits_spent, 3);
    assert_eq!(stats.totals.payment_required, 2);
    assert_eq!(stats.totals.credits_left, Some(0));
    let user = stats.user("80");
    assert_eq!(user.requests, 4, "a 402 is not one of the user's requests");
    assert_eq!(user.by_status.get(&402), None);
    assert_eq!(
        sim.handle.requests_by_target("80").get("3"),
        Some(&1),
        "but it reached the simulator"
    );

    sim.handle.top_up(1);
    let topped = sim.follow(&a.access_token, "80", "3").await;
    assert_eq!(topped.status, 200, "{}", topped.text);
    assert_eq!(topped.remaining, Some(995), "the 402 took no place in it");
    assert_eq!(sim.follow(&a.access_token, "80", "4").await.status, 402);

    sim.handle.set_credits(None);
    assert_eq!(sim.follow(&a.access_token, "80", "4").await.status, 200);
    sim.handle.top_up(5);
    let stats = sim.handle.stats().await.totals;
    assert_eq!(stats.credits_left, None, "unlimited stays unlimited");
    assert_eq!(stats.credits_spent, 5, "counted when unlimited too");
    assert_eq!(stats.payment_required, 3);
}

#[tokio::test]
async fn faults_spend_a_credit_only_when_the_follow_was_made() {
    let sim = Sim::start(with_credits(10));
    let a = sim.handle.add_user("82");
    let mut target = 0u64;
    let mut send = async |faults: FaultConfig| {
        sim.handle.set_faults(faults);
        target += 1;
        sim.follow_raw(
            &a.access_token,
            "82",
            "application/json",
            format!(r#"{{"target_user_id":"{target}"}}"#),
        )
        .await
        .ok()
        .map(|reply| reply.status)
    };
    let fail_5xx = send(FaultConfig {
        fail_5xx: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let errors_200 = send(FaultConfig {
        errors_200: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let applied = send(FaultConfig {
        applied_5xx: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let dropped = send(FaultConfig {
        drop: 1.0,
        ..FaultConfig::default()
    })
    .await;
    assert!(matches!(fail_5xx, Some(500 | 503)), "{fail_5xx:?}");
    assert_eq!(errors_200, Some(200));
    assert!(matches!(applied, Some(500 | 503)), "{applied:?}");
    assert_eq!(dropped, None);

    let stats = sim.handle.stats().await;
    assert_eq!(stats.user("82").follows, 2);
    assert_eq!(
        (stats.totals.credits_spent, stats.totals.credits_left),
        (2, Some(8)),
        "the applied 5xx and the dropped follow were acted on; the others were not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_never_act_on_more_credits_than_there_are() {
    const CREDITS: u64 = 20;
    let sim = Sim::start(with_credits(CREDITS));
    let users: Vec<(String, String)> = (0..5)
        .map(|n| {
            let id = (830 + n).to_string();
            let token = sim.handle.add_user(&id).access_token;
            (id, token)
        })
        .collect();
    let mut requests = tokio::task::JoinSet::new();
    for (id, token) in &users {
        for target in 1..=10 {
            let (id, token, client, base) =
                (id.clone(), token.clone(), client(), sim.handle.base_url());
            requests.spawn(async move {
                client
                    .post(format!("{base}/2/users/{id}/following"))
                    .bearer_auth(token)
                    .json(&serde_json::json!({"target_user_id": target.to_string()}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            });
        }
    }
    let statuses = requests.join_all().await;
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    let payment = statuses.iter().filter(|s| **s == 402).count() as u64;
    assert_eq!((ok, payment), (CREDITS, 50 - CREDITS), "{statuses:?}");
    let stats = sim.handle.stats().await.totals;
    assert_eq!(stats.all_users.follows, CREDITS);
    assert_eq!(
        (
            stats.credits_spent,
            stats.payment_required,
            stats.credits_left
        ),
        (CREDITS, 50 - CREDITS, Some(0))
    );
}
