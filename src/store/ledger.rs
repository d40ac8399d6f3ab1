//! What a ledger row (`followq.attempts`) says about X, defined once: whether its request is
//! still unanswered, and whether X may have acted on it. Every statement that counts requests
//! against a cap (the account's daily follows in the ledger seed, the app's daily follows, the
//! status page's daily count) and the daemon's live limiter use these, so they can never
//! disagree about what a request cost.
//!
//! X may act on a request whatever followq learns of it: an answer can be lost with its
//! connection, X can apply a follow and still answer 5xx, a request can time out after X made
//! the follow. So a request counts from the moment it may leave until an answer *proves* X did
//! nothing: a 4xx (429, 401, 402, 403, a refusal of the request), or a request that never left
//! (`not_sent`: the claim was never sent, or the connection to X could not be made).
//!
//! The SQL fragments are macros that expand to string literals, so statements build them in
//! with `concat!` and stay `&'static str`; each takes the alias of the ledger row.

/// A ledger row without a final answer: none recorded yet, or a reaper marked it `abandoned`
/// (its daemon is gone; the request may still reach X until its `answer_by`, and its answer
/// may still arrive and be recorded).
macro_rules! unanswered_sql {
    ($t:literal) => {
        concat!(
            "(",
            $t,
            ".outcome IS NULL OR ",
            $t,
            ".outcome = 'abandoned')"
        )
    };
}
pub(crate) use unanswered_sql;

/// A ledger row whose request X may have acted on: unanswered, or answered with anything but
/// a 4xx (2xx, 5xx, no status at all: a timeout, a connection lost after sending, a body cut
/// short), and not `not_sent`. Mirrors [`may_have_acted`].
macro_rules! may_have_acted_sql {
    ($t:literal) => {
        concat!(
            "(",
            $t,
            ".outcome IS NULL OR ",
            $t,
            ".outcome = 'abandoned' OR (",
            $t,
            ".outcome <> 'not_sent' AND (",
            $t,
            ".http_status IS NULL OR ",
            $t,
            ".http_status NOT BETWEEN 400 AND 499)))"
        )
    };
}
pub(crate) use may_have_acted_sql;

/// The latest instant a ledger row's request may have reached X: an unanswered one at its
/// `answer_by` (or, for a row without one, `$answer_within` seconds after it was sent, or at
/// its answer if later), an answered one at its answer. A follow counts against the daily
/// caps until a day after this.
macro_rules! latest_arrival_sql {
    ($t:literal, $answer_within:literal) => {
        concat!(
            "CASE WHEN ",
            $crate::store::ledger::unanswered_sql!($t),
            " THEN coalesce(",
            $t,
            ".answer_by, greatest(",
            $t,
            ".sent_at + make_interval(secs => ",
            $answer_within,
            "), ",
            $t,
            ".completed_at)) ELSE coalesce(",
            $t,
            ".completed_at, ",
            $t,
            ".sent_at + make_interval(secs => ",
            $answer_within,
            ")) END"
        )
    };
}
pub(crate) use latest_arrival_sql;

/// A ledger row X billed: it answered 2xx (X bills every request it acts on; pay-per-use).
/// Mirrors [`billed`].
macro_rules! billed_sql {
    ($t:literal) => {
        concat!("(", $t, ".http_status BETWEEN 200 AND 299)")
    };
}
pub(crate) use billed_sql;

/// A ledger row X may have billed without saying so: X may have acted on it
/// ([`may_have_acted_sql!`]) and gave no 2xx (5xx, no answer, abandoned, in the air). Mirrors
/// [`possibly_billed`].
macro_rules! possibly_billed_sql {
    ($t:literal) => {
        concat!(
            "(",
            $crate::store::ledger::may_have_acted_sql!($t),
            " AND NOT coalesce(",
            $crate::store::ledger::billed_sql!($t),
            ", false))"
        )
    };
}
pub(crate) use possibly_billed_sql;

/// Whether X billed the request: it answered 2xx.
pub fn billed(http_status: Option<i16>) -> bool {
    http_status.is_some_and(|status| (200..=299).contains(&status))
}

/// Whether X may have billed the request without a 2xx: it may have acted on it and did not
/// say so (5xx, no answer, abandoned, in the air).
pub fn possibly_billed(outcome: Option<&str>, http_status: Option<i16>) -> bool {
    may_have_acted(outcome, http_status) && !billed(http_status)
}

/// The ledger outcome of a request that never left: the claim was not sent (its deadline
/// passed, no usable token, a cap reached), or the connection to X could not be made.
pub const NOT_SENT: &str = "not_sent";

/// The ledger outcome a reaper writes on a gone daemon's unanswered rows.
pub const ABANDONED: &str = "abandoned";

/// Whether X may have acted on a request whose ledger row says `outcome` (`None`: no answer
/// recorded) and `http_status`: the one definition behind every cap, in Rust for the live
/// limiter. [`may_have_acted_sql!`] is the same rule in SQL; a test checks they agree on every
/// outcome and status class.
pub fn may_have_acted(outcome: Option<&str>, http_status: Option<i16>) -> bool {
    match outcome {
        None | Some(ABANDONED) => true,
        Some(NOT_SENT) => false,
        Some(_) => !http_status.is_some_and(|status| (400..=499).contains(&status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_4xx_or_a_request_that_never_left_proves_x_did_nothing() {
        assert!(may_have_acted(None, None));
        assert!(may_have_acted(Some(ABANDONED), None));
        assert!(may_have_acted(Some("succeeded"), Some(200)));
        assert!(may_have_acted(Some("transient"), Some(503)));
        assert!(may_have_acted(Some("transient"), None));
        assert!(!may_have_acted(Some(NOT_SENT), None));
        for status in [400, 401, 402, 403, 404, 429] {
            assert!(!may_have_acted(Some("permanent"), Some(status)), "{status}");
        }
    }

    #[test]
    fn a_2xx_is_billed_and_what_may_have_acted_otherwise_possibly() {
        assert!(billed(Some(200)));
        assert!(!possibly_billed(Some("succeeded"), Some(200)));
        assert!(possibly_billed(Some("transient"), Some(503)));
        assert!(possibly_billed(None, None));
        assert!(possibly_billed(Some(ABANDONED), None));
        assert!(!billed(Some(402)) && !possibly_billed(Some("credits_depleted"), Some(402)));
        assert!(!possibly_billed(Some(NOT_SENT), None));
    }

    #[test]
    fn the_sql_fragments_name_the_alias_they_are_given() {
        assert_eq!(
            unanswered_sql!("t"),
            "(t.outcome IS NULL OR t.outcome = 'abandoned')"
        );
        assert!(may_have_acted_sql!("x").contains("x.http_status NOT BETWEEN 400 AND 499"));
    }
}
