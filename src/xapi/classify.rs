//! Classifying one answer of `POST /2/users/:id/following` into a [`FollowOutcome`]: a pure
//! function of the status and the body bytes, so every case is a unit test.
//!
//! It never fails and never panics, whatever the body: JSON of any shape, non-JSON, empty or
//! cut short. Two error shapes are read: problem JSON (`type`, `title`, `detail`, `reason`,
//! `period`, `scope`, maybe an `errors[]`) and the v1 style `{"errors":[{"code":…,
//! "message":…}]}`. A problem `type` is matched on its path, `/2/problems/<name>`, under
//! `api.twitter.com` or `api.x.com` (both occur). The decision table is in the
//! [module doc of `xapi`](super).

use serde::Serialize;
use serde_json::{Map, Value};

/// The longest string copied from a body into [`ErrorDetails`] (it lands in `last_error`).
const MAX_FIELD_CHARS: usize = 500;

/// Problem types (last path segment) that stop the whole app, not one account.
const APP_FORBIDDEN_PROBLEMS: &[&str] = &["client-forbidden", "unsupported-authentication"];
/// v1 codes with the same meaning: 261 "Application cannot perform write actions",
/// 453 "You currently have access to a subset of … endpoints" (the app's access level).
const APP_FORBIDDEN_CODES: &[i64] = &[261, 453];
/// v1 code of "You are unable to follow more people at this time" (the daily follow cap).
const DAILY_CAP_CODE: i64 = 161;
/// The daily-cap wording, matched case-insensitively in `detail`, `title` or `message`.
const DAILY_CAP_TEXT: &str = "unable to follow";
/// Problem types that say the request can never succeed, when they come in a 2xx's
/// `errors[]` without `data`.
const PERMANENT_PROBLEMS: &[&str] = &[
    "resource-not-found",
    "invalid-request",
    "not-authorized-for-resource",
];

/// The scope a usage cap names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UsageCapScope {
    /// This account's usage is capped.
    Account,
    /// The whole app (product) is capped.
    Product,
}

/// One entry of a body's `errors[]`, as X sent it (every field optional, strings clipped).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ApiErrorItem {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

/// What an unsuccessful answer said; written to a job's `last_error` jsonb. It is built only
/// from the response (or the transport error), never from the request, so it holds no token.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ErrorDetails {
    /// HTTP status; `None` when no response came.
    pub status: Option<u16>,
    /// Problem `type` URI as sent.
    pub problem_type: Option<String>,
    pub title: Option<String>,
    /// Problem `detail`, else the first error's `detail` or `message`; for a transport
    /// failure, the error text.
    pub detail: Option<String>,
    /// v1 error code (`errors[0].code`).
    pub code: Option<i64>,
    /// X's `reason` (e.g. `client-not-enrolled`), or followq's own note on what went wrong
    /// (`timeout`, `connect`, `connection`, `body`, `unexpected_success_body`, …).
    pub reason: Option<String>,
    /// The first ~500 characters of a body that was not JSON (or was empty: `""`).
    pub body_excerpt: Option<String>,
}

/// The classification of one follow request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowOutcome {
    /// 2xx with `data.following`. `errors` holds any `errors[]` that came beside `data`.
    Followed {
        following: bool,
        pending_follow: bool,
        errors: Vec<ApiErrorItem>,
    },
    /// 429, the 15-minute window: pause the account until the reset; not a failed attempt.
    RateLimited,
    /// 429 with problem type `…/usage-capped`: a spending or usage cap, not the window.
    UsageCapped {
        period: Option<String>,
        scope: Option<UsageCapScope>,
    },
    /// 401: the token needs a refresh (once), then re-authorization.
    Unauthorized(ErrorDetails),
    /// 403 `client-forbidden` / `unsupported-authentication`: every account must stop.
    AppForbidden(ErrorDetails),
    /// 403 "unable to follow …": this account pauses for a day, the job stays queued.
    AccountDailyCap(ErrorDetails),
    /// 402 (X's body says `CreditsDepleted`): the app's prepaid credits ran out. Every
    /// account stops until they are topped up; nothing fails. Any 402 is taken for it:
    /// whatever else "payment required" means, only the app's owner can fix it.
    CreditsDepleted(ErrorDetails),
    /// This job can never succeed (400, 404, blocked or suspended target, …).
    Permanent(ErrorDetails),
    /// Try again later (5xx, timeout, connection reset, a body cut short, …).
    Transient(ErrorDetails),
}

