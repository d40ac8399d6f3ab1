//! A new database on a Citus cluster: the cluster found from its coordinator's admin database,
//! the database made part of it, and dropped on the workers too.
//!
//! Citus propagates neither CREATE DATABASE nor DROP DATABASE to the workers, and a database
//! just created on a coordinator has no citus extension and knows no node: it is a plain
//! Postgres database, and migrating it distributes nothing. So once `name` is created on the
//! coordinator, it is created on every worker with the extension; then the coordinator's copy
//! gets its shard count, the extension, the coordinator's address and every worker, and
//! migrating it (`db::migrate`) distributes the tables. The demo's and the bench's scratch
//! databases and the tests' databases are all made here.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::db;
use crate::store::cluster::{self, NodeAddress};
use crate::store::schema;

/// A node of the cluster, where the coordinator reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Node {
    fn from_catalog(address: NodeAddress) -> Result<Node, CitusError> {
        let port = u16::try_from(address.port).map_err(|_| CitusError::BadPort {
            host: address.host.clone(),
            port: address.port,
        })?;
        Ok(Node {
            host: address.host,
            port,
        })
    }

    fn address(&self) -> NodeAddress {
        NodeAddress {
            host: self.host.clone(),
            port: i32::from(self.port),
        }
    }
}

/// How many shards each distributed table of a new database gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCount {
    /// The cluster's `citus.shard_count` (32 unless its configuration says otherwise).
    ClusterDefault,
    /// This many for each worker.
    PerWorker(u32),
    /// This many in all.
    Total(u32),
}

impl ShardCount {
    /// The count to set on a cluster of `workers` workers; `None`: leave the cluster's.
    fn for_workers(self, workers: usize) -> Option<u32> {
        match self {
            ShardCount::ClusterDefault => None,
            ShardCount::PerWorker(each) => Some(
                u32::try_from(workers)
                    .unwrap_or(u32::MAX)
                    .saturating_mul(each),
            ),
            ShardCount::Total(total) => Some(total),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CitusError {
    #[error("could not read the Citus nodes registered on the coordinator {coordinator}")]
    Nodes {
        coordinator: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the Citus coordinator {coordinator} is reached over a Unix socket and its own address \
         is not in its pg_dist_node: run SELECT citus_set_coordinator_host('<host>', <port>) \
         in its admin database"
    )]
    CoordinatorAddress { coordinator: String },
    #[error("the Citus node {host} has port {port}, which is not a TCP port")]
    BadPort { host: String, port: i32 },
    #[error("the database URL cannot be pointed at the Citus node {node}")]
    NodeUrl { node: Node },
    /// A step that failed on one node (boxed: the details make the error large).
    #[error(transparent)]
    Node(Box<NodeFailure>),
}

/// A step of making or dropping a database that failed on one node, which the message names.
#[derive(Debug, thiserror::Error)]
#[error("Citus {role} {node}: could not {step} (database {database})")]
pub struct NodeFailure {
    pub role: Role,
    pub node: Node,
    pub step: String,
    pub database: String,
    #[source]
    pub source: sqlx::Error,
}

/// Which part a node plays, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Coordinator,
    Worker,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
        })
    }
}

/// A Citus coordinator and its workers, as the coordinator's admin database registers them.
#[derive(Debug, Clone)]
pub struct Cluster {
    coordinator: Node,
    workers: Vec<Node>,
}

