//! What followq spent at X (`store::billing`): the ledger's requests billed (2xx) and possibly
//! billed (may have acted, no final answer), the same whether read from the ledger or from
//! the hourly rollup; and the budgets' reservation rows.

use chrono::{DateTime, Utc};
use followq::store::billing::{self, BudgetPeriod, Requests};

use crate::helpers::TestDb;

/// A ledger row sent `ago` seconds ago with `outcome` and `status` (answered when set).
async fn row(db: &TestDb, ago: f64, outcome: Option<&str>, status: Option<i16>) {
    sqlx::query(
        r#"
        INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at, completed_at,
                                      answer_by, outcome, http_status)
        SELECT 0, '800', 'w', at, CASE WHEN $2::text IS NULL THEN NULL ELSE at END,
               at + interval '17 seconds', $2, $3
        FROM (SELECT now() - make_interval(secs => $1) AS at) AS t
        "#,
    )
    .bind(ago)
    .bind(outcome)
    .bind(status)
    .execute(&db.pool)
    .await
    .expect("ledger row");
}

async fn sent_since(db: &TestDb, since: DateTime<Utc>) -> Requests {
    let (billed, possibly): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE http_status BETWEEN 200 AND 299),
                count(*) FILTER (WHERE (outcome IS NULL OR outcome = 'abandoned'
                                        OR (outcome <> 'not_sent'
                                            AND (http_status IS NULL OR http_status >= 500))))
         FROM followq.attempts WHERE sent_at >= $1",
    )
    .bind(since)
    .fetch_one(&db.pool)
    .await
    .expect("count");
    Requests {
        billed,
        possibly_billed: possibly,
    }
}

/// Guard: `store::billing::spend` and `roll_up`: the requests of the last hour, the day and
/// the month, billed and possibly billed, with 4xx and unsent requests in neither; the same
/// figures once the settled hours are rolled up (and the rollup written once however often
/// it runs).
#[tokio::test]
async fn the_spend_is_the_same_from_the_ledger_and_from_the_rollup() {
    let db = TestDb::new().await;
    // Each kind of answer, now, 3 hours ago, a day and a half ago and 20 days ago.
    for ago in [60.0, 3.0 * 3600.0, 36.0 * 3600.0, 20.0 * 86_400.0] {
        row(&db, ago, Some("succeeded"), Some(200)).await;
        row(&db, ago, Some("transient"), Some(503)).await;
        row(&db, ago, Some("transient"), None).await;
        row(&db, ago, Some("abandoned"), None).await;
        row(&db, ago, Some("rate_limited"), Some(429)).await;
        row(&db, ago, Some("credits_depleted"), Some(402)).await;
        row(&db, ago, Some("not_sent"), None).await;
    }
    row(&db, 5.0, None, None).await;

    let before = billing::spend(&db.pool).await.expect("spend");
    assert_eq!(
        before.last_hour,
        Requests {
            billed: 1,
            possibly_billed: 4
        },
        "2xx billed; 5xx, no answer, abandoned and in the air possibly; 4xx and unsent not"
    );
    assert_eq!(before.day, sent_since(&db, before.day_starts_at).await);
    assert_eq!(before.month, sent_since(&db, before.month_starts_at).await);

    let mut hours = 0;
    loop {
        let written = billing::roll_up(&db.pool).await.expect("roll up");
        if written == 0 {
            break;
        }
        hours += written;
    }
    assert!(
        hours >= 24 * 27,
        "the first run covers last month too: {hours} hours"
    );
    assert_eq!(billing::roll_up(&db.pool).await.expect("again"), 0);
    let after = billing::spend(&db.pool).await.expect("spend");
    assert_eq!(after, before, "the rollup changes no figure");
    // The rollup holds the settled hours: the ledger's old rows can go (retention) and the
    // month's figure stays.
    sqlx::query("DELETE FROM followq.attempts WHERE sent_at < now() - interval '3 hours'")
        .execute(&db.pool)
        .await
        .expect("prune");
    assert_eq!(
        billing::spend(&db.pool).await.expect("spend").month,
        before.month
    );
}

/// Guard: `open_period` and `reserve`: a period's row starts at what the period has already
/// spent, and reservations never take it past the budget (a block is cut to what is left, then
/// nothing); what a daemon gives back can be reserved again.
#[tokio::test]
async fn a_budgets_row_starts_at_the_periods_spend_and_never_passes_the_budget() {
    let db = TestDb::new().await;
    for _ in 0..3 {
        row(&db, 10.0, Some("succeeded"), Some(200)).await;
    }
    row(&db, 10.0, Some("permanent"), Some(404)).await;
    let day: DateTime<Utc> = sqlx::query_scalar("SELECT date_trunc('day', now(), 'UTC')")
        .fetch_one(&db.pool)
        .await
        .expect("today");
    billing::open_period(&db.pool, BudgetPeriod::Day, day)
        .await
        .expect("open");
    billing::open_period(&db.pool, BudgetPeriod::Day, day)
        .await
        .expect("open again: a no-op");
    let reserve = |want| billing::reserve(&db.pool, BudgetPeriod::Day, day, want, 10);
    assert_eq!(reserve(4).await.expect("reserve"), 4, "3 spent, 4 reserved");
    assert_eq!(reserve(4).await.expect("reserve"), 3, "cut to what is left");
    assert_eq!(
        reserve(4).await.expect("reserve"),
        0,
        "the budget is reached"
    );
    billing::give_back(&db.pool, BudgetPeriod::Day, day, 2)
        .await
        .expect("give back");
    assert_eq!(reserve(4).await.expect("reserve"), 2);
    // Another period has no row until it is opened.
    let month: DateTime<Utc> = sqlx::query_scalar("SELECT date_trunc('month', now(), 'UTC')")
        .fetch_one(&db.pool)
        .await
        .expect("this month");
    assert_eq!(
        billing::reserve(&db.pool, BudgetPeriod::Month, month, 4, 10)
            .await
            .expect("reserve"),
        0
    );
}
