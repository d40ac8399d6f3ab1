//! The nodes of a Citus cluster, as its coordinator's catalog (`pg_dist_node`) lists them, and
//! the statements that make a new database part of that cluster: the citus extension, the
//! coordinator's own address and every worker registered in it, and the shard count its
//! tables get. The scratch databases of the demo and the bench, and the test databases, are
//! made this way (`scratch_db::citus`); the daemon runs none of these.
//!
//! Every statement but the lock reads or calls Citus, so they prepare only where the citus
//! extension is installed: they are listed in [`CITUS_STATEMENTS`], which the statement test
//! prepares when it runs on Citus.

use super::Statement;
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor};

/// A node of the cluster: where the coordinator (and Citus itself) reaches it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeAddress {
    pub host: String,
    pub port: i32,
}

const COORDINATOR: &str = "SELECT nodename::text AS host, nodeport AS port FROM pg_dist_node \
     WHERE groupid = 0 AND noderole = 'primary'";

/// The coordinator's own address as the database's Citus metadata has it
/// (`citus_set_coordinator_host`); `None` when it was never set there.
pub async fn coordinator(
    executor: impl PgExecutor<'_>,
) -> Result<Option<NodeAddress>, sqlx::Error> {
    sqlx::query_as(COORDINATOR).fetch_optional(executor).await
}

const WORKERS: &str = "SELECT nodename::text AS host, nodeport AS port FROM pg_dist_node \
     WHERE groupid <> 0 AND noderole = 'primary' AND isactive ORDER BY nodename, nodeport";

/// The active primary workers registered in this database, by name and port.
pub async fn workers(executor: impl PgExecutor<'_>) -> Result<Vec<NodeAddress>, sqlx::Error> {
    sqlx::query_as(WORKERS).fetch_all(executor).await
}

// The text every followq build has locked on (it was the test harness's first), so that a
// demo, a bench and test runs of any checkout that make databases on one cluster wait for
// each other.
const LOCK_NEW_DATABASES: &str =
    "SELECT pg_advisory_lock(hashtext('followq tests: make a Citus database'))";

/// Waits for, then takes, the session lock under which one database at a time is made a
/// Citus database on this cluster: registering the nodes copies the roles to every worker,
/// and two databases doing it at once fail there with "tuple concurrently updated". Closing
/// the session releases it.
pub async fn lock_new_databases(admin: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(LOCK_NEW_DATABASES).execute(admin).await?;
    Ok(())
}

const CREATE_EXTENSION: &str = "CREATE EXTENSION citus";

/// Installs the citus extension in the connection's database.
pub async fn create_extension(executor: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(CREATE_EXTENSION).execute(executor).await?;
    Ok(())
}

const SET_COORDINATOR_HOST: &str = "SELECT citus_set_coordinator_host($1, $2)";

/// Records where the workers reach the coordinator (which the Citus local tables need).
pub async fn set_coordinator_host(
    executor: impl PgExecutor<'_>,
    node: &NodeAddress,
) -> Result<(), sqlx::Error> {
    sqlx::query(SET_COORDINATOR_HOST)
        .bind(&node.host)
        .bind(node.port)
        .execute(executor)
        .await?;
    Ok(())
}

const ADD_NODE: &str = "SELECT citus_add_node($1, $2)";

/// Adds a worker (whose database of the same name has the extension already).
pub async fn add_node(
    executor: impl PgExecutor<'_>,
    node: &NodeAddress,
) -> Result<(), sqlx::Error> {
    sqlx::query(ADD_NODE)
        .bind(&node.host)
        .bind(node.port)
        .execute(executor)
        .await?;
    Ok(())
}

/// Sets how many shards each table distributed in database `name` gets (a plain identifier,
/// see `schema::create_database`; the statement's text holds it, so it is not in
/// [`CITUS_STATEMENTS`]). Run before the extension is created in that database, it stays on
/// the coordinator, the one node that distributes tables; after, Citus would also set it on
/// every worker, in a distributed transaction.
pub async fn set_shard_count(
    executor: impl PgExecutor<'_>,
    name: &str,
    shards: u32,
) -> Result<(), sqlx::Error> {
    let name = super::schema::plain_identifier(name)?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER DATABASE {name} SET citus.shard_count = {shards}"
    )))
    .execute(executor)
    .await?;
    Ok(())
}

/// The statement that prepares everywhere, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[Statement {
    name: "cluster::lock_new_databases",
    sql: LOCK_NEW_DATABASES,
}];

/// The statements that need Citus, prepared by the statement test when it runs there.
pub const CITUS_STATEMENTS: &[Statement] = &[
    Statement {
        name: "cluster::coordinator",
        sql: COORDINATOR,
    },
    Statement {
        name: "cluster::workers",
        sql: WORKERS,
    },
    Statement {
        name: "cluster::create_extension",
        sql: CREATE_EXTENSION,
    },
    Statement {
        name: "cluster::set_coordinator_host",
        sql: SET_COORDINATOR_HOST,
    },
    Statement {
        name: "cluster::add_node",
        sql: ADD_NODE,
    },
];