impl Cluster {
    /// The cluster whose coordinator `admin` is connected to (`admin_options`, its admin
    /// database): `None` unless the citus extension is installed there and primary workers
    /// are registered (a server without Citus, or a single-node Citus, makes plain databases).
    pub async fn of_server(
        admin: &mut PgConnection,
        admin_options: &PgConnectOptions,
    ) -> Result<Option<Cluster>, CitusError> {
        let nodes_error = |source| CitusError::Nodes {
            coordinator: db::describe(admin_options),
            source,
        };
        if !schema::citus_installed(&mut *admin)
            .await
            .map_err(nodes_error)?
        {
            return Ok(None);
        }
        let workers = cluster::workers(&mut *admin)
            .await
            .map_err(nodes_error)?
            .into_iter()
            .map(Node::from_catalog)
            .collect::<Result<Vec<_>, _>>()?;
        if workers.is_empty() {
            return Ok(None);
        }
        let coordinator = match cluster::coordinator(&mut *admin)
            .await
            .map_err(nodes_error)?
        {
            Some(address) => Node::from_catalog(address)?,
            // Never registered: the workers reach it where this connection did, unless that
            // was a Unix socket.
            None if admin_options.get_socket().is_none()
                && !admin_options.get_host().starts_with('/') =>
            {
                Node {
                    host: admin_options.get_host().to_owned(),
                    port: admin_options.get_port(),
                }
            }
            None => {
                return Err(CitusError::CoordinatorAddress {
                    coordinator: db::describe(admin_options),
                });
            }
        };
        Ok(Some(Cluster {
            coordinator,
            workers,
        }))
    }

    pub fn coordinator(&self) -> &Node {
        &self.coordinator
    }

    pub fn workers(&self) -> &[Node] {
        &self.workers
    }

    /// Makes database `name` (a plain identifier, already created on the coordinator through
    /// `server_url`, the coordinator's admin database) a Citus database of this cluster, its
    /// distributed tables to get `shards` shards each. One database at a time across
    /// processes (`store::cluster::lock_new_databases`). A database it created on a worker
    /// before failing is left for [`Cluster::drop_on_workers`].
    pub async fn make_database(
        &self,
        server_url: &SecretString,
        name: &str,
        shards: ShardCount,
    ) -> Result<(), CitusError> {
        let coordinator = (Role::Coordinator, &self.coordinator);
        let mut guard = self.connect(server_url, coordinator, None).await?;
        cluster::lock_new_databases(&mut guard)
            .await
            .map_err(self.failed(coordinator, "take the lock on new Citus databases", name))?;
        for worker in &self.workers {
            let worker = (Role::Worker, worker);
            let mut admin = self.connect(server_url, worker, None).await?;
            schema::create_database(&mut admin, name)
                .await
                .map_err(self.failed(worker, "create the database", name))?;
            let _ = admin.close().await;
            let mut new = self.connect(server_url, worker, Some(name)).await?;
            cluster::create_extension(&mut new)
                .await
                .map_err(self.failed(worker, "create the citus extension", name))?;
            let _ = new.close().await;
        }
        let mut new = self.connect(server_url, coordinator, Some(name)).await?;
        if let Some(count) = shards.for_workers(self.workers.len()) {
            cluster::set_shard_count(&mut new, name, count)
                .await
                .map_err(self.failed(coordinator, "set citus.shard_count", name))?;
        }
        cluster::create_extension(&mut new)
            .await
            .map_err(self.failed(coordinator, "create the citus extension", name))?;
        cluster::set_coordinator_host(&mut new, &self.coordinator.address())
            .await
            .map_err(self.failed(coordinator, "record the coordinator's address", name))?;
        for worker in &self.workers {
            cluster::add_node(&mut new, &worker.address())
                .await
                .map_err(self.failed(coordinator, &format!("add the worker {worker}"), name))?;
        }
        let _ = new.close().await;
        // Closing the session releases the lock (as would its end, should closing fail).
        let _ = guard.close().await;
        Ok(())
    }

