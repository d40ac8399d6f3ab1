//! `followq demo` on a machine where no Postgres server answers: the binary starts a throwaway
//! cluster from the local Postgres binaries, runs on it, and removes it at the end, on Ctrl-C
//! and on an error too; a URL the user named is never replaced by one.
//!
//! Postgres refuses to run as root, so when the tests run as root (CI) the demo runs as an
//! unprivileged user, created here once (`followq-demo-test`); otherwise as the current user.
//! Each run gets its own TMPDIR, owned by that user, which must be empty afterwards.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::demo_postgres_choice::unused_port;
use crate::support::serial;

const DEMO_USER: &str = "followq-demo-test";

/// The uid and gid to run the demo as: the unprivileged test user when running as root.
fn demo_identity() -> Option<(u32, u32)> {
    static IDENTITY: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *IDENTITY.get_or_init(|| {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let id = |flag: &str| {
            Command::new("id")
                .args([flag, DEMO_USER])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .trim()
                        .parse::<u32>()
                        .ok()
                })
        };
        if id("-u").is_none() {
            let status = Command::new("useradd")
                .args([
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    DEMO_USER,
                ])
                .status()
                .expect("run useradd");
            // 9: the user exists (another test process made it meanwhile).
            assert!(
                status.success() || status.code() == Some(9),
                "useradd {DEMO_USER}: {status}"
            );
        }
        Some((
            id("-u").expect("the test user's uid"),
            id("-g").expect("the test user's gid"),
        ))
    })
}

/// The directory of the local Postgres binaries, to put on the demo's PATH.
fn postgres_bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let packaged = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("bin"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(packaged)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .expect("these tests need Postgres's binaries (initdb, pg_ctl) installed")
}

/// One run's directory: the demo's TMPDIR and its config, owned by the user it runs as.
struct DemoRun {
    root: tempfile::TempDir,
    binary: PathBuf,
}

impl DemoRun {
    /// The configured `database.url` points at a loopback port where nothing listens.
    fn new() -> DemoRun {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmp")).unwrap();
        std::fs::create_dir(root.path().join("config")).unwrap();
        std::fs::write(
            root.path().join("config/default.toml"),
            format!(
                "[database]\nurl = \"postgres://postgres@127.0.0.1:{}/postgres\"\n",
                unused_port()
            ),
        )
        .unwrap();
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_followq"));
        let binary = match demo_identity() {
            Some((uid, gid)) => {
                for path in [root.path(), &root.path().join("tmp")] {
                    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
                }
                if readable_by_others(&binary) {
                    binary
                } else {
                    let copy = root.path().join("followq");
                    std::fs::copy(&binary, &copy).unwrap();
                    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                        .unwrap();
                    copy
                }
            }
            None => binary,
        };
        DemoRun { root, binary }
    }

    fn tmpdir(&self) -> PathBuf {
        self.root.path().join("tmp")
    }

    /// `followq --config-dir <ours> demo <args>`, as the demo user, with only PATH (the
    /// Postgres binaries first), TMPDIR and `env` in its environment.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let path =
            std::env::join_paths([postgres_bin_dir(), "/usr/bin".into(), "/bin".into()]).unwrap();
        let mut command = Command::new(&self.binary);
        command
            .arg("--config-dir")
            .arg(self.root.path().join("config"))
            .arg("demo")
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("TMPDIR", self.tmpdir())
            .current_dir(self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        if let Some((uid, gid)) = demo_identity() {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run followq demo")
    }

    /// Asserts that nothing is left of a throwaway server: its TMPDIR is empty and no process
    /// still runs on a directory in it.
    fn assert_nothing_left(&self, stderr: &str) {
        let left: Vec<_> = std::fs::read_dir(self.tmpdir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}\n{stderr}");
        let running = processes_mentioning(&self.tmpdir());
        assert!(running.is_empty(), "still running: {running:?}\n{stderr}");
    }
}

fn readable_by_others(binary: &Path) -> bool {
    let mode = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.permissions().mode());
    mode(binary) & 0o005 == 0o005 && binary.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0)
}

