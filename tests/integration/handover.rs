//! The statements a handover rests on, against known rows: the claim writes `answer_by`, a
//! job left without an answer stays queued and says why, a late conclusive answer still
//! settles its job, and the ledger seed reads what a successor must count.

use std::time::Duration;

use followq::queue::{FollowRequest, enqueue};
use followq::store::claim::claim_batch;
use followq::store::leases::{self, FollowGrid, ledger_seeds};
use followq::store::record::{AttemptRecord, Completion, NextState, record_batch};
use followq::store::shards::Shards;
use followq::store::unanswered::{Which, note_unanswered};

use crate::helpers::TestDb;

const WORKER: &str = "test-worker";

/// An account leased to `WORKER` with `jobs` queued jobs.
async fn leased_account(db: &TestDb, account: &str, jobs: u64) {
    db.add_account(account).await;
    for target in 0..jobs {
        let request = FollowRequest::new(account, &(10_000 + target).to_string()).expect("ids");
        enqueue(&db.pool, &request).await.expect("enqueue");
    }
    let leased = leases::acquire_named(
        &db.pool,
        &Shards::new(),
        WORKER,
        &[account.to_owned()],
        Duration::from_secs(60),
    )
    .await
    .expect("lease");
    assert_eq!(leased.len(), 1);
}

#[tokio::test]
async fn a_claim_records_until_when_its_request_may_reach_x() {
    let db = TestDb::new().await;
    leased_account(&db, "100", 1).await;
    let claimed = claim_batch(
        &db.pool,
        WORKER,
        &["100".to_owned()],
        Duration::from_secs(7),
    )
    .await
    .expect("claim");
    assert_eq!(claimed.len(), 1);
    let ahead: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM answer_by - sent_at)::float8 FROM followq.attempts",
    )
    .fetch_one(&db.pool)
    .await
    .expect("ledger row");
    assert!(
        (ahead - 7.0).abs() < 0.01,
        "answer_by is {ahead} s after the claim"
    );
}

/// Guard: a claim never picks a job whose request may still reach X (`claim_ctes!`'s
/// `NOT EXISTS` on the ledger), whatever the caller believes: claimed again before its answer is
/// recorded, the account gets its next job; once the answer is recorded, or once `answer_by`
/// has passed without one, the job may be claimed again.
#[tokio::test]
async fn a_job_in_flight_is_never_claimed_twice() {
    let db = TestDb::new().await;
    leased_account(&db, "100", 2).await;
    let account = ["100".to_owned()];
    let claim = |within: Duration| claim_batch(&db.pool, WORKER, &account, within);
    let first = claim(Duration::from_secs(30)).await.expect("claim");
    assert_eq!(first.len(), 1);
    let second = claim(Duration::from_secs(30)).await.expect("claim");
    assert_eq!(second.len(), 1);
    assert_ne!(
        second[0].id, first[0].id,
        "the job in flight was claimed a second time"
    );
    // Both in flight now: nothing left to claim.
    assert!(
        claim(Duration::from_secs(30))
            .await
            .expect("claim")
            .is_empty()
    );

    // The first one's request can no longer reach X: it may go again.
    sqlx::query(
        "UPDATE followq.attempts SET answer_by = now() - interval '1 second' WHERE job_id = $1",
    )
    .bind(first[0].id)
    .execute(&db.pool)
    .await
    .expect("answer_by passed");
    let again = claim(Duration::from_secs(30)).await.expect("claim");
    assert_eq!(
        again.iter().map(|job| job.id).collect::<Vec<_>>(),
        vec![first[0].id]
    );
}

