//! Which Postgres server the demo uses, and giving it back at the end.
//!
//! A URL the user named (DATABASE_URL, FOLLOWQ_DATABASE__URL, `--database-url`) is always
//! used, as it is; a server there that cannot be reached is the demo's error. Otherwise the
//! configured `database.url` is tried with a short connect timeout; if nothing answers there,
//! the demo starts a throwaway Postgres: from the local Postgres binaries if any are installed
//! (as `nobody` when the demo runs as root), else in Docker (builds with the `demo-docker`
//! feature), else it stops with one message naming the three ways to give it a Postgres.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use sqlx::{Connection, PgConnection};

#[cfg(feature = "demo-docker")]
use super::docker_postgres::DockerPostgres;
use super::progress::Progress;
use super::server_user::{NoServerUser, ServerUser};
use super::throwaway_postgres::{PostgresBinaries, ThrowawayError, ThrowawayPostgres};
use crate::db;

/// How long the configured server has to answer before the demo decides nothing is there.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The server the demo runs on.
pub enum DemoPostgres {
    /// The server the settings name (given explicitly, or configured and answering).
    Configured {
        url: SecretString,
        described: String,
    },
    /// A cluster from the local Postgres binaries.
    Throwaway(ThrowawayPostgres),
    /// Boxed: the container handle is several times the size of the other variants.
    #[cfg(feature = "demo-docker")]
    Docker(Box<DockerPostgres>),
}

/// Where a throwaway Postgres may come from.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// Directories to look in for `initdb` and `pg_ctl`, first match wins.
    pub binary_dirs: Vec<PathBuf>,
    /// Who runs a throwaway server: the demo's user, `nobody` when the demo runs as root
    /// (Postgres refuses to run as root), or no one (root, and no `nobody` to run it as).
    pub server_user: Result<ServerUser, NoServerUser>,
    /// Whether to try Docker (only a build with the `demo-docker` feature can).
    pub docker: bool,
    /// How the binary directories were chosen, for the message when none has them.
    pub searched: String,
}

impl Lookup {
    /// This machine: `only_dir` if given (`--postgres-bin`), else PATH and then the usual
    /// package directories.
    pub fn this_machine(only_dir: Option<PathBuf>) -> Lookup {
        let (binary_dirs, searched) = match only_dir {
            Some(dir) => {
                let searched = format!("in {} (--postgres-bin)", dir.display());
                (vec![dir], searched)
            }
            None => (
                super::throwaway_postgres::search_dirs(
                    std::env::var_os("PATH").as_deref(),
                    std::path::Path::new("/"),
                ),
                "on PATH or in the usual package directories (such as /usr/lib/postgresql/*/bin)"
                    .to_owned(),
            ),
        };
        Lookup {
            binary_dirs,
            server_user: ServerUser::for_this_process(),
            docker: cfg!(feature = "demo-docker"),
            searched,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    #[error(transparent)]
    BadUrl(#[from] db::DbError),
    #[error("could not start a throwaway Postgres from {}", dir.display())]
    Throwaway {
        dir: PathBuf,
        #[source]
        source: ThrowawayError,
    },
    #[error(
        "no Postgres for the demo: nothing answers at {configured} (database.url: {why}), {binaries}, and {docker}.\n\
         Give it one of: DATABASE_URL set to a Postgres server where you may create databases; \
         Postgres installed (its initdb and pg_ctl: the demo runs a throwaway server as your user, as nobody for root); \
         Docker started{docker_build}."
    )]
    NoPostgres {
        configured: String,
        why: String,
        binaries: String,
        docker: String,
        docker_build: &'static str,
    },
}

/// What the probe of the configured server found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A server answered (possibly with an error, such as a refused login: the demo then
    /// fails on it as it always has).
    Answers,
    /// Nothing answered: refused, no such socket, unreachable, or silent past the timeout.
    Nothing { why: String },
}

/// Tries to connect to `url` once, for at most `timeout`.
pub async fn probe(url: &SecretString, timeout: Duration) -> Result<Probe, db::DbError> {
    let options = db::connect_options(url)?;
    Ok(
        match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
            Err(_) => Probe::Nothing {
                why: format!("no answer within {} s", timeout.as_secs_f32()),
            },
            Ok(Err(sqlx::Error::Io(error))) => Probe::Nothing {
                why: error.kind().to_string(),
            },
            Ok(Err(_)) => Probe::Answers,
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                Probe::Answers
            }
        },
    )
}

/// Stops and removes the throwaway clusters that killed demos left in TMPDIR (when Postgres's
/// binaries are there to stop them with); says on `progress` what it removed.
pub async fn remove_abandoned(lookup: &Lookup, progress: &mut dyn Progress) {
    let Some(binaries) = PostgresBinaries::find(&lookup.binary_dirs) else {
        return;
    };
    for done in super::abandoned::remove_abandoned(&std::env::temp_dir(), &binaries).await {
        progress.note(&done.describe());
    }
}