/// Command lines (from /proc) that mention `dir`: a Postgres server started on it would.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .filter(|line| line.contains(&needle))
                .collect()
        })
        .unwrap_or_default()
}

fn report(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

const SMALL_DEMO: &[&str] = &[
    "--accounts",
    "3",
    "--jobs",
    "60",
    "--quota",
    "20",
    "--window",
    "2s",
    "--json",
];

/// Guards the throwaway path end to end: no DATABASE_URL, nothing on the configured URL,
/// Postgres's binaries on PATH: the demo says which Postgres it chose, completes with its
/// report, and removes the cluster's directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_server_the_demo_runs_on_a_throwaway_postgres_and_removes_it() {
    let _serial = serial().await;
    let run = DemoRun::new();
    let output = tokio::task::spawn_blocking(move || {
        let output = run.run(SMALL_DEMO, &[]);
        (run, output)
    })
    .await
    .unwrap();
    let (run, output) = output;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stderr}");
    let report = report(&output);
    assert_eq!(report["completed"], true, "{report}");
    let finished = report["following"].as_i64().unwrap()
        + report["pending"].as_i64().unwrap()
        + report["failed"].as_i64().unwrap();
    assert_eq!(finished, 60, "{report}");
    let bin_dir = postgres_bin_dir().display().to_string();
    assert!(
        stderr.contains("Postgres: a throwaway PostgreSQL")
            && stderr.contains(&format!(
                "from {bin_dir}, on a Unix socket in {}",
                run.tmpdir().display()
            )),
        "the progress line names the throwaway Postgres:\n{stderr}"
    );
    assert!(stderr.contains("throwaway Postgres stopped"), "{stderr}");
    run.assert_nothing_left(&stderr);
}

/// Guards the clean-up on Ctrl-C: SIGINT to the demo's whole process group, as a terminal
/// sends it, mid-run: the demo still reports (the server survived the signal: it is not in
/// that group), then stops the server and removes its directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_run_still_reports_and_removes_the_throwaway_postgres() {
    let _serial = serial().await;
    let run = DemoRun::new();
    let (run, output, stderr) = tokio::task::spawn_blocking(move || {
        let mut command = run.command(
            &[
                "--accounts",
                "3",
                "--jobs",
                "600",
                "--quota",
                "10",
                "--window",
                "2s",
                "--json",
            ],
            &[],
        );
        command.process_group(0);
        let mut child = command.spawn().expect("spawn followq demo");
        let group = child.id();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut stderr = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            stderr.push_str(&line);
            stderr.push('\n');
            if line.contains("jobs finished") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let killed = Command::new("kill")
            .args(["-INT", "--", &format!("-{group}")])
            .status()
            .unwrap();
        assert!(killed.success());
        for line in lines {
            stderr.push_str(&line.unwrap());
            stderr.push('\n');
        }
        let output = child.wait_with_output().unwrap();
        (run, output, stderr)
    })
    .await
    .unwrap();
    let report = report(&output);
    assert_eq!(
        report["completed"], false,
        "interrupted: {report}\n{stderr}"
    );
    assert!(
        report["jobs"].as_i64().unwrap() == 600 && report["following"].as_i64().unwrap() < 600,
        "{report}"
    );
    assert!(stderr.contains("Postgres: a throwaway"), "{stderr}");
    assert!(stderr.contains("throwaway Postgres stopped"), "{stderr}");
    run.assert_nothing_left(&stderr);
}

/// Guards the clean-up on an error after the throwaway server started (here: options that
/// make no demo, checked once the server is there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_after_the_start_still_removes_the_throwaway_postgres() {
    let _serial = serial().await;
    let run = DemoRun::new();
    let (run, output) = tokio::task::spawn_blocking(move || {
        let output = run.run(&["--quota", "0"], &[]);
        (run, output)
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("the options make no demo"), "{stderr}");
    assert!(
        stderr.contains("Postgres: a throwaway"),
        "the server was started before the error:\n{stderr}"
    );
    assert!(stderr.contains("throwaway Postgres stopped"), "{stderr}");
    run.assert_nothing_left(&stderr);
}

