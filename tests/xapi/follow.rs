//! `XClient::follow` against loopback servers: the request it sends, the classification of
//! each kind of answer, the rate-limit headers, and failures with no (whole) answer.

use std::time::Duration;

use chrono::{DateTime, Utc};
use followq::ids::UserId;
use followq::xapi::{FollowOutcome, FollowResponse, Limit24h, RequestAuth, UsageCapScope, XClient};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{body_string, header, header_regex, method, path};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

use crate::settings;

fn ids() -> (UserId, UserId) {
    (
        UserId::parse("6253282").unwrap(),
        UserId::parse("2244994945").unwrap(),
    )
}

fn bearer() -> RequestAuth {
    RequestAuth::Bearer(SecretString::from("access-token-1"))
}

/// One follow call against a server that answers `template` to anything.
async fn answer(template: ResponseTemplate) -> FollowResponse {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    let client = XClient::new(&settings(&server.uri())).unwrap();
    let (source, target) = ids();
    client.follow(&source, &target, &bearer()).await
}

fn json(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json")
}

#[tokio::test]
async fn sends_the_documented_request_with_a_bearer_token() {
    let server = MockServer::start().await;
    let reset = Utc::now().timestamp() + 900;
    Mock::given(method("POST"))
        .and(path("/2/users/6253282/following"))
        .and(header("authorization", "Bearer access-token-1"))
        // What X sees: followq's name and its version.
        .and(header_regex(
            "user-agent",
            r"^followq/[0-9]+\.[0-9]+\.[0-9]+$",
        ))
        .and(header("content-type", "application/json"))
        .and(body_string(r#"{"target_user_id":"2244994945"}"#))
        .respond_with(
            json(200, r#"{"data":{"following":true,"pending_follow":false}}"#)
                .insert_header("x-rate-limit-limit", "50")
                .insert_header("x-rate-limit-remaining", "49")
                .insert_header("x-rate-limit-reset", reset.to_string().as_str()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = XClient::new(&settings(&server.uri())).unwrap();
    let (source, target) = ids();
    let response = client.follow(&source, &target, &bearer()).await;
    assert_eq!(
        response.outcome,
        FollowOutcome::Followed {
            following: true,
            pending_follow: false,
            errors: vec![]
        }
    );
    assert_eq!(response.http_status, Some(200));
    assert_eq!(response.limits.limit, Some(50));
    assert_eq!(response.limits.remaining, Some(49));
    assert_eq!(response.limits.reset_at, DateTime::from_timestamp(reset, 0));
    assert!(!response.limits.window_exhausted());
    assert!(response.latency > Duration::ZERO);
}

/// Matches a request whose `Authorization: OAuth …` signature verifies (HMAC-SHA1 over the
/// method, the URL and the `oauth_*` parameters) with these secrets. The checker is the
/// simulator's, written from RFC 5849 independently of the signer the client uses.
struct SignedWith {
    consumer_secret: &'static str,
    token_secret: &'static str,
}

impl Match for SignedWith {
    fn matches(&self, request: &Request) -> bool {
        let Some(params) = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(followq::sim::OAuth1Params::parse)
        else {
            return false;
        };
        // wiremock's `url` names `localhost`: the URL the client signed is at its Host.
        let Some(host) = request.headers.get("host").and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let url = match request.url.query() {
            Some(query) => format!("http://{host}{}?{query}", request.url.path()),
            None => format!("http://{host}{}", request.url.path()),
        };
        followq::sim::verify_oauth1_signature(
            request.method.as_str(),
            &url,
            &params,
            self.consumer_secret,
            self.token_secret,
        )
        .is_ok()
    }
}

#[tokio::test]
async fn signs_with_oauth1_when_the_account_uses_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2/users/6253282/following"))
        .and(header_regex(
            "authorization",
            r#"^OAuth oauth_consumer_key="ck",oauth_nonce="[^"]+",oauth_signature_method="HMAC-SHA1",oauth_timestamp="[0-9]+",oauth_token="u-token",oauth_version="1.0",oauth_signature="[^"]+"$"#,
        ))
        .and(SignedWith {
            consumer_secret: "cs",
            token_secret: "u-secret",
        })
        .and(body_string(r#"{"target_user_id":"2244994945"}"#))
        .respond_with(json(200, r#"{"data":{"following":false,"pending_follow":true}}"#))
        .expect(1)
        .mount(&server)
        .await;
    let client = XClient::new(&settings(&server.uri())).unwrap();
    let (source, target) = ids();
    let auth = RequestAuth::OAuth1 {
        consumer_key: String::from("ck"),
        consumer_secret: SecretString::from("cs"),
        token: SecretString::from("u-token"),
        token_secret: SecretString::from("u-secret"),
    };
    let response = client.follow(&source, &target, &auth).await;
    assert_eq!(
        response.outcome,
        FollowOutcome::Followed {
            following: false,
            pending_follow: true,
            errors: vec![]
        }
    );
    // Signed with another token secret, the request matches nothing (wiremock's 404).
    let forged = RequestAuth::OAuth1 {
        consumer_key: String::from("ck"),
        consumer_secret: SecretString::from("cs"),
        token: SecretString::from("u-token"),
        token_secret: SecretString::from("not-the-secret"),
    };
    let refused = client.follow(&source, &target, &forged).await;
    assert_eq!(refused.http_status, Some(404), "{:?}", refused.outcome);
}

#[tokio::test]
async fn every_classification_through_the_client() {
    let cases: &[(u16, &str, &str)] = &[
        (
            200,
            r#"{"data":{"following":false,"pending_follow":true}}"#,
            "succeeded",
        ),
        (
            200,
            r#"{"data":{"following":true,"pending_follow":false},"errors":[{"detail":"odd"}]}"#,
            "succeeded",
        ),
        (200, r#"{"errors":[{"message":"no data"}]}"#, "transient"),
        (
            429,
            r#"{"errors":[{"code":88,"message":"Rate limit exceeded"}]}"#,
            "rate_limited",
        ),
        (
            429,
            r#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#,
            "rate_limited",
        ),
        (
            429,
            r#"{"type":"https://api.x.com/2/problems/usage-capped","period":"Daily","scope":"Account"}"#,
            "usage_capped",
        ),
        (
            401,
            r#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#,
            "unauthorized",
        ),
        (
            403,
            r#"{"title":"Client Forbidden","type":"https://api.twitter.com/2/problems/client-forbidden","reason":"client-not-enrolled"}"#,
            "app_forbidden",
        ),
        (
            403,
            r#"{"title":"Unsupported Authentication","type":"https://api.x.com/2/problems/unsupported-authentication"}"#,
            "app_forbidden",
        ),
        (
            403,
            r#"{"errors":[{"code":161,"message":"You are unable to follow more people at this time."}]}"#,
            "daily_cap",
        ),
        (
            403,
            r#"{"title":"Forbidden","type":"about:blank","detail":"You cannot follow an account that is blocking you."}"#,
            "permanent",
        ),
        (
            400,
            r#"{"errors":[{"message":"bad id"}],"title":"Invalid Request","type":"https://api.twitter.com/2/problems/invalid-request"}"#,
            "permanent",
        ),
        (
            404,
            r#"{"title":"Not Found Error","type":"https://api.x.com/2/problems/resource-not-found"}"#,
            "permanent",
        ),
        (500, r#"{"title":"Internal Error"}"#, "transient"),
        (503, "", "transient"),
        (502, "<html>Bad Gateway</html>", "transient"),
    ];
    for (status, body, kind) in cases {
        let response = answer(json(*status, body)).await;
        assert_eq!(response.outcome.kind(), *kind, "{status} {body}");
        assert_eq!(response.http_status, Some(*status));
    }
    let response = answer(json(
        429,
        r#"{"type":"https://api.x.com/2/problems/usage-capped","period":"Monthly","scope":"Product"}"#,
    ))
    .await;
    assert_eq!(
        response.outcome,
        FollowOutcome::UsageCapped {
            period: Some("Monthly".into()),
            scope: Some(UsageCapScope::Product)
        }
    );
    let response = answer(json(502, "<html>Bad Gateway</html>")).await;
    let details = response.outcome.details().unwrap();
    assert_eq!(
        details.body_excerpt.as_deref(),
        Some("<html>Bad Gateway</html>")
    );
}

#[tokio::test]
async fn a_429_carries_reset_24_hour_limits_and_retry_after() {
    let reset = Utc::now().timestamp() + 600;
    let day = Utc::now().timestamp() + 80_000;
    let response = answer(
        json(
            429,
            r#"{"errors":[{"code":88,"message":"Rate limit exceeded"}]}"#,
        )
        .insert_header("x-rate-limit-limit", "50")
        .insert_header("x-rate-limit-remaining", "0")
        .insert_header("x-rate-limit-reset", reset.to_string().as_str())
        .insert_header("x-user-limit-24hour-limit", "400")
        .insert_header("x-user-limit-24hour-remaining", "12")
        .insert_header("x-user-limit-24hour-reset", day.to_string().as_str())
        .insert_header("x-app-limit-24hour-limit", "1000")
        .insert_header("x-app-limit-24hour-remaining", "0")
        .insert_header("retry-after", "42"),
    )
    .await;
    assert_eq!(response.outcome, FollowOutcome::RateLimited);
    let limits = response.limits;
    assert!(limits.window_exhausted());
    assert_eq!(limits.reset_at, DateTime::from_timestamp(reset, 0));
    assert_eq!(
        limits.user_24h,
        Some(Limit24h {
            limit: Some(400),
            remaining: Some(12),
            reset_at: DateTime::from_timestamp(day, 0)
        })
    );
    assert_eq!(limits.app_24h.and_then(|l| l.remaining), Some(0));
    assert_eq!(limits.retry_after, Some(Duration::from_secs(42)));
    let now = Utc::now();
    let resume = limits.resume_at(now).unwrap();
    assert_eq!((resume - now).num_seconds(), 42);
}

#[tokio::test]
async fn missing_garbage_and_past_headers_are_unknown_or_ignored() {
    let response = answer(json(429, "")).await;
    assert_eq!(response.outcome, FollowOutcome::RateLimited);
    assert_eq!(response.limits, Default::default());
    assert_eq!(response.limits.resume_at(Utc::now()), None);

    let past = Utc::now().timestamp() - 120;
    let response = answer(
        json(200, r#"{"data":{"following":true,"pending_follow":false}}"#)
            .insert_header("x-rate-limit-limit", "lots")
            .insert_header("x-rate-limit-remaining", "-3")
            .insert_header("x-rate-limit-reset", past.to_string().as_str())
            .insert_header("retry-after", "tomorrow-ish"),
    )
    .await;
    assert_eq!(response.outcome.kind(), "succeeded");
    assert_eq!(response.limits.limit, None);
    assert_eq!(response.limits.remaining, None);
    assert_eq!(response.limits.retry_after, None);
    // Kept as sent, but no pause is derived from a reset already past.
    assert_eq!(response.limits.reset_at, DateTime::from_timestamp(past, 0));
    assert_eq!(response.limits.resume_at(Utc::now()), None);
}

#[tokio::test]
async fn a_slow_answer_times_out_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            json(200, r#"{"data":{"following":true,"pending_follow":false}}"#)
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let mut settings = settings(&server.uri());
    settings.request_timeout = Duration::from_millis(300);
    let client = XClient::new(&settings).unwrap();
    let (source, target) = ids();
    let response = client.follow(&source, &target, &bearer()).await;
    let FollowOutcome::Transient(details) = &response.outcome else {
        panic!("{:?}", response.outcome);
    };
    assert_eq!(details.reason.as_deref(), Some("timeout"));
    assert_eq!(response.http_status, None);
    assert!(response.latency >= Duration::from_millis(300));
    assert!(
        response.latency < Duration::from_secs(3),
        "{:?}",
        response.latency
    );
}

/// A server that reads the request, then writes `reply` (maybe nothing) and hangs up.
async fn raw_server(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(reply).await;
            let _ = socket.shutdown().await;
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_dropped_connection_is_transient_without_a_status() {
    let base = raw_server(b"").await;
    let client = XClient::new(&settings(&base)).unwrap();
    let (source, target) = ids();
    let response = client.follow(&source, &target, &bearer()).await;
    assert_eq!(
        response.outcome.kind(),
        "transient",
        "{:?}",
        response.outcome
    );
    assert_eq!(response.http_status, None);
    assert_eq!(
        response.outcome.details().and_then(|d| d.reason.as_deref()),
        Some("connection")
    );
}

#[tokio::test]
async fn a_body_cut_short_is_transient_and_keeps_the_headers() {
    let base = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\
          x-rate-limit-remaining: 7\r\n\r\n{\"data\":{\"foll",
    )
    .await;
    let client = XClient::new(&settings(&base)).unwrap();
    let (source, target) = ids();
    let response = client.follow(&source, &target, &bearer()).await;
    assert_eq!(
        response.outcome.kind(),
        "transient",
        "{:?}",
        response.outcome
    );
    assert_eq!(response.http_status, Some(200));
    assert_eq!(response.limits.remaining, Some(7));
}

#[tokio::test]
async fn nobody_listening_is_transient() {
    // Bind then drop: the port is very likely closed for the next moment.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let client = XClient::new(&settings(&format!("http://{address}"))).unwrap();
    let (source, target) = ids();
    let response = client.follow(&source, &target, &bearer()).await;
    assert_eq!(response.outcome.kind(), "transient");
    assert_eq!(
        response.outcome.details().and_then(|d| d.reason.as_deref()),
        Some("connect")
    );
}
