//! A small run of `followq demo`, the README's run command, so that it cannot rot unnoticed.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;

use crate::common;
use crate::support::serial;

/// On the test server; on the Citus cluster when `TEST_CITUS_URL` is set (`.ci/run` runs it
/// there), where the scratch database must be a Citus database: the report names both workers
/// with their share of the jobs, and the database is dropped on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_end_to_end_and_cleans_up() {
    let _serial = serial().await;
    let citus = common::citus_url();
    let server = citus.clone().unwrap_or_else(|| {
        std::env::var("DATABASE_URL").expect("DATABASE_URL for the demo's server")
    });
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_followq"))
        .args([
            "demo",
            "--accounts",
            "3",
            "--jobs",
            "90",
            "--quota",
            "20",
            "--window",
            "2s",
            "--json",
        ])
        .env("DATABASE_URL", &server)
        .env_remove("FOLLOWQ_ENV")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true)
        .output();
    // A few seconds when it works; a job that can never finish would keep it waiting.
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the demo finishes within 3 minutes")
        .expect("run followq demo");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the report is JSON");
    assert_eq!(report["completed"], true);
    let finished = report["following"].as_i64().unwrap()
        + report["pending"].as_i64().unwrap()
        + report["failed"].as_i64().unwrap();
    assert_eq!(finished, 90, "{report}");
    assert!(
        report["pending"].as_i64().unwrap() > 0,
        "protected targets: {report}"
    );
    assert_eq!(report["rate_limited"], 0, "{report}");
    assert!(
        report["max_requests_in_window"].as_u64().unwrap() <= 20,
        "{report}"
    );
    assert_eq!(report["token_refreshes"], 1, "{report}");
    assert!(
        stderr.contains("dropped"),
        "the scratch database is dropped:\n{stderr}"
    );

    let name = stderr
        .split("scratch database ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the progress names the scratch database")
        .to_owned();
    let server_options: PgConnectOptions = server.parse().expect("the server URL");
    let mut nodes = vec![("the server".to_owned(), server_options)];
    if citus.is_some() {
        // The three accounts' rows are on both workers (two shards each, the accounts' hashes
        // spread over them), and the report says how many of the jobs each one held.
        let spread = &report["citus"]["workers"];
        let workers = spread.as_array().expect("the workers' shares");
        assert_eq!(workers.len(), 2, "{report}");
        for worker in workers {
            assert!(worker["jobs"].as_i64().unwrap() > 0, "{report}");
            assert!(worker["accounts"].as_i64().unwrap() > 0, "{report}");
        }
        let jobs: i64 = workers.iter().map(|w| w["jobs"].as_i64().unwrap()).sum();
        let accounts: i64 = workers
            .iter()
            .map(|w| w["accounts"].as_i64().unwrap())
            .sum();
        assert_eq!((jobs, accounts), (90, 3), "{report}");
        let cluster = common::citus_cluster(&server).await;
        for worker in cluster.workers() {
            let options = cluster
                .options_on(&server.clone().into(), worker, None)
                .expect("a worker's admin database");
            nodes.push((format!("worker {worker}"), options));
        }
    } else {
        assert!(report["citus"].is_null(), "{report}");
    }
    for (node, options) in nodes {
        let mut admin = sqlx::PgConnection::connect_with(&options)
            .await
            .expect("connect to a node's admin database");
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(left, 0, "{name} is left on {node}");
    }
}
