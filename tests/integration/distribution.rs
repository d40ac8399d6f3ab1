//! What Citus checks before it distributes the tables that grow with the accounts by the
//! account id, colocated, checked against the migrated catalog (on plain Postgres as well, so a
//! migration that breaks a rule fails wherever the suite runs):
//!
//! - the four account-id columns have one type and one collation (Citus colocates only
//!   columns of the same type);
//! - every primary key and unique index of these tables holds the account column (a key is
//!   enforced on the one shard that holds the account);
//! - every foreign key from or to these tables joins two of them and pairs their account
//!   columns (Citus enforces a foreign key between colocated tables only so, and refuses one
//!   from or to a table of another kind).
//!
//! On Citus (`TEST_CITUS_URL`) the migrated tables must also be distributed as
//! `followq.distribute()` says.

use crate::helpers::TestDb;

/// The tables distributed by the account, with their account column.
const DISTRIBUTED: [(&str, &str); 4] = [
    ("accounts", "user_id"),
    ("account_credentials", "user_id"),
    ("follow_jobs", "source_user_id"),
    ("attempts", "account_user_id"),
];

/// The tables with a copy on every node.
const REFERENCE: [&str; 3] = ["app_pause", "budget_periods", "spend_by_hour"];

/// `table.column` of the distribution columns, as an SQL array literal's elements.
fn distribution_columns() -> Vec<String> {
    DISTRIBUTED
        .iter()
        .map(|(table, column)| format!("{table}.{column}"))
        .collect()
}

#[tokio::test]
async fn the_account_columns_of_the_distributed_tables_have_one_type_and_collation() {
    let db = TestDb::new().await;
    let types: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text || '.' || a.attname::text,
                format_type(a.atttypid, a.atttypmod),
                coalesce(co.collname::text, '')
         FROM unnest($1::text[]) AS d(name)
         JOIN pg_class AS c
           ON c.relnamespace = 'followq'::regnamespace AND c.relname = split_part(d.name, '.', 1)
         JOIN pg_attribute AS a
           ON a.attrelid = c.oid AND a.attname = split_part(d.name, '.', 2)
         LEFT JOIN pg_collation AS co ON co.oid = a.attcollation
         ORDER BY 1",
    )
    .bind(distribution_columns())
    .fetch_all(&db.pool)
    .await
    .expect("the account columns' types");
    assert_eq!(
        types.len(),
        DISTRIBUTED.len(),
        "a column is missing: {types:?}"
    );
    let (_, first_type, first_collation) = &types[0];
    for (column, column_type, collation) in &types {
        assert_eq!(
            (column_type, collation),
            (first_type, first_collation),
            "{column} differs from the other account columns: {types:?}"
        );
    }
}

#[tokio::test]
async fn every_key_of_the_distributed_tables_holds_the_account_column() {
    let db = TestDb::new().await;
    let unique: Vec<(String, bool)> = sqlx::query_as(
        "SELECT i.indexrelid::regclass::text,
                EXISTS (SELECT 1 FROM pg_attribute AS a
                        WHERE a.attrelid = i.indrelid
                          AND a.attname = split_part(d.name, '.', 2)
                          AND a.attnum = ANY (i.indkey::int2[]))
         FROM unnest($1::text[]) AS d(name)
         JOIN pg_index AS i
           ON i.indrelid = format('followq.%I', split_part(d.name, '.', 1))::regclass
         WHERE i.indisunique
         ORDER BY 1",
    )
    .bind(distribution_columns())
    .fetch_all(&db.pool)
    .await
    .expect("unique indexes");
    for (index, holds) in &unique {
        assert!(
            holds,
            "unique index {index} lacks its table's account column"
        );
    }
    // A primary key each, and the one-active-job index of follow_jobs.
    assert!(
        unique.len() > DISTRIBUTED.len(),
        "only {unique:?}: the query lost its tables"
    );
}

