//! `POST /2/oauth2/token` with `grant_type=refresh_token`: rotating, single-use refresh
//! tokens. A spent (or revoked, or never issued) refresh token gets X's 400
//! `{"error":"invalid_request","error_description":"Value passed for the token was invalid."}`;
//! reusing a spent one also revokes the user's tokens when `revoke_family_on_reuse` is on.
//!
//! Client authentication: a public client sends `client_id` in the form, a confidential one
//! HTTP Basic `client_id:client_secret` (the secret is not checked). One of them is required;
//! when `SimConfig::client_id` is set it must match.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::problems::{self, Problem};
use super::state::SimState;
use super::tokens::RefreshRefused;

pub async fn token(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    state.token_gate().await;
    let response = match refresh(&state, &headers, body) {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    state.changed();
    response
}

fn refresh(
    state: &SimState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let rejected = |description: &str| {
        state.count_token_rejected();
        problems::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
    };
    let form_content = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_content {
        return Err(rejected(
            "Content-Type must be application/x-www-form-urlencoded.",
        ));
    }
    let body = body.map_err(|e| rejected(&e.body_text()))?;
    let form: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&body).map_err(|_| rejected("Malformed form body."))?;
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    match field("grant_type") {
        Some("refresh_token") => {}
        Some(_) => {
            state.count_token_rejected();
            return Err(problems::oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The simulator supports grant_type=refresh_token only.",
            ));
        }
        None => return Err(rejected("Missing required parameter [grant_type].")),
    }

    let client = field("client_id")
        .map(str::to_owned)
        .or_else(|| basic_user(headers));
    let Some(client) = client else {
        return Err(rejected("Missing required parameter [client_id]."));
    };
    if state
        .config()
        .client_id
        .as_ref()
        .is_some_and(|expected| *expected != client)
    {
        state.count_token_rejected();
        return Err(problems::oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Missing valid authorization header",
        ));
    }

    let Some(refresh_token) = field("refresh_token") else {
        return Err(rejected("Missing required parameter [refresh_token]."));
    };
    match state.refresh(refresh_token) {
        Ok((user_id, tokens)) => {
            tracing::debug!(user_id, "sim: refresh token rotated");
            Ok(axum::Json(json!({
                "token_type": "bearer",
                "expires_in": state.config().access_token_ttl.as_secs(),
                "access_token": tokens.access_token,
                "scope": "tweet.read users.read follows.write offline.access",
                "refresh_token": tokens.refresh_token,
            }))
            .into_response())
        }
        Err(RefreshRefused::Unknown) => {
            state.count_token_rejected();
            Err(problems::invalid_token_value())
        }
        Err(RefreshRefused::Reused {
            user_id,
            revoked_family,
        }) => {
            tracing::debug!(user_id, revoked_family, "sim: spent refresh token reused");
            Err(problems::invalid_token_value())
        }
    }
}

/// The user part of `Authorization: Basic base64(user:password)`.
fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _password) = text.split_once(':')?;
    Some(user.to_owned())
}
