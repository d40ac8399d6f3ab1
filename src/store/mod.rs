//! Every SQL statement followq runs, and only here: the one layer between the rest of the
//! code and Postgres, as River keeps its driver layer.
//!
//! Each statement is a named function that takes the pool, a connection or a transaction
//! (`impl PgExecutor`), so a caller can run it inside a transaction of its own. Row types a
//! statement returns live beside it. Wording, decisions and pacing stay outside: this layer
//! reads and writes, it does not decide.
//!
//! Every static statement text is also listed in its module's `STATEMENTS`, and
//! [`all_statements`] gathers them: a test prepares each one against the migrated schema, so a
//! statement that no longer matches a column, a type or a function fails in CI even when no
//! other test happens to run it. The few statements whose text is built at run time (table
//! names chosen from a fixed list, bulk inserts) say so where they are built. Statements that
//! read Citus's catalog or call its functions prepare only where the citus extension is
//! installed: [`citus_statements`] gathers them, and the same test prepares them on Citus.
//!
//! Files, one concern each:
//! - the queue's life of a job: [`enqueue`], [`claim`], [`record`], [`unanswered`], what a
//!   ledger row says X may have done ([`ledger`]), and announcing finished jobs where no
//!   trigger does ([`finished`]);
//! - accounts: [`leases`], [`pauses`], [`credentials`], and which shard holds each on Citus
//!   ([`shards`]);
//! - the per-app daily cap: the app's follows in the ledger ([`app_follows`]) and the slots
//!   taken since ([`app_cap_slots`]);
//! - what was spent at X, and the budgets' reservations: [`billing`];
//! - the daemons themselves: [`daemons`], [`retention`], [`schema`];
//! - the nodes of a Citus cluster, and making a new database part of it: [`cluster`];
//! - what operators read and change: [`status`], [`dashboard`], [`admin_accounts`],
//!   [`admin_jobs`], [`demo_report`].

pub mod admin_accounts;
pub mod admin_jobs;
pub mod app_cap_slots;
pub mod app_follows;
#[cfg(feature = "bench")]
pub mod bench;
pub mod billing;
pub mod claim;
pub mod cluster;
pub mod credentials;
pub mod daemons;
pub mod dashboard;
pub mod demo_report;
pub mod enqueue;
pub mod finished;
pub mod leases;
pub mod ledger;
pub mod pauses;
pub mod record;
pub mod retention;
pub mod schema;
pub mod shards;
pub mod status;
pub mod unanswered;

/// One static SQL statement, named as its function is.
#[derive(Debug, Clone, Copy)]
pub struct Statement {
    /// `module::function`, for the test that prepares it.
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every static statement of this layer (the bench's too when it is built).
pub fn all_statements() -> Vec<Statement> {
    let lists: &[&[Statement]] = &[
        admin_accounts::STATEMENTS,
        admin_jobs::STATEMENTS,
        app_cap_slots::STATEMENTS,
        app_follows::STATEMENTS,
        billing::STATEMENTS,
        claim::STATEMENTS,
        cluster::STATEMENTS,
        credentials::STATEMENTS,
        daemons::STATEMENTS,
        dashboard::STATEMENTS,
        demo_report::STATEMENTS,
        enqueue::STATEMENTS,
        finished::STATEMENTS,
        leases::STATEMENTS,
        pauses::STATEMENTS,
        record::STATEMENTS,
        retention::STATEMENTS,
        schema::STATEMENTS,
        shards::STATEMENTS,
        status::STATEMENTS,
        unanswered::STATEMENTS,
        #[cfg(feature = "bench")]
        bench::STATEMENTS,
    ];
    lists.iter().flat_map(|list| list.iter().copied()).collect()
}

/// The static statements that need Citus (its catalog, its functions): they prepare only in a
/// database where the citus extension is installed.
pub fn citus_statements() -> Vec<Statement> {
    let lists: &[&[Statement]] = &[
        cluster::CITUS_STATEMENTS,
        demo_report::CITUS_STATEMENTS,
        #[cfg(feature = "bench")]
        bench::CITUS_STATEMENTS,
    ];
    lists.iter().flat_map(|list| list.iter().copied()).collect()
}
