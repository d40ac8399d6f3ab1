//! /healthz and /readyz over real HTTP: ready when the database answers and no app-wide stop
//! is in force; unready, with the reason, otherwise.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::ops_support::{OpsDaemon, with_http};
use crate::support::{Harness, serial, sim_config};

async fn wait_for_status(daemon: &OpsDaemon, path: &str, want: u16) -> String {
    let start = Instant::now();
    loop {
        let (status, body) = daemon.get(path).await;
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path} still {status} ({body:?}) after 10 s, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readyz_follows_the_app_wide_stop() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    let daemon = OpsDaemon::start(&with_http(&harness.settings)).await;
    assert_ne!(
        daemon.addr.port(),
        0,
        "port 0 is resolved to the port bound"
    );

    assert_eq!(daemon.get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(daemon.get("/readyz").await, (200, "ready\n".into()));
    assert_eq!(daemon.get("/nothing-here").await.0, 404);

    sqlx::query("INSERT INTO followq.app_pause (reason) VALUES ('app_forbidden')")
        .execute(&harness.db.pool)
        .await
        .expect("stop the app");
    let (status, body) = daemon.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("app-wide stop") && body.contains("app_forbidden"),
        "{body}"
    );
    assert_eq!(daemon.get("/healthz").await.0, 200, "alive all the same");

    sqlx::query("DELETE FROM followq.app_pause")
        .execute(&harness.db.pool)
        .await
        .expect("lift the stop");
    assert_eq!(daemon.get("/readyz").await, (200, "ready\n".into()));

    // A stop that has ended no longer counts, even before anyone deletes the row.
    sqlx::query(
        "INSERT INTO followq.app_pause (reason, paused_until) VALUES ('usage_capped', now() - interval '1 second')",
    )
    .execute(&harness.db.pool)
    .await
    .expect("an expired stop");
    assert_eq!(daemon.get("/readyz").await.0, 200);

    daemon.stop().await;
}

#[tokio::test]
async fn readyz_turns_unready_when_the_database_goes_away() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    let mut settings = with_http(&harness.settings);
    settings.database.acquire_timeout = Duration::from_secs(1);
    let daemon = OpsDaemon::start(&settings).await;
    assert_eq!(daemon.get("/readyz").await.0, 200);

    // The database disappears under the daemon: every connection is cut and none can be
    // opened again.
    let mut server = reqwest::Url::parse(&harness.db.url).expect("test database URL");
    let name = server.path().trim_start_matches('/').to_owned();
    server.set_path("/postgres");
    let mut admin = PgConnection::connect(server.as_str())
        .await
        .expect("connect to the server's postgres database");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop the daemon's database");
    admin.close().await.ok();

    let body = wait_for_status(&daemon, "/readyz", 503).await;
    assert!(body.contains("database"), "{body}");
    assert_eq!(
        daemon.get("/healthz").await,
        (200, "ok\n".into()),
        "the process itself is alive: no restart is called for"
    );
    // The counters are still served when the gauges cannot be read.
    let scraped = daemon.scrape().await;
    assert_eq!(
        scraped.value("followq_job_outcomes_total", &[("outcome", "succeeded")]),
        0.0
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_port_already_in_use_stops_start_up() {
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let mut settings = harness.settings.clone();
    settings.http.enabled = true;
    settings.http.listen = taken.local_addr().expect("its address");
    let error = match followq::worker::Daemon::new(settings, harness.db.pool.clone()) {
        Ok(_) => panic!("a daemon on a taken port"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("http.listen"), "{error}");
}
