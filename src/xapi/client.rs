//! The HTTP client for the follow endpoint: builds and sends `POST {base}/2/users/{source}/
//! following` with the account's credentials, reads the answer (capped), and hands it to
//! [`classify`](super::classify()) and the rate-limit header reader.
//!
//! [`XClient::follow`] never returns an error: a failure to get an answer is
//! [`FollowOutcome::Transient`] with `status: None`, so the caller has one match to write.
//!
//! The HTTP client: rustls with the OS roots (TLS is always verified), a `User-Agent` naming
//! followq and its version, the configured connect and total timeouts, and no redirects (a
//! redirect would turn the POST into a GET, and the API never sends one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::classify::{ErrorDetails, FollowOutcome, classify};
use super::oauth1::{OAuth1Keys, authorization_header};
use super::ratelimit_headers::RateLimitInfo;
use super::transport::{
    XApiError, build_http_client, describe_transport_error, endpoint, read_capped,
};
use crate::config::XApiSettings;
use crate::ids::UserId;

/// A follow answer is a few hundred bytes; stop reading a body past this.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How one request authenticates. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub enum RequestAuth {
    /// OAuth 2.0 user access token.
    Bearer(SecretString),
    /// OAuth 1.0a user context.
    OAuth1 {
        consumer_key: String,
        consumer_secret: SecretString,
        token: SecretString,
        token_secret: SecretString,
    },
}

/// One follow request's classified answer, with what it said about the budgets.
#[derive(Debug, Clone)]
pub struct FollowResponse {
    pub outcome: FollowOutcome,
    /// Read from every answer, success or error; all unknown when no answer came.
    pub limits: RateLimitInfo,
    /// `None` when no response came (timeout, connection failure); set when the status
    /// line came but the body was cut short (the outcome is then `Transient`).
    pub http_status: Option<u16>,
    /// From sending to the end of the body (or the failure).
    pub latency: Duration,
    /// Whether X saw the request, as far as the client can tell.
    pub fate: Fate,
}

/// What the client knows about whether a request reached X.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// A whole answer came: its classification is the truth.
    Answered,
    /// The request never left (the connection could not be made, or the credentials could
    /// not be put in a header): X did not see it.
    NotSent,
    /// X may or may not have acted on it: a timeout or a connection lost after sending, or a
    /// body cut short.
    Unknown,
}

impl FollowResponse {
    /// Whether the outcome rests on evidence: an answer, or a request known never to have
    /// left. A job is never failed on a request whose fate is unknown.
    pub fn answered(&self) -> bool {
        self.fate != Fate::Unknown
    }
}

/// The follow endpoint's client. Cheap to clone: the connection pool and base URL are shared.
#[derive(Clone, Debug)]
pub struct XClient {
    http: reqwest::Client,
    base: Arc<reqwest::Url>,
}

#[derive(Serialize)]
struct FollowBody<'a> {
    target_user_id: &'a str,
}

impl XClient {
    pub fn new(settings: &XApiSettings) -> Result<XClient, XApiError> {
        Ok(XClient {
            http: build_http_client(settings)?,
            base: Arc::new(endpoint(&settings.base_url, &[])?),
        })
    }

    /// Asks X to make `source` follow `target`, signed with `auth` (which must be `source`'s).
    pub async fn follow(
        &self,
        source: &UserId,
        target: &UserId,
        auth: &RequestAuth,
    ) -> FollowResponse {
        let started = Instant::now();
        let url = follow_url(&self.base, source);
        let outcome = match authorization(auth, &url) {
            Some(value) => {
                let request = self
                    .http
                    .post(url)
                    .header(AUTHORIZATION, value)
                    .json(&FollowBody {
                        target_user_id: target.as_str(),
                    });
                send(request).await
            }
            // A token that cannot even be a header value will never be accepted.
            None => Sent::NoAnswer {
                outcome: FollowOutcome::Unauthorized(ErrorDetails {
                    reason: Some(String::from(INVALID_CREDENTIALS_REASON)),
                    ..ErrorDetails::default()
                }),
                left: false,
            },
        };
        let latency = started.elapsed();
        let response = match outcome {
            Sent::Answer {
                status,
                limits,
                body,
            } => FollowResponse {
                outcome: classify(status, &body),
                limits,
                http_status: Some(status),
                latency,
                fate: Fate::Answered,
            },
            Sent::BodyFailed {
                status,
                limits,
                outcome,
            } => FollowResponse {
                outcome,
                limits,
                http_status: Some(status),
                latency,
                fate: Fate::Unknown,
            },
            Sent::NoAnswer { outcome, left } => FollowResponse {
                outcome,
                limits: RateLimitInfo::default(),
                http_status: None,
                latency,
                fate: if left { Fate::Unknown } else { Fate::NotSent },
            },
        };
        tracing::debug!(
            source = %source,
            target = %target,
            outcome = response.outcome.kind(),
            http_status = response.http_status,
            remaining = response.limits.remaining,
            latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            "follow request answered"
        );
        response
    }
}

enum Sent {
    /// A whole answer.
    Answer {
        status: u16,
        limits: RateLimitInfo,
        body: Vec<u8>,
    },
    /// Status and headers came, the body was cut short or timed out: transient, but the
    /// headers (the window's remaining count) still count.
    BodyFailed {
        status: u16,
        limits: RateLimitInfo,
        outcome: FollowOutcome,
    },
    /// No answer at all (connect failure, timeout, connection reset); `left` when the
    /// request may have reached the server (anything but a failure to connect).
    NoAnswer { outcome: FollowOutcome, left: bool },
}

