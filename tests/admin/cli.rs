//! The operator commands through the binary: exit codes (0 done, 1 refused, 2 malformed
//! input), what they print, and that every --json output parses.

use serde_json::{Value, json};

use crate::support::*;

fn json_of(output: &std::process::Output) -> Value {
    assert!(output.status.success(), "{}", describe(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(output)))
}

fn assert_exit(output: &std::process::Output, code: i32, stderr_has: &str) {
    assert_eq!(output.status.code(), Some(code), "{}", describe(output));
    assert!(stderr(output).contains(stderr_has), "{}", describe(output));
}

#[tokio::test]
async fn status_prints_every_section_and_json_for_scripts() {
    let db = db_with_accounts().await;
    let id = enqueue(&db.pool, "100", "200").await;
    attempt(&db.pool, id, "100", Some("succeeded"), Some(200), 5.0).await;
    let out = db.followq(&["accounts", "pause", "101", "--for", "1h"], "", &[]);
    assert!(out.status.success(), "{}", describe(&out));

    let text = db.followq(&["status"], "", &[]);
    assert!(text.status.success(), "{}", describe(&text));
    let text = stdout(&text);
    for needle in [
        "Queue",
        "oldest: job",
        "Requests sent",
        "succeeded",
        "App-wide stop: none",
        "Paused accounts (1)",
        "operator (paused by an operator)",
        "Accounts needing re-authorization: none",
        "Live daemons: none",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    let report = json_of(&db.followq(&["status", "--json"], "", &[]));
    assert_eq!(report["queue"]["queued_ready"], json!(1));
    assert_eq!(report["oldest_ready"]["job_id"], json!(id));
    assert_eq!(report["throughput"]["total"], json!([1, 1, 1]));
    assert_eq!(report["paused_accounts"][0]["user_id"], json!("101"));
    assert_eq!(report["app_pause"], Value::Null);
}

#[tokio::test]
async fn jobs_show_and_list_in_text_and_json() {
    let db = db_with_accounts().await;
    let id = enqueue(&db.pool, "100", "200").await;
    attempt(&db.pool, id, "100", Some("transient"), Some(503), 5.0).await;
    make_failed(&db.pool, id, 1, json!({"kind": "transient", "status": 503})).await;
    let other = enqueue(&db.pool, "101", "200").await;

    let show = db.followq(&["jobs", "show", &id.to_string()], "", &[]);
    assert!(show.status.success(), "{}", describe(&show));
    let text = stdout(&show);
    assert!(
        text.starts_with(&format!("job {id}: 100 follows 200, failed")),
        "{text}"
    );
    assert!(text.contains("why:        failed at"), "{text}");
    assert!(text.contains("requests (1)"), "{text}");
    assert!(text.contains("503"), "{text}");

    let detail = json_of(&db.followq(&["jobs", "show", &id.to_string(), "--json"], "", &[]));
    assert_eq!(detail["job"]["state"], json!("failed"));
    assert_eq!(detail["attempts"][0]["http_status"], json!(503));
    assert!(detail["why"].as_str().unwrap().starts_with("failed"));

    let list = db.followq(&["jobs", "list"], "", &[]);
    let text = stdout(&list);
    assert!(
        text.lines().next().unwrap().starts_with("ID  STATE"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3, "{text}");
    let failed = json_of(&db.followq(&["jobs", "list", "--state", "failed", "--json"], "", &[]));
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["id"], json!(id));
    let of_101 = json_of(&db.followq(&["jobs", "list", "--source", "101", "--json"], "", &[]));
    assert_eq!(of_101[0]["id"], json!(other));
    let page = db.followq(&["jobs", "list", "--limit", "1"], "", &[]);
    assert!(
        stdout(&page).contains(&format!("--after {id}")),
        "{}",
        describe(&page)
    );
    let none = db.followq(&["jobs", "list", "--state", "running"], "", &[]);
    assert_eq!(stdout(&none), "no jobs match\n");
}

#[tokio::test]
async fn jobs_commands_reject_malformed_input_with_exit_2_and_refusals_with_exit_1() {
    let db = db_with_accounts().await;
    let queued = enqueue(&db.pool, "100", "200").await;
    let running = enqueue(&db.pool, "100", "201").await;
    make_running(&db.pool, running, "host-a").await;

    for bad in ["abc", "0", "1.5", "99999999999999999999"] {
        let out = db.followq(&["jobs", "show", bad], "", &[]);
        assert_exit(&out, 2, "must be a positive integer");
    }
    // clap reads a leading '-' as an option: still a usage error.
    assert_exit(&db.followq(&["jobs", "show", "-3"], "", &[]), 2, "'-3'");
    assert_exit(
        &db.followq(&["jobs", "list", "--state", "done"], "", &[]),
        2,
        "unknown job state",
    );
    assert_exit(
        &db.followq(&["jobs", "list", "--source", "12a"], "", &[]),
        2,
        "digits",
    );
    assert_exit(
        &db.followq(&["jobs", "list", "--limit", "0"], "", &[]),
        1,
        "--limit must be",
    );
    assert_exit(&db.followq(&["jobs", "retry"], "", &[]), 2, "required");
    assert_exit(
        &db.followq(&["jobs", "retry", "1", "--state", "failed"], "", &[]),
        2,
        "cannot be used with",
    );
    assert_exit(&db.followq(&["jobs", "cancel"], "", &[]), 2, "required");

    assert_exit(
        &db.followq(&["jobs", "show", "999"], "", &[]),
        1,
        "job 999 does not exist",
    );
    assert_exit(
        &db.followq(&["jobs", "retry", &queued.to_string()], "", &[]),
        1,
        &format!("job {queued} is queued: only failed or cancelled jobs can be retried"),
    );
    assert_exit(
        &db.followq(&["jobs", "retry", "--state", "running"], "", &[]),
        1,
        "only failed or cancelled jobs can be retried",
    );
    assert_exit(
        &db.followq(&["jobs", "cancel", &running.to_string()], "", &[]),
        1,
        &format!("job {running} is running on daemon host-a"),
    );
    assert_exit(
        &db.followq(&["jobs", "cancel", "--source", "555"], "", &[]),
        1,
        "account 555 is not registered",
    );
    assert_eq!(state_of(&db.pool, running).await, "running");
    assert_eq!(state_of(&db.pool, queued).await, "queued");
}

#[tokio::test]
async fn jobs_retry_and_cancel_say_what_they_changed() {
    let db = db_with_accounts().await;
    let a = enqueue(&db.pool, "100", "200").await;
    let b = enqueue(&db.pool, "100", "201").await;
    let running = enqueue(&db.pool, "100", "202").await;
    make_running(&db.pool, running, "host-a").await;

    let out = db.followq(&["jobs", "cancel", &a.to_string()], "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), format!("job {a}: queued -> cancelled\n"));

    let out = db.followq(&["jobs", "cancel", "--source", "100"], "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "cancelled 1 queued job(s) of account 100: queued -> cancelled\n\
         left 1 running job(s) of account 100 alone: their requests may be in flight\n"
    );
    assert_eq!(state_of(&db.pool, b).await, "cancelled");

    let out = db.followq(&["jobs", "retry", &a.to_string()], "", &[]);
    assert_eq!(
        stdout(&out),
        format!("job {a}: cancelled -> queued\n"),
        "{}",
        describe(&out)
    );
    let out = db.followq(
        &["jobs", "retry", "--state", "cancelled", "--source", "100"],
        "",
        &[],
    );
    assert_eq!(
        stdout(&out),
        "retried 1 cancelled job(s) of account 100: cancelled -> queued\n",
        "{}",
        describe(&out)
    );
    assert_eq!(state_of(&db.pool, b).await, "queued");
}

#[tokio::test]
async fn accounts_list_show_pause_resume_disable() {
    let db = db_with_accounts().await;
    enqueue(&db.pool, "100", "200").await;

    let out = db.followq(&["accounts", "pause", "100", "--for", "30m"], "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).starts_with("account 100: active -> paused until "),
        "{}",
        describe(&out)
    );
    let out = db.followq(
        &[
            "accounts",
            "pause",
            "101",
            "--until",
            "2999-01-01T00:00:00Z",
        ],
        "",
        &[],
    );
    assert_eq!(
        stdout(&out),
        "account 101: active -> paused until 2999-01-01 00:00:00 UTC\n",
        "{}",
        describe(&out)
    );

    let list = db.followq(&["accounts", "list"], "", &[]);
    let text = stdout(&list);
    assert!(text.starts_with("ACCOUNT  AUTH"), "{text}");
    assert!(text.contains("operator"), "{text}");
    let paused = json_of(&db.followq(
        &["accounts", "list", "--status", "paused", "--json"],
        "",
        &[],
    ));
    assert_eq!(paused.as_array().unwrap().len(), 2);
    assert_eq!(paused[0]["queued"], json!(1));

    let show = db.followq(&["accounts", "show", "100"], "", &[]);
    let text = stdout(&show);
    assert!(
        text.starts_with("account 100 (oauth2): paused"),
        "{}",
        describe(&show)
    );
    assert!(
        text.contains("credentials: oauth2 with refresh token"),
        "{text}"
    );
    assert!(
        !text.contains("test-access-100") && !text.contains("test-refresh-100"),
        "{text}"
    );
    let detail = json_of(&db.followq(&["accounts", "show", "100", "--json"], "", &[]));
    assert_eq!(detail["account"]["pause_reason"], json!("operator"));
    assert_eq!(detail["credentials"]["kind"], json!("oauth2"));
    assert!(!detail.to_string().contains("test-access-100"));

    let out = db.followq(&["accounts", "resume", "100"], "", &[]);
    assert_eq!(
        stdout(&out),
        "account 100: paused -> active\n",
        "{}",
        describe(&out)
    );
    let out = db.followq(&["accounts", "disable", "100"], "", &[]);
    assert!(
        stdout(&out)
            .starts_with("account 100: active -> disabled; its 1 queued job(s) stay queued"),
        "{}",
        describe(&out)
    );
    assert_exit(
        &db.followq(&["accounts", "disable", "100"], "", &[]),
        1,
        "account 100 is disabled: already disabled",
    );
}

#[tokio::test]
async fn accounts_commands_reject_bad_input() {
    let db = db_with_accounts().await;
    assert_exit(
        &db.followq(&["accounts", "show", "12a"], "", &[]),
        2,
        "digits",
    );
    assert_exit(
        &db.followq(&["accounts", "show", "555"], "", &[]),
        1,
        "account 555 is not registered",
    );
    assert_exit(
        &db.followq(&["accounts", "resume", "100"], "", &[]),
        1,
        "account 100 is active: nothing to resume",
    );
    assert_exit(
        &db.followq(
            &[
                "accounts",
                "pause",
                "100",
                "--for",
                "10m",
                "--until",
                "2999-01-01T00:00:00Z",
            ],
            "",
            &[],
        ),
        2,
        "cannot be used with",
    );
    assert_exit(
        &db.followq(&["accounts", "pause", "100", "--for", "soon"], "", &[]),
        2,
        "--for",
    );
    assert_exit(
        &db.followq(
            &[
                "accounts",
                "pause",
                "100",
                "--until",
                "2000-01-01T00:00:00Z",
            ],
            "",
            &[],
        ),
        1,
        "the pause must end in the future",
    );
    assert_exit(
        &db.followq(&["accounts", "list", "--status", "sleeping"], "", &[]),
        2,
        "unknown account status",
    );
}

#[tokio::test]
async fn resume_clears_needs_reauth_once_new_tokens_are_stored() {
    let db = db_with_accounts().await;
    followq::store::pauses::mark_needs_reauth(&db.pool, "100", "X refused the token twice")
        .await
        .unwrap();
    sqlx::query("DELETE FROM followq.account_credentials WHERE user_id = '100'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_exit(
        &db.followq(&["accounts", "resume", "100"], "", &[]),
        1,
        "needs re-authorization and has no credentials stored",
    );
    // Tokens written by another tool straight into the table (accounts add would also have
    // cleared the status by itself).
    sqlx::query(
        "INSERT INTO followq.account_credentials (user_id, oauth2_access_token, updated_at) \
         VALUES ('100', 'new-secret-token', now() + interval '1 second')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let out = db.followq(&["accounts", "resume", "100"], "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.starts_with("account 100: needs_reauth -> active; needs_reauth cleared: oauth2 credentials were stored at"), "{text}");
    assert!(!text.contains("new-secret-token"), "{text}");
}