/// Guards: the schema refuses a job stored `running` (a job in flight stays `queued`), and
/// `note_unanswered` says why a daemon left a request without an answer, whatever the job's
/// attempts, without failing it or touching its ledger row (it counts until its `answer_by`).
#[tokio::test]
async fn a_job_left_without_an_answer_stays_queued_and_says_why() {
    let db = TestDb::new().await;
    leased_account(&db, "200", 1).await;
    let refused = sqlx::query("UPDATE followq.follow_jobs SET state = 'running'")
        .execute(&db.pool)
        .await
        .expect_err("running is not a state a job is stored in");
    assert!(
        refused
            .to_string()
            .contains("follow_jobs_state_must_be_a_known_state"),
        "{refused}"
    );
    // The job's last attempt is in the air.
    sqlx::query("UPDATE followq.follow_jobs SET attempts = 0, max_attempts = 1")
        .execute(&db.pool)
        .await
        .expect("one attempt");
    let claimed = claim_batch(
        &db.pool,
        WORKER,
        &["200".to_owned()],
        Duration::from_secs(30),
    )
    .await
    .expect("claim");
    assert_eq!(claimed.len(), 1);
    let noted = note_unanswered(&db.pool, WORKER, Which::All, "the daemon stopped")
        .await
        .expect("note");
    assert_eq!(noted, 1);
    let (state, kind): (String, String) =
        sqlx::query_as("SELECT state, last_error->>'kind' FROM followq.follow_jobs")
            .fetch_one(&db.pool)
            .await
            .expect("job");
    assert_eq!((state.as_str(), kind.as_str()), ("queued", "abandoned"));
    let outcome: Option<String> = sqlx::query_scalar("SELECT outcome FROM followq.attempts")
        .fetch_one(&db.pool)
        .await
        .expect("ledger row");
    assert_eq!(outcome, None, "the ledger row keeps no answer");
    // Another daemon's requests are not this one's to note.
    assert_eq!(
        note_unanswered(&db.pool, "another", Which::All, "x")
            .await
            .expect("note"),
        0
    );
}

fn answer(job_id: i64, attempt_id: i64, next: NextState, conclusive: bool) -> Completion {
    Completion {
        job_id,
        source_user_id: "300".into(),
        target_user_id: "10000".into(),
        next,
        conclusive,
        error: None,
        attempt: AttemptRecord {
            attempt_id,
            http_status: Some(200),
            outcome: "succeeded".into(),
            ..AttemptRecord::default()
        },
    }
}

/// Guard: the late-answer branch of `record_batch`. An answer that arrives after the job was
/// claimed again is recorded in the ledger always, and settles the job when it is conclusive.
#[tokio::test]
async fn a_late_answer_is_recorded_and_a_conclusive_one_settles_its_job() {
    let db = TestDb::new().await;
    leased_account(&db, "300", 2).await;
    let claimed = claim_batch(
        &db.pool,
        WORKER,
        &["300".to_owned()],
        Duration::from_secs(3),
    )
    .await
    .expect("claim");
    let first = claimed[0].clone();
    // Its answer_by passes with no answer: the account's holder claims the job again, twice.
    let pass_answer_by = |attempt_id: i64| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "UPDATE followq.attempts SET answer_by = now() - interval '1 second' WHERE id = $1",
            )
            .bind(attempt_id)
            .execute(&pool)
            .await
            .expect("answer_by passed");
        }
    };
    pass_answer_by(first.attempt_id).await;
    let account = ["300".to_owned()];
    let claim_again = || claim_batch(&db.pool, WORKER, &account, Duration::from_secs(3));
    let second = claim_again().await.expect("claim again");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first.id, "the same job, claimed again");
    pass_answer_by(second[0].attempt_id).await;
    let third = claim_again().await.expect("claim a third time");
    assert_eq!(third[0].id, first.id);

    // An inconclusive late answer (a 503) to the first request changes only the ledger.
    let mut inconclusive = answer(
        first.id,
        first.attempt_id,
        NextState::Queued {
            run_at: chrono::Utc::now(),
            refund_attempt: false,
            rate_limited: false,
        },
        false,
    );
    inconclusive.attempt.outcome = "transient".into();
    inconclusive.attempt.http_status = Some(503);
    let updated = record_batch(&db.pool, &[inconclusive])
        .await
        .expect("record");
    assert!(updated.is_empty(), "the job was not this daemon's any more");
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM followq.attempts WHERE id = $1")
        .bind(first.attempt_id)
        .fetch_one(&db.pool)
        .await
        .expect("ledger row");
    assert_eq!(outcome, "transient", "the late answer is in the ledger");

    // A conclusive one to the second request (the follow was made) settles the job.
    let conclusive = answer(
        first.id,
        second[0].attempt_id,
        NextState::Succeeded {
            following: true,
            pending_follow: false,
        },
        true,
    );
    let updated = record_batch(&db.pool, &[conclusive]).await.expect("record");
    assert_eq!(updated, vec![first.id]);
    let state: String = sqlx::query_scalar("SELECT state FROM followq.follow_jobs WHERE id = $1")
        .bind(first.id)
        .fetch_one(&db.pool)
        .await
        .expect("job");
    assert_eq!(state, "succeeded");
}

