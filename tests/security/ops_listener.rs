//! The operations listener under hostile or careless clients: a client that never finishes
//! its headers is cut off, connections beyond the cap are closed at once, the gauges are read
//! from the database at most every few seconds, and `/readyz` does not pass on the driver's
//! error text.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use followq::http::{GAUGE_TTL, READY_TIMEOUT};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ops_support::{OpsDaemon, get, with_http};
use crate::support::{Harness, serial, sim_config};

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Err(_) => panic!("the connection was still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// Covers the header-read timeout of the accept loop: without it the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    let daemon = OpsDaemon::start(&with_http(&harness.settings)).await;
    let mut stream = TcpStream::connect(daemon.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: followq\r\n")
        .await
        .unwrap();
    let (answer, after) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(after >= Duration::from_secs(4), "closed after {after:?}");
    assert_eq!(get(daemon.addr, "/healthz").await.0, 200);
    daemon.stop().await;
}

/// Covers the connection cap: with every slot held by idle clients, one more connection is
/// closed unanswered at once; once they leave, the listener answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    let daemon = OpsDaemon::start(&with_http(&harness.settings)).await;
    let mut idle = Vec::new();
    for _ in 0..32 {
        idle.push(TcpStream::connect(daemon.addr).await.unwrap());
    }
    // Let the listener accept them all before the one too many.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(daemon.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: followq\r\n\r\n")
        .await;
    let (answer, after) = read_until_closed(&mut extra, Duration::from_secs(3)).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(after < Duration::from_secs(1), "closed after {after:?}");

    drop(idle);
    let started = Instant::now();
    loop {
        if get_status(daemon.addr).await == Some(200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no slot came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.stop().await;
}

async fn get_status(addr: SocketAddr) -> Option<u16> {
    reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Covers the gauge cache: jobs enqueued right after a scrape are not in the scrapes answered
/// within [`GAUGE_TTL`] of it (served from the cache, no query), and are once the cache has
/// aged. A scrape answered after the TTL may read the database again, so only those answered
/// within it are held to the cache (on a loaded machine the burst can outlast it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gauges_are_read_at_most_every_few_seconds() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    harness.account("100").await;
    sqlx::query("UPDATE followq.accounts SET status = 'disabled'")
        .execute(&harness.db.pool)
        .await
        .unwrap();
    let daemon = OpsDaemon::start(&with_http(&harness.settings)).await;
    let queued = |scraped: &crate::ops_support::Scraped| {
        scraped.value("followq_queue_jobs", &[("state", "queued")])
    };
    // The cache's age counts from the end of the first scrape's read, somewhere between the
    // request and the answer: a scrape answered before `fresh_until` was served while the
    // cache was fresh, and one sent after `stale_from` finds it aged.
    let asked_at = Instant::now();
    let first = daemon.scrape().await;
    let fresh_until = asked_at + GAUGE_TTL;
    let stale_from = Instant::now() + GAUGE_TTL;
    assert_eq!(queued(&first), 0.0);
    harness.enqueue("100", 1_000, 5).await;
    // A burst of concurrent scrapes: all answered, none within the TTL reads the database.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..20 {
        burst.spawn(async move {
            let answer = get(daemon.addr, "/metrics").await;
            (answer, Instant::now())
        });
    }
    let mut from_cache = 0;
    while let Some(answer) = burst.join_next().await {
        let ((status, text), answered_at) = answer.unwrap();
        assert_eq!(status, 200, "{text}");
        if answered_at >= fresh_until {
            continue;
        }
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        let scraped = crate::ops_support::Scraped {
            scrape: prometheus_parse::Scrape::parse(lines).unwrap(),
            text,
        };
        assert_eq!(queued(&scraped), 0.0, "served from the cache");
        from_cache += 1;
    }
    assert!(
        from_cache > 0,
        "no scrape of the burst was answered within the TTL: the run proves nothing"
    );
    tokio::time::sleep_until(stale_from.into()).await;
    assert_eq!(queued(&daemon.scrape().await), 5.0, "read again once stale");
    daemon.stop().await;
}

/// Covers `/readyz`'s wording: a database that refuses connections is "unreachable", and the
/// driver's error (host, port, OS error text) stays in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_unreachable_without_the_drivers_error() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(
            PgConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .username("nobody"),
        );
    let daemon = OpsDaemon::start_on(&with_http(&harness.settings), pool);
    let (status, body) = get(daemon.addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body == "not ready: the database is unreachable\n"
            || body == format!("not ready: the database did not answer within {READY_TIMEOUT:?}\n"),
        "{body:?}"
    );
    daemon.stop().await;
}
