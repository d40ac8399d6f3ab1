//! Trace export: a job's span reaches an OTLP/HTTP endpoint, and an unreachable endpoint
//! neither stops the daemon from starting nor holds up its exit.
//!
//! The subscriber is the one `followq run` installs (`followq::telemetry::subscriber`),
//! scoped to the test's thread: `#[tokio::test]` runs the daemon, the simulator and the test
//! on that one thread, so every span the daemon makes goes through it.

use std::time::{Duration, Instant};

use followq::config::Settings;
use followq::telemetry::TelemetryGuard;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::ops_support::{OpsDaemon, with_http};
use crate::support::{Harness, serial, sim_config};

const SERVICE_NAME: &str = "followq-ops-test";

/// Runs one job through a daemon exporting spans to `endpoint`, then stops it and flushes the
/// export. Returns how long the flush took.
async fn one_job_with_export_to(harness: &Harness, endpoint: &str) -> Duration {
    let mut settings: Settings = with_http(&harness.settings);
    settings.telemetry.otlp.enabled = true;
    settings.telemetry.otlp.endpoint = endpoint.to_owned();
    settings.telemetry.otlp.service_name = SERVICE_NAME.to_owned();
    settings.telemetry.otlp.timeout = Duration::from_secs(1);
    // The job's span and events are at info; the rest of the daemon stays quiet.
    settings.log.filter = "warn,followq::worker::turn=info,followq::worker::record=info".into();
    let (subscriber, guard) = followq::telemetry::subscriber(&settings.log, &settings.telemetry)
        .expect("the subscriber builds, whatever the endpoint");
    let scoped = tracing::subscriber::set_default(subscriber);

    harness.account("100").await;
    harness.enqueue("100", 1000, 1).await;
    let daemon = OpsDaemon::start(&settings).await;
    assert_eq!(daemon.get("/healthz").await.0, 200);
    assert_eq!(daemon.get("/readyz").await.0, 200);
    harness.wait_all_finished(Duration::from_secs(10)).await;
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded'")
            .await,
        1
    );
    daemon.stop().await;
    drop(scoped);

    // What `followq run` does at exit; it blocks, so off the runtime's only thread.
    let flushed = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        drop::<TelemetryGuard>(guard);
        start.elapsed()
    });
    flushed.await.expect("flush the export")
}

#[tokio::test]
async fn a_jobs_span_reaches_the_otlp_endpoint() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;

    one_job_with_export_to(&harness, &collector.uri()).await;

    let requests = collector
        .received_requests()
        .await
        .expect("recording is on");
    assert!(!requests.is_empty(), "no export reached the collector");
    let protobuf = requests.iter().all(|r| {
        r.headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes() == b"application/x-protobuf")
    });
    assert!(protobuf, "OTLP/HTTP with protobuf bodies");
    let contains = |needle: &[u8]| {
        requests
            .iter()
            .any(|r| r.body.windows(needle.len()).any(|w| w == needle))
    };
    // Protobuf keeps strings verbatim: the service name, the job span's fields, its events.
    assert!(contains(SERVICE_NAME.as_bytes()), "service.name exported");
    assert!(contains(b"job_id"), "the job span exported");
    assert!(contains(b"job_succeeded"), "with its events");
}

#[tokio::test]
async fn an_unreachable_otlp_endpoint_breaks_neither_start_nor_stop() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    // Port 1 on loopback: nothing listens, connections are refused.
    let flush = one_job_with_export_to(&harness, "http://127.0.0.1:1").await;
    assert!(
        flush < Duration::from_secs(5),
        "flushing to a dead endpoint took {flush:?}"
    );
}