/// A ledger row to insert: sent, completed and answer_by (seconds from now), outcome, and the
/// rate-limit headers' limit and remaining.
type LedgerRow = (
    f64,
    Option<f64>,
    Option<f64>,
    Option<&'static str>,
    Option<i32>,
    Option<i32>,
);

/// Guard: `ledger_seeds`, row by row: answered requests count at their answer, unanswered
/// ones at their `answer_by` (and hold the account until then), `not_sent` ones not at all,
/// and nothing before the last answer that opened a window; the follows in bins of the grid
/// asked for, each with the expiry of its last follow (an abandoned row at its `answer_by`,
/// not at the rescue that marked it: counted at its `completed_at`, it fell into the first
/// bin).
#[tokio::test]
async fn the_ledger_seed_counts_what_a_successor_must() {
    let db = TestDb::new().await;
    db.add_account("400").await;
    // Times relative to now, in seconds: (sent, completed, answer_by, outcome, limit, remaining).
    // Each row is its own statement, so "now" moves a little between them: compare to 0.5 s.
    let rows: [LedgerRow; 6] = [
        // Before the window that the next row opened: forgotten.
        (-50.0, Some(-49.0), None, Some("succeeded"), None, None),
        // Opened a window (remaining = limit - 1).
        (
            -40.0,
            Some(-39.0),
            None,
            Some("succeeded"),
            Some(5),
            Some(4),
        ),
        (-30.0, Some(-29.0), None, Some("succeeded"), None, None),
        // Never sent: not counted.
        (
            -20.0,
            Some(-20.0),
            Some(-18.0),
            Some("not_sent"),
            None,
            None,
        ),
        // Abandoned by a daemon that died: counts at its answer_by.
        (-10.0, Some(-9.0), Some(5.0), Some("abandoned"), None, None),
        // In flight: counts at its answer_by, and holds the account until then.
        (-1.0, None, Some(8.0), None, None, None),
    ];
    for (sent, completed, answer_by, outcome, limit, remaining) in rows {
        sqlx::query(
            r#"
            INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at,
                completed_at, answer_by, outcome, rate_limit_limit, rate_limit_remaining,
                rate_limit_reset_at)
            VALUES (0, '400', 'old', now() + make_interval(secs => $1),
                    now() + make_interval(secs => $2), now() + make_interval(secs => $3),
                    $4, $5, $6, CASE WHEN $5 IS NOT NULL THEN now() + interval '60 seconds' END)
            "#,
        )
        .bind(sent)
        .bind(completed)
        .bind(answer_by)
        .bind(outcome)
        .bind(limit)
        .bind(remaining)
        .execute(&db.pool)
        .await
        .expect("ledger row");
    }
    let seed_on = |origin_ago: u64| {
        let pool = db.pool.clone();
        async move {
            let grid = FollowGrid {
                origin_ago: Duration::from_secs(origin_ago),
                width: Duration::from_secs(100),
            };
            let seeds = ledger_seeds(
                &pool,
                &["400".to_owned()],
                &[100.0],
                &[5],
                Duration::from_secs(3),
                grid,
            )
            .await
            .expect("seed");
            seeds.into_iter().next().expect("the account's row")
        }
    };
    let seed = &seed_on(0).await;
    let rounded: Vec<i64> = seed
        .arrivals_ago
        .iter()
        .map(|ago| ago.round() as i64)
        .collect();
    assert_eq!(
        rounded,
        vec![-8, -5, 29, 39],
        "newest first: the in-flight and abandoned rows at their answer_by, the answers at their time"
    );
    let outstanding = seed.outstanding_for.expect("an unanswered request");
    assert!((outstanding - 8.0).abs() < 0.5, "{outstanding}");
    assert_eq!(seed.report_limit, Some(5));
    assert_eq!(seed.report_remaining, Some(4));
    assert_eq!(
        seed.report_sent_since,
        Some(3),
        "three requests went out after the reported answer (the not_sent one did not)"
    );
    let ends_in = seed.report_ends_in.expect("the window it opened");
    assert!(
        (ends_in - 61.0).abs() < 0.5,
        "one period after the opening answer: {ends_in}"
    );
    // Every follow that may have happened: the three answered ones, the abandoned and the
    // in-flight one, expiring a day after their answer or answer_by (seconds from now:
    // 86351, 86361, 86371; 86405, 86408). Bins of 100 s from now: [86300, 86400) and
    // [86400, 86500).
    let rounded =
        |expire_in: &[f64]| -> Vec<i64> { expire_in.iter().map(|s| s.round() as i64).collect() };
    assert_eq!(seed.follow_counts, vec![3, 2]);
    assert_eq!(rounded(&seed.follows_expire_in), vec![86371, 86408]);
    // The grid moved 30 s earlier: [86270, 86370) and [86370, 86470).
    let shifted = seed_on(30).await;
    assert_eq!(shifted.follow_counts, vec![2, 3]);
    assert_eq!(rounded(&shifted.follows_expire_in), vec![86361, 86408]);
}

