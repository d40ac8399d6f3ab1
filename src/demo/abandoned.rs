//! Throwaway Postgres clusters that a killed demo left behind: found by their owner marker in
//! TMPDIR, stopped and removed by the next demo. A cluster whose owner still runs is never
//! touched, nor one without a marker (being created, or kept with `--keep-database`), nor one
//! of another user (unless the demo runs as root).
//!
//! A demo that gets SIGINT or SIGTERM removes its own cluster; SIGKILL (or a crash of the
//! machine's OOM killer) leaves the server running, detached, for good: this is its clean-up.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::server_user::ServerUser;
use super::throwaway_postgres::{
    DIR_PREFIX, OWNER_MARKER, PostgresBinaries, run_step, stop_command,
};

/// What became of one abandoned cluster.
#[derive(Debug)]
pub enum Abandoned {
    /// Its server (if one ran) stopped, its directory removed.
    Removed { dir: PathBuf, owner: i32 },
    /// Left in place: the server would not stop, or the directory could not be removed.
    Left { dir: PathBuf, why: String },
}

impl Abandoned {
    /// For the demo's progress line.
    pub fn describe(&self) -> String {
        match self {
            Abandoned::Removed { dir, owner } => format!(
                "removed a throwaway Postgres that a killed demo (pid {owner}) left in {}",
                dir.display()
            ),
            Abandoned::Left { dir, why } => format!(
                "could not remove the throwaway Postgres a killed demo left in {}: {why}",
                dir.display()
            ),
        }
    }
}

/// Stops and removes every cluster under `tmp` whose owner is gone, with `binaries`' `pg_ctl`
/// (never a program named in the directory).
pub async fn remove_abandoned(tmp: &Path, binaries: &PostgresBinaries) -> Vec<Abandoned> {
    let mut done = Vec::new();
    for (dir, owner) in find_abandoned(tmp) {
        done.push(remove(dir, owner, binaries).await);
    }
    done
}

/// The directories under `tmp` with an owner marker naming a process that no longer runs.
pub fn find_abandoned(tmp: &Path) -> Vec<(PathBuf, i32)> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let me = rustix::process::geteuid();
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(DIR_PREFIX))
        })
        .filter_map(|entry| {
            let dir = entry.path();
            // A real directory (not a symlink), ours unless we are root.
            let meta = std::fs::symlink_metadata(&dir).ok()?;
            if !meta.is_dir() || !(me.is_root() || meta.uid() == me.as_raw()) {
                return None;
            }
            let owner = std::fs::read_to_string(dir.join(OWNER_MARKER))
                .ok()?
                .trim()
                .parse::<i32>()
                .ok()?;
            (!is_running(owner)).then_some((dir, owner))
        })
        .collect()
}

/// Whether a process `pid` runs (one of another user counts: the signal is refused, not
/// missing). A pid reused since by an unrelated process counts too: such a cluster is left. A
/// zombie does not: a server that exited stays one until its parent (init, or whichever
/// process adopted it) reaps it.
fn is_running(pid: i32) -> bool {
    let Some(raw) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    let exists = match rustix::process::test_kill_process(raw) {
        Ok(()) => true,
        Err(errno) => errno != rustix::io::Errno::SRCH,
    };
    exists && !is_zombie(pid)
}

/// Whether /proc says `pid` is a zombie (state `Z`; the state follows the command's closing
/// parenthesis). Where there is no /proc, never.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

async fn remove(dir: PathBuf, owner: i32, binaries: &PostgresBinaries) -> Abandoned {
    let data = dir.join("data");
    let postmaster = postmaster_pid(&data);
    if postmaster.is_some_and(is_running) {
        // As the directory's owner: `nobody` for a cluster a demo run as root started.
        let user = match std::fs::metadata(&dir) {
            Ok(meta) if rustix::process::geteuid().is_root() && meta.uid() != 0 => {
                ServerUser::Other {
                    name: format!("uid {}", meta.uid()),
                    uid: meta.uid(),
                    gid: meta.gid(),
                }
            }
            _ => ServerUser::Current,
        };
        let pg_ctl = stop_command(binaries, &data, &user, "immediate");
        let stopped = run_step("pg_ctl stop", &binaries.pg_ctl(), pg_ctl).await;
        if postmaster.is_some_and(is_running) {
            let why = match stopped {
                Err(e) => format!("its server would not stop: {e}"),
                Ok(()) => "its server still runs".to_owned(),
            };
            return Abandoned::Left { dir, why };
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Abandoned::Removed { dir, owner },
        Err(e) => Abandoned::Left {
            dir,
            why: e.to_string(),
        },
    }
}

/// The server's pid, from the first line of `data/postmaster.pid`, if it has one.
fn postmaster_pid(data: &Path) -> Option<i32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster directory with a marker naming `owner`, and no server.
    fn cluster(tmp: &Path, name: &str, owner: Option<&str>) -> PathBuf {
        let dir = tmp.join(format!("{DIR_PREFIX}{name}"));
        std::fs::create_dir_all(dir.join("data")).expect("create the directory");
        if let Some(owner) = owner {
            std::fs::write(dir.join(OWNER_MARKER), owner).expect("write the marker");
        }
        dir
    }

    /// A pid that no process has: a child that has exited and been reaped.
    fn dead_pid() -> i32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        child.wait().expect("reap it");
        pid
    }

    #[test]
    fn only_markers_naming_a_dead_owner_are_abandoned() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dead = dead_pid();
        let gone = cluster(tmp.path(), "gone", Some(&format!("{dead}\n")));
        cluster(tmp.path(), "live", Some(&std::process::id().to_string()));
        cluster(tmp.path(), "kept", None);
        cluster(tmp.path(), "garbled", Some("not a pid"));
        std::fs::create_dir(tmp.path().join("followq-other")).expect("an unrelated directory");
        assert_eq!(find_abandoned(tmp.path()), vec![(gone, dead)]);
    }
}
