//! `followq sim` as a process: it runs without a database, prints its base URL and the users'
//! tokens, serves them, and documents every switch in `--help`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::{client, read};

const BIN: &str = env!("CARGO_BIN_EXE_followq");

#[test]
fn help_documents_every_switch() {
    let output = Command::new(BIN)
        .args(["sim", "--help"])
        .output()
        .expect("followq runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--window-requests",
        "--window ",
        "--daily-cap",
        "--daily-window",
        "--app-daily-cap",
        "--access-token-ttl",
        "--user",
        "--oauth1-user",
        "--oauth1-consumer",
        "--user-24h-limit",
        "--user-24h-window",
        "--app-24h-limit",
        "--app-24h-window",
        "--invalid ",
        "--blocking ",
        "--app-only-token",
        "--client-id",
        "--keep-tokens-on-reuse",
        "--protected-every",
        "--protected ",
        "--unknown-every",
        "--unknown ",
        "--app-forbidden",
        "--credits",
        "--usage-capped",
        "--seed",
        "--fail-5xx",
        "--delay ",
        "--delay-ms",
        "--drop",
        "--malformed",
        "--errors-200",
        "--applied-5xx",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

/// Kills the child when the test ends, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn runs_without_a_database_and_serves_its_users() {
    let mut child = Child(
        Command::new(BIN)
            .args([
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--user",
                "60",
                "--user",
                "61:given-access:given-refresh",
                "--protected-every",
                "2",
                "--window-requests",
                "3",
            ])
            // Nothing listens here: the command must not try.
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("followq sim starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let lines: Vec<serde_json::Value> = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|line| serde_json::from_str(&line.expect("line")).expect("JSON line"))
            .collect()
    })
    .await
    .expect("reader");
    let base = lines[0]["base_url"].as_str().expect("base_url").to_owned();
    assert_eq!(lines[1]["user_id"], "60");
    assert_eq!(lines[2]["access_token"], "given-access");
    let random = lines[1]["access_token"].as_str().expect("token").to_owned();

    let client = client();
    let follow = |token: String, user: &str, target: &str| {
        client
            .post(format!("{base}/2/users/{user}/following"))
            .bearer_auth(token)
            .json(&serde_json::json!({"target_user_id": target}))
            .send()
    };
    let protected = read(follow(random, "60", "8").await.expect("answer"))
        .await
        .expect("body");
    assert_eq!(protected.json["data"]["pending_follow"], true);
    assert_eq!(protected.limit, Some(3));
    let given = read(
        follow("given-access".into(), "61", "9")
            .await
            .expect("answer"),
    )
    .await
    .expect("body");
    assert_eq!(given.json["data"]["following"], true);
}
