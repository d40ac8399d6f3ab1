//! How the demo picks its Postgres, called as a library: the probe of the configured server,
//! a named URL taken as it is, the binary search, and the messages when no throwaway server
//! can be had. (Runs of the binary that start a throwaway server: `demo_throwaway.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use followq::demo::choose_postgres::{self, ChooseError, DemoPostgres, Lookup, Probe, probe};
use followq::demo::progress::Silent;
use followq::demo::server_user::{NoServerUser, ServerUser};
use followq::demo::throwaway_postgres::{PostgresBinaries, search_dirs};
use secrecy::{ExposeSecret, SecretString};

use crate::common::TestDb;

/// A loopback port where nothing listens (bound, then released).
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

fn dead_url() -> SecretString {
    format!("postgres://postgres@127.0.0.1:{}/postgres", unused_port()).into()
}

/// A directory with stand-ins for `initdb` and `pg_ctl` that leave a mark if they are ever
/// run.
fn fake_binaries(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for name in ["initdb", "pg_ctl"] {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\ntouch '{}/ran-{name}'\nexit 1\n", dir.display()),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir.to_path_buf()
}

/// A lookup in `binary_dirs`; `as_root_without_nobody`: the demo runs as root on a system
/// with no `nobody` to run Postgres as.
fn lookup(binary_dirs: Vec<PathBuf>, as_root_without_nobody: bool) -> Lookup {
    Lookup {
        binary_dirs,
        server_user: if as_root_without_nobody {
            Err(NoServerUser {
                passwd: "/etc/passwd".into(),
                why: "no such line".into(),
            })
        } else {
            Ok(ServerUser::Current)
        },
        // Deterministic whatever the machine: a build with the feature would otherwise start
        // a container where Docker runs.
        docker: false,
        searched: "in the test's directories".into(),
    }
}

fn no_postgres_message(result: Result<DemoPostgres, ChooseError>) -> String {
    match result {
        Err(error @ ChooseError::NoPostgres { .. }) => error.to_string(),
        Err(other) => panic!("expected the no-Postgres message, got: {other}"),
        Ok(_) => panic!("expected the no-Postgres message, got a server"),
    }
}

/// Guards the probe's classification and its timeout: a server that answers (even with an
/// error) counts as there; a refused port, a missing socket, and a listener that never speaks
/// count as nothing, the last within the timeout rather than whenever the OS gives up.
#[tokio::test]
async fn the_probe_tells_a_server_from_nothing_quickly() {
    let db = TestDb::empty().await;
    let timeout = Duration::from_millis(500);
    let answering: SecretString = db.url.clone().into();
    assert_eq!(probe(&answering, timeout).await.unwrap(), Probe::Answers);

    let mut missing_database = reqwest::Url::parse(&db.url).unwrap();
    missing_database.set_path("/followq_no_such_database");
    let refusing: SecretString = missing_database.to_string().into();
    assert_eq!(
        probe(&refusing, timeout).await.unwrap(),
        Probe::Answers,
        "a server that answers with an error is a server: its error stays the demo's error"
    );

    assert!(matches!(
        probe(&dead_url(), timeout).await.unwrap(),
        Probe::Nothing { .. }
    ));
    let no_socket: SecretString = "postgres://postgres@localhost/postgres?host=/nonexistent-dir"
        .to_owned()
        .into();
    assert!(matches!(
        probe(&no_socket, timeout).await.unwrap(),
        Probe::Nothing { .. }
    ));

    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let url: SecretString = format!("postgres://postgres@127.0.0.1:{port}/postgres").into();
    let started = Instant::now();
    let found = tokio::time::timeout(Duration::from_secs(10), probe(&url, timeout))
        .await
        .expect("the probe gives up by itself")
        .unwrap();
    let took = started.elapsed();
    held.abort();
    assert!(matches!(found, Probe::Nothing { .. }), "{found:?}");
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(1),
        "decided after {took:?}"
    );
}

/// Guards "a named URL always wins": with `explicit`, the URL is used as it is even though
/// nothing answers there, and no throwaway server is looked for.
#[tokio::test]
async fn a_named_url_is_used_as_it_is_without_a_probe() {
    let dir = tempfile::tempdir().unwrap();
    let binaries = fake_binaries(&dir.path().join("bin"));
    let url = dead_url();
    let chosen = choose_postgres::choose(
        &url,
        true,
        &lookup(vec![binaries.clone()], false),
        &mut Silent,
    )
    .await
    .expect("a named URL is taken as it is");
    match chosen {
        DemoPostgres::Configured { url: chosen, .. } => {
            assert_eq!(chosen.expose_secret(), url.expose_secret())
        }
        _ => panic!("a throwaway server was started for a named URL"),
    }
    assert!(!binaries.join("ran-initdb").exists(), "initdb was run");
}

