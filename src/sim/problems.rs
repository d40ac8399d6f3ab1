//! The bodies X sends when it refuses a request: problem JSON (`application/problem+json`),
//! X's `invalid-request` shape, and the OAuth 2.0 token endpoint's `{"error": …}`.
//!
//! Problem `type` URIs appear under both `https://api.twitter.com/2/problems/` and
//! `https://api.x.com/2/problems/` in the wild; the simulator uses both hosts on purpose (see
//! each constructor) so that a client matching whole URIs instead of path suffixes fails here
//! rather than in production.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::config::UsageCap;

const TWITTER: &str = "https://api.twitter.com/2/problems/";
const X: &str = "https://api.x.com/2/problems/";

/// A refusal, ready to be turned into a response.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub body: Value,
    /// Problem JSON, or plain JSON (invalid-request and the token endpoint use plain JSON).
    pub problem_json: bool,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.problem_json {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            );
        }
        response
    }
}

fn about_blank(status: StatusCode, title: &str, detail: &str) -> Problem {
    Problem {
        status,
        body: json!({"title": title, "detail": detail, "type": "about:blank", "status": status.as_u16()}),
        problem_json: true,
    }
}

/// 401 for a missing, unknown, expired or revoked token.
pub fn unauthorized() -> Problem {
    about_blank(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
}

/// 429 for the user's window.
pub fn too_many_requests() -> Problem {
    about_blank(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        "Too Many Requests",
    )
}

/// 403 when the path's `:id` is not the token's user.
pub fn not_this_user(path_id: &str) -> Problem {
    about_blank(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!("You are not permitted to act on behalf of user {path_id}."),
    )
}

/// 403 when the target blocks the user.
pub fn blocked_by_target() -> Problem {
    about_blank(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "You cannot follow an account that is blocking you.",
    )
}

/// 403 for the per-user daily follow cap (the v1.1 wording, code 161).
pub fn daily_cap() -> Problem {
    about_blank(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "You are unable to follow more people at this time.",
    )
}

/// 403 `unsupported-authentication` for an app-only bearer token.
pub fn unsupported_authentication() -> Problem {
    Problem {
        status: StatusCode::FORBIDDEN,
        body: json!({
            "title": "Unsupported Authentication",
            "detail": "Authenticating with OAuth 2.0 Application-Only is forbidden for this endpoint.  Supported authentication types are [OAuth 1.0a User Context, OAuth 2.0 User Context].",
            "type": format!("{X}unsupported-authentication"),
            "status": 403,
        }),
        problem_json: true,
    }
}

/// 403 `client-forbidden`: the app is not enrolled for this endpoint.
pub fn client_forbidden() -> Problem {
    Problem {
        status: StatusCode::FORBIDDEN,
        body: json!({
            "client_id": "followq-sim",
            "detail": "When authenticating requests to the Twitter API v2 endpoints, you must use keys and tokens from a Twitter developer App that is attached to a Project. You can create a project via the developer portal.",
            "registration_url": "https://developer.twitter.com/en/docs/projects/overview",
            "title": "Client Forbidden",
            "required_enrollment": "Appropriate Level of API Access",
            "reason": "client-not-enrolled",
            "type": format!("{TWITTER}client-forbidden"),
        }),
        problem_json: true,
    }
}

/// 429 `usage-capped`, naming the period and scope of the cap.
pub fn usage_capped(cap: UsageCap) -> Problem {
    let (period, scope) = (cap.period.as_str(), cap.scope.as_str());
    Problem {
        status: StatusCode::TOO_MANY_REQUESTS,
        body: json!({
            "title": "UsageCapExceeded",
            "detail": format!("Usage cap exceeded: {period} {} cap", scope.to_lowercase()),
            "type": format!("{X}usage-capped"),
            "period": period,
            "scope": scope,
        }),
        problem_json: true,
    }
}

/// The developer account named in the 402's detail: 19 digits, like the real ids.
const ENROLLED_ACCOUNT: &str = "1000000000000000001";

/// 402 when the app's prepaid credits are used up (X's pay-per-use billing).
///
/// The body is X's as recorded in public client logs and test fixtures (twitter-api-v2
/// error dumps, bots' notes): title `CreditsDepleted`, a detail naming the enrolled
/// developer account, type `https://api.twitter.com/2/problems/credits`, and no `status`
/// field. With a 19-digit account id it is 185 bytes, the `content-length` those recorded
/// 402s carry. They were sent as `application/json; charset=utf-8`, not problem JSON, so
/// this is plain JSON too. (Some third-party fixtures show a `.../credits-depleted` type with
/// title "Payment Required"; none of them comes with a recorded response.)
pub fn credits_depleted() -> Problem {
    Problem {
        status: StatusCode::PAYMENT_REQUIRED,
        body: json!({
            "title": "CreditsDepleted",
            "detail": format!(
                "Your enrolled account [{ENROLLED_ACCOUNT}] does not have any credits to fulfill this request."
            ),
            "type": format!("{TWITTER}credits"),
        }),
        problem_json: false,
    }
}

/// 404 `resource-not-found` for a target that does not exist.
pub fn target_not_found(target: &str) -> Problem {
    Problem {
        status: StatusCode::NOT_FOUND,
        body: json!({
            "title": "Not Found Error",
            "detail": format!("Could not find user with target_user_id: [{target}]."),
            "type": format!("{TWITTER}resource-not-found"),
            "resource_type": "user",
            "parameter": "target_user_id",
            "resource_id": target,
            "value": target,
            "status": 404,
        }),
        problem_json: true,
    }
}

/// 400 `invalid-request` in X's shape: `errors[]` naming the parameter, plus title/detail/type.
pub fn invalid_request(parameter: &str, value: &str, message: &str) -> Problem {
    Problem {
        status: StatusCode::BAD_REQUEST,
        body: json!({
            "errors": [{"parameters": {parameter: [value]}, "message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": format!("{TWITTER}invalid-request"),
        }),
        problem_json: false,
    }
}

/// 404 for a route the simulator does not serve.
pub fn no_route() -> Problem {
    about_blank(StatusCode::NOT_FOUND, "Not Found", "No such endpoint.")
}

/// The token endpoint's refusal: `{"error": …, "error_description": …}`.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Problem {
    Problem {
        status,
        body: json!({"error": error, "error_description": description}),
        problem_json: false,
    }
}

/// The token endpoint's answer to a spent, revoked or unknown refresh token.
pub fn invalid_token_value() -> Problem {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "Value passed for the token was invalid.",
    )
}