/// Guard: the seed's aggregation of follows (`ledger_seeds`): a full day of 400 follows comes
/// back as at most one count per 15-minute bin (97: a day of bins, one more for the grid's
/// offset), summing to 400, each bin expiring within the next day; follows older than a day
/// and refused requests not at all.
#[tokio::test]
async fn the_ledger_seed_sums_a_day_of_follows_per_bin() {
    let db = TestDb::new().await;
    db.add_account("401").await;
    sqlx::query(
        r#"
        INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at, completed_at,
                                      answer_by, outcome, http_status)
        SELECT 0, '401', 'old', at, at + interval '100 milliseconds', at + interval '17 seconds',
               CASE WHEN g <= 400 THEN 'succeeded' ELSE 'permanent' END,
               CASE WHEN g <= 400 THEN 200 ELSE 403 END
        FROM generate_series(1, 450) AS g,
             LATERAL (SELECT now() - interval '24 hours' + interval '30 seconds'
                             + (g % 400) * interval '216 seconds' AS at) AS t
        UNION ALL
        SELECT 0, '401', 'old', now() - interval '25 hours', now() - interval '25 hours',
               NULL, 'succeeded', 200
        "#,
    )
    .execute(&db.pool)
    .await
    .expect("a day of ledger rows");
    let seeds = ledger_seeds(
        &db.pool,
        &["401".to_owned()],
        &[900.0],
        &[50],
        Duration::from_secs(17),
        FollowGrid {
            origin_ago: Duration::from_secs(123),
            width: Duration::from_secs(900),
        },
    )
    .await
    .expect("seed");
    let seed = &seeds[0];
    assert!(
        (96..=97).contains(&seed.follow_counts.len()),
        "{} bins",
        seed.follow_counts.len()
    );
    assert_eq!(seed.follow_counts.iter().sum::<i32>(), 400);
    assert!(
        seed.follows_expire_in
            .iter()
            .all(|&s| s > 0.0 && s <= 86_400.0),
        "{:?}",
        seed.follows_expire_in
    );
    assert!(
        seed.follows_expire_in.windows(2).all(|w| w[0] < w[1]),
        "soonest first"
    );
}
