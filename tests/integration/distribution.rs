//! The rule a distributed Postgres (Citus) sets for tables distributed by the account, checked
//! against the migrated catalog: every primary key, unique index and foreign key of the tables
//! that grow with the accounts holds the account column, so that each is enforced on the one
//! shard that holds the account. A migration that adds a key without it fails here.

use crate::helpers::TestDb;

/// The tables that would be distributed by the account, with their account column.
const DISTRIBUTED: [(&str, &str); 3] = [
    ("follow_jobs", "source_user_id"),
    ("attempts", "account_user_id"),
    ("account_credentials", "user_id"),
];

#[tokio::test]
async fn every_key_of_the_account_tables_holds_the_account_column() {
    let db = TestDb::new().await;
    let mut checked = 0;
    for (table, column) in DISTRIBUTED {
        // Unique indexes (primary keys among them) on the table, and whether the account
        // column is one of their key columns.
        let unique: Vec<(String, bool)> = sqlx::query_as(
            "SELECT i.indexrelid::regclass::text,
                    EXISTS (SELECT 1 FROM pg_attribute AS a
                            WHERE a.attrelid = i.indrelid AND a.attname = $2
                              AND a.attnum = ANY (i.indkey::int2[]))
             FROM pg_index AS i
             WHERE i.indrelid = format('followq.%I', $1::text)::regclass AND i.indisunique",
        )
        .bind(table)
        .bind(column)
        .fetch_all(&db.pool)
        .await
        .expect("unique indexes");
        assert!(!unique.is_empty(), "{table} has no primary key");
        for (index, holds) in &unique {
            assert!(holds, "unique index {index} of {table} lacks {column}");
        }
        // Foreign keys from the table, and to it from any table: the table's side of each must
        // hold its account column.
        let foreign: Vec<(String, bool)> = sqlx::query_as(
            "WITH t AS (SELECT format('followq.%I', $1::text)::regclass AS oid)
             SELECT c.conname::text,
                    (c.conrelid <> t.oid OR EXISTS (
                        SELECT 1 FROM pg_attribute AS a
                        WHERE a.attrelid = c.conrelid AND a.attname = $2
                          AND a.attnum = ANY (c.conkey)))
                    AND (c.confrelid <> t.oid OR EXISTS (
                        SELECT 1 FROM pg_attribute AS a
                        WHERE a.attrelid = c.confrelid AND a.attname = $2
                          AND a.attnum = ANY (c.confkey)))
             FROM pg_constraint AS c, t
             WHERE c.contype = 'f' AND t.oid IN (c.conrelid, c.confrelid)",
        )
        .bind(table)
        .bind(column)
        .fetch_all(&db.pool)
        .await
        .expect("foreign keys");
        for (constraint, holds) in &foreign {
            assert!(holds, "foreign key {constraint} on {table} lacks {column}");
        }
        checked += unique.len() + foreign.len();
    }
    // The primary keys, the one-active-job index, and the foreign keys to accounts.
    assert!(
        checked >= 5,
        "only {checked} keys found: the query lost its tables"
    );
}
