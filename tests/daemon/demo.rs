//! A small run of `followq demo`, the README's run command, so that it cannot rot unnoticed.

use std::process::Command;

use crate::support::serial;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_end_to_end_and_cleans_up() {
    let _serial = serial().await;
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL for the demo's server");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_followq"))
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
            .output()
            .expect("run followq demo")
    })
    .await
    .unwrap();
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
}
