//! Seeded fault decisions. A decision is a pure hash of (seed, user id, the user's request
//! number, fault kind) rather than draws from one shared generator: a shared generator hands
//! out its numbers in arrival order, so two runs whose requests interleave differently would
//! get different faults. With the hash, the n-th request of a user meets the same faults on
//! every run.

use std::time::Duration;

use super::config::FaultConfig;

/// What to do to one request, decided before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultDecision {
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// The one fault that replaces or spoils the normal answer, if any.
    pub kind: Option<FaultKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Close the connection without an answer (after making the follow).
    Drop,
    /// Answer 500 or 503 without making the follow.
    ServerError { status: u16 },
    /// Answer 200 with `errors[]` instead of `data`, without making the follow.
    Errors200,
    /// Answer 200 with an unparsable body (after making the follow).
    Malformed { html: bool },
    /// Apply the follow exactly as a 200 would, then answer 500 or 503 instead: X sometimes
    /// makes the follow and still fails the request, so a client must not take a 5xx to mean
    /// "nothing happened". Only spoils an answer whose rules succeeded (a follow made, pending,
    /// or already in place); a refusal is sent as it is.
    AppliedThenServerError { status: u16 },
}

// Distinct salts so the kinds' decisions are independent of one another.
const SALT_DELAY: u64 = 1;
const SALT_DROP: u64 = 2;
const SALT_5XX: u64 = 3;
const SALT_ERRORS_200: u64 = 4;
const SALT_MALFORMED: u64 = 5;
const SALT_VARIANT: u64 = 6;
const SALT_APPLIED_5XX: u64 = 7;

/// Decides the faults for request number `seq` (1-based) of `user_id`. Kinds are tried in the
/// order drop, 5xx, errors-200, malformed, applied-then-5xx; the first that fires wins (the
/// newest kind is last so that configurations without it meet exactly the faults they met
/// before it existed). A delay combines with any of them.
pub fn decide(config: &FaultConfig, user_id: &str, seq: u64) -> FaultDecision {
    let user = fnv1a(user_id.as_bytes());
    let roll = |salt: u64| unit(mix(config.seed, user, seq, salt));
    let fires = |rate: f64, salt: u64| rate > 0.0 && roll(salt) < rate;

    let delay = fires(config.delay, SALT_DELAY).then_some(config.delay_duration);
    let variant = mix(config.seed, user, seq, SALT_VARIANT) & 1 == 1;
    let kind = if fires(config.drop, SALT_DROP) {
        Some(FaultKind::Drop)
    } else if fires(config.fail_5xx, SALT_5XX) {
        Some(FaultKind::ServerError {
            status: if variant { 503 } else { 500 },
        })
    } else if fires(config.errors_200, SALT_ERRORS_200) {
        Some(FaultKind::Errors200)
    } else if fires(config.malformed, SALT_MALFORMED) {
        Some(FaultKind::Malformed { html: variant })
    } else if fires(config.applied_5xx, SALT_APPLIED_5XX) {
        Some(FaultKind::AppliedThenServerError {
            status: if variant { 503 } else { 500 },
        })
    } else {
        None
    };
    FaultDecision { delay, kind }
}

/// FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64 finaliser over the combined inputs: cheap and well mixed.
fn mix(seed: u64, user: u64, seq: u64, salt: u64) -> u64 {
    let mut z = seed
        ^ user.rotate_left(17)
        ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ salt.wrapping_mul(0xd6e8_feb8_6659_fd93);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The top 53 bits as a float in `[0, 1)`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            fail_5xx: 0.1,
            delay: 0.1,
            delay_duration: Duration::from_millis(5),
            drop: 0.1,
            malformed: 0.1,
            errors_200: 0.1,
            applied_5xx: 0.1,
        }
    }

    #[test]
    fn same_seed_same_decisions_different_seed_different() {
        let a: Vec<_> = (1..=500).map(|n| decide(&config(7), "42", n)).collect();
        let b: Vec<_> = (1..=500).map(|n| decide(&config(7), "42", n)).collect();
        let c: Vec<_> = (1..=500).map(|n| decide(&config(8), "42", n)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn no_rates_no_faults() {
        let cfg = FaultConfig::default();
        assert!(
            (1..=1000).all(|n| decide(&cfg, "1", n) == FaultDecision::default()),
            "a zero rate must never fire"
        );
    }

    #[test]
    fn rates_are_roughly_honoured() {
        let cfg = FaultConfig {
            seed: 3,
            fail_5xx: 0.25,
            ..FaultConfig::default()
        };
        let fired = (1..=20_000)
            .filter(|&n| decide(&cfg, "9", n).kind.is_some())
            .count();
        // 5000 expected; the bounds are many standard deviations (about 61) wide.
        assert!((4500..5500).contains(&fired), "fired {fired} of 20000");
        let all = FaultConfig {
            seed: 3,
            drop: 1.0,
            ..FaultConfig::default()
        };
        assert!((1..=100).all(|n| decide(&all, "9", n).kind == Some(FaultKind::Drop)));
    }

    #[test]
    fn applied_5xx_fires_at_its_rate_with_both_statuses_and_leaves_other_kinds_alone() {
        let applied = FaultConfig {
            seed: 3,
            applied_5xx: 0.25,
            ..FaultConfig::default()
        };
        let kinds: Vec<_> = (1..=20_000)
            .map(|n| decide(&applied, "9", n).kind)
            .collect();
        let fired = kinds.iter().filter(|k| k.is_some()).count();
        assert!((4500..5500).contains(&fired), "fired {fired} of 20000");
        for status in [500, 503] {
            assert!(
                kinds.contains(&Some(FaultKind::AppliedThenServerError { status })),
                "never {status}"
            );
        }
        assert!(
            kinds
                .iter()
                .flatten()
                .all(|k| matches!(k, FaultKind::AppliedThenServerError { .. }))
        );

        // Its own salt: turning it on does not move the other kinds' decisions.
        let others = FaultConfig {
            applied_5xx: 0.0,
            ..config(11)
        };
        let with = config(11);
        for n in 1..=2000 {
            let (a, b) = (decide(&others, "9", n), decide(&with, "9", n));
            if a.kind.is_some() {
                assert_eq!(a, b, "request {n}");
            }
        }
    }
}
