//! A throw-away database for the demo and the benchmark: created on the configured server,
//! migrated, and dropped at the end (`WITH (FORCE)`, so a connection left open cannot keep it).

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::db;
use crate::store::schema;

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
    #[error("could not connect to the scratch database {name}")]
    Connect {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Migrate(#[from] db::DbError),
}

/// A database named `<prefix>_<pid>_<random>`, migrated and ready.
pub struct ScratchDb {
    pub pool: PgPool,
    /// A URL to the scratch database (it may hold the server's password: a secret).
    pub url: SecretString,
    pub name: String,
    server: PgConnectOptions,
}

impl ScratchDb {
    pub async fn create(
        server_url: &SecretString,
        prefix: &str,
        max_connections: u32,
    ) -> Result<ScratchDb, ScratchDbError> {
        let server = db::connect_options(server_url).map_err(|_| ScratchDbError::BadUrl)?;
        let name = format!(
            "{prefix}_{}_{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        );
        let described = db::describe(&server);
        let create = async {
            let mut admin = PgConnection::connect_with(&server).await?;
            schema::create_database(&mut admin, &name).await?;
            admin.close().await
        };
        create.await.map_err(|source| ScratchDbError::Create {
            name: name.clone(),
            server: described,
            source,
        })?;
        let options = server.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .map_err(|source| ScratchDbError::Connect {
                name: name.clone(),
                source,
            })?;
        db::migrate(&pool).await?;
        let url = match reqwest::Url::parse(server_url.expose_secret()) {
            Ok(mut url) => {
                url.set_path(&format!("/{name}"));
                url.to_string()
            }
            Err(_) => return Err(ScratchDbError::BadUrl),
        };
        Ok(ScratchDb {
            pool,
            url: url.into(),
            name,
            server,
        })
    }

    /// Drops the database. Errors are returned for the caller to report; nothing is retried.
    pub async fn drop_now(self) -> Result<(), sqlx::Error> {
        self.pool.close().await;
        let mut admin = PgConnection::connect_with(&self.server).await?;
        schema::drop_database(&mut admin, &self.name).await?;
        admin.close().await
    }
}
