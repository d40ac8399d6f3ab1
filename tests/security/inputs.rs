//! Bounds at the contract: what the schema refuses (ids with leading zeros, run times that
//! are not finite or far off, priorities out of range, oversized tokens), what it does with
//! rows written before those rules, that every command reads every row the contract allows,
//! and that the command line refuses bad input with a clear message that echoes no secret.

use std::path::PathBuf;

use followq::queue::{EnqueueError, FollowRequest, enqueue_batch};
use sqlx::PgPool;

use crate::common::{TestDb, describe};

/// The constraint a failed statement broke (panics if it succeeded).
fn constraint(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> String {
    match result {
        Ok(done) => panic!(
            "expected a constraint error, {} rows written",
            done.rows_affected()
        ),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.constraint())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("not a constraint error: {e}")),
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Covers the constraints of the bounds migration: each bad row, inserted as a service would
/// (plain INSERT or followq.enqueue), is refused by the constraint its name describes, and
/// nothing is written.
#[tokio::test]
async fn bad_ids_run_times_priorities_and_tokens_are_refused_by_named_constraints() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    let cases: [(&str, &str); 13] = [
        (
            "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) VALUES ('100', '0007')",
            "follow_jobs_target_user_id_must_not_start_with_0",
        ),
        (
            "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) VALUES ('100', '0')",
            "follow_jobs_target_user_id_must_not_start_with_0",
        ),
        (
            "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) VALUES ('0100', '7')",
            "follow_jobs_source_user_id_must_not_start_with_0",
        ),
        (
            "SELECT followq.enqueue('100', '007')",
            "follow_jobs_target_user_id_must_not_start_with_0",
        ),
        (
            "INSERT INTO followq.follow_jobs (source_user_id, target_user_id, run_at) VALUES ('100', '7', 'infinity')",
            "follow_jobs_run_at_must_be_between_2000_and_2100",
        ),
        (
            "INSERT INTO followq.follow_jobs (source_user_id, target_user_id, run_at) VALUES ('100', '7', '-infinity')",
            "follow_jobs_run_at_must_be_between_2000_and_2100",
        ),
        (
            "INSERT INTO followq.follow_jobs (source_user_id, target_user_id, run_at) VALUES ('100', '7', '290000-01-01')",
            "follow_jobs_run_at_must_be_between_2000_and_2100",
        ),
        (
            "SELECT followq.enqueue('100', '7', run_at => '2100-01-01 00:00:00+00')",
            "follow_jobs_run_at_must_be_between_2000_and_2100",
        ),
        (
            "INSERT INTO followq.follow_jobs (source_user_id, target_user_id, priority) VALUES ('100', '7', 1001)",
            "follow_jobs_priority_must_be_between_minus_1000_and_1000",
        ),
        (
            "SELECT followq.enqueue('100', '7', priority => -2147483648)",
            "follow_jobs_priority_must_be_between_minus_1000_and_1000",
        ),
        (
            "INSERT INTO followq.accounts (user_id, auth_kind) VALUES ('0100', 'oauth2')",
            "accounts_user_id_must_not_start_with_0",
        ),
        (
            "INSERT INTO followq.accounts (user_id, auth_kind) VALUES ('0', 'oauth2')",
            "accounts_user_id_must_not_start_with_0",
        ),
        (
            "UPDATE followq.account_credentials SET oauth2_access_token = repeat('A', 3 * 1024 * 1024)",
            "account_credentials_tokens_must_be_at_most_8192_bytes",
        ),
    ];
    let before = db
        .raw_token(
            "100",
            followq::accounts::sealed::TokenColumn::OAuth2AccessToken,
        )
        .await;
    for (statement, expected) in cases {
        let result = sqlx::query(statement).execute(&db.pool).await;
        assert_eq!(constraint(result), expected, "{statement}");
    }
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM followq.follow_jobs").await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM followq.accounts").await,
        1
    );
    assert_eq!(
        db.raw_token(
            "100",
            followq::accounts::sealed::TokenColumn::OAuth2AccessToken
        )
        .await,
        before
    );

    // The library maps the names back to what the caller did wrong.
    let mut request = FollowRequest::new("100", "7").unwrap();
    request.priority = 5000;
    let error = enqueue_batch(&db.pool, &[request]).await.unwrap_err();
    let EnqueueError::Rejected { meaning, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(*meaning, "priority must be between -1000 and 1000");
    assert!(
        FollowRequest::new("100", "7")
            .unwrap()
            .with_priority(1001)
            .is_err()
    );
}

