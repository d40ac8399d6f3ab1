//! The ledger is the truth of what X did: an outcome is written once however often its
//! statement runs, a request a reaper marked `abandoned` stays in flight until its
//! `answer_by`, and the live limiter, the ledger seed and the app's count agree on which
//! requests X may have acted on (`store::ledger`).

use std::time::Duration;

use chrono::Utc;
use followq::accounts::app_follows::AppFollows;
use followq::queue::{FollowRequest, enqueue};
use followq::store::claim::claim_batch;
use followq::store::daemons;
use followq::store::leases::{self, FollowGrid, ledger_seeds};
use followq::store::ledger::may_have_acted;
use followq::store::record::{
    AttemptRecord, Completion, NextState, record_and_claim, record_batch,
};
use followq::store::shards::Shards;

use crate::helpers::TestDb;

const WORKER: &str = "ledger-worker";

/// `account` registered with `jobs` queued jobs (targets 20000…), leased to `worker`.
async fn leased_account(db: &TestDb, account: &str, jobs: u64, worker: &str) {
    db.add_account(account).await;
    for target in 0..jobs {
        let request = FollowRequest::new(account, &(20_000 + target).to_string()).expect("ids");
        enqueue(&db.pool, &request).await.expect("enqueue");
    }
    lease(db, account, worker).await;
}

async fn lease(db: &TestDb, account: &str, worker: &str) {
    let leased = leases::acquire_named(
        &db.pool,
        &Shards::new(),
        worker,
        &[account.to_owned()],
        Duration::from_secs(60),
    )
    .await
    .expect("lease");
    assert_eq!(leased.len(), 1, "{account} leased to {worker}");
}

fn outcome(job_id: i64, attempt_id: i64, account: &str, next: NextState) -> Completion {
    let (status, kind) = match &next {
        NextState::Queued {
            rate_limited: true, ..
        } => (429, "rate_limited"),
        NextState::Queued { .. } => (503, "transient"),
        NextState::Succeeded { .. } => (200, "succeeded"),
        NextState::Failed => (404, "permanent"),
    };
    Completion {
        job_id,
        source_user_id: account.to_owned(),
        target_user_id: "20000".to_owned(),
        next,
        conclusive: false,
        error: None,
        attempt: AttemptRecord {
            attempt_id,
            http_status: Some(status),
            outcome: kind.to_owned(),
            ..AttemptRecord::default()
        },
    }
}

