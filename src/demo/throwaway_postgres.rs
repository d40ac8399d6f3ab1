//! A throwaway Postgres for the demo, from Postgres's own binaries: a fresh cluster in a private
//! temporary directory, listening only on a Unix socket in that directory (no TCP port), run
//! as the current user (as `nobody` when the demo runs as root: see `server_user.rs`), stopped
//! and removed at the end, and also when the demo fails or panics (the value's `Drop`).
//!
//! The directory holds a marker with the demo's pid ([`OWNER_MARKER`]): a demo killed with
//! SIGKILL cleans up nothing, and the next demo finds its cluster by the marker and removes it
//! (`abandoned.rs`).
//!
//! Finding the binaries lives here too: `initdb` and `pg_ctl` side by side, on PATH or in the
//! usual package directories.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use secrecy::SecretString;
use tempfile::TempDir;
use tokio::process::Command;

use super::server_user::ServerUser;

/// The role the cluster is created with (trust authentication: only the owner of the
/// temporary directory can reach its socket).
const SUPERUSER: &str = "postgres";
/// Names the socket file (`.s.PGSQL.5432`); no TCP port is opened.
const SOCKET_PORT: u16 = 5432;
/// Longest socket path the platforms accept (`sun_path` is 104 bytes on macOS, 108 on Linux,
/// including the terminating NUL).
const MAX_SOCKET_PATH: usize = 103;
/// How long `initdb`, `pg_ctl start` and `pg_ctl stop` may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How the name of a throwaway cluster's directory (under TMPDIR) starts.
pub const DIR_PREFIX: &str = "followq-demo-pg-";
/// The file in a throwaway cluster's directory that holds the pid of the demo that owns it,
/// written before anything else is; a kept cluster (`--keep-database`) has none.
pub const OWNER_MARKER: &str = "followq-demo-owner";

/// A directory holding both `initdb` and `pg_ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresBinaries {
    pub dir: PathBuf,
}

impl PostgresBinaries {
    /// The binaries in `dir`, if both are executable files there.
    pub fn in_dir(dir: &Path) -> Option<PostgresBinaries> {
        let executable = |name: &str| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        (executable("initdb") && executable("pg_ctl")).then(|| PostgresBinaries {
            dir: dir.to_path_buf(),
        })
    }

    /// The first of `dirs` that holds both binaries.
    pub fn find<'a>(dirs: impl IntoIterator<Item = &'a PathBuf>) -> Option<PostgresBinaries> {
        dirs.into_iter()
            .find_map(|dir| PostgresBinaries::in_dir(dir))
    }

    fn initdb(&self) -> PathBuf {
        self.dir.join("initdb")
    }

    pub(super) fn pg_ctl(&self) -> PathBuf {
        self.dir.join("pg_ctl")
    }

    /// "PostgreSQL 15.20", from `pg_ctl --version`, or "PostgreSQL" if it says nothing usable.
    pub async fn version(&self) -> String {
        let output = Command::new(self.pg_ctl())
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await;
        output
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let number = text
                    .split("(PostgreSQL)")
                    .nth(1)?
                    .split_whitespace()
                    .next()?;
                Some(format!("PostgreSQL {number}"))
            })
            .unwrap_or_else(|| "PostgreSQL".to_owned())
    }
}

/// Where to look for the binaries, in order: the directories of `path` (a PATH value), then
/// the usual package directories under `root` (`/` on a real machine), newest version first.
pub fn search_dirs(path: Option<&OsStr>, root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(package_dirs(root));
    dirs
}

/// The `bin` directories of packaged Postgres versions under `root`, newest version first.
pub fn package_dirs(root: &Path) -> Vec<PathBuf> {
    // (parent directory, prefix of the versioned entry); the binaries are in <entry>/bin.
    const LAYOUTS: &[(&str, &str)] = &[
        // Debian and Ubuntu: /usr/lib/postgresql/16/bin
        ("usr/lib/postgresql", ""),
        // The PGDG packages for RHEL and Fedora: /usr/pgsql-16/bin
        ("usr", "pgsql-"),
        // Homebrew's versioned formulae, Apple silicon and Intel: .../opt/postgresql@16/bin
        ("opt/homebrew/opt", "postgresql@"),
        ("usr/local/opt", "postgresql@"),
        // Postgres.app: /Applications/Postgres.app/Contents/Versions/16/bin
        ("Applications/Postgres.app/Contents/Versions", ""),
    ];
    let mut found: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    for (parent, prefix) in LAYOUTS {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.is_dir() {
                found.push((version_key(version), bin));
            }
        }
    }
    // Newest first; an entry without a version number ("latest") after the numbered ones.
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().map(|(_, bin)| bin).collect()
}

