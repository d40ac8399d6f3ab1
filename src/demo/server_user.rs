//! Who runs the demo's throwaway Postgres: the user running the demo, or, when the demo runs as
//! root (Postgres refuses to run as root), the unprivileged `nobody`, found in the password
//! file. The demo creates no user: `nobody` exists on every Linux and macOS system.

use std::path::Path;

/// The existing unprivileged user a demo run as root starts Postgres as.
pub const UNPRIVILEGED_USER: &str = "nobody";

/// The user the throwaway server's processes (`initdb`, `pg_ctl`, `postgres`) run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerUser {
    /// The demo's own user (not root).
    Current,
    /// Another, unprivileged user: the demo runs as root and switches to it for every Postgres
    /// step; the cluster's directory is that user's.
    Other { name: String, uid: u32, gid: u32 },
}

/// No user to run Postgres as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the demo runs as root, and Postgres refuses to run as root; the unprivileged user \
     `{UNPRIVILEGED_USER}` it would run Postgres as is not in {passwd} ({why})"
)]
pub struct NoServerUser {
    pub passwd: String,
    pub why: String,
}

impl ServerUser {
    /// For this process: itself unless it is root, else `nobody` from /etc/passwd.
    pub fn for_this_process() -> Result<ServerUser, NoServerUser> {
        if rustix::process::geteuid().is_root() {
            ServerUser::unprivileged(Path::new("/etc/passwd"))
        } else {
            Ok(ServerUser::Current)
        }
    }

    /// `nobody` as the password file at `passwd` has it; root (uid 0) is never taken.
    pub fn unprivileged(passwd: &Path) -> Result<ServerUser, NoServerUser> {
        let missing = |why: String| NoServerUser {
            passwd: passwd.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(passwd).map_err(|e| missing(e.to_string()))?;
        let (uid, gid) = text
            .lines()
            .find_map(|line| {
                let mut fields = line.split(':');
                (fields.next() == Some(UNPRIVILEGED_USER)).then(|| {
                    let _password = fields.next();
                    let uid = fields.next()?.parse::<u32>().ok()?;
                    let gid = fields.next()?.parse::<u32>().ok()?;
                    Some((uid, gid))
                })?
            })
            .ok_or_else(|| missing("no such line".to_owned()))?;
        if uid == 0 || gid == 0 {
            return Err(missing("it is root's uid or gid".to_owned()));
        }
        Ok(ServerUser::Other {
            name: UNPRIVILEGED_USER.to_owned(),
            uid,
            gid,
        })
    }

    /// The uid and gid to switch to, if any.
    pub fn ids(&self) -> Option<(u32, u32)> {
        match self {
            ServerUser::Current => None,
            ServerUser::Other { uid, gid, .. } => Some((*uid, *gid)),
        }
    }

    /// For the progress line: ", run as nobody (Postgres refuses to run as root)", or nothing.
    pub fn describe(&self) -> String {
        match self {
            ServerUser::Current => String::new(),
            ServerUser::Other { name, .. } => {
                format!(", run as the user {name} (Postgres refuses to run as root)")
            }
        }
    }

    /// What to put before a `pg_ctl` command the user types as root: `runuser -u nobody -- `.
    pub fn command_prefix(&self) -> String {
        match self {
            ServerUser::Current => String::new(),
            ServerUser::Other { name, .. } => format!("runuser -u {name} -- "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwd(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(file.path(), text).expect("write it");
        file
    }

    #[test]
    fn nobody_is_read_from_the_password_file() {
        let file = passwd(
            "root:x:0:0:root:/root:/bin/bash\nnobodyelse:x:7:7::/:/bin/false\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        );
        assert_eq!(
            ServerUser::unprivileged(file.path()),
            Ok(ServerUser::Other {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534
            })
        );
    }

    #[test]
    fn a_missing_or_root_nobody_is_an_error() {
        let without = passwd("root:x:0:0:root:/root:/bin/bash\n");
        let error = ServerUser::unprivileged(without.path()).expect_err("no nobody");
        assert!(error.to_string().contains("no such line"), "{error}");
        let as_root = passwd("nobody:x:0:65534::/:/bin/false\n");
        assert!(ServerUser::unprivileged(as_root.path()).is_err());
        assert!(ServerUser::unprivileged(Path::new("/nonexistent/passwd")).is_err());
    }
}