/// Covers the bounds (no row the contract accepts makes a command fail): jobs at the
/// extremes of run_at and priority are listed, shown and counted by every command.
#[tokio::test]
async fn every_command_reads_the_rows_at_the_bounds() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id, run_at, priority) VALUES \
         ('100', '7', '2099-12-31 23:59:59.999999+00', 1000), \
         ('100', '8', '2000-01-01 00:00:00+00', -1000), \
         ('100', '9223372036854775807', '2050-06-01 00:00:00+00', 0) RETURNING id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let first = ids[0].to_string();
    for args in [
        vec!["jobs", "list"],
        vec!["jobs", "list", "--json"],
        vec!["jobs", "show", first.as_str()],
        vec!["status"],
        vec!["status", "--json"],
        vec!["accounts", "show", "100"],
        vec!["accounts", "list"],
    ] {
        let output = db.followq(&args, "", &[]);
        assert!(output.status.success(), "{args:?}: {}", describe(&output));
    }
}

/// Covers the migration's treatment of rows written before the bounds: out-of-range run times
/// and priorities are brought within them, active jobs and accounts with leading-zero ids are
/// cancelled and disabled saying why, and the commands read everything afterwards.
#[tokio::test]
async fn rows_written_before_the_bounds_are_brought_within_them() {
    let db = TestDb::empty().await;
    migrate_before(&db, 20261201002200).await;
    sqlx::raw_sql(
        "INSERT INTO followq.accounts (user_id, auth_kind) VALUES ('100', 'oauth2'), ('0101', 'oauth2'); \
         INSERT INTO followq.account_credentials (user_id, oauth2_access_token) VALUES ('100', 'a'), ('0101', 'b'); \
         INSERT INTO followq.follow_jobs (source_user_id, target_user_id, run_at, priority) VALUES \
             ('100', '7', 'infinity', 5000), \
             ('100', '8', '-infinity', -5000), \
             ('100', '0009', now(), 0), \
             ('0101', '10', now(), 0); \
         INSERT INTO followq.follow_jobs (source_user_id, target_user_id, state, finished_at, following, pending_follow) \
             VALUES ('100', '011', 'succeeded', now(), true, false);",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    followq::db::migrate(&db.pool)
        .await
        .expect("the migration applies");

    let jobs: Vec<(String, String, String, i32)> = sqlx::query_as(
        "SELECT target_user_id, state, to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), priority \
         FROM followq.follow_jobs ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        jobs[0],
        ("7".into(), "queued".into(), "2099-12-31".into(), 1000)
    );
    assert_eq!(
        jobs[1],
        ("8".into(), "queued".into(), "2000-01-01".into(), -1000)
    );
    assert_eq!(
        (jobs[2].0.as_str(), jobs[2].1.as_str()),
        ("0009", "cancelled")
    );
    assert_eq!(
        (jobs[3].0.as_str(), jobs[3].1.as_str()),
        ("10", "cancelled")
    );
    assert_eq!(
        (jobs[4].0.as_str(), jobs[4].1.as_str()),
        ("011", "succeeded")
    );
    let why: String = sqlx::query_scalar(
        "SELECT last_error->>'kind' FROM followq.follow_jobs WHERE target_user_id = '0009'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(why, "invalid_user_id");
    let (status, reason): (String, String) =
        sqlx::query_as("SELECT status, pause_reason FROM followq.accounts WHERE user_id = '0101'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "disabled");
    assert!(reason.contains("leading zeros"), "{reason}");

    // The range constraints hold for the whole table; the id ones for every new row.
    let validated: Vec<(String, bool)> = sqlx::query_as(
        "SELECT conname::text, convalidated FROM pg_constraint \
         WHERE conname::text LIKE ANY (ARRAY['%run_at_must%', '%priority_must%', '%must_not_start_with_0']) \
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(validated.contains(&(
        "follow_jobs_run_at_must_be_between_2000_and_2100".into(),
        true
    )));
    assert!(validated.contains(&(
        "follow_jobs_priority_must_be_between_minus_1000_and_1000".into(),
        true
    )));
    assert!(validated.contains(&(
        "follow_jobs_target_user_id_must_not_start_with_0".into(),
        false
    )));
    let refused = sqlx::query(
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) VALUES ('100', '012')",
    )
    .execute(&db.pool)
    .await;
    assert_eq!(
        constraint(refused),
        "follow_jobs_target_user_id_must_not_start_with_0"
    );
    for args in [
        vec!["jobs", "list"],
        vec!["status"],
        vec!["accounts", "show", "100"],
    ] {
        let output = db.followq(&args, "", &[]);
        assert!(output.status.success(), "{args:?}: {}", describe(&output));
    }
}

