//! The real `followq run` binary's logs (captured from its stderr, at TRACE, every crate
//! included) and the rows it writes: no token or secret in them, in the clear or as the
//! base64 of an HTTP Basic header, through refreshes, refused refreshes, 401s, bad OAuth 1.0a
//! signatures and timeouts; and the app-wide stop repeated as an error every summary
//! interval.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use followq::accounts::Credentials;
use followq::sim::{OAuth1Consumer, SimConfig};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::support::{Harness, shared, sim_config};

const LIMIT: Duration = Duration::from_secs(30);
/// Every secret this test chooses contains it (and no setting's name does).
const MARKER: &str = "-SECRET-";
const CLIENT_ID: &str = "followq-logs-test";
const CLIENT_SECRET: &str = "client-SECRET-1";
const CONSUMER_SECRET: &str = "consumer-SECRET-2";

/// `followq run` as a child process, its stderr read as it comes.
struct DaemonProcess {
    child: Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl DaemonProcess {
    /// Runs the binary against the harness's database and simulator, logging JSON at TRACE.
    fn spawn(harness: &Harness, extra: &[(&str, &str)]) -> DaemonProcess {
        // The harness's settings, with timeouts that come within a second, a short grace, a
        // summary line every 500 ms and two attempts; and an app with secrets to look for.
        let mut settings = harness.settings.clone();
        settings.x_api.oauth2.client_id = CLIENT_ID.into();
        settings.x_api.request_timeout = Duration::from_secs(1);
        settings.worker.shutdown_grace = Duration::from_secs(2);
        settings.worker.summary_interval = Duration::from_millis(500);
        settings.retry.max_attempts = 2;
        let mut command = Command::new(env!("CARGO_BIN_EXE_followq"));
        command
            .arg("run")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("FOLLOWQ_ENV")
            .envs(crate::child::environment(&settings))
            .env("RUST_LOG", "trace")
            .env("FOLLOWQ_LOG__FORMAT", "json")
            .env("FOLLOWQ_X_API__OAUTH2__CLIENT_SECRET", CLIENT_SECRET)
            .env("FOLLOWQ_X_API__OAUTH1__CONSUMER_KEY", "followq-consumer")
            .env("FOLLOWQ_X_API__OAUTH1__CONSUMER_SECRET", CONSUMER_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn followq run");
        let mut pipe = child.stderr.take().expect("stderr piped");
        // Read as it comes: TRACE fills a pipe's buffer long before the test ends.
        let stderr = tokio::spawn(async move {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes).await;
            String::from_utf8_lossy(&bytes).into_owned()
        });
        DaemonProcess { child, stderr }
    }

    /// Waits until `sql` (a boolean) is true, polling every 50 ms; fails at once, with the
    /// logs, if the daemon exits meanwhile, and after `limit`.
    async fn wait_until(&mut self, harness: &Harness, what: &str, sql: &'static str) {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let done: bool = sqlx::query_scalar(sql)
                .fetch_one(&harness.db.pool)
                .await
                .expect("condition query");
            if done {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let logs = (&mut self.stderr).await.unwrap_or_default();
                panic!("followq run exited ({status}) before {what}:\n{logs}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not {what} within {LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One SIGTERM, then everything it logged.
    async fn stop(mut self) -> String {
        let pid = self.child.id().expect("the daemon is running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success());
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("the daemon stopped after SIGTERM")
            .expect("wait for the daemon");
        let logs = self.stderr.await.expect("stderr reader");
        assert!(status.success(), "followq run exited {status}:\n{logs}");
        logs
    }
}

/// Registers `user` with these OAuth 2.0 tokens, known to the simulator.
async fn oauth2_account(harness: &Harness, user: &str, access: &str, refresh: &str) {
    harness.sim.add_user_with_tokens(user, access, refresh);
    harness
        .db
        .add_account_with(
            user,
            Credentials::OAuth2 {
                access_token: access.to_owned().into(),
                refresh_token: Some(refresh.to_owned().into()),
                expires_at: None,
            },
        )
        .await;
}

/// Every token and secret the daemon handled, its own and the ones X issued it, and the
/// HTTP Basic header value of the confidential client, in both base64 alphabets.
async fn secrets(harness: &Harness, chosen: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = chosen.iter().map(|s| (*s).to_owned()).collect();
    let stored: Vec<[Option<String>; 4]> = sqlx::query_as::<
        _,
        (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ),
    >(
        "SELECT oauth2_access_token, oauth2_refresh_token, oauth1_token, oauth1_token_secret \
         FROM followq.account_credentials",
    )
    .fetch_all(&harness.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(a, b, c, d)| [a, b, c, d])
    .collect();
    for row in stored {
        all.extend(row.into_iter().flatten());
    }
    let basic = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    all.push(STANDARD.encode(&basic));
    all.push(URL_SAFE.encode(&basic));
    for secret in [CLIENT_SECRET, CONSUMER_SECRET] {
        all.push(STANDARD.encode(secret));
    }
    all.sort();
    all.dedup();
    all
}

/// What the daemon wrote where an operator or another service reads: job errors, ledger
/// errors, pause reasons, the app stop's detail.
async fn written_rows(harness: &Harness) -> String {
    let rows: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT last_error::text FROM followq.follow_jobs \
         UNION ALL SELECT error::text FROM followq.attempts \
         UNION ALL SELECT pause_reason FROM followq.accounts \
         UNION ALL SELECT detail::text FROM followq.app_pause",
    )
    .fetch_all(&harness.db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .filter_map(|(text,)| text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Through a refresh after a 401 (a confidential client: HTTP Basic), a refresh X refuses,
/// a second 401 after a refresh, an OAuth 1.0a follow and a refused signature, a 404 and
/// timeouts, the binary's TRACE logs and the rows hold no token, no client or consumer
/// secret, and no base64 of the Basic header.
///
/// Guard: `secrecy` on every token and secret (`Debug` redacted) and `ErrorDetails` built
/// from the response only. Checked by logging the base64 of `client_id:client_secret` (the
/// Basic header's value) at TRACE in `xapi::oauth2`: it is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_trace_logs_and_rows_hold_no_secret() {
    let _scenario = shared().await;
    let mut config = SimConfig {
        oauth1_consumer: Some(OAuth1Consumer {
            key: "followq-consumer".into(),
            secret: CONSUMER_SECRET.into(),
        }),
        ..sim_config(50, Duration::from_secs(60))
    };
    config.targets.unknown_ids = ["5002".to_owned()].into();
    let harness = Harness::new(config).await;
    let mut chosen = vec![CLIENT_SECRET, CONSUMER_SECRET];

    // 2000: an expired token, refreshed, then the follow; and a target that does not exist.
    oauth2_account(&harness, "2000", "access-SECRET-3", "refresh-SECRET-4").await;
    harness.sim.expire_access_token("2000");
    harness.enqueue("2000", 5001, 2).await;
    // 2001: its refresh token was spent elsewhere: the refresh is refused.
    oauth2_account(&harness, "2001", "access-SECRET-5", "refresh-SECRET-6").await;
    reqwest::Client::new()
        .post(format!("{}/2/oauth2/token", harness.sim.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "refresh-SECRET-6"),
            ("client_id", "someone-else"),
        ])
        .send()
        .await
        .unwrap();
    harness.sim.expire_access_token("2001");
    harness.enqueue("2001", 5001, 1).await;
    // 2002: X refuses even the refreshed token.
    oauth2_account(&harness, "2002", "access-SECRET-7", "refresh-SECRET-8").await;
    harness.sim.set_tokens_refused("2002", true);
    harness.enqueue("2002", 5001, 1).await;
    // 2003: OAuth 1.0a, signed right; 2004: a token secret X does not accept.
    harness
        .oauth1_account("2003", "o1-token-SECRET-9", "o1-secret-SECRET-10")
        .await;
    harness.enqueue("2003", 5001, 1).await;
    harness
        .sim
        .add_oauth1_user("2004", "o1-token-SECRET-11", "o1-secret-SECRET-12");
    harness
        .db
        .add_account_with(
            "2004",
            Credentials::OAuth1 {
                token: "o1-token-SECRET-11".to_owned().into(),
                token_secret: "o1-secret-SECRET-13".to_owned().into(),
            },
        )
        .await;
    harness.enqueue("2004", 5001, 1).await;
    // 2005: answers slower than the request timeout: timeouts (X may have made the follow, so
    // the job is tried again and again, never failed).
    oauth2_account(&harness, "2005", "access-SECRET-14", "refresh-SECRET-15").await;
    harness
        .sim
        .set_answer_delay("2005", Some(Duration::from_secs(2)));
    harness.enqueue("2005", 5001, 1).await;
    chosen.extend([
        "access-SECRET-3",
        "refresh-SECRET-4",
        "access-SECRET-5",
        "refresh-SECRET-6",
        "access-SECRET-7",
        "refresh-SECRET-8",
        "o1-token-SECRET-9",
        "o1-secret-SECRET-10",
        "o1-token-SECRET-11",
        "o1-secret-SECRET-12",
        "o1-secret-SECRET-13",
        "access-SECRET-14",
        "refresh-SECRET-15",
    ]);

    let mut daemon = DaemonProcess::spawn(&harness, &[]);
    daemon
        .wait_until(
            &harness,
            "every job finished or parked, and two timeouts",
            "SELECT (SELECT count(*) FROM followq.follow_jobs AS j \
                     JOIN followq.accounts AS a ON a.user_id = j.source_user_id \
                     WHERE j.source_user_id <> '2005' AND (j.state = 'running' \
                           OR (j.state = 'queued' AND a.status <> 'needs_reauth'))) = 0 \
                AND (SELECT count(*) FROM followq.attempts \
                     WHERE account_user_id = '2005' AND outcome = 'transient') >= 2",
        )
        .await;
    let logs = daemon.stop().await;

    // The scenario happened as staged, and the capture holds it at TRACE.
    let stats = harness.stats().await;
    assert_eq!(stats.user("2000").refreshes, 1);
    assert_eq!(
        (
            stats.user("2002").unauthorized,
            stats.user("2002").refreshes
        ),
        (2, 1)
    );
    assert_eq!(stats.user("2003").follows, 1);
    assert_eq!(stats.user("2004").bad_signatures, 1);
    assert!(stats.user("2005").requests >= 2);
    let parked = harness
        .count("SELECT count(*) FROM followq.accounts WHERE status = 'needs_reauth'")
        .await;
    assert_eq!(parked, 3, "2001, 2002 and 2004");
    let states: Vec<(String, String)> = sqlx::query_as(
        "SELECT source_user_id || '/' || target_user_id, state FROM followq.follow_jobs \
         WHERE state <> 'queued' ORDER BY 1",
    )
    .fetch_all(&harness.db.pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        [
            ("2000/5001".to_owned(), "succeeded".to_owned()),
            ("2000/5002".to_owned(), "failed".to_owned()),
            ("2003/5001".to_owned(), "succeeded".to_owned()),
        ]
    );
    for expected in [
        "refreshing OAuth 2.0 access token",
        "token refresh rejected by X",
        "X refused the account's token twice in a row",
        "X rejected the OAuth 1.0a token (401)",
        "follow request answered",
        r#""level":"TRACE""#,
    ] {
        assert!(
            logs.contains(expected),
            "the capture lacks {expected:?} ({} bytes)",
            logs.len()
        );
    }

    let rows = written_rows(&harness).await;
    assert!(rows.contains("timeout"), "the rows were read: {rows}");
    for secret in secrets(&harness, &chosen).await {
        assert!(
            !logs.contains(&secret),
            "a secret ({} characters) is in the daemon's logs",
            secret.len()
        );
        assert!(!rows.contains(&secret), "a secret is in the rows: {rows}");
    }
    assert!(!rows.contains(MARKER), "{rows}");
    if let Some(line) = logs.lines().find(|l| l.contains(MARKER)) {
        panic!("a marked secret is in the logs: {line}");
    }
}

/// While an app-wide stop is in force, the daemon logs it as an error every
/// `worker.summary_interval` (here 500 ms), with its reason, so that it is seen.
///
/// Guard: the repeated `error!` of `worker::housekeeping::app_monitor`. Checked by logging it
/// only once: one line instead of at least three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_wide_stop_is_logged_as_an_error_every_summary_interval() {
    let _scenario = shared().await;
    let mut config = sim_config(50, Duration::from_secs(60));
    config.app_forbidden = true;
    let harness = Harness::new(config).await;
    harness.account("2100").await;
    harness.enqueue("2100", 5001, 1).await;
    let mut daemon = DaemonProcess::spawn(&harness, &[("RUST_LOG", "info")]);
    daemon
        .wait_until(
            &harness,
            "the app stopped",
            "SELECT count(*) = 1 FROM followq.app_pause",
        )
        .await;
    // Four summary intervals.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = daemon.stop().await;

    let complaints: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("app-wide stop in force"))
        })
        .collect();
    assert!(
        complaints.len() >= 3,
        "{} complaints in 2 s at a 500 ms interval:\n{logs}",
        complaints.len()
    );
    for complaint in &complaints {
        assert_eq!(complaint["level"], "ERROR");
        assert_eq!(complaint["reason"], "app_forbidden");
    }
}