/// "9.6" → [9, 6], "16" → [16]: compared numerically, so 16 sorts above 9.6.
fn version_key(version: &str) -> Vec<u32> {
    version
        .split('.')
        .map_while(|part| part.parse::<u32>().ok())
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ThrowawayError {
    #[error("could not create a temporary directory for the throwaway Postgres")]
    TempDir(#[source] io::Error),
    #[error(
        "the temporary directory {} makes a Unix socket path longer than {MAX_SOCKET_PATH} bytes: set TMPDIR to a shorter directory",
        dir.display()
    )]
    SocketPathTooLong { dir: PathBuf },
    #[error("could not write the throwaway Postgres's settings")]
    Configure(#[source] io::Error),
    #[error(
        "{user} cannot reach {}: set TMPDIR to a directory every user may pass through, such as /tmp",
        dir.display()
    )]
    NotReachable { dir: PathBuf, user: String },
    #[error("could not prepare {} for the throwaway Postgres", dir.display())]
    Prepare {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not run {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{step} did not finish within {} s", STEP_TIMEOUT.as_secs())]
    TimedOut { step: &'static str },
    #[error("{step} failed ({status}):\n{output}")]
    Failed {
        step: &'static str,
        status: ExitStatus,
        output: String,
    },
    #[error("could not remove {}", dir.display())]
    Remove {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A running throwaway cluster. Stop it with [`ThrowawayPostgres::stop`]; dropping it stops
/// the server and removes the directory too (synchronously: the path for errors and panics).
#[derive(Debug)]
pub struct ThrowawayPostgres {
    binaries: PostgresBinaries,
    /// Who runs `initdb`, `pg_ctl` and the server, and owns the directory.
    user: ServerUser,
    version: String,
    /// Holds `data/` (the cluster), `postgres.log` and the socket.
    dir: Option<TempDir>,
    url: SecretString,
    /// Whether a server may be running on `data/` (set before `pg_ctl start` is spawned).
    started: bool,
}

impl ThrowawayPostgres {
    /// Creates a cluster in a new temporary directory (under TMPDIR) and starts it, as `user`.
    /// On error, whatever was started is stopped and the directory removed.
    pub async fn start(
        binaries: PostgresBinaries,
        user: ServerUser,
    ) -> Result<ThrowawayPostgres, ThrowawayError> {
        let version = binaries.version().await;
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(ThrowawayError::TempDir)?;
        let socket_dir = dir.path().to_path_buf();
        let socket_path_len =
            socket_dir.as_os_str().len() + format!("/.s.PGSQL.{SOCKET_PORT}").len();
        if socket_path_len > MAX_SOCKET_PATH {
            return Err(ThrowawayError::SocketPathTooLong { dir: socket_dir });
        }
        if let ServerUser::Other { name, .. } = &user
            && !reachable_by_others(&socket_dir)
        {
            return Err(ThrowawayError::NotReachable {
                dir: socket_dir,
                user: name.clone(),
            });
        }
        // The owner's pid first, so that no cluster of a demo killed from here on goes unfound.
        let prepared = std::fs::write(
            socket_dir.join(OWNER_MARKER),
            format!("{}\n", std::process::id()),
        )
        .and_then(|()| match user.ids() {
            Some((uid, gid)) => std::os::unix::fs::chown(&socket_dir, Some(uid), Some(gid)),
            None => Ok(()),
        });
        prepared.map_err(|source| ThrowawayError::Prepare {
            dir: socket_dir.clone(),
            source,
        })?;
        let url = socket_url(&socket_dir);
        let mut cluster = ThrowawayPostgres {
            binaries,
            user,
            version,
            dir: Some(dir),
            url,
            started: false,
        };
        cluster.init().await?;
        cluster.configure(&socket_dir)?;
        cluster.started = true;
        cluster.run_pg_ctl_start().await?;
        Ok(cluster)
    }

    /// The URL of the cluster's `postgres` database, through its socket.
    pub fn url(&self) -> &SecretString {
        &self.url
    }

    /// "PostgreSQL 15.20 from /usr/lib/postgresql/15/bin", and the user it runs as when that
    /// is not the demo's own.
    pub fn describe(&self) -> String {
        format!(
            "{} from {}{}",
            self.version,
            self.binaries.dir.display(),
            self.user.describe()
        )
    }

    /// The directory holding the cluster and its socket.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Stops the server (fast shutdown: open connections are closed) and removes the
    /// directory; returns the directory's path. The directory is removed even if the server
    /// would not stop cleanly (it is then stopped the immediate way).
    pub async fn stop(mut self) -> Result<PathBuf, ThrowawayError> {
        let stopped = if self.started {
            let stopped = self.run_pg_ctl_stop("fast").await;
            if stopped.is_err() {
                let _ = self.run_pg_ctl_stop("immediate").await;
            }
            self.started = false;
            stopped
        } else {
            Ok(())
        };
        let dir = self.dir.take();
        let path = dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let removed = match dir {
            Some(dir) => dir.close().map_err(|source| ThrowawayError::Remove {
                dir: path.clone(),
                source,
            }),
            None => Ok(()),
        };
        stopped.and(removed).map(|()| path)
    }

    /// Leaves the server running and the directory in place (for `--keep-database`); returns
    /// what the user needs to look at it and to remove it afterwards.
    pub fn keep(mut self) -> KeptCluster {
        self.started = false;
        let dir = self.dir.take().map(TempDir::keep).unwrap_or_default();
        // Without its marker, no later demo takes the kept cluster for an abandoned one.
        let _ = std::fs::remove_file(dir.join(OWNER_MARKER));
        KeptCluster {
            pg_ctl: format!(
                "{}{}",
                self.user.command_prefix(),
                self.binaries.pg_ctl().display()
            ),
            data: dir.join("data"),
            dir,
        }
    }

    /// A command for one Postgres step, as the server's user, in the cluster's directory (the
    /// demo's working directory may be closed to that user).
    fn command(&self, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        command.current_dir(self.dir());
        if let Some((uid, gid)) = self.user.ids() {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    async fn init(&self) -> Result<(), ThrowawayError> {
        let mut initdb = self.command(self.binaries.initdb());
        initdb.arg("--pgdata").arg(self.data_dir()).args([
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            // A throwaway: nothing needs to reach the disk.
            "--no-sync",
        ]);
        run_step("initdb", &self.binaries.initdb(), initdb).await
    }

    /// Only the socket in our private directory, no TCP; durability off (it is thrown away).
    fn configure(&self, socket_dir: &Path) -> Result<(), ThrowawayError> {
        use std::io::Write as _;
        // A setting's string value is single-quoted; a quote inside is doubled.
        let quoted = socket_dir.to_string_lossy().replace('\'', "''");
        let settings = format!(
            "\n# followq demo: a throwaway cluster, reachable only through its private socket.\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{quoted}'\n\
             port = {SOCKET_PORT}\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir().join("postgresql.conf"))
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .map_err(ThrowawayError::Configure)
    }

    async fn run_pg_ctl_start(&self) -> Result<(), ThrowawayError> {
        let log = self.dir().join("postgres.log");
        let mut pg_ctl = self.command(self.binaries.pg_ctl());
        pg_ctl
            .arg("--pgdata")
            .arg(self.data_dir())
            .arg("--log")
            .arg(&log)
            .args(["--wait", "--timeout", "50", "start"]);
        match run_step("pg_ctl start", &self.binaries.pg_ctl(), pg_ctl).await {
            // The server's own log says why it did not start; it holds no secrets.
            Err(ThrowawayError::Failed {
                step,
                status,
                mut output,
            }) => {
                if let Ok(text) = std::fs::read_to_string(&log) {
                    let _ = write!(output, "\nThe server's log ({}):\n{text}", log.display());
                }
                Err(ThrowawayError::Failed {
                    step,
                    status,
                    output,
                })
            }
            other => other,
        }
    }

    async fn run_pg_ctl_stop(&self, mode: &str) -> Result<(), ThrowawayError> {
        let pg_ctl = stop_command(&self.binaries, &self.data_dir(), &self.user, mode);
        run_step("pg_ctl stop", &self.binaries.pg_ctl(), pg_ctl).await
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if self.started {
            // No runtime to await on here: a blocking call, on the error and panic paths only.
            let mut pg_ctl = std::process::Command::new(self.binaries.pg_ctl());
            pg_ctl
                .arg("--pgdata")
                .arg(self.data_dir())
                .args(["--mode", "immediate", "--wait", "stop"])
                .current_dir(self.dir())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            if let Some((uid, gid)) = self.user.ids() {
                pg_ctl.uid(uid).gid(gid);
            }
            let _ = pg_ctl.status();
        }
        // `self.dir`, a TempDir, removes the directory as it drops.
    }
}

/// Whether every directory above `dir` lets other users pass through (the `x` bit for others).
fn reachable_by_others(dir: &Path) -> bool {
    dir.ancestors()
        .skip(1)
        .all(|parent| std::fs::metadata(parent).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// `pg_ctl stop` in `mode` on the cluster in `data`, as `user`, from the cluster's directory.
pub(super) fn stop_command(
    binaries: &PostgresBinaries,
    data: &Path,
    user: &ServerUser,
    mode: &str,
) -> Command {
    let mut pg_ctl = Command::new(binaries.pg_ctl());
    pg_ctl
        .arg("--pgdata")
        .arg(data)
        .args(["--mode", mode, "--wait", "stop"]);
    if let Some(dir) = data.parent() {
        pg_ctl.current_dir(dir);
    }
    if let Some((uid, gid)) = user.ids() {
        pg_ctl.uid(uid).gid(gid);
    }
    pg_ctl
}

/// A cluster left running for the user to inspect.
#[derive(Debug)]
pub struct KeptCluster {
    pub dir: PathBuf,
    pub data: PathBuf,
    /// The `pg_ctl` to stop it with, after `runuser -u nobody -- ` when it runs as nobody.
    pub pg_ctl: String,
}

impl KeptCluster {
    /// How to connect, and how to stop and remove it.
    pub fn instructions(&self) -> String {
        format!(
            "the throwaway Postgres keeps running with the kept database: \
             psql -h {dir} -U {SUPERUSER} <database>; \
             afterwards stop it and remove its directory: {pg_ctl} -D {data} stop && rm -r {dir}",
            dir = self.dir.display(),
            data = self.data.display(),
            pg_ctl = self.pg_ctl,
        )
    }
}

/// `postgres://postgres@localhost/postgres?host=<dir>`: a host starting with `/` is a socket
/// directory for sqlx as for libpq.
fn socket_url(socket_dir: &Path) -> SecretString {
    let mut url = reqwest::Url::parse(&format!("postgres://{SUPERUSER}@localhost/postgres"))
        .expect("a constant, valid URL");
    url.query_pairs_mut()
        .append_pair("host", &socket_dir.to_string_lossy());
    url.to_string().into()
}

/// Runs one step to completion in its own process group, so that the terminal's Ctrl-C (sent
/// to the whole foreground group) reaches only the demo, which then cleans up in order, and
/// not `initdb` half-way. (`pg_ctl start` detaches the server into a session of its own.)
pub(super) async fn run_step(
    step: &'static str,
    program: &Path,
    mut command: Command,
) -> Result<(), ThrowawayError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let output: Output = tokio::time::timeout(STEP_TIMEOUT, command.output())
        .await
        .map_err(|_| ThrowawayError::TimedOut { step })?
        .map_err(|source| ThrowawayError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(ThrowawayError::Failed {
            step,
            status: output.status,
            output: text.trim_end().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version_key("16") > version_key("9.6"));
        assert!(version_key("9.6") > version_key("9"));
        assert!(version_key("latest") < version_key("9"));
    }

    #[test]
    fn the_socket_directory_goes_in_the_host_parameter() {
        use secrecy::ExposeSecret;
        let url = socket_url(Path::new("/tmp/followq demo"));
        let options = crate::db::connect_options(&url).expect("a valid URL");
        assert_eq!(
            options.get_socket().map(PathBuf::as_path),
            Some(Path::new("/tmp/followq demo")),
            "{}",
            url.expose_secret()
        );
        assert_eq!(options.get_username(), SUPERUSER);
    }
}