/// Applies the migrations older than `version`, as an earlier release would have.
async fn migrate_before(db: &TestDb, version: i64) {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let older = std::env::temp_dir().join(format!("followq-migrations-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&older).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let file_version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if file_version < version {
            std::fs::copy(&path, older.join(&name)).unwrap();
        }
    }
    let mut migrator = sqlx::migrate::Migrator::new(older.as_path()).await.unwrap();
    migrator.create_schema("followq");
    migrator.dangerous_set_table_name(followq::db::MIGRATIONS_TABLE);
    migrator.run(&db.pool).await.unwrap();
    std::fs::remove_dir_all(&older).unwrap();
}

/// Covers the command line's own checks: each bad input gets a clear message, exit code 1 or
/// 2, no row, and no echo of the token or of a whole pasted line.
#[tokio::test]
async fn the_command_line_refuses_bad_input_without_echo() {
    let db = TestDb::new().await;
    let zero = db.followq(
        &["accounts", "add", "--user-id", "0100", "--stdin"],
        r#"{"access_token":"AT"}"#,
        &[],
    );
    assert_eq!(zero.status.code(), Some(2), "{}", describe(&zero));
    assert!(text(&zero).contains("leading zeros"), "{}", describe(&zero));

    for (variable, token, problem) in [
        (
            "FOLLOWQ_OAUTH2_ACCESS_TOKEN",
            "AT-SECRET\nX-Injected: 1",
            "a line break",
        ),
        ("FOLLOWQ_OAUTH2_ACCESS_TOKEN", "AT SECRET", "a space"),
    ] {
        let output = db.followq(
            &["accounts", "add", "--user-id", "100"],
            "",
            &[(variable, token)],
        );
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        assert!(text(&output).contains(problem), "{}", describe(&output));
        assert!(!text(&output).contains("SECRET"), "{}", describe(&output));
    }
    let huge = format!(r#"{{"access_token":"{}"}}"#, "S".repeat(5000));
    let output = db.followq(
        &["accounts", "add", "--user-id", "100", "--stdin"],
        &huge,
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        text(&output).contains("at most 4096"),
        "{}",
        describe(&output)
    );
    let typed = db.followq(
        &["accounts", "add", "--user-id", "100", "--stdin"],
        r#"{"access_token":"AT","expires_in":"SECRET"}"#,
        &[],
    );
    assert_eq!(typed.status.code(), Some(1), "{}", describe(&typed));
    assert!(text(&typed).contains("expires_in"), "{}", describe(&typed));
    assert!(!text(&typed).contains("SECRET"), "{}", describe(&typed));
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM followq.accounts").await,
        0
    );

    db.add_account("100").await;
    let priority = db.followq(
        &[
            "enqueue",
            "--source",
            "100",
            "--target",
            "7",
            "--priority",
            "5000",
        ],
        "",
        &[],
    );
    assert_eq!(priority.status.code(), Some(2), "{}", describe(&priority));
    let pasted = format!("100,7{}\n100,0008\n100,9\n", "SECRET".repeat(50));
    let csv = db.followq(&["enqueue", "--file", "-"], &pasted, &[]);
    assert_eq!(csv.status.code(), Some(3), "{}", describe(&csv));
    let stderr = String::from_utf8_lossy(&csv.stderr).into_owned();
    assert!(stderr.contains("-:1: malformed target user id"), "{stderr}");
    assert!(stderr.contains("-:2: malformed target user id"), "{stderr}");
    assert!(stderr.contains("leading zeros"), "{stderr}");
    assert!(stderr.len() < 400, "{stderr}");
    assert!(!stderr.contains(&"SECRET".repeat(5)), "{stderr}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM followq.follow_jobs").await,
        1
    );
}
