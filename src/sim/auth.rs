//! Reading the `Authorization` header of a follow request: `Bearer <token>` (OAuth 2.0 user or
//! app-only) or `OAuth …, oauth_token="…", …` (OAuth 1.0a, mapped by `oauth_token` alone; the
//! signature is not verified).

use axum::http::{HeaderMap, header};

use super::state::{Caller, SimState};

/// Who the request's credentials name.
pub fn caller(state: &SimState, headers: &HeaderMap) -> Caller {
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
        match oauth1_token(rest) {
            Some(token) => state.oauth1(token),
            None => Caller::Unknown,
        }
    } else {
        Caller::Unknown
    }
}

/// The `oauth_token` parameter of an OAuth 1.0a header: `k="v", k="v"`.
fn oauth1_token(params: &str) -> Option<&str> {
    params.split(',').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key.trim() == "oauth_token").then(|| value.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_oauth_token_among_the_parameters() {
        let header = r#"oauth_consumer_key="ck", oauth_nonce="n", oauth_token="123-abc", oauth_signature="s%3D""#;
        assert_eq!(oauth1_token(header), Some("123-abc"));
        assert_eq!(oauth1_token(r#"oauth_consumer_key="ck""#), None);
    }
}
