//! The cuttable TCP proxy of the test harness (`tests/common/tcp_proxy.rs`) in front of a real
//! Postgres: a pool through it works, fails within a second once it is cut, and works again
//! once it is restored. Tests that stage database outages rely on exactly that.

use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

use crate::helpers::TestDb;
use crate::helpers::tcp_proxy::{CuttableProxy, socket_addr_of};

async fn select_one(pool: &sqlx::PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT 1").fetch_one(pool).await
}

#[tokio::test]
async fn a_pool_through_the_proxy_fails_fast_when_cut_and_recovers_when_restored() {
    let db = TestDb::empty().await;
    let proxy = CuttableProxy::start(socket_addr_of(&db.url).await);
    let url = proxy.url_through(&db.url);
    assert!(
        url.contains(&format!("127.0.0.1:{}", proxy.addr().port())),
        "{url}"
    );
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("a pool through the proxy");
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .expect("a query through the proxy");
    assert!(
        db.url.ends_with(&format!("/{database}")),
        "the URL kept the database: {database} for {}",
        db.url
    );
    assert_eq!(proxy.connections(), 1);

    proxy.cut().await;
    assert_eq!(proxy.connections(), 0, "every connection closed");
    let started = Instant::now();
    let pooled = tokio::time::timeout(Duration::from_secs(1), select_one(&pool)).await;
    assert!(
        matches!(pooled, Ok(Err(_))),
        "a pooled query must fail within a second, got {pooled:?}"
    );
    let fresh = tokio::time::timeout(Duration::from_secs(1), PgConnection::connect(&url)).await;
    assert!(
        matches!(fresh, Ok(Err(_))),
        "a new connection must fail within a second, got {:?}",
        fresh.map(|r| r.map(|_| "connected"))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The database itself is fine: only the path through the proxy is cut.
    assert_eq!(select_one(&db.pool).await.expect("direct query"), 1);

    proxy.restore();
    let back = tokio::time::timeout(Duration::from_secs(5), select_one(&pool))
        .await
        .expect("a query after restore answers in time")
        .expect("a query after restore works");
    assert_eq!(back, 1);
    assert_eq!(proxy.connections(), 1);
    pool.close().await;
}
