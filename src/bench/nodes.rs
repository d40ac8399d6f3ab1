//! The work each Postgres node did for a scratch database during a measurement: on one
//! Postgres the server, on Citus the coordinator and every worker (whose backends serve what
//! Citus sends them for the coordinator's statements). Per node, from a connection of its own
//! to the scratch database there: the transactions committed in it
//! (`pg_stat_database.xact_commit`: an autocommit statement is one), the sessions opened, and
//! the CPU time of its client backends (from /proc, so only for a node on this machine).
//!
//! Two limits, each checked rather than assumed. A backend that starts and ends between two
//! samples is missing from the CPU time: the sessions opened against the backends counted
//! say whether any did. And a backend reports its counts at most once a second, an idle one up
//! to 10 s late (Postgres 15's `PGSTAT_IDLE_INTERVAL`), all of them when it ends: so the
//! closing counts are read once the measured sessions have ended, or once any still connected
//! has been idle long enough to have reported ([`Node::wait_for_reports`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::harness::process_cpu_seconds;
use crate::db;
use crate::scratch_db::ScratchDb;
use crate::store::bench;

/// One node, with a connection to the scratch database there.
pub struct Node {
    /// `Postgres host:port`, `coordinator host:port` or `worker host:port`.
    pub label: String,
    connection: PgConnection,
    /// Whether its processes are on this machine (its backends' CPU can be read).
    on_this_machine: bool,
}

/// What a node had done at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    transactions: i64,
    sessions: Option<i64>,
    /// Client backends connected to the database (this one's own included).
    client_backends: usize,
    /// CPU seconds of each client backend of the database, by pid (none for a node on
    /// another machine).
    backends: HashMap<i32, f64>,
}

/// What one node did between two samples.
#[derive(Debug, Clone, Serialize)]
pub struct NodeWork {
    pub node: String,
    pub transactions: i64,
    /// Sessions opened in the database meanwhile (`None`: Postgres 13 does not count them).
    pub sessions_opened: Option<i64>,
    /// Backends whose CPU time counts that were not there at the start: when fewer than the
    /// sessions opened, some backends came and went unseen.
    pub new_backends_counted: usize,
    /// CPU seconds of the database's client backends (`None`: the node is on another machine).
    pub backend_cpu_seconds: Option<f64>,
    /// Whether the measured sessions had ended when the counts were read (if not, they were
    /// read after the wait that lets an idle backend report).
    pub sessions_ended: bool,
}

/// The scratch database's nodes: its server, then every Citus worker.
pub async fn connect(scratch: &ScratchDb) -> anyhow::Result<Vec<Node>> {
    let server = db::connect_options(&scratch.url)?;
    let role = if scratch.citus.is_some() {
        "coordinator"
    } else {
        "Postgres"
    };
    let mut nodes = vec![Node {
        label: format!("{role} {}:{}", server.get_host(), server.get_port()),
        on_this_machine: on_this_machine(server.get_host()),
        connection: PgConnection::connect_with(&server)
            .await
            .context("connecting to the scratch database")?,
    }];
    for worker in scratch.citus.iter().flat_map(|cluster| cluster.workers()) {
        // Citus hides a worker's shards from catalog queries but for the applications
        // named here: the shards' table statistics are what `hot_updates` reads there.
        let options = scratch
            .options_on_worker(worker)?
            .options([("citus.show_shards_for_app_name_prefixes", "followq")]);
        nodes.push(Node {
            label: format!("worker {worker}"),
            on_this_machine: on_this_machine(&worker.host),
            connection: PgConnection::connect_with(&options)
                .await
                .with_context(|| format!("connecting to the scratch database on {worker}"))?,
        });
    }
    Ok(nodes)
}

/// A Unix socket directory or a loopback name.
fn on_this_machine(host: &str) -> bool {
    host.starts_with('/')
        || host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Node {
    /// The node's counts and its backends' CPU now.
    pub async fn sample(&mut self) -> Result<Sample, sqlx::Error> {
        let (transactions, sessions) = bench::database_activity(&mut self.connection).await?;
        let pids = bench::database_backend_pids(&mut self.connection).await?;
        let backends = if self.on_this_machine {
            pids.iter()
                .filter_map(|pid| process_cpu_seconds(&pid.to_string()).map(|cpu| (*pid, cpu)))
                .collect()
        } else {
            HashMap::new()
        };
        Ok(Sample {
            transactions,
            sessions,
            client_backends: pids.len(),
            backends,
        })
    }

    /// Waits until no more client backends are connected to the database than in `before`
    /// (the measured sessions have ended, and reported all they counted), or 12 s: by then a
    /// backend still connected, idle since the run ended (a connection Citus keeps for the
    /// bench's own statements, say), has reported too. Says whether the sessions ended.
    pub async fn wait_for_reports(&mut self, before: &Sample) -> Result<bool, sqlx::Error> {
        let start = Instant::now();
        loop {
            let now = bench::database_backend_pids(&mut self.connection).await?;
            if now.len() <= before.client_backends {
                return Ok(true);
            }
            if start.elapsed() > Duration::from_secs(12) {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Updates and HOT updates of the job table and the ledger on this node, by table (on a
    /// Citus worker, of its shards).
    pub async fn hot_updates(&mut self) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
        bench::hot_updates(&mut self.connection).await
    }

    /// What the node did from `before` to the end: the CPU of its backends as `at_end` found
    /// them (still connected), the counts as `after` found them (once reported).
    pub fn work(
        &self,
        before: &Sample,
        at_end: &Sample,
        (after, sessions_ended): &(Sample, bool),
    ) -> NodeWork {
        let backend_cpu = at_end
            .backends
            .iter()
            .map(|(pid, cpu)| cpu - before.backends.get(pid).copied().unwrap_or(0.0))
            .sum();
        NodeWork {
            node: self.label.clone(),
            transactions: after.transactions - before.transactions,
            sessions_opened: after.sessions.zip(before.sessions).map(|(a, b)| a - b),
            new_backends_counted: at_end
                .backends
                .keys()
                .filter(|pid| !before.backends.contains_key(pid))
                .count(),
            backend_cpu_seconds: self.on_this_machine.then_some(backend_cpu),
            sessions_ended: *sessions_ended,
        }
    }
}
