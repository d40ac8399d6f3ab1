//! Fault injection: each switch on its own at rate 1, and the seeded repeatability of mixed
//! faults whatever the order in which users' requests arrive.

use std::time::{Duration, Instant};

use followq::sim::{FaultConfig, SimConfig, TargetRules};

use crate::{Sim, roomy};

fn with_faults(faults: FaultConfig) -> SimConfig {
    SimConfig { faults, ..roomy() }
}

#[tokio::test]
async fn server_errors_answer_500_or_503_without_following() {
    let sim = Sim::start(with_faults(FaultConfig {
        fail_5xx: 1.0,
        ..FaultConfig::default()
    }));
    let t = sim.handle.add_user("40");
    let mut statuses = Vec::new();
    for target in 1..=20 {
        let reply = sim.follow(&t.access_token, "40", &target.to_string()).await;
        assert!(reply.remaining.is_some(), "rate headers on faults too");
        assert_eq!(reply.json["status"], reply.status);
        statuses.push(reply.status);
    }
    assert!(
        statuses.iter().all(|s| *s == 500 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&500) && statuses.contains(&503),
        "{statuses:?}"
    );
    let user = sim.handle.stats().await.user("40");
    assert_eq!(
        (user.faults.server_errors, user.follows, user.requests),
        (20, 0, 20)
    );
}

#[tokio::test]
async fn applied_server_errors_make_the_follow_then_answer_5xx() {
    let sim = Sim::start(SimConfig {
        daily_cap: Some(20),
        targets: TargetRules {
            protected_ids: ["7".to_owned()].into(),
            blocking_ids: ["99".to_owned()].into(),
            ..TargetRules::default()
        },
        faults: FaultConfig {
            applied_5xx: 1.0,
            ..FaultConfig::default()
        },
        ..roomy()
    });
    let t = sim.handle.add_user("47");
    let mut statuses = Vec::new();
    for target in 1..=20u64 {
        let reply = sim.follow(&t.access_token, "47", &target.to_string()).await;
        assert_eq!(reply.json["status"], reply.status, "{}", reply.text);
        assert_eq!(reply.json.get("data"), None, "a 5xx body, not the 200's");
        assert_eq!(
            reply.remaining,
            Some(1000 - target),
            "counted in the window"
        );
        statuses.push(reply.status);
    }
    assert!(
        statuses.iter().all(|s| *s == 500 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&500) && statuses.contains(&503),
        "{statuses:?}"
    );
    // A refusal has nothing applied for a 5xx to hide: it is sent as it is.
    let blocked = sim.follow(&t.access_token, "47", "99").await;
    assert_eq!(blocked.status, 403, "{}", blocked.text);

    sim.handle.set_faults(FaultConfig::default());
    // The follows were made: the graph has them (repeats are no-ops with their state) ...
    let again = sim.follow(&t.access_token, "47", "1").await;
    assert_eq!(again.json["data"]["following"], true, "{}", again.text);
    let pending = sim.follow(&t.access_token, "47", "7").await;
    assert_eq!(
        pending.json["data"]["pending_follow"], true,
        "{}",
        pending.text
    );
    // ... and the daily cap counted them.
    let capped = sim.follow(&t.access_token, "47", "21").await;
    assert_eq!(capped.status, 403, "{}", capped.text);

    let user = sim.handle.stats().await.user("47");
    assert_eq!(user.faults.applied_then_failed, 20);
    assert_eq!(user.faults.server_errors, 0, "not the no-follow kind");
    assert_eq!(
        (user.follows, user.pending, user.repeated, user.daily_capped),
        (19, 1, 2, 1)
    );
    assert_eq!(
        user.by_status.get(&500).unwrap_or(&0) + user.by_status.get(&503).unwrap_or(&0),
        20
    );
    assert_eq!(user.requests, 24);
}

