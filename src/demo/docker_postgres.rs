//! A throwaway Postgres for the demo in a Docker container, through testcontainers: the
//! fallback when no server answers and no Postgres binaries are installed. Built only with the
//! `demo-docker` feature.
//!
//! It is not in the default build: see the feature's comment in Cargo.toml for what it costs.
//!
//! Docker publishes the container's port on every interface of the host, so the superuser's
//! password is a fresh random one, not the image's well-known default.

use rand::distr::{Alphanumeric, SampleString};
use secrecy::SecretString;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt, TestcontainersError};

/// The image's tag: a small image, pulled on first use.
pub const IMAGE: &str = "postgres:16-alpine";
const TAG: &str = "16-alpine";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("no Postgres container through Docker (is a Docker engine running?): {0}")]
    Start(#[source] TestcontainersError),
    #[error("could not remove the container {id}: {source}")]
    Remove {
        id: String,
        #[source]
        source: TestcontainersError,
    },
}

/// A running Postgres container; removed by [`DockerPostgres::remove`] (or, failing that,
/// by testcontainers when the value drops).
pub struct DockerPostgres {
    container: ContainerAsync<Postgres>,
    url: SecretString,
    port: u16,
}

impl DockerPostgres {
    /// Starts the container and waits until Postgres accepts connections.
    pub async fn start() -> Result<DockerPostgres, DockerError> {
        let password = Alphanumeric.sample_string(&mut rand::rng(), 24);
        let container = Postgres::default()
            .with_password(&password)
            .with_tag(TAG)
            .start()
            .await
            .map_err(DockerError::Start)?;
        let port = container
            .get_host_port_ipv4(5432)
            .await
            .map_err(DockerError::Start)?;
        let url = format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres").into();
        Ok(DockerPostgres {
            container,
            url,
            port,
        })
    }

    pub fn url(&self) -> &SecretString {
        &self.url
    }

    /// "the Docker container 3f2a… (postgres:16-alpine) on 127.0.0.1:49153".
    pub fn describe(&self) -> String {
        format!(
            "the Docker container {} ({IMAGE}) on 127.0.0.1:{}",
            short_id(self.container.id()),
            self.port
        )
    }

    /// Stops and removes the container; returns its short id.
    pub async fn remove(self) -> Result<String, DockerError> {
        let id = short_id(self.container.id()).to_owned();
        self.container
            .rm()
            .await
            .map_err(|source| DockerError::Remove {
                id: id.clone(),
                source,
            })?;
        Ok(id)
    }

    /// Leaves the container running (for `--keep-database`); returns how to reach and remove
    /// it.
    pub fn keep(self) -> String {
        let id = short_id(self.container.id()).to_owned();
        // Not dropped: its Drop would remove the container.
        std::mem::forget(self.container);
        format!(
            "the Postgres container keeps running with the kept database: \
             docker exec -it {id} psql -U postgres <database>; \
             remove it afterwards: docker rm -f {id}"
        )
    }
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
