//! The SQL contract as another service sees it: plain INSERTs and `followq.enqueue` from SQL,
//! the constraint names they get back, the NOTIFY on insert, and idempotent migrations.

use followq::states::JobState;
use sqlx::postgres::PgListener;

use crate::helpers::TestDb;

/// The constraint a failed statement violated. On Citus, where the error comes from the worker
/// that holds the shard, the name is in the message only, and a foreign key's carries the
/// shard's number as a suffix (`…_must_be_a_registered_account_102008`): the name is read from
/// the message there, without that suffix.
fn violated_constraint(error: sqlx::Error, on_citus: bool) -> String {
    let database = error.as_database_error();
    if let Some(name) = database.and_then(|e| e.constraint()) {
        return name.to_owned();
    }
    let message = database.map(|e| e.message().to_owned()).unwrap_or_default();
    let quoted = message
        .split_once("constraint \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name);
    match quoted {
        Some(name) if on_citus => name
            .rsplit_once('_')
            .filter(|(_, suffix)| suffix.bytes().all(|b| b.is_ascii_digit()))
            .map_or(name, |(base, _)| base)
            .to_owned(),
        _ => panic!("expected a constraint violation, got {error}"),
    }
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_reapply_as_a_no_op() {
    let db = TestDb::empty().await;
    followq::db::migrate(&db.pool).await.expect("first run");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM followq._sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    followq::db::migrate(&db.pool).await.expect("second run");
    let applied_again: i64 = sqlx::query_scalar("SELECT count(*) FROM followq._sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied, applied_again);
    assert!(applied >= 1);
    // sqlx's bookkeeping stays in our schema, apart from another sqlx user's public table.
    let public_table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations')::text")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(public_table, None);
}

#[tokio::test]
async fn the_readme_insert_is_idempotent_on_active_pairs() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    let insert = r#"
        INSERT INTO followq.follow_jobs (source_user_id, target_user_id)
        VALUES ($1, $2)
        ON CONFLICT (source_user_id, target_user_id) WHERE state IN ('queued', 'running')
        DO NOTHING
        RETURNING id"#;
    let first: Option<i64> = sqlx::query_scalar(insert)
        .bind("100")
        .bind("200")
        .fetch_optional(&db.pool)
        .await
        .unwrap();
    let second: Option<i64> = sqlx::query_scalar(insert)
        .bind("100")
        .bind("200")
        .fetch_optional(&db.pool)
        .await
        .unwrap();
    assert!(first.is_some());
    assert_eq!(second, None, "a repeated active pair inserts nothing");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM followq.follow_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn enqueue_function_returns_the_existing_id_until_the_job_finishes() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    let enqueue = "SELECT followq.enqueue('100', '200')";
    let first: i64 = sqlx::query_scalar(enqueue)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let again: i64 = sqlx::query_scalar(enqueue)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(first, again);

    let named: i64 = sqlx::query_scalar(
        "SELECT followq.enqueue(source_user_id => '100', target_user_id => '300', priority => 5)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_ne!(named, first);
    let priority: i32 =
        sqlx::query_scalar("SELECT priority FROM followq.follow_jobs WHERE id = $1")
            .bind(named)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(priority, 5);

    // Once finished, the same pair may be requested again (after an unfollow, say).
    sqlx::query(
        "UPDATE followq.follow_jobs SET state = 'succeeded', following = true, \
         pending_follow = false, finished_at = now() WHERE id = $1",
    )
    .bind(first)
    .execute(&db.pool)
    .await
    .unwrap();
    let after: i64 = sqlx::query_scalar(enqueue)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_ne!(after, first);
}

#[tokio::test]
async fn bad_rows_are_rejected_with_constraint_names_that_say_why() {
    let db = TestDb::new().await;
    let on_citus = db.on_citus().await;
    db.add_account("100").await;
    let cases = [
        (
            "12a",
            "200",
            "follow_jobs_source_user_id_must_be_1_to_19_digits",
        ),
        (
            "100",
            "",
            "follow_jobs_target_user_id_must_be_1_to_19_digits",
        ),
        (
            "100",
            "12345678901234567890",
            "follow_jobs_target_user_id_must_be_1_to_19_digits",
        ),
        ("100", "100", "follow_jobs_source_cannot_follow_itself"),
        (
            "999",
            "200",
            "follow_jobs_source_must_be_a_registered_account",
        ),
    ];
    for (source, target, expected) in cases {
        let plain = sqlx::query(
            "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) VALUES ($1, $2)",
        )
        .bind(source)
        .bind(target)
        .execute(&db.pool)
        .await
        .expect_err("plain insert must fail");
        assert_eq!(
            violated_constraint(plain, on_citus),
            expected,
            "{source} -> {target}"
        );

        let function = sqlx::query("SELECT followq.enqueue($1, $2)")
            .bind(source)
            .bind(target)
            .execute(&db.pool)
            .await
            .expect_err("enqueue must fail");
        assert_eq!(
            violated_constraint(function, on_citus),
            expected,
            "{source} -> {target}"
        );
    }
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM followq.follow_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(written, 0);
}

#[tokio::test]
async fn an_insert_notifies_the_documented_channel_with_the_source_id() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener
        .listen(followq::queue::JOB_ENQUEUED_CHANNEL)
        .await
        .unwrap();
    sqlx::query("SELECT followq.enqueue('100', '200')")
        .execute(&db.pool)
        .await
        .unwrap();
    let notification = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap();
    assert_eq!(notification.channel(), "followq_job_enqueued");
    assert_eq!(notification.payload(), "100");
}

/// The library's enqueue (`followq enqueue`, `queue::enqueue_batch`, `queue::enqueue`) wakes
/// the daemons of every account it gave a new job, on one Postgres and on Citus alike, for
/// accounts of every shard, and for a lone request as for a batch.
///
/// Guard: the enqueue statement's own `pg_notify` (`woken` in `store::enqueue`). Without it
/// no notification comes on Citus, where no trigger sends one (on one Postgres the trigger
/// still does).
#[tokio::test]
async fn the_librarys_enqueue_wakes_the_daemons_of_its_accounts() {
    use followq::ids::UserId;
    use followq::queue::{FollowRequest, enqueue, enqueue_batch};

    let db = TestDb::new().await;
    let accounts: Vec<String> = (0..8).map(|n| format!("{}", 300 + n)).collect();
    for account in &accounts {
        db.add_account(account).await;
    }
    let request = |source: &str, target: &str| FollowRequest {
        source: UserId::parse(source).unwrap(),
        target: UserId::parse(target).unwrap(),
        priority: 0,
        run_at: None,
        max_attempts: None,
    };
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener
        .listen(followq::queue::JOB_ENQUEUED_CHANNEL)
        .await
        .unwrap();
    let batch: Vec<FollowRequest> = accounts[1..]
        .iter()
        .flat_map(|account| [request(account, "900"), request(account, "901")])
        .collect();
    enqueue_batch(&db.pool, &batch).await.unwrap();
    enqueue(&db.pool, &request(&accounts[0], "900"))
        .await
        .unwrap();
    let mut woken = std::collections::BTreeSet::new();
    while woken.len() < accounts.len() {
        let notification =
            tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
                .await
                .unwrap_or_else(|_| panic!("no wake-up within 10 s; woken so far: {woken:?}"))
                .unwrap();
        woken.insert(notification.payload().to_owned());
    }
    assert_eq!(woken, accounts.iter().cloned().collect());
    if db.on_citus().await {
        let nodes: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT nodeport) FROM citus_shards \
             WHERE table_name = 'followq.follow_jobs'::regclass AND shardid IN \
               (SELECT get_shard_id_for_distribution_column('followq.follow_jobs', a) \
                FROM unnest($1::text[]) AS a)",
        )
        .bind(&accounts)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(nodes, 2, "the accounts are on both workers");
    }
}