#[tokio::test]
async fn errors_200_carry_errors_and_no_data() {
    let sim = Sim::start(with_faults(FaultConfig {
        errors_200: 1.0,
        ..FaultConfig::default()
    }));
    let t = sim.handle.add_user("41");
    let reply = sim.follow(&t.access_token, "41", "5").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.json["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
    assert!(reply.json.get("data").is_none());
    let user = sim.handle.stats().await.user("41");
    assert_eq!((user.faults.errors_200, user.follows), (1, 0));
}

#[tokio::test]
async fn dropped_connections_get_no_answer_but_the_follow_is_made() {
    let sim = Sim::start(with_faults(FaultConfig {
        drop: 1.0,
        ..FaultConfig::default()
    }));
    let t = sim.handle.add_user("42");
    let outcome = sim
        .follow_raw(
            &t.access_token,
            "42",
            "application/json",
            r#"{"target_user_id":"5"}"#.into(),
        )
        .await;
    assert!(outcome.is_err(), "no answer expected, got {outcome:?}");

    sim.handle.set_faults(FaultConfig::default());
    let retry = sim.follow(&t.access_token, "42", "5").await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.json["data"]["following"], true);
    let user = sim.handle.stats().await.user("42");
    assert_eq!(user.faults.dropped, 1);
    assert_eq!((user.requests, user.follows, user.repeated), (2, 1, 1));
    assert_eq!(
        user.by_status.values().sum::<u64>(),
        1,
        "a dropped request has no status"
    );
}

#[tokio::test]
async fn malformed_bodies_are_not_json() {
    let sim = Sim::start(with_faults(FaultConfig {
        malformed: 1.0,
        ..FaultConfig::default()
    }));
    let t = sim.handle.add_user("43");
    for target in 1..=6 {
        let reply = sim.follow(&t.access_token, "43", &target.to_string()).await;
        assert_eq!(reply.status, 200);
        assert!(!reply.text.is_empty());
        assert!(
            serde_json::from_str::<serde_json::Value>(&reply.text).is_err(),
            "{}",
            reply.text
        );
        assert!(reply.remaining.is_some());
    }
    let user = sim.handle.stats().await.user("43");
    assert_eq!((user.faults.malformed, user.follows), (6, 6));
}

#[tokio::test]
async fn delays_hold_the_normal_answer_back() {
    let sim = Sim::start(with_faults(FaultConfig {
        delay: 1.0,
        delay_duration: Duration::from_millis(400),
        ..FaultConfig::default()
    }));
    let t = sim.handle.add_user("44");
    let started = Instant::now();
    let reply = sim.follow(&t.access_token, "44", "5").await;
    // Only a lower bound: a loaded machine may be slower, never faster.
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(reply.json["data"]["following"], true);
    let user = sim.handle.stats().await.user("44");
    assert_eq!((user.faults.delayed, user.follows), (1, 1));
}

fn mixed(seed: u64) -> SimConfig {
    with_faults(FaultConfig {
        seed,
        fail_5xx: 0.15,
        drop: 0.1,
        malformed: 0.1,
        errors_200: 0.1,
        ..FaultConfig::default()
    })
}

/// What the client saw: a status, "malformed", or "dropped".
async fn outcome(sim: &Sim, token: &str, user: &str, target: u64) -> String {
    match sim
        .follow_raw(
            token,
            user,
            "application/json",
            format!(r#"{{"target_user_id":"{target}"}}"#),
        )
        .await
    {
        Err(_) => "dropped".into(),
        Ok(reply) if reply.json.is_null() => "malformed".into(),
        Ok(reply) if reply.json.get("errors").is_some() => "errors".into(),
        Ok(reply) => reply.status.to_string(),
    }
}

/// Sends 30 requests for each of two users, one user after the other or interleaved.
async fn run(seed: u64, interleave: bool) -> (Vec<String>, Vec<String>) {
    let sim = Sim::start(mixed(seed));
    let a = sim.handle.add_user("45");
    let b = sim.handle.add_user("46");
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    if interleave {
        for n in 1..=30 {
            seen_b.push(outcome(&sim, &b.access_token, "46", n).await);
            seen_a.push(outcome(&sim, &a.access_token, "45", n).await);
        }
    } else {
        for n in 1..=30 {
            seen_a.push(outcome(&sim, &a.access_token, "45", n).await);
        }
        for n in 1..=30 {
            seen_b.push(outcome(&sim, &b.access_token, "46", n).await);
        }
    }
    (seen_a, seen_b)
}

#[tokio::test]
async fn a_seed_repeats_the_same_faults_whatever_the_interleaving() {
    let first = run(42, false).await;
    let second = run(42, true).await;
    assert_eq!(first, second);
    let kinds: std::collections::HashSet<&str> =
        first.0.iter().chain(&first.1).map(String::as_str).collect();
    for kind in ["200", "dropped", "malformed", "errors"] {
        assert!(
            kinds.contains(kind),
            "seed 42 never produced {kind}: {first:?}"
        );
    }
    assert!(kinds.contains("500") || kinds.contains("503"));

    let other = run(43, false).await;
    assert_ne!(first, other, "another seed, other faults");
}