/// Guards the probe's use: a configured server that answers is the demo's server.
#[tokio::test]
async fn a_configured_server_that_answers_is_used() {
    let db = TestDb::empty().await;
    let url: SecretString = db.url.clone().into();
    let chosen = choose_postgres::choose(&url, false, &lookup(Vec::new(), false), &mut Silent)
        .await
        .expect("the configured server answers");
    assert!(matches!(chosen, DemoPostgres::Configured { .. }));
}

/// Guards the root check: as root with no unprivileged user to run Postgres as, the local
/// binaries are never run (Postgres would refuse), and the message says so plainly, with the
/// three ways out.
#[tokio::test]
async fn as_root_without_nobody_the_local_binaries_are_not_run_and_the_message_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let binaries = fake_binaries(&dir.path().join("bin"));
    let text = no_postgres_message(
        choose_postgres::choose(
            &dead_url(),
            false,
            &lookup(vec![binaries.clone()], true),
            &mut Silent,
        )
        .await,
    );
    assert!(
        text.contains("refuses to run as root") && text.contains("`nobody`"),
        "{text}"
    );
    assert!(text.contains(&binaries.display().to_string()), "{text}");
    assert!(
        !binaries.join("ran-initdb").exists(),
        "initdb was run as root"
    );
    for way in ["DATABASE_URL", "Postgres installed", "Docker started"] {
        assert!(text.contains(way), "{way} missing from: {text}");
    }
}

/// Guards the last resort: no server, no binaries, no Docker: one message that names what was
/// tried and the three ways to give the demo a Postgres.
#[tokio::test]
async fn with_nothing_to_use_one_message_names_the_three_ways() {
    let empty = tempfile::tempdir().unwrap();
    let url = dead_url();
    let text = no_postgres_message(
        choose_postgres::choose(
            &url,
            false,
            &lookup(vec![empty.path().into()], false),
            &mut Silent,
        )
        .await,
    );
    assert!(text.contains("nothing answers at 127.0.0.1:"), "{text}");
    assert!(
        text.contains("no initdb and pg_ctl in the test's directories"),
        "{text}"
    );
    for way in ["DATABASE_URL", "Postgres installed", "Docker started"] {
        assert!(text.contains(way), "{way} missing from: {text}");
    }
    assert!(
        !text.contains(url.expose_secret()),
        "the URL itself is not echoed: {text}"
    );
}

/// Guards the search order: PATH first, then package directories newest version first (16
/// above 9.6), and only a directory holding both binaries counts.
#[test]
fn binaries_are_found_on_path_first_then_in_the_newest_package() {
    let root = tempfile::tempdir().unwrap();
    let packages = root.path().join("usr/lib/postgresql");
    fake_binaries(&packages.join("9.6/bin"));
    fake_binaries(&packages.join("15/bin"));
    // 16 without pg_ctl: not a usable installation.
    std::fs::create_dir_all(packages.join("16/bin")).unwrap();
    std::fs::copy(
        packages.join("15/bin/initdb"),
        packages.join("16/bin/initdb"),
    )
    .unwrap();
    let on_path = fake_binaries(&root.path().join("opt/pg/bin"));
    let not_postgres = root.path().join("usr/bin");
    std::fs::create_dir_all(&not_postgres).unwrap();

    let path = std::env::join_paths([&not_postgres, &on_path]).unwrap();
    let dirs = search_dirs(Some(&path), root.path());
    assert_eq!(
        dirs,
        vec![
            not_postgres.clone(),
            on_path.clone(),
            packages.join("16/bin"),
            packages.join("15/bin"),
            packages.join("9.6/bin"),
        ]
    );
    assert_eq!(PostgresBinaries::find(&dirs).unwrap().dir, on_path);

    let without_path = search_dirs(Some(not_postgres.as_os_str()), root.path());
    assert_eq!(
        PostgresBinaries::find(&without_path).unwrap().dir,
        packages.join("15/bin")
    );
    assert_eq!(PostgresBinaries::find(&[not_postgres]), None);
}