    /// Drops database `name` on every worker, ending its sessions there (the coordinator's
    /// copy is the caller's to drop, first: its sessions hold connections to the workers).
    /// Every worker is tried; the first failure is returned.
    pub async fn drop_on_workers(
        &self,
        server_url: &SecretString,
        name: &str,
    ) -> Result<(), CitusError> {
        let mut first_failure = None;
        for worker in &self.workers {
            let worker = (Role::Worker, worker);
            let dropped = async {
                let mut admin = self.connect(server_url, worker, None).await?;
                schema::drop_database(&mut admin, name)
                    .await
                    .map_err(self.failed(worker, "drop the database", name))?;
                let _ = admin.close().await;
                Ok::<(), CitusError>(())
            };
            if let Err(e) = dropped.await {
                first_failure.get_or_insert(e);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Options to reach database `database` (the URL's own when `None`) on `node`, with the
    /// user, password and TLS settings of `server_url`.
    pub fn options_on(
        &self,
        server_url: &SecretString,
        node: &Node,
        database: Option<&str>,
    ) -> Result<PgConnectOptions, CitusError> {
        let url = if *node == self.coordinator {
            url_on(server_url, None, database)
        } else {
            url_on(server_url, Some(node), database)
        }
        .ok_or_else(|| CitusError::NodeUrl { node: node.clone() })?;
        db::connect_options(&url).map_err(|_| CitusError::NodeUrl { node: node.clone() })
    }

    async fn connect(
        &self,
        server_url: &SecretString,
        (role, node): (Role, &Node),
        database: Option<&str>,
    ) -> Result<PgConnection, CitusError> {
        let options = self.options_on(server_url, node, database)?;
        PgConnection::connect_with(&options)
            .await
            .map_err(self.failed((role, node), "connect", database.unwrap_or("admin")))
    }

    fn failed(
        &self,
        (role, node): (Role, &Node),
        step: &str,
        database: &str,
    ) -> impl FnOnce(sqlx::Error) -> CitusError {
        let (node, step, database) = (node.clone(), step.to_owned(), database.to_owned());
        move |source| {
            CitusError::Node(Box::new(NodeFailure {
                role,
                node,
                step,
                database,
                source,
            }))
        }
    }
}

/// `server_url` pointed at `node` (where the coordinator registered it: a host or port the URL
/// names in its query, such as a Unix socket directory, is left out) and at `database`;
/// `None` when the URL cannot be so changed.
pub(super) fn url_on(
    server_url: &SecretString,
    node: Option<&Node>,
    database: Option<&str>,
) -> Option<SecretString> {
    let mut url = reqwest::Url::parse(server_url.expose_secret()).ok()?;
    if let Some(node) = node {
        let host = if node.host.contains(':') {
            format!("[{}]", node.host)
        } else {
            node.host.clone()
        };
        url.set_host(Some(&host)).ok()?;
        url.set_port(Some(node.port)).ok()?;
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(key, _)| !matches!(key.as_ref(), "host" | "hostaddr" | "port"))
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    if let Some(database) = database {
        url.set_path(&format!("/{database}"));
    }
    Some(url.to_string().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(url: &str, node: Option<(&str, u16)>, database: Option<&str>) -> String {
        let node = node.map(|(host, port)| Node {
            host: host.to_owned(),
            port,
        });
        url_on(&url.into(), node.as_ref(), database)
            .map(|url| url.expose_secret().to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn a_worker_is_reached_at_its_registered_address_with_the_urls_credentials() {
        assert_eq!(
            on(
                "postgres://app:s3cret@10.0.0.1:5432/postgres?sslmode=require",
                Some(("10.0.0.7", 6432)),
                Some("followq_demo_1_abc")
            ),
            "postgres://app:s3cret@10.0.0.7:6432/followq_demo_1_abc?sslmode=require"
        );
        // A Unix socket of the coordinator's does not carry over to a worker.
        assert_eq!(
            on(
                "postgres:///postgres?host=/var/run/postgresql&port=9700",
                Some(("127.0.0.1", 9701)),
                None
            ),
            "postgres://127.0.0.1:9701/postgres"
        );
        assert_eq!(
            on(
                "postgres://u@[::1]:9700/postgres",
                Some(("::1", 9702)),
                None
            ),
            "postgres://u@[::1]:9702/postgres"
        );
    }

    #[test]
    fn the_coordinator_keeps_the_urls_own_address() {
        assert_eq!(
            on(
                "postgres:///postgres?host=/var/run/postgresql&port=9700",
                None,
                Some("followq_bench_2_def")
            ),
            "postgres:///followq_bench_2_def?host=/var/run/postgresql&port=9700"
        );
    }

    #[test]
    fn shards_per_worker_grow_with_the_workers() {
        assert_eq!(ShardCount::PerWorker(2).for_workers(3), Some(6));
        assert_eq!(ShardCount::Total(4).for_workers(3), Some(4));
        assert_eq!(ShardCount::ClusterDefault.for_workers(3), None);
    }
}