async fn send(request: reqwest::RequestBuilder) -> Sent {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            return Sent::NoAnswer {
                outcome: FollowOutcome::Transient(transport_details(None, &e)),
                left: !e.is_connect(),
            };
        }
    };
    let status = response.status().as_u16();
    // Headers are read before the body, so even a body cut short keeps them.
    let limits = RateLimitInfo::from_headers(response.headers(), Utc::now());
    match read_capped(response, MAX_BODY_BYTES).await {
        Ok(body) => Sent::Answer {
            status,
            limits,
            body,
        },
        Err(e) => Sent::BodyFailed {
            status,
            limits,
            outcome: FollowOutcome::Transient(transport_details(Some(status), &e)),
        },
    }
}

fn transport_details(status: Option<u16>, error: &reqwest::Error) -> ErrorDetails {
    let detail = describe_transport_error(error);
    let reason = detail.split(':').next().map(str::to_owned);
    ErrorDetails {
        status,
        detail: Some(detail.chars().take(500).collect()),
        reason,
        ..ErrorDetails::default()
    }
}

/// `ErrorDetails::reason` when a credential cannot be sent at all.
const INVALID_CREDENTIALS_REASON: &str = "credentials_not_a_valid_header_value";

/// The `Authorization` header value, marked sensitive so no debug output shows it; `None` if
/// the credentials hold bytes no header may carry.
fn authorization(auth: &RequestAuth, url: &reqwest::Url) -> Option<HeaderValue> {
    let value: SecretString = match auth {
        RequestAuth::Bearer(token) => {
            SecretString::from(format!("Bearer {}", token.expose_secret()))
        }
        RequestAuth::OAuth1 {
            consumer_key,
            consumer_secret,
            token,
            token_secret,
        } => authorization_header(
            "POST",
            url,
            &OAuth1Keys {
                consumer_key,
                consumer_secret,
                token,
                token_secret,
            },
        ),
    };
    let mut header = HeaderValue::from_str(value.expose_secret()).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// `{base}/2/users/{source}/following`.
fn follow_url(base: &reqwest::Url, source: &UserId) -> reqwest::Url {
    let mut url = base.clone();
    // `base` was checked to take path segments in `endpoint`; a user id is digits only.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.extend(["2", "users", source.as_str(), "following"]);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_under_the_base_with_or_without_a_slash() {
        let source = UserId::parse("6253282").unwrap();
        for base in ["https://api.x.com", "https://api.x.com/"] {
            let url = follow_url(&endpoint(base, &[]).unwrap(), &source);
            assert_eq!(url.as_str(), "https://api.x.com/2/users/6253282/following");
        }
        let url = follow_url(
            &endpoint("http://127.0.0.1:9/prefix/", &[]).unwrap(),
            &source,
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/prefix/2/users/6253282/following"
        );
        assert_eq!(
            endpoint("https://api.x.com", &["2", "oauth2", "token"])
                .unwrap()
                .as_str(),
            "https://api.x.com/2/oauth2/token"
        );
        assert!(endpoint("mailto:x@example.com", &[]).is_err());
        assert!(endpoint("not a url", &[]).is_err());
    }

    #[test]
    fn request_auth_debug_is_redacted() {
        let auth = RequestAuth::OAuth1 {
            consumer_key: String::from("ck"),
            consumer_secret: SecretString::from("cs-SECRET"),
            token: SecretString::from("t-SECRET"),
            token_secret: SecretString::from("ts-SECRET"),
        };
        let printed = format!(
            "{auth:?} {:?}",
            RequestAuth::Bearer(SecretString::from("b-SECRET"))
        );
        assert!(!printed.contains("SECRET"), "{printed}");
    }

    #[tokio::test]
    async fn a_token_that_is_no_header_value_is_unauthorized_not_a_panic() {
        // Nothing listens on the discard port: the request must not even be tried.
        let settings = XApiSettings {
            base_url: String::from("http://127.0.0.1:9"),
            allow_insecure_http: false,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            oauth2: crate::config::OAuth2AppSettings {
                client_id: String::new(),
                client_secret: None,
                refresh_margin: Duration::from_secs(60),
            },
            oauth1: crate::config::OAuth1AppSettings {
                consumer_key: String::new(),
                consumer_secret: None,
            },
        };
        let client = XClient::new(&settings).unwrap();
        let (source, target) = (UserId::parse("1").unwrap(), UserId::parse("2").unwrap());
        let auth = RequestAuth::Bearer(SecretString::from("bad\ntoken"));
        let response = client.follow(&source, &target, &auth).await;
        let FollowOutcome::Unauthorized(details) = &response.outcome else {
            panic!("{:?}", response.outcome);
        };
        assert_eq!(details.reason.as_deref(), Some(INVALID_CREDENTIALS_REASON));
        assert_eq!(response.http_status, None);

        let url = reqwest::Url::parse("https://api.x.com/2/users/1/following").unwrap();
        let ok = authorization(&RequestAuth::Bearer(SecretString::from("good")), &url).unwrap();
        assert!(ok.is_sensitive());
    }
}