impl FollowOutcome {
    /// A stable snake_case name, stored in the ledger (`followq.attempts.outcome`).
    pub fn kind(&self) -> &'static str {
        match self {
            FollowOutcome::Followed { .. } => "succeeded",
            FollowOutcome::RateLimited => "rate_limited",
            FollowOutcome::UsageCapped { .. } => "usage_capped",
            FollowOutcome::Unauthorized(_) => "unauthorized",
            FollowOutcome::AppForbidden(_) => "app_forbidden",
            FollowOutcome::AccountDailyCap(_) => "daily_cap",
            FollowOutcome::CreditsDepleted(_) => "credits_depleted",
            FollowOutcome::Permanent(_) => "permanent",
            FollowOutcome::Transient(_) => "transient",
        }
    }

    /// The error details, for the outcomes that carry them.
    pub fn details(&self) -> Option<&ErrorDetails> {
        match self {
            FollowOutcome::Unauthorized(d)
            | FollowOutcome::AppForbidden(d)
            | FollowOutcome::AccountDailyCap(d)
            | FollowOutcome::CreditsDepleted(d)
            | FollowOutcome::Permanent(d)
            | FollowOutcome::Transient(d) => Some(d),
            FollowOutcome::Followed { .. }
            | FollowOutcome::RateLimited
            | FollowOutcome::UsageCapped { .. } => None,
        }
    }
}

/// Classifies an answer from its HTTP status and body bytes.
pub fn classify(status: u16, body: &[u8]) -> FollowOutcome {
    let parsed = ParsedBody::parse(body);
    match status {
        200..=299 => classify_success(status, body, &parsed),
        429 => {
            if parsed.has_problem(&["usage-capped"]) {
                let object = parsed.object();
                FollowOutcome::UsageCapped {
                    period: object.and_then(|o| string_field(o, "period")),
                    scope: object
                        .and_then(|o| o.get("scope"))
                        .and_then(Value::as_str)
                        .and_then(|s| match s.to_ascii_lowercase().as_str() {
                            "account" => Some(UsageCapScope::Account),
                            "product" => Some(UsageCapScope::Product),
                            _ => None,
                        }),
                }
            } else {
                FollowOutcome::RateLimited
            }
        }
        401 => FollowOutcome::Unauthorized(parsed.details(status, body)),
        402 => FollowOutcome::CreditsDepleted(parsed.details(status, body)),
        403 => classify_forbidden(status, body, &parsed),
        // Request timeout and "too early" are about timing, not the request.
        408 | 425 => FollowOutcome::Transient(parsed.details(status, body)),
        400..=499 => FollowOutcome::Permanent(parsed.details(status, body)),
        // 5xx, and statuses the endpoint never sends (1xx, 3xx: redirects are not
        // followed): retrying is bounded by the job's attempts, so err on that side.
        _ => FollowOutcome::Transient(parsed.details(status, body)),
    }
}