async fn counts(db: &TestDb, job_id: i64) -> (i32, i32) {
    sqlx::query_as("SELECT attempts, rate_limited_count FROM followq.follow_jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(&db.pool)
        .await
        .expect("job")
}

async fn ledger_rows(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM followq.attempts")
        .fetch_one(&db.pool)
        .await
        .expect("ledger")
}

/// Guard: the record statement writes a ledger row only while it has no final answer
/// (`record_ctes!`'s `ledger`, which the job update and the claim follow). Run again for the
/// same outcome, as after a commit whose reply was lost, it counts no attempt and no 429 a
/// second time, and the record-and-claim statement claims nothing new.
#[tokio::test]
async fn an_outcome_recorded_twice_is_counted_once_and_claims_nothing_new() {
    let db = TestDb::new().await;
    leased_account(&db, "700", 1, WORKER).await;
    leased_account(&db, "701", 3, WORKER).await;
    let within = Duration::from_secs(30);

    // A 429: its snooze is counted once.
    let job = claim_batch(&db.pool, WORKER, &["700".to_owned()], within)
        .await
        .expect("claim")
        .remove(0);
    let snooze = outcome(
        job.id,
        job.attempt_id,
        "700",
        NextState::Queued {
            run_at: Utc::now(),
            refund_attempt: true,
            rate_limited: true,
        },
    );
    assert_eq!(
        record_batch(&db.pool, std::slice::from_ref(&snooze))
            .await
            .expect("record"),
        vec![job.id]
    );
    assert_eq!(counts(&db, job.id).await, (0, 1));
    assert!(
        record_batch(&db.pool, &[snooze])
            .await
            .expect("replay")
            .is_empty(),
        "a replay writes nothing"
    );
    assert_eq!(counts(&db, job.id).await, (0, 1), "no second 429 counted");

    // A 503 with the claim of another account's next job: the attempt is counted once, and
    // the replay claims nothing.
    let job = claim_batch(&db.pool, WORKER, &["700".to_owned()], within)
        .await
        .expect("claim again")
        .remove(0);
    let retry = outcome(
        job.id,
        job.attempt_id,
        "700",
        NextState::Queued {
            run_at: Utc::now(),
            refund_attempt: false,
            rate_limited: false,
        },
    );
    let first = record_and_claim(
        &db.pool,
        std::slice::from_ref(&retry),
        WORKER,
        &["701".to_owned()],
        within,
    )
    .await
    .expect("record and claim");
    assert_eq!(first.recorded, vec![job.id]);
    assert_eq!(first.claimed.len(), 1, "701's first job claimed");
    assert_eq!(counts(&db, job.id).await, (1, 1));
    let rows = ledger_rows(&db).await;
    let replay = record_and_claim(&db.pool, &[retry], WORKER, &["701".to_owned()], within)
        .await
        .expect("replay");
    assert!(replay.recorded.is_empty());
    assert!(replay.claimed.is_empty(), "a replay claims nothing");
    assert_eq!(
        counts(&db, job.id).await,
        (1, 1),
        "no second attempt counted"
    );
    assert_eq!(
        ledger_rows(&db).await,
        rows,
        "no request added to the ledger"
    );
}

/// Guard: a request whose daemon a peer reaped (its ledger row marked `abandoned`) may still
/// reach X until its `answer_by`: the claim does not pick its job again before then
/// (`claim_ctes!`), and `followq.jobs_in_flight` lists it.
#[tokio::test]
async fn a_reaped_request_still_in_the_air_is_in_flight_until_its_answer_by() {
    let db = TestDb::new().await;
    const GONE: &str = "gone-daemon";
    leased_account(&db, "710", 1, GONE).await;
    let job = claim_batch(&db.pool, GONE, &["710".to_owned()], Duration::from_secs(30))
        .await
        .expect("claim")
        .remove(0);
    // The daemon's liveness session ended (no backend has this pid) while its request is
    // in the air; a peer finds it gone.
    sqlx::query(
        "INSERT INTO followq.daemons (worker_id, session_pid, session_started_at) \
         VALUES ($1, 2147483647, now())",
    )
    .bind(GONE)
    .execute(&db.pool)
    .await
    .expect("registry row");
    let reaped = daemons::reap(&db.pool, WORKER, Duration::from_secs(60))
        .await
        .expect("reap");
    assert_eq!(reaped.daemons, vec![GONE.to_owned()]);
    let outcome: Option<String> =
        sqlx::query_scalar("SELECT outcome FROM followq.attempts WHERE id = $1")
            .bind(job.attempt_id)
            .fetch_one(&db.pool)
            .await
            .expect("ledger row");
    assert_eq!(outcome.as_deref(), Some("abandoned"));

    let in_flight: Vec<(i64, String)> =
        sqlx::query_as("SELECT job_id, worker_id FROM followq.jobs_in_flight")
            .fetch_all(&db.pool)
            .await
            .expect("view");
    assert_eq!(in_flight, vec![(job.id, GONE.to_owned())]);

    lease(&db, "710", WORKER).await;
    let again = claim_batch(
        &db.pool,
        WORKER,
        &["710".to_owned()],
        Duration::from_secs(30),
    )
    .await
    .expect("claim");
    assert!(
        again.is_empty(),
        "claimed a job still in the air: {again:?}"
    );

    // Once its answer_by has passed, the job is claimed again.
    sqlx::query("UPDATE followq.attempts SET answer_by = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .expect("answer_by passed");
    let again = claim_batch(
        &db.pool,
        WORKER,
        &["710".to_owned()],
        Duration::from_secs(30),
    )
    .await
    .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, job.id);
}

/// What a ledger row may say, as the client classifies answers: (outcome, HTTP status).
const ANSWERS: &[(Option<&str>, Option<i16>)] = &[
    (None, None),
    (Some("abandoned"), None),
    (Some("succeeded"), Some(200)),
    // A 200 with errors[] and no data: X answered 2xx, it may have acted.
    (Some("permanent"), Some(200)),
    (Some("transient"), Some(500)),
    (Some("transient"), Some(503)),
    // A timeout, a connection lost after sending, a body cut short.
    (Some("transient"), None),
    (Some("transient"), Some(200)),
    (Some("not_sent"), None),
    (Some("rate_limited"), Some(429)),
    (Some("usage_capped"), Some(429)),
    (Some("unauthorized"), Some(401)),
    (Some("app_forbidden"), Some(403)),
    (Some("daily_cap"), Some(403)),
    (Some("permanent"), Some(400)),
    (Some("permanent"), Some(402)),
    (Some("permanent"), Some(403)),
    (Some("permanent"), Some(404)),
];

/// Guard: one definition of a request X may have acted on (`store::ledger`). For every kind
/// of answer, the live limiter's rule (`may_have_acted`), the account's ledger seed
/// (`ledger_seeds`' follows) and the app's count (`AppFollows`) agree: 2xx, 5xx, no answer
/// and abandoned count, a 4xx or a request never sent does not.
#[tokio::test]
async fn the_live_limiter_the_seed_and_the_app_count_agree_on_what_x_may_have_done() {
    let db = TestDb::new().await;
    db.add_account("720").await;
    let mut counted = 0;
    for &(outcome, status) in ANSWERS {
        sqlx::query("DELETE FROM followq.attempts")
            .execute(&db.pool)
            .await
            .expect("clear");
        sqlx::query(
            r#"
            INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at,
                completed_at, answer_by, outcome, http_status)
            VALUES (0, '720', 'w', now() - interval '10 minutes',
                    CASE WHEN $1::text IS NULL THEN NULL ELSE now() - interval '10 minutes' END,
                    now() - interval '10 minutes' + interval '3 seconds', $1, $2)
            "#,
        )
        .bind(outcome)
        .bind(status)
        .execute(&db.pool)
        .await
        .expect("ledger row");
        let live = may_have_acted(outcome, status);
        let seed = ledger_seeds(
            &db.pool,
            &["720".to_owned()],
            &[900.0],
            &[50],
            Duration::from_secs(3),
            FollowGrid {
                origin_ago: Duration::ZERO,
                width: Duration::from_secs(900),
            },
        )
        .await
        .expect("seed")
        .remove(0);
        let seeded: i32 = seed.follow_counts.iter().sum();
        let app = AppFollows::default()
            .refresh(&db.pool, 1000, Duration::from_secs(3))
            .await
            .expect("app count")
            .follows;
        assert_eq!(
            (seeded, app),
            (i32::from(live), u64::from(live)),
            "{outcome:?} {status:?}: live limiter {live}, seed {seeded}, app {app}"
        );
        counted += i32::from(live);
    }
    // The kinds X may have acted on: unanswered, abandoned, 2xx (two), 5xx (two), no status
    // (one), a 200 cut short (one).
    assert_eq!(counted, 8);
}
