//! A fresh database per test: `followq_test_<uuid>` created from `DATABASE_URL`, migrated with
//! `followq::db::migrate`, and dropped `WITH (FORCE)` when the handle drops, even after a
//! failed assertion.

use std::str::FromStr;

use followq::accounts::{Credentials, NewAccount, register};
use followq::ids::UserId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

pub struct TestDb {
    admin: PgConnectOptions,
    name: String,
    options: PgConnectOptions,
    /// The first "process"'s pool.
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "set DATABASE_URL to a Postgres the tests may create databases in, \
                 e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres"
            )
        });
        let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a Postgres URL");
        let name = format!("followq_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("connect to DATABASE_URL");
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let options = admin.clone().database(&name);
        let pool = Self::pool_for(&options).await;
        followq::db::migrate(&pool).await.expect("migrate");
        TestDb {
            admin,
            name,
            options,
            pool,
        }
    }

    async fn pool_for(options: &PgConnectOptions) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .expect("connect to the test database")
    }

    /// Another pool on the same database: what a second daemon process would have.
    pub async fn another_pool(&self) -> PgPool {
        Self::pool_for(&self.options).await
    }

    /// A fresh connection outside every pool.
    pub async fn connection(&self) -> PgConnection {
        PgConnection::connect_with(&self.options)
            .await
            .expect("connect to the test database")
    }

    pub async fn add_account(&self, user: &str, credentials: Credentials) -> UserId {
        let user_id = UserId::parse(user).expect("user id");
        register(
            &self.pool,
            &NewAccount {
                user_id: user_id.clone(),
                credentials,
                quota: None,
            },
        )
        .await
        .expect("register the account");
        user_id
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside async code (and maybe while panicking): use a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin).await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