/// Picks the demo's server (see the module's comment); says on `progress` what it chose.
pub async fn choose(
    configured: &SecretString,
    explicit: bool,
    lookup: &Lookup,
    progress: &mut dyn Progress,
) -> Result<DemoPostgres, ChooseError> {
    let described = db::describe(&db::connect_options(configured)?);
    if explicit {
        progress.note(&format!("Postgres: the server you named, {described}"));
        return Ok(DemoPostgres::Configured {
            url: configured.clone(),
            described,
        });
    }
    let why = match probe(configured, PROBE_TIMEOUT).await? {
        Probe::Answers => {
            progress.note(&format!("Postgres: the configured server, {described}"));
            return Ok(DemoPostgres::Configured {
                url: configured.clone(),
                described,
            });
        }
        Probe::Nothing { why } => why,
    };

    let binaries = match (
        PostgresBinaries::find(&lookup.binary_dirs),
        &lookup.server_user,
    ) {
        (Some(found), Err(no_user)) => format!(
            "Postgres's binaries in {} cannot be used: {no_user}",
            found.dir.display()
        ),
        (Some(found), Ok(user)) => {
            progress.note(&format!(
                "nothing answers at {described} ({why}): starting a throwaway Postgres from {}",
                found.dir.display()
            ));
            let dir = found.dir.clone();
            let cluster = ThrowawayPostgres::start(found, user.clone())
                .await
                .map_err(|source| ChooseError::Throwaway { dir, source })?;
            progress.note(&format!(
                "Postgres: a throwaway {}, on a Unix socket in {} (removed at the end)",
                cluster.describe(),
                cluster.dir().display()
            ));
            return Ok(DemoPostgres::Throwaway(cluster));
        }
        (None, _) => format!("no initdb and pg_ctl {}", lookup.searched),
    };

    let docker = try_docker(lookup, &described, &why, progress).await;
    #[cfg(feature = "demo-docker")]
    let docker = match docker {
        Ok(container) => return Ok(DemoPostgres::Docker(Box::new(container))),
        Err(reason) => reason,
    };
    Err(ChooseError::NoPostgres {
        configured: described,
        why,
        binaries,
        docker,
        docker_build: if cfg!(feature = "demo-docker") {
            ""
        } else {
            " (with a followq built with --features demo-docker)"
        },
    })
}

#[cfg(feature = "demo-docker")]
async fn try_docker(
    lookup: &Lookup,
    described: &str,
    why: &str,
    progress: &mut dyn Progress,
) -> Result<DockerPostgres, String> {
    if !lookup.docker {
        return Err("Docker was not tried".to_owned());
    }
    progress.note(&format!(
        "nothing answers at {described} ({why}) and no local Postgres to run: starting a \
         Postgres container through Docker (the first time pulls {})",
        super::docker_postgres::IMAGE
    ));
    match DockerPostgres::start().await {
        Ok(container) => {
            progress.note(&format!(
                "Postgres: a throwaway in {} (removed at the end)",
                container.describe()
            ));
            Ok(container)
        }
        Err(error) => Err(format!("{error}")),
    }
}

#[cfg(not(feature = "demo-docker"))]
async fn try_docker(
    _lookup: &Lookup,
    _described: &str,
    _why: &str,
    _progress: &mut dyn Progress,
) -> String {
    "this followq was built without Docker support (the demo-docker feature)".to_owned()
}

impl DemoPostgres {
    /// The URL of the server's maintenance database, where the demo creates its own.
    pub fn url(&self) -> &SecretString {
        match self {
            DemoPostgres::Configured { url, .. } => url,
            DemoPostgres::Throwaway(cluster) => cluster.url(),
            #[cfg(feature = "demo-docker")]
            DemoPostgres::Docker(container) => container.url(),
        }
    }

    /// Gives a throwaway server back: stopped and removed, or, with `keep` (the demo kept its
    /// database for the user to look at), left running. Returns what to tell the user, if anything.
    pub async fn finish(self, keep: bool) -> Option<String> {
        match self {
            DemoPostgres::Configured { .. } => None,
            DemoPostgres::Throwaway(cluster) => Some(match keep {
                true => cluster.keep().instructions(),
                false => match cluster.stop().await {
                    Ok(dir) => format!("throwaway Postgres stopped and {} removed", dir.display()),
                    Err(error) => format!("could not clean up the throwaway Postgres: {error}"),
                },
            }),
            #[cfg(feature = "demo-docker")]
            DemoPostgres::Docker(container) => Some(match keep {
                true => (*container).keep(),
                false => match (*container).remove().await {
                    Ok(id) => format!("throwaway Postgres container {id} removed"),
                    Err(error) => format!("{error}"),
                },
            }),
        }
    }
}
