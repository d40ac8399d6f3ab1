//! `xapi::ratelimit_headers`: any header values at any time read without panicking, and what
//! is read stays within the parser's bounds.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use followq::xapi::RateLimitInfo;
use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

const NAMES: [&str; 10] = [
    "x-rate-limit-limit",
    "x-rate-limit-remaining",
    "x-rate-limit-reset",
    "x-user-limit-24hour-limit",
    "x-user-limit-24hour-remaining",
    "x-user-limit-24hour-reset",
    "x-app-limit-24hour-limit",
    "x-app-limit-24hour-remaining",
    "x-app-limit-24hour-reset",
    "retry-after",
];

/// Header values: any bytes a header may carry, numbers of every size and sign, and dates.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40).prop_filter_map(
            "a valid header value",
            |bytes| HeaderValue::from_bytes(&bytes).ok()
        ),
        any::<u64>().prop_map(HeaderValue::from),
        any::<i64>().prop_map(HeaderValue::from),
        (any::<u32>(), " {0,3}").prop_map(|(n, pad)| {
            HeaderValue::from_str(&format!("{pad}{n}{pad}")).unwrap_or(HeaderValue::from_static(""))
        }),
        Just(HeaderValue::from_static("4294967295")),
        Just(HeaderValue::from_static("18446744073709551616")),
        Just(HeaderValue::from_static("Mon, 21 Sep 2026 14:14:20 GMT")),
        Just(HeaderValue::from_static("Fri, 31 Dec 9999 23:59:59 GMT")),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec(
        (prop::sample::select(NAMES.to_vec()), header_value()),
        0..14,
    )
    .prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_static(name), value);
        }
        map
    })
}

/// Any instant chrono holds, most often around today.
fn now() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        3 => (1_600_000_000i64..2_200_000_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
        1 => (DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp())
            .prop_filter_map("in chrono's range", |s| DateTime::from_timestamp(s, 0)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Whatever the headers and the clock, reading them does not panic and stays bounded.
    #[test]
    fn any_headers_read_within_bounds(headers in headers(), now in now()) {
        let info = RateLimitInfo::from_headers(&headers, now);
        let counts = [info.limit, info.remaining]
            .into_iter()
            .chain(info.user_24h.iter().flat_map(|l| [l.limit, l.remaining]))
            .chain(info.app_24h.iter().flat_map(|l| [l.limit, l.remaining]))
            .flatten();
        for count in counts {
            prop_assert!(count <= i32::MAX as u32, "{}", count);
        }
        let resets = [info.reset_at]
            .into_iter()
            .chain(info.user_24h.iter().map(|l| l.reset_at))
            .chain(info.app_24h.iter().map(|l| l.reset_at))
            .flatten();
        let latest = now.checked_add_signed(TimeDelta::hours(48));
        for reset in resets {
            prop_assert!(latest.is_none_or(|latest| reset <= latest), "reset {} at {}", reset, now);
        }
        if let Some(wait) = info.retry_after {
            prop_assert!(wait <= Duration::from_secs(48 * 3600));
        }
        prop_assert_eq!(info.window_exhausted(), info.remaining == Some(0));
        if let Some(resume) = info.resume_at(now) {
            prop_assert!(resume >= now, "resume {} before now {}", resume, now);
        }
    }

    /// A count is read exactly when it is a whole number an `i32` holds.
    #[test]
    fn a_count_reads_back_when_an_i32_holds_it(n in any::<u64>(), pad in " {0,2}") {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-rate-limit-remaining",
            HeaderValue::from_str(&format!("{pad}{n}{pad}")).unwrap(),
        );
        let info = RateLimitInfo::from_headers(&headers, Utc::now());
        let expected = u32::try_from(n).ok().filter(|n| *n <= i32::MAX as u32);
        prop_assert_eq!(info.remaining, expected);
    }
}