#[tokio::test]
async fn every_foreign_key_of_the_distributed_tables_pairs_their_account_columns() {
    let db = TestDb::new().await;
    // Every foreign key with a distributed table at either end, whether the other end is a
    // distributed table too, and whether one of its column pairs is (account column, account
    // column).
    let foreign: Vec<(String, bool, bool)> = sqlx::query_as(
        "WITH d AS (
             SELECT format('followq.%I', split_part(name, '.', 1))::regclass AS oid,
                    split_part(name, '.', 2) AS column_name
             FROM unnest($1::text[]) AS name)
         SELECT c.conrelid::regclass::text || '.' || c.conname::text,
                (SELECT count(*) FROM d WHERE d.oid IN (c.conrelid, c.confrelid))
                    = CASE WHEN c.conrelid = c.confrelid THEN 1 ELSE 2 END,
                EXISTS (
                    SELECT 1
                    FROM unnest(c.conkey, c.confkey) AS k(from_column, to_column),
                         d AS f, d AS t, pg_attribute AS fa, pg_attribute AS ta
                    WHERE f.oid = c.conrelid AND t.oid = c.confrelid
                      AND fa.attrelid = c.conrelid AND fa.attnum = k.from_column
                      AND ta.attrelid = c.confrelid AND ta.attnum = k.to_column
                      AND fa.attname = f.column_name AND ta.attname = t.column_name)
         FROM pg_constraint AS c
         WHERE c.contype = 'f'
           AND (c.conrelid IN (SELECT oid FROM d) OR c.confrelid IN (SELECT oid FROM d))
         ORDER BY 1",
    )
    .bind(distribution_columns())
    .fetch_all(&db.pool)
    .await
    .expect("foreign keys");
    for (constraint, both_distributed, paired) in &foreign {
        assert!(
            both_distributed,
            "foreign key {constraint} joins a distributed table to a table of another kind"
        );
        assert!(
            paired,
            "foreign key {constraint} does not pair the account columns of its tables"
        );
    }
    // account_credentials and follow_jobs to accounts.
    assert!(
        foreign.len() >= 2,
        "only {foreign:?}: the query lost its tables"
    );
}

/// On Citus, the migrations leave the tables distributed (by `followq.distribute()`, which
/// `followq::db::migrate` calls there); on plain Postgres the function says what it needs.
#[tokio::test]
async fn migrate_distributes_the_tables_on_citus_only() {
    let db = TestDb::new().await;
    if !db.on_citus().await {
        let refused = sqlx::query("SELECT followq.distribute()")
            .execute(&db.pool)
            .await
            .expect_err("no Citus here");
        assert!(
            refused.to_string().contains("needs the citus extension"),
            "{refused}"
        );
        return;
    }
    let tables: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT logicalrelid::regclass::text,
                CASE WHEN partmethod = 'h' THEN 'distributed'
                     WHEN partmethod = 'n' AND repmodel = 't' THEN 'reference'
                     WHEN partmethod = 'n' THEN 'local'
                     ELSE partmethod::text END,
                column_to_column_name(logicalrelid, partkey),
                colocationid::bigint
         FROM pg_dist_partition
         WHERE logicalrelid::regclass::text LIKE 'followq.%'
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("Citus's tables");
    let accounts_group = tables
        .iter()
        .find(|(table, ..)| table == "followq.accounts")
        .map(|(.., group)| *group);
    for (table, column) in DISTRIBUTED {
        let name = format!("followq.{table}");
        let found = tables.iter().find(|(t, ..)| *t == name);
        assert_eq!(
            found.map(|(_, kind, column, group)| (kind.as_str(), column.as_deref(), Some(*group))),
            Some(("distributed", Some(column), accounts_group)),
            "{name}: {tables:?}"
        );
    }
    for table in REFERENCE {
        let name = format!("followq.{table}");
        let found = tables.iter().find(|(t, ..)| *t == name);
        assert_eq!(
            found.map(|(_, kind, ..)| kind.as_str()),
            Some("reference"),
            "{name}: {tables:?}"
        );
    }
    // The registry, on the coordinator, known to Citus; the migrations table unknown to it.
    let registry = tables.iter().find(|(t, ..)| t == "followq.daemons");
    assert_eq!(
        registry.map(|(_, kind, ..)| kind.as_str()),
        Some("local"),
        "{tables:?}"
    );
    assert_eq!(
        tables.len(),
        DISTRIBUTED.len() + REFERENCE.len() + 1,
        "{tables:?}"
    );
    // Running it again changes nothing.
    sqlx::query("SELECT followq.distribute()")
        .execute(&db.pool)
        .await
        .expect("distribute again");
}
