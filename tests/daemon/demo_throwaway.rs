//! `followq demo` on a machine where no Postgres server answers: the binary starts a throwaway
//! cluster from the local Postgres binaries, runs on it, and removes it at the end, on Ctrl-C
//! and on an error too; a URL the user named is never replaced by one; a cluster that a killed
//! demo left is removed by the next demo, one whose demo still runs is not.
//!
//! The demo runs as the tests' user: as root (CI) it runs Postgres as `nobody`, as it does for
//! anyone who runs it as root. Run as root, the first test also runs the demo as `nobody`, so
//! the path of an ordinary user is covered there too. Each run gets its own TMPDIR, owned by
//! the user the demo runs as and open to others' passage (Postgres as `nobody` must reach it),
//! which must be empty afterwards.

use std::io::{BufRead, BufReader, Lines};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::Duration;

use crate::demo_postgres_choice::unused_port;
use crate::support::serial;

/// Who the demo runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunAs {
    /// The tests' own user.
    Me,
    /// `nobody`, when the tests run as root (else the tests' own user).
    Nobody,
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `nobody`'s uid and gid.
fn nobody() -> (u32, u32) {
    let id = |flag: &str| {
        let output = Command::new("id")
            .args([flag, "nobody"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<u32>()
            .expect("the user nobody exists")
    };
    (id("-u"), id("-g"))
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
    /// The uid and gid the demo switches to, if any.
    identity: Option<(u32, u32)>,
}

impl DemoRun {
    /// The configured `database.url` points at a loopback port where nothing listens.
    fn new() -> DemoRun {
        DemoRun::as_user(RunAs::Me)
    }

    fn as_user(run_as: RunAs) -> DemoRun {
        let identity = (run_as == RunAs::Nobody && running_as_root()).then(nobody);
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
        // Postgres, as another user than the demo's, must pass through to the cluster.
        for path in [root.path(), &root.path().join("tmp")] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_followq"));
        let binary = match identity {
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
        DemoRun {
            root,
            binary,
            identity,
        }
    }

    /// Whether the demo runs as root (Postgres then runs as `nobody`).
    fn demo_is_root(&self) -> bool {
        running_as_root() && self.identity.is_none()
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
        if let Some((uid, gid)) = self.identity {
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
/// Postgres's binaries on PATH: the demo says which Postgres it chose (and, run as root, that
/// Postgres runs as `nobody`), completes with its report, and removes the cluster's directory.
/// As root, it runs again as `nobody`, where Postgres runs as the demo's own user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_server_the_demo_runs_on_a_throwaway_postgres_and_removes_it() {
    let _serial = serial().await;
    let mut ways = vec![RunAs::Me];
    if running_as_root() {
        ways.push(RunAs::Nobody);
    }
    for run_as in ways {
        let run = DemoRun::as_user(run_as);
        let (run, output) = tokio::task::spawn_blocking(move || {
            let output = run.run(SMALL_DEMO, &[]);
            (run, output)
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "demo as {run_as:?} failed:\n{stderr}"
        );
        let report = report(&output);
        assert_eq!(report["completed"], true, "{report}");
        let finished = report["following"].as_i64().unwrap()
            + report["pending"].as_i64().unwrap()
            + report["failed"].as_i64().unwrap();
        assert_eq!(finished, 60, "{report}");
        let bin_dir = postgres_bin_dir().display().to_string();
        let as_nobody = ", run as the user nobody (Postgres refuses to run as root)";
        let chosen = format!(
            "from {bin_dir}{}, on a Unix socket in {}",
            if run.demo_is_root() { as_nobody } else { "" },
            run.tmpdir().display()
        );
        assert!(
            stderr.contains("Postgres: a throwaway PostgreSQL") && stderr.contains(&chosen),
            "the progress line names the throwaway Postgres ({chosen}):\n{stderr}"
        );
        assert!(stderr.contains("throwaway Postgres stopped"), "{stderr}");
        run.assert_nothing_left(&stderr);
    }
}

/// Starts `followq demo` with enough work to run for a while, and reads its stderr up to the
/// line saying the throwaway Postgres runs.
fn start_long_demo(run: &DemoRun) -> (Child, Lines<BufReader<ChildStderr>>, String) {
    let mut command = run.command(
        &[
            "--accounts",
            "2",
            "--jobs",
            "2000",
            "--quota",
            "5",
            "--window",
            "5s",
            "--json",
        ],
        &[],
    );
    command.process_group(0);
    let mut child = command.spawn().expect("spawn followq demo");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("Postgres: a throwaway") {
            return (child, lines, stderr);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the demo never started its throwaway Postgres:\n{stderr}");
}

/// The cluster directories in `tmp`.
fn clusters_in(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// Guards the clean-up of an abandoned cluster (the owner marker and the next run's sweep): a
/// demo killed with SIGKILL cleans up nothing, and its server keeps running, detached; the next
/// demo (here one whose named server is down, so that it starts no cluster of its own) stops
/// that server and removes its directory, and leaves alone the cluster of a demo that still
/// runs, in the same TMPDIR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_demos_postgres_is_removed_by_the_next_demo_and_a_live_ones_is_not() {
    let _serial = serial().await;
    let run = DemoRun::new();
    let dead = format!("postgres://postgres@127.0.0.1:{}/postgres", unused_port());
    let (run, next, live, killed_cluster, live_cluster) = tokio::task::spawn_blocking(move || {
        let (live, live_lines, _) = start_long_demo(&run);
        let live_cluster = clusters_in(&run.tmpdir());
        assert_eq!(live_cluster.len(), 1, "{live_cluster:?}");
        let (mut killed, _, killed_stderr) = start_long_demo(&run);
        let killed_cluster: Vec<PathBuf> = clusters_in(&run.tmpdir())
            .into_iter()
            .filter(|dir| !live_cluster.contains(dir))
            .collect();
        assert_eq!(killed_cluster.len(), 1, "{killed_cluster:?}");
        let killed_cluster = killed_cluster[0].clone();
        killed.kill().expect("SIGKILL the demo");
        killed.wait().unwrap();
        // What the issue is about: the killed demo's server runs on, its directory stays.
        assert!(
            !processes_mentioning(&killed_cluster).is_empty() && killed_cluster.is_dir(),
            "a SIGKILL left nothing running:\n{killed_stderr}"
        );
        let next = run.run(SMALL_DEMO, &[("DATABASE_URL", &dead)]);
        (
            run,
            next,
            (live, live_lines),
            killed_cluster,
            live_cluster[0].clone(),
        )
    })
    .await
    .unwrap();
    let next_stderr = String::from_utf8_lossy(&next.stderr).into_owned();
    // The live demo's cluster, looked at before anything can fail.
    let live_left_alone = live_cluster.is_dir() && !processes_mentioning(&live_cluster).is_empty();
    let (mut live, live_lines) = live;
    let group = live.id();
    Command::new("kill")
        .args(["-INT", "--", &format!("-{group}")])
        .status()
        .unwrap();
    let mut live_stderr = String::new();
    for line in live_lines {
        live_stderr.push_str(&line.unwrap());
        live_stderr.push('\n');
    }
    live.wait().unwrap();

    assert!(
        next_stderr.contains("removed a throwaway Postgres that a killed demo (pid ")
            && next_stderr.contains(&format!("left in {}", killed_cluster.display())),
        "{next_stderr}"
    );
    assert!(
        processes_mentioning(&killed_cluster).is_empty(),
        "the killed demo's server still runs:\n{next_stderr}"
    );
    assert!(!killed_cluster.exists(), "{next_stderr}");
    assert!(
        live_left_alone,
        "the live demo's cluster was touched:\n{next_stderr}"
    );
    assert!(
        live_stderr.contains("throwaway Postgres stopped"),
        "{live_stderr}"
    );
    run.assert_nothing_left(&format!("{next_stderr}\n{live_stderr}"));
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
