//! OAuth 2.0 user tokens: the refresh call to `POST {base}/2/oauth2/token` and the parsing of
//! its answer. Persisting the new pair and single-flighting refreshes across processes is the
//! token store's job (`accounts::token_store`); this file is one HTTP exchange.
//!
//! The form is `grant_type=refresh_token&refresh_token=…`. A public client (no
//! `x_api.oauth2.client_secret`) adds `client_id=…`; a confidential client authenticates with
//! HTTP Basic `client_id:client_secret` instead, as X's docs describe.
//!
//! Nothing a token could be read from leaves this file in an error: a failure is described by
//! the OAuth `error` code, X's `error_description` (which never echoes the token), the status,
//! or the transport error's kind.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::transport::{
    XApiError, build_http_client, describe_transport_error, endpoint, read_capped,
};
use crate::accounts::credentials::check_token;
use crate::config::XApiSettings;

/// A token endpoint answer larger than this is not a token pair; stop reading.
const MAX_TOKEN_BODY_BYTES: usize = 64 * 1024;

/// Calls X's token endpoint. Cheap to clone (the HTTP pool is shared).
#[derive(Clone, Debug)]
pub struct TokenClient {
    http: reqwest::Client,
    token_url: reqwest::Url,
    client_id: String,
    client_secret: Option<SecretString>,
}

/// A fresh token pair, as the endpoint answered.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: SecretString,
    /// The rotated refresh token; `None` if the endpoint sent none (then the old one stays).
    pub refresh_token: Option<SecretString>,
    /// From `expires_in`; `None` if it was absent.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// `invalid_request` / `invalid_grant`: the refresh token is spent, revoked or expired.
    /// Only a person re-authorizing the app can fix it.
    #[error("the token endpoint rejected the refresh token ({error}): the user must re-authorize")]
    Rejected {
        error: String,
        description: Option<String>,
    },
    /// Any other OAuth error (`invalid_client`, `unauthorized_client`, …): the app's own
    /// client settings are wrong; the user's tokens may be fine.
    #[error(
        "the token endpoint rejected the app's client credentials ({error}, HTTP {status}): check x_api.oauth2"
    )]
    ClientRejected {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// 5xx, 429, timeout, connection failure, an unreadable answer: try later.
    #[error("token endpoint unavailable: {0}")]
    Transient(String),
}

/// The token endpoint's success body. `expires_in` is read leniently: a number or a string
/// of digits; anything else leaves the expiry unknown.
#[derive(Deserialize)]
struct TokenBody {
    access_token: SecretString,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// RFC 6749 §5.2 error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl TokenClient {
    pub fn new(settings: &XApiSettings) -> Result<TokenClient, XApiError> {
        Ok(TokenClient {
            http: build_http_client(settings)?,
            token_url: endpoint(&settings.base_url, &["2", "oauth2", "token"])?,
            client_id: settings.oauth2.client_id.clone(),
            client_secret: settings.oauth2.client_secret.clone(),
        })
    }

    /// Exchanges `refresh_token` for a new pair. The old refresh token is spent once this
    /// returns `Ok` (and perhaps even when it returns `Transient`: the answer may be lost).
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenPair, RefreshError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        let mut request = self.http.post(self.token_url.clone());
        match &self.client_secret {
            Some(secret) => {
                request = request.basic_auth(&self.client_id, Some(secret.expose_secret()));
            }
            None => form.push(("client_id", &self.client_id)),
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| RefreshError::Transient(describe_transport_error(&e)))?;
        let status = response.status().as_u16();
        let body = read_capped(response, MAX_TOKEN_BODY_BYTES)
            .await
            .map_err(|e| RefreshError::Transient(describe_transport_error(&e)))?;
        parse_answer(status, &body, Utc::now())
    }
}