/// Guards "a named URL always wins": DATABASE_URL, FOLLOWQ_DATABASE__URL or --database-url
/// at a port where nothing listens is the demo's error as before, even though a throwaway
/// server could be started (the binaries are on PATH and the user may run them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_url_that_nothing_answers_is_an_error_not_a_throwaway() {
    let _serial = serial().await;
    let dead = format!("postgres://postgres@127.0.0.1:{}/postgres", unused_port());
    let run = DemoRun::new();
    let (run, outputs) = tokio::task::spawn_blocking(move || {
        let outputs = vec![
            run.run(SMALL_DEMO, &[("DATABASE_URL", &dead)]),
            run.run(SMALL_DEMO, &[("FOLLOWQ_DATABASE__URL", &dead)]),
            run.run(
                &[&["--database-url", dead.as_str()][..], SMALL_DEMO].concat(),
                &[],
            ),
        ];
        (run, outputs)
    })
    .await
    .unwrap();
    for output in outputs {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains("could not create the scratch database"),
            "today's error: {stderr}"
        );
        assert!(
            stderr.contains("Postgres: the server you named"),
            "{stderr}"
        );
        assert!(!stderr.contains("throwaway"), "{stderr}");
        run.assert_nothing_left(&stderr);
    }
}

/// Guards the last resort through the binary: no server, no binaries where it was told to
/// look (`--postgres-bin`), Docker unreachable: one message with the three ways, and the
/// Docker part says why Docker was no help in this build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_way_to_a_postgres_the_demo_names_the_three() {
    let run = DemoRun::new();
    let empty = run.root.path().join("no-postgres-here");
    std::fs::create_dir(&empty).unwrap();
    let no_docker = format!("unix://{}/docker.sock", run.root.path().display());
    let (run, output) = tokio::task::spawn_blocking(move || {
        let output = run.run(
            &[&["--postgres-bin", empty.to_str().unwrap()][..], SMALL_DEMO].concat(),
            &[("DOCKER_HOST", &no_docker)],
        );
        (run, output)
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("no Postgres for the demo"), "{stderr}");
    assert!(stderr.contains("(--postgres-bin)"), "{stderr}");
    for way in ["DATABASE_URL", "Postgres installed", "Docker started"] {
        assert!(stderr.contains(way), "{way} missing from: {stderr}");
    }
    if cfg!(feature = "demo-docker") {
        assert!(stderr.contains("is a Docker engine running?"), "{stderr}");
    } else {
        assert!(stderr.contains("built without Docker support"), "{stderr}");
    }
    run.assert_nothing_left(&stderr);
}

/// Guards `--keep-database` with a throwaway server: the server keeps running with the
/// database in it, and the demo says how to reach it and how to remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_database_leaves_the_throwaway_postgres_running_and_says_how_to_remove_it() {
    let _serial = serial().await;
    let run = DemoRun::new();
    let (run, output) = tokio::task::spawn_blocking(move || {
        let output = run.run(&[&["--keep-database"][..], SMALL_DEMO].concat(), &[]);
        (run, output)
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cluster: Vec<PathBuf> = std::fs::read_dir(run.tmpdir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let was_running = !processes_mentioning(&run.tmpdir()).is_empty();
    // Stop the kept server before any assertion can fail: its postmaster.pid names it.
    let postmaster = cluster.first().and_then(|dir| {
        let pid = std::fs::read_to_string(dir.join("data/postmaster.pid")).ok()?;
        pid.lines().next().map(str::to_owned)
    });
    if let Some(pid) = &postmaster {
        Command::new("kill").args(["-INT", pid]).status().unwrap();
        for _ in 0..100 {
            if processes_mentioning(&run.tmpdir()).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(output.status.success(), "{stderr}");
    assert_eq!(report(&output)["completed"], true);
    assert_eq!(cluster.len(), 1, "{cluster:?}\n{stderr}");
    assert!(
        was_running && postmaster.is_some(),
        "the server was left running:\n{stderr}"
    );
    let dir = cluster[0].display().to_string();
    assert!(
        stderr.contains(&format!("psql -h {dir} -U postgres"))
            && stderr.contains(&format!("-D {dir}/data stop && rm -r {dir}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("kept the database followq_demo_"),
        "{stderr}"
    );
}
