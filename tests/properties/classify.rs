//! `xapi::classify`: any status and any body give exactly one outcome, the one the status
//! class allows, with bounded details.

use followq::xapi::{ErrorDetails, FollowOutcome, classify};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// The most characters a detail field may hold (`MAX_FIELD_CHARS` in the classifier).
const MAX_FIELD_CHARS: usize = 500;

/// Any JSON value, nested a few levels, with the field names the classifier reads showing up
/// often enough to reach its branches.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("data".to_owned()),
        Just("following".to_owned()),
        Just("pending_follow".to_owned()),
        Just("errors".to_owned()),
        Just("type".to_owned()),
        Just("title".to_owned()),
        Just("detail".to_owned()),
        Just("message".to_owned()),
        Just("code".to_owned()),
        Just("reason".to_owned()),
        Just("period".to_owned()),
        Just("scope".to_owned()),
        "[a-z_]{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just("https://api.x.com/2/problems/usage-capped".to_owned()),
            Just("https://api.twitter.com/2/problems/client-forbidden".to_owned()),
            Just("You are unable to follow more people at this time.".to_owned()),
            Just("Account".to_owned()),
            Just("Product".to_owned()),
            ".{0,40}",
            "\\PC{600,700}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Bodies: arbitrary bytes, JSON of any shape, and JSON cut short.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            let at = cut.index(text.len().max(1));
            text[..at.min(text.len())].to_vec()
        }),
    ]
}

fn check_details(details: &ErrorDetails, status: u16) -> Result<(), TestCaseError> {
    prop_assert_eq!(details.status, Some(status));
    for field in [
        &details.problem_type,
        &details.title,
        &details.detail,
        &details.reason,
        &details.body_excerpt,
    ]
    .into_iter()
    .flatten()
    {
        prop_assert!(
            field.chars().count() <= MAX_FIELD_CHARS,
            "{} chars",
            field.chars().count()
        );
    }
    // last_error is JSON: the details always serialize.
    prop_assert!(serde_json::to_string(details).is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any status, any body: one outcome, allowed by the status class, details bounded.
    #[test]
    fn any_answer_gets_one_classification_its_status_allows(status in any::<u16>(), body in body()) {
        let outcome = classify(status, &body);
        let kind = outcome.kind();
        let allowed: &[&str] = match status {
            200..=299 => &["succeeded", "permanent", "transient"],
            429 => &["rate_limited", "usage_capped"],
            401 => &["unauthorized"],
            403 => &["app_forbidden", "daily_cap", "permanent", "transient"],
            408 | 425 => &["transient"],
            400..=499 => &["permanent"],
            _ => &["transient"],
        };
        prop_assert!(allowed.contains(&kind), "status {} gave {}", status, kind);
        match outcome.details() {
            Some(details) => check_details(details, status)?,
            None => {
                let carries_none = matches!(
                    outcome,
                    FollowOutcome::Followed { .. }
                        | FollowOutcome::RateLimited
                        | FollowOutcome::UsageCapped { .. }
                );
                prop_assert!(carries_none, "{} without details", kind);
            }
        }
    }

    /// A 2xx whose `data.following` is a boolean is a follow with that value, whatever else
    /// the body holds.
    #[test]
    fn a_success_with_data_following_is_a_follow(
        status in 200u16..300,
        following in any::<bool>(),
        pending in any::<bool>(),
        extra in prop::collection::vec(("[a-z]{1,8}", json_value()), 0..4),
    ) {
        let mut body = Map::new();
        for (key, value) in extra {
            body.insert(key, value);
        }
        body.insert("data".into(), json!({"following": following, "pending_follow": pending}));
        let outcome = classify(status, Value::Object(body).to_string().as_bytes());
        match outcome {
            FollowOutcome::Followed { following: f, pending_follow: p, .. } => {
                prop_assert_eq!(f, following);
                prop_assert_eq!(p, pending);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