/// `store::finished::announce_finished`, what the daemon and the operator commands call after
/// finishing jobs: on Citus it announces them in chunks of at most 50, in id order, with the
/// trigger's payload; on one Postgres it sends nothing (the trigger announced them already).
///
/// Guard: its `WHERE followq.routed_by_account()` (without it one Postgres gets every job
/// twice) and the function `followq.announce_finished`.
#[tokio::test]
async fn announcing_finished_jobs_sends_them_once_where_no_trigger_did() {
    use followq::store::finished::{FinishedJob, announce_finished};

    let db = TestDb::new().await;
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener
        .listen(followq::queue::JOB_FINISHED_CHANNEL)
        .await
        .unwrap();
    // Out of order, as a batch of outcomes comes.
    let jobs: Vec<FinishedJob> = (1..=110)
        .rev()
        .map(|id| FinishedJob {
            id,
            state: if id % 2 == 0 {
                JobState::Succeeded
            } else {
                JobState::Cancelled
            },
            source_user_id: "9223372036854775807".to_owned(),
            target_user_id: (1_000_000_000_000_000_000_i64 + id).to_string(),
        })
        .collect();
    announce_finished(&db.pool, &jobs).await.unwrap();
    let wait = std::time::Duration::from_millis(1500);
    if !db.on_citus().await {
        let any = tokio::time::timeout(wait, listener.recv()).await;
        assert!(
            any.is_err(),
            "one Postgres: the trigger's job only: {any:?}"
        );
        return;
    }
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let notification =
            tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
                .await
                .expect("a notification per chunk")
                .unwrap();
        assert!(notification.payload().len() < 8000);
        let payload: serde_json::Value = serde_json::from_str(notification.payload()).unwrap();
        let chunk = payload["jobs"].as_array().unwrap();
        sizes.push(chunk.len());
        for job in chunk {
            let id = job["id"].as_i64().unwrap();
            let expected = if id % 2 == 0 {
                "succeeded"
            } else {
                "cancelled"
            };
            assert_eq!(job["state"], expected);
            assert_eq!(job["source_user_id"], "9223372036854775807");
            assert_eq!(
                job["target_user_id"],
                (1_000_000_000_000_000_000_i64 + id).to_string()
            );
            ids.push(id);
        }
    }
    assert_eq!(sizes, [50, 50, 10]);
    assert_eq!(ids, (1..=110).collect::<Vec<i64>>());
    let more = tokio::time::timeout(wait, listener.recv()).await;
    assert!(more.is_err(), "a fourth notification: {more:?}");
}

