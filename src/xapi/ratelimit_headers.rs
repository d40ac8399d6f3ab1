//! Reading X's rate-limit headers into [`RateLimitInfo`], which travels with every response,
//! success or error.
//!
//! Headers read: `x-rate-limit-{limit,remaining,reset}` (the 15-minute user window),
//! `x-user-limit-24hour-{limit,remaining,reset}`, `x-app-limit-24hour-{limit,remaining,reset}`
//! and `Retry-After` (delta-seconds or an HTTP date). Resets are absolute Unix seconds.
//!
//! Nothing here fails: a missing, empty, negative, non-numeric or absurd value is "unknown"
//! (`None`). A reset in the past is kept as sent (the ledger records what X said), but
//! [`RateLimitInfo::resume_at`] ignores it, so a stale header or a skewed clock never turns
//! into a pause that is already over (which would retry at once, in a hot loop).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// A reset further ahead than this is not believed: X's windows are 15 minutes and 24 hours.
/// A value beyond it is garbage (milliseconds sent as seconds, say) and reads as unknown.
const MAX_PLAUSIBLE_RESET_AHEAD: TimeDelta = TimeDelta::hours(48);

/// The most a `Retry-After` is believed, for the same reason.
const MAX_PLAUSIBLE_RETRY_AFTER: Duration = Duration::from_secs(48 * 3600);

/// The largest limit or remaining count believed. X's budgets are in the tens to thousands;
/// a value beyond an `i32` (`x-rate-limit-remaining: 4294967295`) fits no ledger column and
/// would overflow the window arithmetic (`remaining + 1`), so it reads as unknown.
const MAX_PLAUSIBLE_COUNT: u32 = i32::MAX as u32;

/// One 24-hour limit (`x-user-limit-24hour-*` or `x-app-limit-24hour-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Limit24h {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    pub reset_at: Option<DateTime<Utc>>,
}

/// What the response said about the account's budgets; every field is `None` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct RateLimitInfo {
    /// `x-rate-limit-limit`: requests allowed in the current window.
    pub limit: Option<u32>,
    /// `x-rate-limit-remaining`: requests left in the current window.
    pub remaining: Option<u32>,
    /// `x-rate-limit-reset`: when the current window ends.
    pub reset_at: Option<DateTime<Utc>>,
    /// `x-user-limit-24hour-*`, when any of the three is present.
    pub user_24h: Option<Limit24h>,
    /// `x-app-limit-24hour-*`, when any of the three is present.
    pub app_24h: Option<Limit24h>,
    /// `Retry-After`, as a wait from when the response arrived.
    pub retry_after: Option<Duration>,
}

impl RateLimitInfo {
    /// Reads the headers of a response that arrived at `now`.
    pub fn from_headers(headers: &HeaderMap, now: DateTime<Utc>) -> RateLimitInfo {
        RateLimitInfo {
            limit: count(headers, "x-rate-limit-limit"),
            remaining: count(headers, "x-rate-limit-remaining"),
            reset_at: reset(headers, "x-rate-limit-reset", now),
            user_24h: limit_24h(headers, "x-user-limit-24hour", now),
            app_24h: limit_24h(headers, "x-app-limit-24hour", now),
            retry_after: retry_after(headers, now),
        }
    }

