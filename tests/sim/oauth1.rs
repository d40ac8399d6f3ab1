//! OAuth 1.0a on the follow endpoint: a request signed with the consumer's and the token's
//! secrets is the token's user; any other signature gets X's 401 and is not counted in the
//! user's window.

use followq::sim::{OAuth1Consumer, SimConfig};
use followq::xapi::oauth1::{OAuth1Keys, authorization_header};
use secrecy::{ExposeSecret, SecretString};

use crate::{Reply, Sim, read, roomy};

const CONSUMER_KEY: &str = "sim-consumer";
const CONSUMER_SECRET: &str = "consumer-secret";
const TOKEN: &str = "26-oauthtoken";
const TOKEN_SECRET: &str = "token-secret";

fn signing_sim() -> Sim {
    let sim = Sim::start(SimConfig {
        oauth1_consumer: Some(OAuth1Consumer {
            key: CONSUMER_KEY.into(),
            secret: CONSUMER_SECRET.into(),
        }),
        ..roomy()
    });
    sim.handle.add_oauth1_user("26", TOKEN, TOKEN_SECRET);
    sim
}

/// The `Authorization` value followq's signer makes for `method url` with these values.
fn signed(
    method: &str,
    url: &str,
    consumer_key: &str,
    consumer_secret: &str,
    token: &str,
    token_secret: &str,
) -> String {
    let (consumer_secret, token, token_secret) = (
        SecretString::from(consumer_secret),
        SecretString::from(token),
        SecretString::from(token_secret),
    );
    let keys = OAuth1Keys {
        consumer_key,
        consumer_secret: &consumer_secret,
        token: &token,
        token_secret: &token_secret,
    };
    let url = reqwest::Url::parse(url).expect("a URL");
    authorization_header(method, &url, &keys)
        .expose_secret()
        .to_owned()
}

/// POST a follow of `target` by user 26 with this `Authorization` value.
async fn follow_with(sim: &Sim, authorization: &str, target: &str) -> Reply {
    read(
        sim.client
            .post(sim.url("/2/users/26/following"))
            .header("authorization", authorization)
            .json(&serde_json::json!({ "target_user_id": target }))
            .send()
            .await
            .expect("an answer"),
    )
    .await
    .expect("a body")
}

#[tokio::test]
async fn a_request_signed_with_both_secrets_acts_for_the_tokens_user() {
    let sim = signing_sim();
    let url = sim.url("/2/users/26/following");
    let auth = signed(
        "POST",
        &url,
        CONSUMER_KEY,
        CONSUMER_SECRET,
        TOKEN,
        TOKEN_SECRET,
    );
    let reply = follow_with(&sim, &auth, "5").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["data"]["following"], true);
    assert_eq!(reply.remaining, Some(999), "counted in the user's window");

    let user = sim.handle.stats().await.user("26");
    assert_eq!(
        (user.requests, user.follows, user.bad_signatures),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn any_other_signature_gets_a_401_and_is_not_counted() {
    let sim = signing_sim();
    let url = sim.url("/2/users/26/following");
    let other_path = sim.url("/2/users/27/following");
    let cases = [
        (
            "wrong consumer secret",
            signed("POST", &url, CONSUMER_KEY, "guess", TOKEN, TOKEN_SECRET),
        ),
        (
            "wrong token secret",
            signed("POST", &url, CONSUMER_KEY, CONSUMER_SECRET, TOKEN, "guess"),
        ),
        (
            "another consumer key",
            signed(
                "POST",
                &url,
                "another-app",
                CONSUMER_SECRET,
                TOKEN,
                TOKEN_SECRET,
            ),
        ),
        (
            "signed for another URL",
            signed(
                "POST",
                &other_path,
                CONSUMER_KEY,
                CONSUMER_SECRET,
                TOKEN,
                TOKEN_SECRET,
            ),
        ),
        (
            "signed for another method",
            signed(
                "GET",
                &url,
                CONSUMER_KEY,
                CONSUMER_SECRET,
                TOKEN,
                TOKEN_SECRET,
            ),
        ),
    ];
    for (what, auth) in &cases {
        let reply = follow_with(&sim, auth, "5").await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.text);
        assert_eq!(reply.content_type, "application/problem+json", "{what}");
        assert_eq!(reply.json["title"], "Unauthorized", "{what}");
        assert_eq!(
            reply.remaining, None,
            "{what}: no window for a refused request"
        );
    }
    // A signature that was valid, with one parameter changed after signing.
    let good = signed(
        "POST",
        &url,
        CONSUMER_KEY,
        CONSUMER_SECRET,
        TOKEN,
        TOKEN_SECRET,
    );
    let start = good.find("oauth_timestamp=\"").expect("a timestamp") + 17;
    let tampered = format!("{}1{}", &good[..start], &good[start..]);
    assert_eq!(follow_with(&sim, &tampered, "5").await.status, 401);

    let stats = sim.handle.stats().await;
    let user = stats.user("26");
    let refused = cases.len() as u64 + 1;
    assert_eq!(
        (user.requests, user.bad_signatures, user.unauthorized),
        (0, refused, refused),
        "{user:?}"
    );

    // An unknown token names no user at all.
    let unknown = signed(
        "POST",
        &url,
        CONSUMER_KEY,
        CONSUMER_SECRET,
        "nobody",
        TOKEN_SECRET,
    );
    assert_eq!(follow_with(&sim, &unknown, "5").await.status, 401);
    assert_eq!(sim.handle.stats().await.totals.unauthenticated, 1);
}

#[tokio::test]
async fn without_a_consumer_every_oauth1_request_is_refused() {
    let sim = Sim::start(roomy());
    sim.handle.add_oauth1_user("26", TOKEN, TOKEN_SECRET);
    let url = sim.url("/2/users/26/following");
    let auth = signed(
        "POST",
        &url,
        CONSUMER_KEY,
        CONSUMER_SECRET,
        TOKEN,
        TOKEN_SECRET,
    );
    assert_eq!(follow_with(&sim, &auth, "5").await.status, 401);
    assert_eq!(sim.handle.stats().await.user("26").bad_signatures, 1);
}
