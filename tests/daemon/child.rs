//! The real `followq run` binary as a child process, configured from a harness's settings
//! through the environment, for what only a process can show: kill -9, SIGSTOP/SIGCONT, and
//! signals.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use followq::config::Settings;
use secrecy::ExposeSecret;
use tokio::process::{Child, Command};

use crate::support::Harness;

/// A `followq run` process.
pub struct Daemon {
    child: Child,
    pid: u32,
    log: PathBuf,
}

/// The settings a harness gives in-process daemons, as `FOLLOWQ_*` variables.
pub fn environment(settings: &Settings) -> Vec<(String, String)> {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let mut env = vec![
        (
            "DATABASE_URL".to_owned(),
            settings.database.url.expose_secret().to_owned(),
        ),
        (
            "FOLLOWQ_X_API__BASE_URL".to_owned(),
            settings.x_api.base_url.clone(),
        ),
        (
            "FOLLOWQ_X_API__OAUTH2__CLIENT_ID".to_owned(),
            settings.x_api.oauth2.client_id.clone(),
        ),
        (
            "FOLLOWQ_X_API__CONNECT_TIMEOUT".to_owned(),
            duration(settings.x_api.connect_timeout),
        ),
        (
            "FOLLOWQ_X_API__REQUEST_TIMEOUT".to_owned(),
            duration(settings.x_api.request_timeout),
        ),
        (
            "FOLLOWQ_RATE_LIMIT__REQUESTS_PER_PERIOD".to_owned(),
            settings.rate_limit.requests_per_period.to_string(),
        ),
        (
            "FOLLOWQ_RATE_LIMIT__PERIOD".to_owned(),
            duration(settings.rate_limit.period),
        ),
        (
            "FOLLOWQ_RATE_LIMIT__DAILY_FOLLOWS_PER_ACCOUNT".to_owned(),
            settings.rate_limit.daily_follows_per_account.to_string(),
        ),
        (
            "FOLLOWQ_RETRY__MAX_ATTEMPTS".to_owned(),
            settings.retry.max_attempts.to_string(),
        ),
        (
            "FOLLOWQ_RETRY__BASE_DELAY".to_owned(),
            duration(settings.retry.base_delay),
        ),
        (
            "FOLLOWQ_RETRY__MAX_DELAY".to_owned(),
            duration(settings.retry.max_delay),
        ),
        (
            "FOLLOWQ_LOG__FILTER".to_owned(),
            "info,sqlx=warn".to_owned(),
        ),
    ];
    for (id, key) in &settings.credentials.keys {
        env.push((
            format!("FOLLOWQ_CREDENTIALS__KEYS__{}", id.to_uppercase()),
            key.expose_secret().to_owned(),
        ));
    }
    if let Some(cap) = settings.rate_limit.daily_follows_per_app {
        env.push((
            "FOLLOWQ_RATE_LIMIT__DAILY_FOLLOWS_PER_APP".to_owned(),
            cap.to_string(),
        ));
    }
    if let Some(active) = &settings.credentials.active_key {
        env.push(("FOLLOWQ_CREDENTIALS__ACTIVE_KEY".to_owned(), active.clone()));
    }
    let worker = &settings.worker;
    for (key, value) in [
        ("POLL_INTERVAL", duration(worker.poll_interval)),
        ("HEARTBEAT_INTERVAL", duration(worker.heartbeat_interval)),
        ("ACCOUNT_LEASE", duration(worker.account_lease)),
        ("SEND_DEADLINE", duration(worker.send_deadline)),
        ("LIVENESS_INTERVAL", duration(worker.liveness_interval)),
        ("SHUTDOWN_GRACE", duration(worker.shutdown_grace)),
        ("SUMMARY_INTERVAL", duration(worker.summary_interval)),
    ] {
        env.push((format!("FOLLOWQ_WORKER__{key}"), value));
    }
    env
}

impl Daemon {
    /// Starts `followq run` with the harness's settings; its log goes to a file named after
    /// `name` in the target directory, printed by [`Daemon::log`].
    pub fn start(harness: &Harness, name: &str) -> Daemon {
        Daemon::start_with(&harness.settings, name)
    }

    pub fn start_with(settings: &Settings, name: &str) -> Daemon {
        let log = std::env::temp_dir().join(format!(
            "followq-test-{}-{name}-{}.log",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_followq"));
        command
            .arg("run")
            .env_remove("FOLLOWQ_ENV")
            .env_remove("RUST_LOG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        for (key, value) in environment(settings) {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn followq run");
        let pid = child.id().expect("a running child has a pid");
        Daemon { child, pid, log }
    }

    /// Sends `signal` (a name `kill` understands: STOP, CONT, TERM, KILL).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }

    /// kill -9, and waits for the process to be gone.
    pub async fn kill(mut self) {
        self.signal("KILL");
        let _ = self.child.wait().await;
    }

    /// Waits for the process to exit, failing the test after `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!(
                "followq run (pid {}) did not exit within {limit:?}; its log:\n{}",
                self.pid,
                self.log()
            ),
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A frozen child must not outlive the test: SIGCONT first so that SIGKILL (from
        // kill_on_drop) is delivered at once.
        if self.is_running() {
            let _ = std::process::Command::new("kill")
                .arg("-CONT")
                .arg(self.pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