    /// True when X said no request is left in the current window (`remaining == 0`).
    pub fn window_exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// When the account may send again, from what the headers say: `Retry-After` first, then
    /// `x-rate-limit-reset` if it is still ahead of `now`. `None` means unknown (the caller
    /// backs off on its own); a reset already past is treated as unknown, not as "now".
    pub fn resume_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Some(wait) = self.retry_after {
            let wait = TimeDelta::from_std(wait).ok()?;
            return now.checked_add_signed(wait);
        }
        self.reset_at.filter(|reset| *reset > now)
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    // A non-ASCII value reads as absent, as does an empty one.
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

fn count(headers: &HeaderMap, name: &str) -> Option<u32> {
    header_str(headers, name)?
        .parse()
        .ok()
        .filter(|count| *count <= MAX_PLAUSIBLE_COUNT)
}

fn reset(headers: &HeaderMap, name: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let seconds: i64 = header_str(headers, name)?.parse().ok()?;
    let at = DateTime::<Utc>::from_timestamp(seconds, 0)?;
    // A reset in the past is kept (see the module doc); one implausibly far ahead is not.
    // (Checked: a clock at the end of chrono's range must not panic either.)
    let plausible = now
        .checked_add_signed(MAX_PLAUSIBLE_RESET_AHEAD)
        .is_none_or(|latest| at <= latest);
    plausible.then_some(at)
}

fn limit_24h(headers: &HeaderMap, prefix: &str, now: DateTime<Utc>) -> Option<Limit24h> {
    let limit = Limit24h {
        limit: count(headers, &format!("{prefix}-limit")),
        remaining: count(headers, &format!("{prefix}-remaining")),
        reset_at: reset(headers, &format!("{prefix}-reset"), now),
    };
    (limit != Limit24h::default()).then_some(limit)
}

fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let raw = header_str(headers, RETRY_AFTER.as_str())?;
    let wait = if let Ok(seconds) = raw.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        // An HTTP date (IMF-fixdate is a subset of RFC 2822). One in the past means "now".
        let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    (wait <= MAX_PLAUSIBLE_RETRY_AFTER).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn reads_the_window_headers() {
        let h = headers(&[
            ("x-rate-limit-limit", b"50"),
            ("x-rate-limit-remaining", b"49"),
            ("x-rate-limit-reset", b"1790000900"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(NOW));
        assert_eq!(info.limit, Some(50));
        assert_eq!(info.remaining, Some(49));
        assert_eq!(info.reset_at, Some(at(NOW + 900)));
        assert_eq!(info.user_24h, None);
        assert_eq!(info.app_24h, None);
        assert_eq!(info.retry_after, None);
        assert!(!info.window_exhausted());
        assert_eq!(info.resume_at(at(NOW)), Some(at(NOW + 900)));
    }

    #[test]
    fn missing_headers_are_unknown() {
        let info = RateLimitInfo::from_headers(&HeaderMap::new(), at(NOW));
        assert_eq!(info, RateLimitInfo::default());
        assert!(!info.window_exhausted());
        assert_eq!(info.resume_at(at(NOW)), None);
    }

    #[test]
    fn garbage_values_are_unknown_not_errors() {
        let h = headers(&[
            ("x-rate-limit-limit", b"fifty"),
            ("x-rate-limit-remaining", b"-1"),
            ("x-rate-limit-reset", b"soon"),
            ("x-user-limit-24hour-limit", b""),
            ("x-user-limit-24hour-remaining", b"1.5"),
            ("x-user-limit-24hour-reset", b"\xff\xfe"),
            ("retry-after", b"later, maybe"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(NOW));
        assert_eq!(info, RateLimitInfo::default());
    }

    #[test]
    fn values_too_big_or_too_far_are_unknown() {
        let h = headers(&[
            ("x-rate-limit-limit", b"99999999999"),
            // Milliseconds sent where seconds belong: centuries ahead.
            ("x-rate-limit-reset", b"1790000900000"),
            ("retry-after", b"99999999"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(NOW));
        assert_eq!(info.limit, None);
        assert_eq!(info.reset_at, None);
        assert_eq!(info.retry_after, None);
    }

    #[test]
    fn counts_beyond_an_i32_are_unknown() {
        let h = headers(&[
            ("x-rate-limit-limit", b"2147483647"),
            ("x-rate-limit-remaining", b"4294967295"),
            ("x-app-limit-24hour-remaining", b"2147483648"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(NOW));
        assert_eq!(info.limit, Some(2_147_483_647));
        assert_eq!(info.remaining, None);
        assert_eq!(info.app_24h, None);
    }

    #[test]
    fn a_reset_in_the_past_is_kept_but_never_waited_for() {
        let h = headers(&[
            ("x-rate-limit-remaining", b"0"),
            ("x-rate-limit-reset", b"1789999000"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(NOW));
        assert_eq!(info.reset_at, Some(at(NOW - 1000)));
        assert!(info.window_exhausted());
        assert_eq!(info.resume_at(at(NOW)), None);
    }

    #[test]
    fn reads_both_24_hour_limits() {
        let h = headers(&[
            ("x-user-limit-24hour-limit", b"400"),
            ("x-user-limit-24hour-remaining", b"0"),
            ("x-user-limit-24hour-reset", b"1790050000"),
            ("x-app-limit-24hour-remaining", b"999"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(NOW));
        assert_eq!(
            info.user_24h,
            Some(Limit24h {
                limit: Some(400),
                remaining: Some(0),
                reset_at: Some(at(NOW + 50_000)),
            })
        );
        assert_eq!(
            info.app_24h,
            Some(Limit24h {
                limit: None,
                remaining: Some(999),
                reset_at: None,
            })
        );
    }

    #[test]
    fn retry_after_in_seconds_wins_over_the_reset() {
        let h = headers(&[
            ("x-rate-limit-reset", b"1790000900"),
            ("retry-after", b" 120 "),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(NOW));
        assert_eq!(info.retry_after, Some(Duration::from_secs(120)));
        assert_eq!(info.resume_at(at(NOW)), Some(at(NOW + 120)));
    }

    #[test]
    fn retry_after_as_an_http_date() {
        // 1790000000 is Mon, 21 Sep 2026 14:13:20 GMT.
        let h = headers(&[("retry-after", b"Mon, 21 Sep 2026 14:14:20 GMT")]);
        let info = RateLimitInfo::from_headers(&h, at(NOW));
        assert_eq!(info.retry_after, Some(Duration::from_secs(60)));
        let past = headers(&[("retry-after", b"Mon, 21 Sep 2026 14:00:00 GMT")]);
        let info = RateLimitInfo::from_headers(&past, at(NOW));
        assert_eq!(info.retry_after, Some(Duration::ZERO));
    }
}