fn classify_success(status: u16, body: &[u8], parsed: &ParsedBody) -> FollowOutcome {
    let errors = parsed.errors();
    let data = parsed
        .object()
        .and_then(|o| o.get("data"))
        .and_then(Value::as_object);
    if let Some(following) = data
        .and_then(|d| d.get("following"))
        .and_then(Value::as_bool)
    {
        let pending_follow = data
            .and_then(|d| d.get("pending_follow"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return FollowOutcome::Followed {
            following,
            pending_follow,
            errors,
        };
    }
    // A 2xx without `data.following` is not a success: X said something else went wrong.
    let mut details = parsed.details(status, body);
    if details.reason.is_none() {
        details.reason = Some(String::from("unexpected_success_body"));
    }
    if parsed.has_problem(PERMANENT_PROBLEMS) {
        FollowOutcome::Permanent(details)
    } else {
        FollowOutcome::Transient(details)
    }
}

fn classify_forbidden(status: u16, body: &[u8], parsed: &ParsedBody) -> FollowOutcome {
    let details = parsed.details(status, body);
    if parsed.has_problem(APP_FORBIDDEN_PROBLEMS) || parsed.has_code(APP_FORBIDDEN_CODES) {
        return FollowOutcome::AppForbidden(details);
    }
    if parsed.has_code(&[DAILY_CAP_CODE]) || parsed.mentions(DAILY_CAP_TEXT) {
        return FollowOutcome::AccountDailyCap(details);
    }
    if parsed.object().is_none() {
        // A 403 that is not X's JSON (a proxy's or CDN's HTML page) says nothing about the
        // target; failing the job for it would be wrong, retrying a few times is not.
        return FollowOutcome::Transient(details);
    }
    FollowOutcome::Permanent(details)
}

/// The body, parsed once.
enum ParsedBody {
    Object(Map<String, Value>),
    /// Valid JSON that is not an object (`[]`, `"x"`, `null`): no fields to read.
    OtherJson,
    /// Not JSON at all: empty, HTML, text, or cut short.
    Unparsable,
}

impl ParsedBody {
    fn parse(body: &[u8]) -> ParsedBody {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => ParsedBody::Object(map),
            Ok(_) => ParsedBody::OtherJson,
            Err(_) => ParsedBody::Unparsable,
        }
    }

    fn object(&self) -> Option<&Map<String, Value>> {
        match self {
            ParsedBody::Object(map) => Some(map),
            ParsedBody::OtherJson | ParsedBody::Unparsable => None,
        }
    }

    fn errors(&self) -> Vec<ApiErrorItem> {
        let Some(items) = self
            .object()
            .and_then(|o| o.get("errors"))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(Value::as_object)
            .map(|item| ApiErrorItem {
                problem_type: string_field(item, "type"),
                title: string_field(item, "title"),
                detail: string_field(item, "detail"),
                message: string_field(item, "message"),
                code: item.get("code").and_then(Value::as_i64),
            })
            .collect()
    }

    /// Every problem type in the body: the top-level one and each error's.
    fn problem_types(&self) -> Vec<String> {
        let top = self.object().and_then(|o| string_field(o, "type"));
        top.into_iter()
            .chain(self.errors().into_iter().filter_map(|e| e.problem_type))
            .collect()
    }

    fn has_problem(&self, names: &[&str]) -> bool {
        self.problem_types()
            .iter()
            .filter_map(|t| problem_name(t))
            .any(|name| names.contains(&name.as_str()))
    }

    fn has_code(&self, codes: &[i64]) -> bool {
        self.errors()
            .iter()
            .filter_map(|e| e.code)
            .any(|c| codes.contains(&c))
    }

    fn mentions(&self, needle: &str) -> bool {
        let Some(object) = self.object() else {
            return false;
        };
        let top = ["detail", "title"]
            .into_iter()
            .filter_map(|k| string_field(object, k));
        let items = self
            .errors()
            .into_iter()
            .flat_map(|e| [e.detail, e.title, e.message])
            .flatten();
        top.chain(items)
            .any(|text| text.to_ascii_lowercase().contains(needle))
    }

    fn details(&self, status: u16, body: &[u8]) -> ErrorDetails {
        let Some(object) = self.object() else {
            return ErrorDetails {
                status: Some(status),
                body_excerpt: Some(excerpt(body)),
                ..ErrorDetails::default()
            };
        };
        let first = self.errors().into_iter().next().unwrap_or_default();
        ErrorDetails {
            status: Some(status),
            problem_type: string_field(object, "type").or(first.problem_type),
            title: string_field(object, "title").or(first.title),
            detail: string_field(object, "detail")
                .or(first.detail)
                .or(first.message),
            code: first.code,
            reason: string_field(object, "reason"),
            body_excerpt: None,
        }
    }
}

/// The `<name>` of `https://api.x.com/2/problems/<name>` or the same under
/// `api.twitter.com`; `None` for `about:blank` and anything else.
pub fn problem_name(problem_type: &str) -> Option<String> {
    let url = reqwest::Url::parse(problem_type).ok()?;
    if !matches!(url.scheme(), "https" | "http") {
        return None;
    }
    if !matches!(url.host_str()?, "api.x.com" | "api.twitter.com") {
        return None;
    }
    let name = url.path().strip_prefix("/2/problems/")?;
    (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
}

fn string_field(object: &Map<String, Value>, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(clip)
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_FIELD_CHARS).collect()
}

/// The start of a body that could not be read as JSON, lossily decoded.
fn excerpt(body: &[u8]) -> String {
    // Decode a little more than needed: clipping by chars then keeps whole characters.
    let head = &body[..body.len().min(MAX_FIELD_CHARS * 4)];
    clip(&String::from_utf8_lossy(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(outcome: &FollowOutcome) -> &ErrorDetails {
        outcome.details().expect("outcome carries details")
    }

    #[test]
    fn following_and_pending_follow_succeed() {
        assert_eq!(
            classify(
                200,
                br#"{"data":{"following":true,"pending_follow":false}}"#
            ),
            FollowOutcome::Followed {
                following: true,
                pending_follow: false,
                errors: vec![]
            }
        );
        assert_eq!(
            classify(
                200,
                br#"{"data":{"following":false,"pending_follow":true}}"#
            ),
            FollowOutcome::Followed {
                following: false,
                pending_follow: true,
                errors: vec![]
            }
        );
    }

    #[test]
    fn a_402_is_credits_depleted_with_xs_body_kept() {
        // As X sends it: plain JSON, no status field.
        let body = br#"{"title":"CreditsDepleted","detail":"Your enrolled account [1234567890123456789] does not have any credits to fulfill this request.","type":"https://api.twitter.com/2/problems/credits"}"#;
        let FollowOutcome::CreditsDepleted(details) = classify(402, body) else {
            panic!("{:?}", classify(402, body));
        };
        assert_eq!(details.status, Some(402));
        assert_eq!(details.title.as_deref(), Some("CreditsDepleted"));
        assert_eq!(
            details.problem_type.as_deref(),
            Some("https://api.twitter.com/2/problems/credits")
        );
        assert_eq!(classify(402, b"").kind(), "credits_depleted");
    }

    #[test]
    fn a_200_with_data_and_errors_succeeds_and_keeps_the_errors() {
        let body = br#"{"data":{"following":true,"pending_follow":false},
            "errors":[{"title":"Partial","detail":"something odd","type":"https://api.x.com/2/problems/resource-not-found"},
                      {"message":"v1 style","code":34}, "not an object"]}"#;
        let outcome = classify(200, body);
        let FollowOutcome::Followed { errors, .. } = &outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].detail.as_deref(), Some("something odd"));
        assert_eq!(errors[1].code, Some(34));
        assert_eq!(errors[1].message.as_deref(), Some("v1 style"));
        assert_eq!(outcome.kind(), "succeeded");
    }

    #[test]
    fn a_200_without_data_is_not_a_success() {
        let outcome = classify(200, br#"{"errors":[{"message":"hmm"}]}"#);
        assert_eq!(outcome.kind(), "transient");
        assert_eq!(details(&outcome).detail.as_deref(), Some("hmm"));

        let missing = br#"{"errors":[{"title":"Not Found Error","detail":"Could not find user with target_user_id: [1].",
            "type":"https://api.twitter.com/2/problems/resource-not-found"}]}"#;
        let outcome = classify(200, missing);
        assert_eq!(outcome.kind(), "permanent");
        assert_eq!(
            details(&outcome).problem_type.as_deref(),
            Some("https://api.twitter.com/2/problems/resource-not-found")
        );

        for body in [
            &br#"{}"#[..],
            br#"{"data":{}}"#,
            br#"{"data":{"following":"yes"}}"#,
            br#"{"data":null}"#,
            br#"[]"#,
            b"",
        ] {
            let outcome = classify(200, body);
            assert_eq!(
                outcome.kind(),
                "transient",
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_200_cut_short_is_transient_with_an_excerpt() {
        let outcome = classify(200, br#"{"data":{"following":tr"#);
        assert_eq!(outcome.kind(), "transient");
        assert_eq!(
            details(&outcome).body_excerpt.as_deref(),
            Some(r#"{"data":{"following":tr"#)
        );
    }

    #[test]
    fn rate_limited_in_both_shapes_and_without_a_body() {
        for body in [
            &br#"{"errors":[{"code":88,"message":"Rate limit exceeded"}]}"#[..],
            br#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#,
            b"",
            b"<html>slow down</html>",
        ] {
            assert_eq!(classify(429, body), FollowOutcome::RateLimited);
        }
    }

    #[test]
    fn usage_capped_names_period_and_scope_under_either_host() {
        let outcome = classify(
            429,
            br#"{"title":"UsageCapExceeded","detail":"Usage cap exceeded: Monthly product cap",
                "type":"https://api.twitter.com/2/problems/usage-capped","period":"Monthly","scope":"Product"}"#,
        );
        assert_eq!(
            outcome,
            FollowOutcome::UsageCapped {
                period: Some("Monthly".into()),
                scope: Some(UsageCapScope::Product)
            }
        );
        let outcome = classify(
            429,
            br#"{"type":"https://api.x.com/2/problems/usage-capped","period":"Daily","scope":"Account"}"#,
        );
        assert_eq!(
            outcome,
            FollowOutcome::UsageCapped {
                period: Some("Daily".into()),
                scope: Some(UsageCapScope::Account)
            }
        );
        let outcome = classify(
            429,
            br#"{"type":"https://api.x.com/2/problems/usage-capped","scope":42}"#,
        );
        assert_eq!(
            outcome,
            FollowOutcome::UsageCapped {
                period: None,
                scope: None
            }
        );
        assert_eq!(outcome.kind(), "usage_capped");
    }

    #[test]
    fn a_lookalike_problem_host_does_not_count() {
        let outcome = classify(
            429,
            br#"{"type":"https://example.com/2/problems/usage-capped"}"#,
        );
        assert_eq!(outcome, FollowOutcome::RateLimited);
        assert_eq!(problem_name("https://api.x.com/2/problems/"), None);
        assert_eq!(problem_name("about:blank"), None);
        assert_eq!(
            problem_name("https://api.x.com/2/problems/usage-capped").as_deref(),
            Some("usage-capped")
        );
    }

    #[test]
    fn unauthorized_whatever_the_body() {
        let outcome = classify(
            401,
            br#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#,
        );
        assert_eq!(outcome.kind(), "unauthorized");
        assert_eq!(details(&outcome).title.as_deref(), Some("Unauthorized"));
        assert_eq!(details(&outcome).status, Some(401));
        assert_eq!(classify(401, b"").kind(), "unauthorized");
        assert_eq!(
            classify(
                401,
                br#"{"errors":[{"code":89,"message":"Invalid or expired token."}]}"#
            )
            .kind(),
            "unauthorized"
        );
    }

    #[test]
    fn app_forbidden_by_problem_type_or_v1_code() {
        let outcome = classify(
            403,
            br#"{"title":"Client Forbidden","detail":"When authenticating requests to the Twitter API v2 endpoints, you must use keys and tokens from a Twitter developer App that is attached to a Project.",
                "registration_url":"https://developer.twitter.com/","type":"https://api.twitter.com/2/problems/client-forbidden",
                "required_enrollment":"Appropriate Level of API Access","reason":"client-not-enrolled"}"#,
        );
        assert_eq!(outcome.kind(), "app_forbidden");
        assert_eq!(
            details(&outcome).reason.as_deref(),
            Some("client-not-enrolled")
        );
        let outcome = classify(
            403,
            br#"{"title":"Unsupported Authentication","detail":"Authenticating with OAuth 2.0 Application-Only is forbidden for this endpoint.",
                "type":"https://api.x.com/2/problems/unsupported-authentication","status":403}"#,
        );
        assert_eq!(outcome.kind(), "app_forbidden");
        let outcome = classify(
            403,
            br#"{"errors":[{"message":"You currently have access to a subset of X API V2 endpoints","code":453}]}"#,
        );
        assert_eq!(outcome.kind(), "app_forbidden");
        assert_eq!(details(&outcome).code, Some(453));
    }

    #[test]
    fn the_daily_follow_cap_pauses_the_account() {
        let outcome = classify(
            403,
            br#"{"errors":[{"code":161,"message":"You are unable to follow more people at this time."}]}"#,
        );
        assert_eq!(outcome.kind(), "daily_cap");
        assert_eq!(details(&outcome).code, Some(161));
        let outcome = classify(
            403,
            br#"{"title":"Forbidden","type":"about:blank","status":403,
                "detail":"You are Unable To Follow more people at this time. Learn more <a href='http://t.co/lAV91Ve1N7'>here</a>."}"#,
        );
        assert_eq!(outcome.kind(), "daily_cap");
    }

    #[test]
    fn other_403s_are_permanent_for_the_job() {
        for body in [
            &br#"{"title":"Forbidden","type":"about:blank","status":403,"detail":"You cannot follow an account that is blocking you."}"#[..],
            br#"{"errors":[{"code":162,"message":"You have been blocked from following this account at the request of the user."}]}"#,
            br#"{"detail":"Forbidden","type":"https://api.x.com/2/problems/not-authorized-for-resource","title":"Forbidden"}"#,
            br#"{}"#,
        ] {
            let outcome = classify(403, body);
            assert_eq!(outcome.kind(), "permanent", "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_403_that_is_not_json_is_transient_with_an_excerpt() {
        let outcome = classify(403, b"<html><body>Access denied by proxy</body></html>");
        assert_eq!(outcome.kind(), "transient");
        assert_eq!(
            details(&outcome).body_excerpt.as_deref(),
            Some("<html><body>Access denied by proxy</body></html>")
        );
    }

    #[test]
    fn invalid_request_and_not_found_are_permanent() {
        let outcome = classify(
            400,
            br#"{"errors":[{"parameters":{"target_user_id":["x"]},"message":"The `target_user_id` query parameter value [x] is not valid"}],
                "title":"Invalid Request","detail":"One or more parameters to your request was invalid.",
                "type":"https://api.twitter.com/2/problems/invalid-request"}"#,
        );
        assert_eq!(outcome.kind(), "permanent");
        let d = details(&outcome);
        assert_eq!(d.title.as_deref(), Some("Invalid Request"));
        assert_eq!(
            d.detail.as_deref(),
            Some("One or more parameters to your request was invalid.")
        );
        assert_eq!(classify(404, b"").kind(), "permanent");
        assert_eq!(
            classify(
                404,
                br#"{"title":"Not Found Error","type":"https://api.x.com/2/problems/resource-not-found"}"#
            )
            .kind(),
            "permanent"
        );
        assert_eq!(classify(400, b"garbage").kind(), "permanent");
    }

    #[test]
    fn server_errors_and_timing_statuses_are_transient() {
        for status in [500, 502, 503, 504, 408, 425, 302, 101] {
            assert_eq!(classify(status, b"").kind(), "transient", "{status}");
        }
        let outcome = classify(
            503,
            br#"{"title":"Service Unavailable","type":"about:blank"}"#,
        );
        assert_eq!(
            details(&outcome).title.as_deref(),
            Some("Service Unavailable")
        );
    }

    #[test]
    fn the_v1_shape_fills_code_and_detail() {
        let outcome = classify(
            404,
            br#"{"errors":[{"code":50,"message":"User not found."}]}"#,
        );
        let d = details(&outcome);
        assert_eq!(d.code, Some(50));
        assert_eq!(d.detail.as_deref(), Some("User not found."));
        assert_eq!(d.body_excerpt, None);
    }

    #[test]
    fn odd_bodies_never_panic_and_stay_small() {
        let long = "é".repeat(5000);
        let bodies: Vec<Vec<u8>> = vec![
            vec![0xff, 0xfe, 0x00, 0x80],
            long.clone().into_bytes(),
            format!(r#"{{"detail":"{long}","errors":"no"}}"#).into_bytes(),
            br#"{"errors":[1,2,{"code":"x"}],"data":[]}"#.to_vec(),
            b"null".to_vec(),
            b"\"just a string\"".to_vec(),
        ];
        for status in [200, 400, 401, 403, 404, 429, 500] {
            for body in &bodies {
                let outcome = classify(status, body);
                if let Some(d) = outcome.details() {
                    for text in [&d.detail, &d.body_excerpt].into_iter().flatten() {
                        assert!(text.chars().count() <= MAX_FIELD_CHARS);
                    }
                }
            }
        }
        let outcome = classify(500, long.as_bytes());
        assert_eq!(
            details(&outcome)
                .body_excerpt
                .as_ref()
                .map(|e| e.chars().count()),
            Some(MAX_FIELD_CHARS)
        );
    }

    #[test]
    fn empty_bodies_are_classified() {
        assert_eq!(classify(200, b"").kind(), "transient");
        assert_eq!(classify(403, b"").kind(), "transient");
        assert_eq!(
            details(&classify(500, b"")).body_excerpt.as_deref(),
            Some("")
        );
    }

    #[test]
    fn kinds_are_the_ledger_names() {
        let d = ErrorDetails::default();
        let kinds: Vec<&str> = [
            FollowOutcome::Followed {
                following: true,
                pending_follow: false,
                errors: vec![],
            },
            FollowOutcome::RateLimited,
            FollowOutcome::UsageCapped {
                period: None,
                scope: None,
            },
            FollowOutcome::Unauthorized(d.clone()),
            FollowOutcome::AppForbidden(d.clone()),
            FollowOutcome::AccountDailyCap(d.clone()),
            FollowOutcome::Permanent(d.clone()),
            FollowOutcome::Transient(d),
        ]
        .iter()
        .map(FollowOutcome::kind)
        .collect();
        assert_eq!(
            kinds,
            [
                "succeeded",
                "rate_limited",
                "usage_capped",
                "unauthorized",
                "app_forbidden",
                "daily_cap",
                "permanent",
                "transient"
            ]
        );
    }
}
