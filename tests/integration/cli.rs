//! The `followq` binary end to end: migrate, enqueue (flags and CSV), accounts add, and the
//! messages a user gets for bad input or bad configuration.

use followq::accounts::sealed::TokenColumn;

use crate::helpers::{TestDb, describe};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn migrate_twice_then_enqueue_from_flags() {
    let db = TestDb::empty().await;
    for _ in 0..2 {
        let output = db.followq(&["migrate"], "", &[]);
        assert!(output.status.success(), "{}", describe(&output));
    }
    let add = db.followq(
        &["accounts", "add", "--user-id", "100"],
        "",
        &[("FOLLOWQ_OAUTH2_ACCESS_TOKEN", "AT-from-env")],
    );
    assert!(add.status.success(), "{}", describe(&add));

    let first = db.followq(&["enqueue", "--source", "100", "--target", "200"], "", &[]);
    assert!(first.status.success(), "{}", describe(&first));
    assert!(
        stdout(&first).contains("created job"),
        "{}",
        describe(&first)
    );
    let again = db.followq(&["enqueue", "--source", "100", "--target", "200"], "", &[]);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        stdout(&again).contains("already queued"),
        "{}",
        describe(&again)
    );
}

#[tokio::test]
async fn enqueue_rejects_bad_ids_self_follow_and_unknown_accounts() {
    let db = TestDb::new().await;
    let malformed = db.followq(&["enqueue", "--source", "12a", "--target", "200"], "", &[]);
    assert_eq!(malformed.status.code(), Some(2), "{}", describe(&malformed));
    assert!(
        stderr(&malformed).contains("digits"),
        "{}",
        describe(&malformed)
    );

    let own = db.followq(&["enqueue", "--source", "100", "--target", "100"], "", &[]);
    assert_eq!(own.status.code(), Some(1), "{}", describe(&own));
    assert!(
        stderr(&own).contains("cannot follow itself"),
        "{}",
        describe(&own)
    );

    let unknown = db.followq(&["enqueue", "--source", "100", "--target", "200"], "", &[]);
    assert_eq!(unknown.status.code(), Some(1), "{}", describe(&unknown));
    assert!(
        stderr(&unknown).contains("not a registered account"),
        "{}",
        describe(&unknown)
    );
}

#[tokio::test]
async fn a_csv_file_reports_bad_lines_and_enqueues_the_good_ones() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    let csv = "source_user_id,target_user_id\n100,200\n100,abc\n999,300\n100,100\n100,201\n";
    let output = db.followq(&["enqueue", "--file", "-"], csv, &[]);
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let errors = stderr(&output);
    assert!(errors.contains("-:3: malformed target"), "{errors}");
    assert!(
        errors.contains("-:4: source user 999 is not a registered"),
        "{errors}"
    );
    assert!(
        errors.contains("-:5: user 100 cannot follow itself"),
        "{errors}"
    );
    assert!(
        stdout(&output).contains("2 created, 0 already queued, 3 rejected"),
        "{}",
        describe(&output)
    );
    let targets: Vec<String> = sqlx::query_scalar(
        "SELECT target_user_id FROM followq.follow_jobs ORDER BY target_user_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(targets, vec!["200", "201"]);
}

#[tokio::test]
async fn accounts_add_reads_tokens_from_stdin_and_never_prints_them() {
    let db = TestDb::new().await;
    let json = r#"{"access_token":"AT-SECRET-1","refresh_token":"RT-SECRET-2","expires_in":7200}"#;
    let output = db.followq(
        &["accounts", "add", "--user-id", "100", "--stdin"],
        json,
        &[("RUST_LOG", "trace")],
    );
    assert!(output.status.success(), "{}", describe(&output));
    let all = describe(&output);
    assert!(!all.contains("SECRET"), "{all}");

    let expires_in: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM oauth2_expires_at - now())::float8 \
         FROM followq.account_credentials WHERE user_id = '100'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let access = db.stored_token("100", TokenColumn::OAuth2AccessToken).await;
    let refresh = db
        .stored_token("100", TokenColumn::OAuth2RefreshToken)
        .await;
    assert_eq!(
        (access.as_deref(), refresh.as_deref()),
        (Some("AT-SECRET-1"), Some("RT-SECRET-2"))
    );
    assert!((7000.0..=7200.0).contains(&expires_in), "{expires_in}");

    let garbage = db.followq(
        &["accounts", "add", "--user-id", "101", "--stdin"],
        "AT-SECRET-3",
        &[],
    );
    assert_eq!(garbage.status.code(), Some(1), "{}", describe(&garbage));
    assert!(
        !describe(&garbage).contains("SECRET"),
        "{}",
        describe(&garbage)
    );

    let missing = db.followq(
        &["accounts", "add", "--user-id", "101", "--auth", "oauth1"],
        "",
        &[],
    );
    assert_eq!(missing.status.code(), Some(1), "{}", describe(&missing));
    assert!(
        stderr(&missing).contains("FOLLOWQ_OAUTH1_TOKEN"),
        "{}",
        describe(&missing)
    );
}

#[tokio::test]
async fn a_database_without_the_schema_says_to_migrate() {
    let db = TestDb::empty().await;
    let output = db.followq(&["enqueue", "--source", "100", "--target", "200"], "", &[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("run `followq migrate` first"),
        "{}",
        describe(&output)
    );
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_naming_the_key() {
    let db = TestDb::new().await;
    let output = db.followq(&["migrate"], "", &[("FOLLOWQ_RETRY__MAX_ATTEMPTS", "many")]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("retry.max_attempts"),
        "{}",
        describe(&output)
    );
}

/// Guard: a command whose reader goes away (`followq jobs list | head`) ends quietly, with
/// success, instead of panicking on the failed write (`outln!`, and `main`'s check for a
/// closed pipe).
#[test]
fn a_command_whose_reader_went_away_ends_quietly() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    // Nobody reads: the command's first write fails with a broken pipe.
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_followq"))
        .args(["credentials", "new-key"])
        .env_remove("FOLLOWQ_ENV")
        .env_remove("RUST_LOG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run followq");
    let stderr = stderr(&output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}