#[tokio::test]
async fn the_next_ready_job_of_an_account_is_an_index_scan() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    sqlx::query(
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) \
         SELECT '100', g::text FROM generate_series(1000, 6000) AS g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE followq.follow_jobs")
        .execute(&db.pool)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM followq.follow_jobs \
         WHERE source_user_id = '100' AND state = 'queued' AND run_at <= now() \
         ORDER BY priority DESC, run_at, id LIMIT 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("follow_jobs_queued_by_account") && !plan.contains("Sort"),
        "{plan}"
    );
}

/// A statement that finishes many jobs at once announces them in chunks of at most 50, in id
/// order, each payload well under NOTIFY's 8000-byte limit; jobs that only change otherwise
/// are not announced.
///
/// Guard: the statement trigger `follow_jobs_notify_finished` (its chunking and its filter).
#[tokio::test]
async fn finishing_many_jobs_in_one_statement_announces_them_in_chunks() {
    let db = TestDb::new().await;
    if db.on_citus().await {
        // followq.distribute() drops the trigger there (README, "Scaling past one Postgres").
        let triggers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_trigger \
             WHERE tgrelid = 'followq.follow_jobs'::regclass AND NOT tgisinternal",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(triggers, 0, "a trigger on follow_jobs runs on the workers");
        return;
    }
    db.add_account("9223372036854775807").await;
    // The longest ids there are, for the largest payloads.
    sqlx::query(
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) \
         SELECT '9223372036854775807', (1000000000000000000 + g)::text \
         FROM generate_series(1, 120) AS g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener
        .listen(followq::queue::JOB_FINISHED_CHANNEL)
        .await
        .unwrap();
    // One statement cancels 110 jobs and only reschedules the other 10.
    sqlx::query(
        "UPDATE followq.follow_jobs SET \
           state = CASE WHEN id <= 110 THEN 'cancelled' ELSE state END, \
           finished_at = CASE WHEN id <= 110 THEN now() END, \
           run_at = now() + interval '1 hour'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let notification = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification per chunk")
            .unwrap();
        assert!(
            notification.payload().len() < 8000,
            "{}",
            notification.payload().len()
        );
        let payload: serde_json::Value = serde_json::from_str(notification.payload()).unwrap();
        let jobs = payload["jobs"].as_array().unwrap();
        sizes.push(jobs.len());
        for job in jobs {
            assert_eq!(job["state"], "cancelled");
            ids.push(job["id"].as_i64().unwrap());
        }
    }
    assert_eq!(sizes, [50, 50, 10]);
    assert_eq!(ids, (1..=110).collect::<Vec<i64>>());
    let more = tokio::time::timeout(std::time::Duration::from_millis(500), listener.recv()).await;
    assert!(more.is_err(), "a fourth notification: {more:?}");
}
