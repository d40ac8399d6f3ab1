//! The app's follows of the last 24 hours (`accounts::app_follows`), against ledger rows:
//! what counts, when the cap frees, and what each refresh reads again.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use followq::accounts::app_follows::AppFollows;

use crate::helpers::TestDb;

const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Inserts a ledger row sent `sent_ago` seconds ago (negative: not yet), answered
/// `answer_after` seconds after that (`None`: no answer yet), with `outcome` (and the HTTP
/// status such an answer has); returns its id.
async fn row(db: &TestDb, sent_ago: f64, answer_after: Option<f64>, outcome: Option<&str>) -> i64 {
    sqlx::query_scalar(
        r#"
        INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at, completed_at,
                                      answer_by, outcome, http_status)
        SELECT 0, '500', 'w', at, at + make_interval(secs => $2), at + make_interval(secs => $4),
               $3,
               -- The status such an answer has.
               CASE $3 WHEN 'succeeded' THEN 200 WHEN 'permanent' THEN 403
                       WHEN 'rate_limited' THEN 429 WHEN 'transient' THEN 503 END
        FROM (SELECT now() - make_interval(secs => $1) AS at) AS t
        RETURNING id
        "#,
    )
    .bind(sent_ago)
    .bind(answer_after)
    .bind(outcome)
    .bind(ANSWER_WITHIN.as_secs_f64())
    .fetch_one(&db.pool)
    .await
    .expect("ledger row")
}

async fn expiry_of(db: &TestDb, id: i64) -> DateTime<Utc> {
    sqlx::query_scalar(
        "SELECT coalesce(completed_at, answer_by) + interval '24 hours' \
         FROM followq.attempts WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .expect("row")
}

/// Guard: what counts as the app's follow (`AppFollows::refresh`'s row filter and expiry):
/// succeeded, in flight and abandoned rows of the last day, not refused or unsent ones, not
/// older ones; and the stop's end (`frees_at`): the end of the minute in which the follow
/// that must age out is a day old, never before.
#[tokio::test]
async fn the_app_count_holds_what_may_have_been_followed_and_frees_by_the_minute() {
    let db = TestDb::new().await;
    let oldest = row(&db, 86_400.0 - 300.0, Some(0.2), Some("succeeded")).await;
    let second = row(&db, 86_400.0 - 500.0, Some(0.2), Some("succeeded")).await;
    row(&db, 3_600.0, Some(0.2), Some("abandoned")).await;
    row(&db, 1.0, None, None).await;
    row(&db, 600.0, Some(0.2), Some("permanent")).await;
    row(&db, 700.0, Some(0.0), Some("not_sent")).await;
    row(&db, 86_400.0 + 60.0, Some(0.2), Some("succeeded")).await;

    let mut app = AppFollows::default();
    let count = app
        .refresh(&db.pool, 5, ANSWER_WITHIN, None)
        .await
        .expect("count");
    assert_eq!((count.follows, count.frees_at), (4, None));

    let count = app
        .refresh(&db.pool, 4, ANSWER_WITHIN, None)
        .await
        .expect("count");
    assert_eq!(count.follows, 4);
    let frees_at = count.frees_at.expect("the cap is reached");
    let exact = expiry_of(&db, oldest).await;
    assert!(
        frees_at >= exact && frees_at < exact + TimeDelta::seconds(60),
        "frees {} after the oldest follow is a day old",
        frees_at - exact
    );
    assert_eq!(frees_at.timestamp() % 60, 0, "at a minute's end");
    // `second` was sent 200 s after `oldest`: it still counts then.
    assert!(frees_at < expiry_of(&db, second).await);

    // With a cap of 3, two must age out: the minute in which `second` is a day old.
    let count = app
        .refresh(&db.pool, 3, ANSWER_WITHIN, None)
        .await
        .expect("count");
    let exact = expiry_of(&db, second).await;
    let frees_at = count.frees_at.expect("the cap is reached");
    assert!(frees_at >= exact && frees_at < exact + TimeDelta::seconds(60));
}

/// Guard: the split between settled rows (sent before `settled_by`, read once and kept in
/// the buckets) and younger ones (read at every refresh). A row whose request can no longer
/// reach X stays counted (an answer recorded later that takes its follow away is not read
/// again: the count stays on the safe side), while a refusal recorded for a younger row takes
/// its follow away at once, and new rows are counted. With every row settled at once, the
/// refused one stayed counted (3).
#[tokio::test]
async fn a_refresh_reads_again_only_the_rows_whose_fate_may_still_change() {
    let db = TestDb::new().await;
    let settled = row(&db, 60.0, None, Some("abandoned")).await;
    let in_flight = row(&db, 0.5, None, None).await;
    let mut app = AppFollows::default();
    let count = app
        .refresh(&db.pool, 100, ANSWER_WITHIN, None)
        .await
        .expect("count");
    assert_eq!(count.follows, 2);

    for id in [settled, in_flight] {
        sqlx::query(
            "UPDATE followq.attempts SET outcome = 'permanent', http_status = 403, \
             completed_at = now() WHERE id = $1",
        )
        .bind(id)
        .execute(&db.pool)
        .await
        .expect("a late answer");
    }
    row(&db, 0.0, None, None).await;
    let count = app
        .refresh(&db.pool, 100, ANSWER_WITHIN, None)
        .await
        .expect("count");
    assert_eq!(
        count.follows, 2,
        "the settled row still counted, the refused one no longer, the new one counted"
    );
    // A fresh counter reads the ledger as it is now.
    let count = AppFollows::default()
        .refresh(&db.pool, 100, ANSWER_WITHIN, None)
        .await
        .expect("count");
    assert_eq!(count.follows, 1);
}

/// Guard: `unanswered_by`, for the check before each request, which counts its own requests
/// in flight itself: this worker's unanswered rows are left out while their requests may be
/// in flight (another worker's are not), and counted like any other once settled.
#[tokio::test]
async fn the_callers_own_requests_in_flight_are_left_to_it() {
    let db = TestDb::new().await;
    let mine = || async {
        sqlx::query(
            "UPDATE followq.attempts SET worker_id = 'me' WHERE id = (SELECT max(id) FROM followq.attempts)",
        )
        .execute(&db.pool)
        .await
        .expect("mine");
    };
    row(&db, 0.5, None, None).await;
    mine().await;
    row(&db, 60.0, None, None).await;
    mine().await;
    row(&db, 0.5, None, None).await;
    row(&db, 30.0, Some(0.2), Some("succeeded")).await;
    mine().await;
    let mut app = AppFollows::default();
    let count = app
        .refresh(&db.pool, 100, ANSWER_WITHIN, Some("me"))
        .await
        .expect("count");
    assert_eq!(
        count.follows, 3,
        "my settled unanswered row, the other worker's in flight, my answered follow"
    );
    let count = app
        .refresh(&db.pool, 100, ANSWER_WITHIN, None)
        .await
        .expect("count");
    assert_eq!(count.follows, 4, "everything, for the app monitor");
}
