//! The figures under concurrent load: many users, many connections, faults on; every figure
//! must match what the clients saw, exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use followq::sim::{FaultConfig, SimConfig, SimStats};
use tokio::sync::Mutex;

use crate::{Sim, client};

const USERS: u64 = 20;
const PER_USER: u64 = 80;
const LIMIT: u32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_are_exact_under_concurrent_load() {
    let sim = Sim::start(SimConfig {
        window_requests: LIMIT,
        // Long enough that the whole burst falls inside one window even on a slow machine.
        window: Duration::from_secs(600),
        daily_cap: None,
        faults: FaultConfig {
            seed: 7,
            fail_5xx: 0.05,
            drop: 0.03,
            errors_200: 0.03,
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    });
    let tokens: Vec<(String, String)> = (1..=USERS)
        .map(|u| {
            let id = (1000 + u).to_string();
            let access = sim.handle.add_user(&id).access_token;
            (id, access)
        })
        .collect();

    // Work items: every (user, target), shuffled across 64 workers through one queue.
    let mut work: Vec<(String, String, u64)> = Vec::new();
    for n in 1..=PER_USER {
        for (id, access) in &tokens {
            work.push((id.clone(), access.clone(), n));
        }
    }
    let work = Arc::new(Mutex::new(work));
    // Per user, what the clients saw: status (0 = no answer) -> count.
    let seen: Arc<Mutex<BTreeMap<String, BTreeMap<u16, u64>>>> = Arc::default();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (work, seen, client, base) = (
            Arc::clone(&work),
            Arc::clone(&seen),
            client(),
            sim.handle.base_url(),
        );
        workers.spawn(async move {
            loop {
                let Some((id, access, n)) = work.lock().await.pop() else {
                    return;
                };
                let status = match client
                    .post(format!("{base}/2/users/{id}/following"))
                    .bearer_auth(&access)
                    .json(&serde_json::json!({"target_user_id": (5_000_000 + n).to_string()}))
                    .send()
                    .await
                {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
                *seen
                    .lock()
                    .await
                    .entry(id)
                    .or_default()
                    .entry(status)
                    .or_default() += 1;
            }
        });
    }
    workers.join_all().await;

    let stats = sim.handle.stats().await;
    let seen = seen.lock().await;
    for (id, _) in &tokens {
        let user = stats.user(id);
        let client_saw = &seen[id];
        assert_eq!(user.requests, PER_USER, "user {id}");
        assert_eq!(user.max_requests_in_window, PER_USER, "user {id}");
        assert_eq!(user.rate_limited, PER_USER - u64::from(LIMIT), "user {id}");
        assert_eq!(client_saw.get(&429), Some(&user.rate_limited), "user {id}");
        assert_eq!(
            client_saw.get(&0).copied().unwrap_or(0),
            user.faults.dropped,
            "user {id}"
        );
        let answered: BTreeMap<u16, u64> = client_saw
            .iter()
            .filter(|(status, _)| **status != 0)
            .map(|(s, n)| (*s, *n))
            .collect();
        assert_eq!(answered, user.by_status, "user {id}");
        assert_eq!(
            user.requests,
            user.by_status.values().sum::<u64>() + user.faults.dropped
        );
        // The 50 allowed requests were follows unless a fault took them.
        assert_eq!(
            user.follows + user.faults.server_errors + user.faults.errors_200,
            u64::from(LIMIT),
            "user {id}"
        );
    }
    let all = &stats.totals.all_users;
    assert_eq!(all.requests, USERS * PER_USER);
    assert_eq!(all.rate_limited, USERS * (PER_USER - u64::from(LIMIT)));
    assert_eq!(
        all.follows,
        stats.users.values().map(|u| u.follows).sum::<u64>()
    );
    assert!(
        all.faults.dropped > 0 && all.faults.server_errors > 0,
        "faults were on"
    );

    // The same figures over HTTP, as the benchmark reads them.
    let over_http: SimStats = sim
        .client
        .get(sim.url("/__sim/stats"))
        .send()
        .await
        .expect("stats answer")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(over_http, stats);
    sim.handle.shutdown().await;
}
