//! Reading the `Authorization` header of a follow request: `Bearer <token>` (OAuth 2.0 user or
//! app-only) or `OAuth …` (OAuth 1.0a: the `oauth_token` names the user, and the HMAC-SHA1
//! signature must verify with the configured consumer's secret and the token's secret).

use axum::http::{HeaderMap, Method, Uri, header};

use super::oauth1_verify::{self, OAuth1Params};
use super::state::SimState;
use super::tokens::Caller;

/// Who the request's credentials name. `method` and `uri` are the request's, for the OAuth
/// 1.0a signature.
pub fn caller(state: &SimState, method: &Method, uri: &Uri, headers: &HeaderMap) -> Caller {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Caller::Unknown;
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        state.bearer(rest.trim())
    } else if scheme.eq_ignore_ascii_case("oauth") {
        oauth1_caller(state, method, uri, headers, value)
    } else {
        Caller::Unknown
    }
}

fn oauth1_caller(
    state: &SimState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    value: &str,
) -> Caller {
    let Some(params) = OAuth1Params::parse(value) else {
        return Caller::Unknown;
    };
    let Some((user_id, token_secret)) = params.get("oauth_token").and_then(|t| state.oauth1(t))
    else {
        return Caller::Unknown;
    };
    let consumer = state
        .config()
        .oauth1_consumer
        .as_ref()
        .filter(|c| params.get("oauth_consumer_key") == Some(c.key.as_str()));
    let verified = consumer.is_some_and(|consumer| {
        // The URL the client signed: the simulator serves plain HTTP, at the Host it was
        // reached by (HTTP/1.1 requires the header).
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        host.is_some_and(|host| {
            let url = format!("http://{host}{uri}");
            oauth1_verify::verify(
                method.as_str(),
                &url,
                &params,
                &consumer.secret,
                &token_secret,
            )
            .is_ok()
        })
    });
    if verified {
        Caller::User { user_id }
    } else {
        Caller::BadSignature { user_id }
    }
}
