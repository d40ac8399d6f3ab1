//! Transport: what the `followq` binary does with a database URL without a user name or one
//! slash short, and with a plain-http X API URL.

use crate::common::{TestDb, describe};

/// The test database's URL with its user name removed.
fn without_user(db: &TestDb) -> String {
    let mut url = reqwest::Url::parse(&db.url).expect("the test URL");
    url.set_username("").expect("a URL with a host");
    url.set_password(None).expect("a URL with a host");
    url.to_string()
}

fn os_user() -> String {
    let id = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    String::from_utf8(id.stdout).unwrap().trim().to_owned()
}

/// Covers the `whoami` feature (Cargo.toml): a URL without a user connects as PGUSER, and
/// without PGUSER as the operating system user, never as "anonymous".
#[tokio::test]
async fn a_database_url_without_a_user_uses_pguser_then_the_os_user() {
    let db = TestDb::new().await;
    let url = without_user(&db);
    let server_user = reqwest::Url::parse(&db.url).unwrap().username().to_owned();
    let with_pguser = db.followq(
        &["status"],
        "",
        &[
            ("DATABASE_URL", url.as_str()),
            ("PGUSER", server_user.as_str()),
        ],
    );
    assert!(with_pguser.status.success(), "{}", describe(&with_pguser));

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_followq"));
    let output = command
        .arg("status")
        .env("DATABASE_URL", &url)
        .env_remove("PGUSER")
        .env_remove("FOLLOWQ_DATABASE__URL")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = describe(&output);
    assert!(!text.contains("anonymous"), "{text}");
    if !output.status.success() {
        assert!(text.contains(&format!("\"{}\"", os_user())), "{text}");
    }
}

/// Covers the URL check of `db::connect_options`: a URL one slash short used to connect to a
/// database named after the user, password and host, and print it in every error.
#[tokio::test]
async fn a_database_url_one_slash_short_is_refused_without_its_password() {
    let db = TestDb::new().await;
    let output = db.followq(
        &["status"],
        "",
        &[(
            "DATABASE_URL",
            "postgres:/postgres:PASSW0RD@127.0.0.1:5432/postgres",
        )],
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = describe(&output);
    assert!(text.contains("postgres://"), "{text}");
    assert!(!text.contains("PASSW0RD"), "{text}");
}

/// Covers the base URL check of the settings: the daemon does not start against plain http to
/// a remote host.
#[tokio::test]
async fn the_daemon_refuses_plain_http_to_a_remote_x_api() {
    let db = TestDb::new().await;
    let output = db.followq(
        &["run"],
        "",
        &[("FOLLOWQ_X_API__BASE_URL", "http://api.x.com")],
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        describe(&output).contains("allow_insecure_http"),
        "{}",
        describe(&output)
    );
}
