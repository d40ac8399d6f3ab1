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
}

// Distinct salts so the kinds' decisions are independent of one another.
const SALT_DELAY: u64 = 1;
const SALT_DROP: u64 = 2;
const SALT_5XX: u64 = 3;
const SALT_ERRORS_200: u64 = 4;
const SALT_MALFORMED: u64 = 5;
const SALT_VARIANT: u64 = 6;

/// Decides the faults for request number `seq` (1-based) of `user_id`. Kinds are tried in the
/// order drop, 5xx, errors-200, malformed; the first that fires wins. A delay combines with
/// any of them.
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
}
