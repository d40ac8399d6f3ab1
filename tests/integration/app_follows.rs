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

/// Takes the cap's slot for ledger row `id`, as the check before its request does.
async fn slot(db: &TestDb, id: i64) {
    sqlx::query("INSERT INTO followq.app_cap_slots (attempt_id) VALUES ($1)")
        .bind(id)
        .execute(&db.pool)
        .await
        .expect("slot");
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
    let in_flight = row(&db, 1.0, None, None).await;
    slot(&db, in_flight).await;
    row(&db, 600.0, Some(0.2), Some("permanent")).await;
    row(&db, 700.0, Some(0.0), Some("not_sent")).await;
    row(&db, 86_400.0 + 60.0, Some(0.2), Some("succeeded")).await;

    let mut app = AppFollows::default();
    let count = app
        .refresh(&db.pool, 5, ANSWER_WITHIN)
        .await
        .expect("count");
    assert_eq!((count.follows, count.frees_at), (4, None));

    let count = app
        .refresh(&db.pool, 4, ANSWER_WITHIN)
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
        .refresh(&db.pool, 3, ANSWER_WITHIN)
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
    slot(&db, in_flight).await;
    let mut app = AppFollows::default();
    let count = app
        .refresh(&db.pool, 100, ANSWER_WITHIN)
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
    let new = row(&db, 0.0, None, None).await;
    slot(&db, new).await;
    let count = app
        .refresh(&db.pool, 100, ANSWER_WITHIN)
        .await
        .expect("count");
    assert_eq!(
        count.follows, 2,
        "the settled row still counted, the refused one no longer, the new one counted"
    );
    // A fresh counter reads the ledger as it is now.
    let count = AppFollows::default()
        .refresh(&db.pool, 100, ANSWER_WITHIN)
        .await
        .expect("count");
    assert_eq!(count.follows, 1);
}

/// Guard: `AppFollows::settled`, what the check before each request adds its slots to: the
/// follows of the rows whose fate is final (sent more than `answer_within` and a margin ago),
/// not the fresh ones, with the instant up to which rows are settled on the database's clock.
#[tokio::test]
async fn the_settled_count_leaves_the_fresh_rows_to_the_slots() {
    let db = TestDb::new().await;
    let mut app = AppFollows::default();
    assert_eq!(app.settled(), None, "nothing read yet");
    row(&db, 60.0, None, Some("abandoned")).await;
    row(&db, 30.0, Some(0.2), Some("succeeded")).await;
    row(&db, 20.0, Some(0.2), Some("permanent")).await;
    let in_flight = row(&db, 0.5, None, None).await;
    slot(&db, in_flight).await;
    let count = app
        .refresh(&db.pool, 100, ANSWER_WITHIN)
        .await
        .expect("count");
    assert_eq!(count.follows, 3, "the monitor counts the fresh row too");
    let settled = app.settled().expect("read");
    assert_eq!(settled.follows, 2, "the abandoned row and the follow");
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&db.pool)
        .await
        .expect("clock");
    let lag = now - settled.through;
    assert!(
        lag > TimeDelta::from_std(ANSWER_WITHIN).expect("small") && lag < TimeDelta::seconds(20),
        "settled up to {lag} ago"
    );
}

/// Guard: the fresh rows' filter in `store::app_follows`: an unanswered row counts once its
/// request took a slot (it may have reached X), not while it is only claimed (it may never be
/// sent: counting it stopped the app for a day with follows to spare when claims were slow);
/// once settled it counts either way, as the settled count always did.
#[tokio::test]
async fn a_fresh_claim_counts_once_its_request_took_a_slot() {
    let db = TestDb::new().await;
    let claimed = row(&db, 0.5, None, None).await;
    row(&db, 0.5, Some(0.2), Some("succeeded")).await;
    row(&db, 60.0, None, None).await;
    let mut app = AppFollows::default();
    let count = app
        .refresh(&db.pool, 100, ANSWER_WITHIN)
        .await
        .expect("count");
    assert_eq!(
        count.follows, 2,
        "the follow and the settled row, not the claim"
    );
    slot(&db, claimed).await;
    let count = app
        .refresh(&db.pool, 100, ANSWER_WITHIN)
        .await
        .expect("count");
    assert_eq!(count.follows, 3, "the claim's request took its slot");
}
