//! The token endpoint: rotating single-use refresh tokens, reuse, revocation of the family,
//! expiring access tokens, and client authentication.

use std::time::Duration;

use followq::sim::SimConfig;

use crate::{Sim, roomy};

#[tokio::test]
async fn refresh_tokens_rotate_and_are_single_use() {
    let sim = Sim::start(SimConfig {
        revoke_family_on_reuse: false,
        ..roomy()
    });
    let first = sim.handle.add_user("30");

    let (status, body) = sim.refresh(&first.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 7200);
    let access = body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let refresh = body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    assert_ne!(access, first.access_token);
    assert_ne!(refresh, first.refresh_token);
    assert_eq!(sim.follow(&access, "30", "5").await.status, 200);

    let (status, body) = sim.refresh(&first.refresh_token).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"error": "invalid_request", "error_description": "Value passed for the token was invalid."})
    );
    // Without revocation the rotated pair still works.
    assert_eq!(sim.follow(&access, "30", "6").await.status, 200);
    assert_eq!(sim.refresh(&refresh).await.0, 200);

    let (status, _) = sim.refresh("never-issued").await;
    assert_eq!(status, 400);

    let stats = sim.handle.stats().await;
    let user = stats.user("30");
    assert_eq!((user.refreshes, user.refresh_reuses), (2, 1));
    assert_eq!(stats.totals.token_rejected, 1);
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_revokes_the_family() {
    let sim = Sim::start(roomy());
    let first = sim.handle.add_user("31");
    let (_, body) = sim.refresh(&first.refresh_token).await;
    let access = body["access_token"].as_str().expect("access").to_owned();
    let refresh = body["refresh_token"].as_str().expect("refresh").to_owned();

    assert_eq!(sim.refresh(&first.refresh_token).await.0, 400);
    assert_eq!(
        sim.follow(&access, "31", "5").await.status,
        401,
        "access revoked"
    );
    assert_eq!(sim.refresh(&refresh).await.0, 400, "refresh revoked");

    // Authorizing again gives working tokens.
    let again = sim.handle.add_user("31");
    assert_eq!(sim.follow(&again.access_token, "31", "5").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_with_one_token_succeed_once() {
    let sim = Sim::start(SimConfig {
        revoke_family_on_reuse: false,
        ..roomy()
    });
    let tokens = sim.handle.add_user("32");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, refresh) = (
            sim.client.clone(),
            sim.url("/2/oauth2/token"),
            tokens.refresh_token.clone(),
        );
        set.spawn(async move {
            client
                .post(url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "c"),
                ])
                .send()
                .await
                .expect("answer")
                .status()
                .as_u16()
        });
    }
    let statuses: Vec<u16> = set.join_all().await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 15);
    let user = sim.handle.stats().await.user("32");
    assert_eq!((user.refreshes, user.refresh_reuses), (1, 15));
}

#[tokio::test]
async fn access_tokens_expire_and_a_refresh_brings_them_back() {
    let sim = Sim::start(SimConfig {
        access_token_ttl: Duration::from_secs(1),
        ..roomy()
    });
    let t = sim.handle.add_user("33");
    assert_eq!(sim.follow(&t.access_token, "33", "5").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(sim.follow(&t.access_token, "33", "6").await.status, 401);

    let (status, body) = sim.refresh(&t.refresh_token).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 1);
    let access = body["access_token"].as_str().expect("access");
    assert_eq!(sim.follow(access, "33", "6").await.status, 200);
    let user = sim.handle.stats().await.user("33");
    assert_eq!((user.unauthorized, user.follows), (1, 2));
}

#[tokio::test]
async fn the_token_endpoint_requires_a_client_and_a_form() {
    let sim = Sim::start(SimConfig {
        client_id: Some("the-app".into()),
        ..roomy()
    });
    let t = sim.handle.add_user("34");
    let post = |form: Vec<(&'static str, String)>| {
        sim.client
            .post(sim.url("/2/oauth2/token"))
            .form(&form)
            .send()
    };
    let missing = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", t.refresh_token.clone()),
    ])
    .await
    .expect("answer");
    assert_eq!(missing.status().as_u16(), 400);
    let wrong = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", t.refresh_token.clone()),
        ("client_id", "another-app".into()),
    ])
    .await
    .expect("answer");
    assert_eq!(wrong.status().as_u16(), 401);
    let json_body = sim
        .client
        .post(sim.url("/2/oauth2/token"))
        .json(&serde_json::json!({"grant_type": "refresh_token", "refresh_token": t.refresh_token, "client_id": "the-app"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(json_body.status().as_u16(), 400, "the body must be a form");

    // A confidential client authenticates with HTTP Basic; the refresh token is still unspent.
    let basic = sim
        .client
        .post(sim.url("/2/oauth2/token"))
        .basic_auth("the-app", Some("secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &t.refresh_token),
        ])
        .send()
        .await
        .expect("answer");
    assert_eq!(basic.status().as_u16(), 200);
    assert_eq!(sim.handle.stats().await.totals.token_rejected, 3);
}