/// Reads the token endpoint's answer.
fn parse_answer(status: u16, body: &[u8], now: DateTime<Utc>) -> Result<TokenPair, RefreshError> {
    if (200..300).contains(&status) {
        // serde's message could quote a value: report only that the shape was wrong.
        let token: TokenBody = serde_json::from_slice(body).map_err(|_| {
            RefreshError::Transient(format!(
                "HTTP {status} without a readable access_token in the body"
            ))
        })?;
        // An unusable token (empty, a line break, megabytes) is not stored or sent; the
        // message says what was wrong with it, never what it was.
        let unusable = |e| RefreshError::Transient(format!("HTTP {status}: {e}"));
        check_token("access_token", &token.access_token).map_err(unusable)?;
        let refresh_token = token
            .refresh_token
            .filter(|t| !t.expose_secret().is_empty());
        if let Some(refresh_token) = &refresh_token {
            check_token("refresh_token", refresh_token).map_err(unusable)?;
        }
        let expires_at = token
            .expires_in
            .as_ref()
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()))
            .filter(|seconds| *seconds > 0)
            .and_then(TimeDelta::try_seconds)
            .and_then(|lifetime| now.checked_add_signed(lifetime));
        return Ok(TokenPair {
            access_token: token.access_token,
            refresh_token,
            expires_at,
        });
    }
    let error: Option<ErrorBody> = serde_json::from_slice(body).ok();
    match (status, error) {
        (429 | 500..=599, _) => Err(RefreshError::Transient(format!("HTTP {status}"))),
        (
            _,
            Some(ErrorBody {
                error,
                error_description,
            }),
        ) => {
            let description = error_description.map(|d| d.chars().take(300).collect());
            if matches!(error.as_str(), "invalid_request" | "invalid_grant") {
                Err(RefreshError::Rejected { error, description })
            } else {
                Err(RefreshError::ClientRejected {
                    status,
                    error,
                    description,
                })
            }
        }
        (_, None) => Err(RefreshError::Transient(format!(
            "HTTP {status} without an OAuth error body"
        ))),
    }
}

/// How long before its expiry a token counts as expiring.
pub(crate) fn needs_refresh(
    expires_at: Option<DateTime<Utc>>,
    margin: Duration,
    now: DateTime<Utc>,
) -> bool {
    let Some(expires_at) = expires_at else {
        // Unknown expiry: refresh only when X says 401.
        return false;
    };
    let margin = TimeDelta::from_std(margin).unwrap_or(TimeDelta::MAX);
    match expires_at.checked_sub_signed(margin) {
        Some(refresh_from) => now >= refresh_from,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap()
    }

    #[test]
    fn a_rotated_pair_with_its_expiry() {
        let pair = parse_answer(
            200,
            br#"{"token_type":"bearer","expires_in":7200,"access_token":"new-a","scope":"tweet.read users.read follows.write offline.access","refresh_token":"new-r"}"#,
            now(),
        )
        .unwrap();
        assert_eq!(pair.access_token.expose_secret(), "new-a");
        assert_eq!(pair.refresh_token.unwrap().expose_secret(), "new-r");
        assert_eq!(pair.expires_at, Some(now() + TimeDelta::seconds(7200)));
    }

    #[test]
    fn missing_refresh_token_and_expiry_are_none() {
        let pair =
            parse_answer(200, br#"{"access_token":"a","expires_in":"soon"}"#, now()).unwrap();
        assert!(pair.refresh_token.is_none());
        assert_eq!(pair.expires_at, None);
    }

    #[test]
    fn a_spent_refresh_token_is_rejected() {
        let err = parse_answer(
            400,
            br#"{"error":"invalid_request","error_description":"Value passed for the token was invalid."}"#,
            now(),
        )
        .unwrap_err();
        assert!(matches!(&err, RefreshError::Rejected { error, .. } if error == "invalid_request"));
        let err = parse_answer(400, br#"{"error":"invalid_grant"}"#, now()).unwrap_err();
        assert!(matches!(err, RefreshError::Rejected { .. }));
    }

    #[test]
    fn client_errors_are_not_the_users_fault() {
        let err = parse_answer(
            401,
            br#"{"error":"unauthorized_client","error_description":"Missing valid authorization header"}"#,
            now(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            RefreshError::ClientRejected { status: 401, .. }
        ));
    }

    #[test]
    fn server_trouble_and_garbage_are_transient() {
        for (status, body) in [
            (503, &b"{\"error\":\"invalid_request\"}"[..]),
            (500, b""),
            (429, b""),
            (400, b"<html>"),
            (200, b"{\"access_token\":"),
            (200, b"{\"access_token\":\"\"}"),
            (200, b"{\"access_token\":42}"),
            (200, b"{\"access_token\":\"a\\nb\"}"),
            (200, b"{\"access_token\":\"ok\",\"refresh_token\":\"r r\"}"),
        ] {
            let err = parse_answer(status, body, now()).unwrap_err();
            assert!(
                matches!(err, RefreshError::Transient(_)),
                "{status}: {err:?}"
            );
        }
    }

    #[test]
    fn refresh_ahead_of_expiry_within_the_margin() {
        let margin = Duration::from_secs(300);
        let at = |s: i64| Some(now() + TimeDelta::seconds(s));
        assert!(!needs_refresh(at(301), margin, now()));
        assert!(needs_refresh(at(300), margin, now()));
        assert!(needs_refresh(at(-10), margin, now()));
        assert!(!needs_refresh(None, margin, now()));
    }
}
