//! A throw-away database for the demo and the benchmark: created on the configured server,
//! migrated, and dropped at the end (`WITH (FORCE)`, so a connection left open cannot keep it).
//!
//! On a Citus coordinator with workers it is a Citus database ([`citus`]): created on every
//! node, so that migrating it distributes the tables, and dropped on every node.

pub mod citus;

use secrecy::SecretString;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::db;
use crate::store::schema;
use citus::{CitusError, Cluster, ShardCount};

#[derive(Debug, thiserror::Error)]
pub enum ScratchDbError {
    #[error("database.url is not a valid Postgres URL")]
    BadUrl,
    #[error(
        "could not create the scratch database {name} on {server} (the role needs CREATEDB; \
         or point DATABASE_URL at a server where it may create databases)"
    )]
    Create {
        name: String,
        server: String,
        #[source]
        source: sqlx::Error,
    },
    /// A step on a Citus node (each message names the node).
    #[error(transparent)]
    Citus(#[from] CitusError),
    #[error("could not connect to the scratch database {name}")]
    Connect {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Migrate(#[from] db::DbError),
    #[error("could not drop the scratch database {name} on {server}")]
    Drop {
        name: String,
        server: String,
        #[source]
        source: sqlx::Error,
    },
}

/// A database named `<prefix>_<pid>_<random>`, migrated and ready.
pub struct ScratchDb {
    pub pool: PgPool,
    /// A URL to the scratch database (it may hold the server's password: a secret).
    pub url: SecretString,
    pub name: String,
    /// The Citus cluster it was made on, when the server is a Citus coordinator with workers.
    pub citus: Option<Cluster>,
    server: PgConnectOptions,
    server_url: SecretString,
}

impl ScratchDb {
    /// Creates and migrates the database on the server of `server_url` (its admin database).
    /// On a Citus coordinator with workers its distributed tables get `shards` shards each;
    /// elsewhere `shards` means nothing. Whatever was created is dropped again when a later
    /// step fails.
    pub async fn create(
        server_url: &SecretString,
        prefix: &str,
        max_connections: u32,
        shards: ShardCount,
    ) -> Result<ScratchDb, ScratchDbError> {
        let server = db::connect_options(server_url).map_err(|_| ScratchDbError::BadUrl)?;
        let name = format!(
            "{prefix}_{}_{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        );
        let url = citus::url_on(server_url, None, Some(&name)).ok_or(ScratchDbError::BadUrl)?;
        let described = db::describe(&server);
        let create_error = |source| ScratchDbError::Create {
            name: name.clone(),
            server: described.clone(),
            source,
        };
        let mut admin = PgConnection::connect_with(&server)
            .await
            .map_err(create_error)?;
        let citus = Cluster::of_server(&mut admin, &server).await?;
        schema::create_database(&mut admin, &name)
            .await
            .map_err(create_error)?;
        let _ = admin.close().await;
        match prepare(
            &server,
            server_url,
            citus.as_ref(),
            &name,
            max_connections,
            shards,
        )
        .await
        {
            Ok(pool) => Ok(ScratchDb {
                pool,
                url,
                name,
                citus,
                server,
                server_url: server_url.clone(),
            }),
            Err(e) => {
                // What was made so far goes; the first failure is the one to report.
                if let Err(dropped) =
                    drop_everywhere(&server, server_url, citus.as_ref(), &name).await
                {
                    tracing::warn!(error = %dropped, "could not drop a scratch database that failed to set up");
                }
                Err(e)
            }
        }
    }

    /// Options to reach the scratch database on one of its Citus workers (with the server
    /// URL's user, password and TLS settings).
    pub fn options_on_worker(&self, worker: &citus::Node) -> Result<PgConnectOptions, CitusError> {
        match &self.citus {
            Some(cluster) => cluster.options_on(&self.server_url, worker, Some(&self.name)),
            None => Err(CitusError::NodeUrl {
                node: worker.clone(),
            }),
        }
    }

    /// Drops the database, on every Citus worker too. Errors are returned for the caller to
    /// report; nothing is retried.
    pub async fn drop_now(self) -> Result<(), ScratchDbError> {
        self.pool.close().await;
        drop_everywhere(
            &self.server,
            &self.server_url,
            self.citus.as_ref(),
            &self.name,
        )
        .await
    }
}

/// Makes the new database `name` a Citus database when the server is a coordinator, then
/// opens the pool and migrates.
async fn prepare(
    server: &PgConnectOptions,
    server_url: &SecretString,
    citus: Option<&Cluster>,
    name: &str,
    max_connections: u32,
    shards: ShardCount,
) -> Result<PgPool, ScratchDbError> {
    if let Some(cluster) = citus {
        cluster.make_database(server_url, name, shards).await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(server.clone().database(name))
        .await
        .map_err(|source| ScratchDbError::Connect {
            name: name.to_owned(),
            source,
        })?;
    db::migrate(&pool).await?;
    Ok(pool)
}

/// Drops `name` on the server, then on every Citus worker (the server's copy first: its
/// sessions hold connections to the workers). Every node is tried; the first failure is
/// returned.
async fn drop_everywhere(
    server: &PgConnectOptions,
    server_url: &SecretString,
    citus: Option<&Cluster>,
    name: &str,
) -> Result<(), ScratchDbError> {
    let dropped = async {
        let mut admin = PgConnection::connect_with(server).await?;
        schema::drop_database(&mut admin, name).await?;
        admin.close().await
    };
    let on_server = dropped.await.map_err(|source| ScratchDbError::Drop {
        name: name.to_owned(),
        server: db::describe(server),
        source,
    });
    let on_workers = match citus {
        Some(cluster) => cluster.drop_on_workers(server_url, name).await,
        None => Ok(()),
    };
    on_server?;
    on_workers?;
    Ok(())
}
