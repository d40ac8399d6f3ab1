//! Latency: insert → request sent, on an idle daemon with budget. One job at a time is
//! inserted (a plain INSERT, as another service would) and the time from its commit to the
//! request's arrival at a recording endpoint is measured. The first job of an account finds it
//! unleased (NOTIFY → lease → seed → claim → request); later ones find it held (NOTIFY → wake →
//! claim → request). Both are reported.

use std::time::{Duration, Instant};

use serde_json::json;

use super::endpoint::Endpoint;
use super::harness::{self, FIRST_ACCOUNT, FIRST_TARGET, percentile};
use super::{BenchContext, ScenarioResult};
use crate::scratch_db::ScratchDb;
use crate::store::bench;

pub struct LatencyOptions {
    pub accounts: u64,
    pub samples: u64,
}

pub async fn run(ctx: &BenchContext, options: &LatencyOptions) -> anyhow::Result<ScenarioResult> {
    harness::in_scratch_db(ctx, 16, async |scratch| {
        measure(ctx, options, scratch).await
    })
    .await
}

async fn measure(
    ctx: &BenchContext,
    options: &LatencyOptions,
    scratch: &ScratchDb,
) -> anyhow::Result<ScenarioResult> {
    let endpoint = Endpoint::start(1_000_000, Duration::from_secs(900)).await?;
    harness::add_accounts(&scratch.pool, &ctx.keys, 0, options.accounts).await?;
    let mut settings = harness::settings(&ctx.settings, scratch, &endpoint.base_url);
    settings.rate_limit.requests_per_period = 1_000_000;
    settings.rate_limit.period = Duration::from_secs(900);
    // An idle daemon as configured by default: it must not owe its speed to a fast poll.
    settings.worker.poll_interval = ctx.settings.worker.poll_interval;
    let daemon = harness::start_daemon(settings, scratch.pool.clone()).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut first_contact = Vec::new();
    let mut held = Vec::new();
    for n in 0..options.samples {
        let account = (FIRST_ACCOUNT + n % options.accounts).to_string();
        let target = (FIRST_TARGET + n).to_string();
        bench::insert_job(&scratch.pool, &account, &target).await?;
        let committed = Instant::now();
        let deadline = committed + Duration::from_secs(5);
        let arrived = loop {
            if let Some(at) = endpoint.arrival_of(&target) {
                break at;
            }
            if Instant::now() > deadline {
                anyhow::bail!("job for target {target} not sent within 5 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let ms = arrived.saturating_duration_since(committed).as_secs_f64() * 1000.0;
        if n < options.accounts {
            first_contact.push(ms);
        } else {
            held.push(ms);
        }
        // Let the daemon go idle again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.stop().await?;

    let mut all: Vec<f64> = first_contact.iter().chain(&held).copied().collect();
    for values in [&mut all, &mut first_contact, &mut held] {
        values.sort_by(f64::total_cmp);
    }
    let (p50, p99) = (percentile(&all, 50.0), percentile(&all, 99.0));
    Ok(ScenarioResult {
        name: "latency",
        line: format!(
            "latency: insert commit -> request arrives, {} samples: p50 {p50:.2} ms, p99 {p99:.2} ms \
             (targets 5 / 25 ms); account already leased p50 {:.2} / p99 {:.2} ms; first job of an \
             account (lease + seed) p50 {:.2} / p99 {:.2} ms",
            all.len(),
            percentile(&held, 50.0),
            percentile(&held, 99.0),
            percentile(&first_contact, 50.0),
            percentile(&first_contact, 99.0),
        ),
        figures: json!({
            "samples": all.len(),
            "p50_ms": p50,
            "p99_ms": p99,
            "held_p50_ms": percentile(&held, 50.0),
            "held_p99_ms": percentile(&held, 99.0),
            "first_contact_p50_ms": percentile(&first_contact, 50.0),
            "first_contact_p99_ms": percentile(&first_contact, 99.0),
        }),
    })
}
