//! The status page (`GET /`) as a person sees it: a real daemon over rows in a known state,
//! the page loaded in headless Chromium (`chromium --headless --dump-dom`), the rendered text
//! and the chart's points checked, a screenshot taken; `GET /api/status` against
//! `followq status --json`; and the page over 100,000 accounts, bounded, with its server
//! time printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use followq::accounts::Credentials;
use followq::admin::dashboard::{self, ACCOUNTS_SHOWN, Limits, SettledMinutes};
use serde_json::Value;
use tokio::process::Command;

use crate::ops_support::{OpsDaemon, with_http};
use crate::support::{Harness, serial, sim_config};

/// The window of the scenario: long, so the spent window stays spent while the test looks.
const QUOTA: u32 = 3;
const WINDOW: Duration = Duration::from_secs(600);

/// A pause reason and an error detail with markup in them: the page must show them as text.
const REAUTH_REASON: &str = "<b>refresh token revoked</b>";
const FAILURE_DETAIL: &str = "You are unable to follow <script>alert(1)</script> this user";

/// Runs headless Chromium with `args` and the URL, returning its stdout. Fails (never skips)
/// when Chromium is missing: `.ci/run` installs Debian's `chromium`.
async fn chromium(args: &[String], url: &str) -> String {
    let profile = tempfile::tempdir().expect("a Chromium profile directory");
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            // As root (CI), Chromium refuses to start with its sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let output = match tokio::time::timeout(Duration::from_secs(90), command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!(
            "cannot run chromium ({e}): install it (`apt-get install -y chromium`; .ci/run does)"
        ),
        Err(_) => panic!("chromium did not finish within 90 s"),
    };
    assert!(
        output.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("chromium prints UTF-8")
}

/// The `points` of the chart's polyline for `series`, as (x, y) pairs.
fn chart_points(dom: &str, series: &str) -> Vec<(f64, f64)> {
    let marker = format!("data-series=\"{series}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no {series} series in the chart:\n{dom}"));
    let element = &dom[start..];
    let points_at = element.find("points=\"").expect("the series has points") + 8;
    let points = &element[points_at..];
    let points = &points[..points.find('"').expect("a closed attribute")];
    points
        .split_whitespace()
        .map(|pair| {
            let (x, y) = pair.split_once(',').expect("x,y");
            (x.parse().expect("a number"), y.parse().expect("a number"))
        })
        .collect()
}

/// The text of the table row of `account` in the dumped DOM.
fn account_row<'a>(dom: &'a str, account: &str) -> &'a str {
    let marker = format!("data-account=\"{account}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("account {account} is not on the page:\n{dom}"));
    let row = &dom[start..];
    &row[..row.find("</tr>").expect("a closed row")]
}

async fn insert_ledger_row(
    harness: &Harness,
    account: &str,
    ago: &str,
    outcome: &str,
    status: i32,
) {
    sqlx::query(
        "INSERT INTO followq.attempts \
         (job_id, account_user_id, worker_id, sent_at, completed_at, outcome, http_status) \
         VALUES (0, $1, 'earlier-daemon', now() - $2::interval, now() - $2::interval, $3, $4)",
    )
    .bind(account)
    .bind(ago)
    .bind(outcome)
    .bind(i16::try_from(status).expect("an HTTP status"))
    .execute(&harness.db.pool)
    .await
    .expect("a ledger row");
}

#[tokio::test]
async fn the_status_page_shows_what_needs_attention_in_a_browser() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(QUOTA, WINDOW)).await;
    let pool = &harness.db.pool;

    // 101: paused by an operator for an hour. 102: needs new tokens. 103: its window spent by
    // an earlier daemon. 104: sends one follow for real while the test runs.
    for account in ["101", "102", "103"] {
        harness.account(account).await;
    }
    let tokens = harness.sim.add_user("104");
    harness
        .db
        .add_account_with(
            "104",
            Credentials::OAuth2 {
                access_token: tokens.access_token.clone().into(),
                refresh_token: Some(tokens.refresh_token.clone().into()),
                expires_at: None,
            },
        )
        .await;
    sqlx::query(
        "UPDATE followq.accounts SET status = 'paused', pause_reason = 'operator', \
         paused_until = now() + interval '1 hour' WHERE user_id = '101'",
    )
    .execute(pool)
    .await
    .expect("pause 101");
    sqlx::query(
        "UPDATE followq.accounts SET status = 'needs_reauth', pause_reason = $1 \
         WHERE user_id = '102'",
    )
    .bind(REAUTH_REASON)
    .execute(pool)
    .await
    .expect("park 102");
    for ago in ["1 minute", "2 minutes", "3 minutes"] {
        insert_ledger_row(&harness, "103", ago, "succeeded", 200).await;
    }
    // The other outcome classes of the chart, earlier in the hour.
    insert_ledger_row(&harness, "104", "20 minutes", "rate_limited", 429).await;
    insert_ledger_row(&harness, "104", "30 minutes", "transient", 503).await;
    insert_ledger_row(&harness, "104", "40 minutes", "permanent", 403).await;
    // A job that failed, with markup in X's detail.
    let failed_job: i64 = sqlx::query_scalar(
        "INSERT INTO followq.follow_jobs \
         (source_user_id, target_user_id, state, attempts, finished_at, last_error) \
         VALUES ('104', '999', 'failed', 1, now(), \
                 jsonb_build_object('kind', 'permanent', 'status', 403, 'detail', $1::text)) \
         RETURNING id",
    )
    .bind(FAILURE_DETAIL)
    .fetch_one(pool)
    .await
    .expect("a failed job");
    harness.enqueue("101", 500, 2).await;
    harness.enqueue("102", 500, 2).await;
    harness.enqueue("103", 500, 2).await;

    let daemon = OpsDaemon::start(&with_http(&harness.settings)).await;
    harness.enqueue("104", 500, 1).await;
    harness
        .wait_finished(
            Duration::from_secs(20),
            "104's follow sent",
            "SELECT count(*) = 1 FROM followq.follow_jobs \
             WHERE source_user_id = '104' AND state = 'succeeded'",
        )
        .await;
    // The daemon has taken 103 (and waits for its window): its lease shows on the page.
    harness
        .wait_until(
            Duration::from_secs(20),
            "103 leased",
            "SELECT coalesce(lease_expires_at > now(), false) FROM followq.accounts WHERE user_id = '103'",
        )
        .await;

    let url = format!("http://{}/", daemon.addr);
    let dom = chromium(&["--dump-dom".to_owned()], &url).await;

    // The queue by state: 101's and 102's jobs are blocked, 103's wait for their window.
    assert!(
        dom.contains("id=\"queue-blocked\">blocked<b>4</b>"),
        "blocked jobs:\n{dom}"
    );
    assert!(dom.contains("1 succeeded, 1 failed, 0 cancelled"), "{dom}");

    // Accounts by what needs attention: needs_reauth, then paused, then the rest.
    let order: Vec<usize> = ["102", "101", "103"]
        .iter()
        .map(|id| {
            dom.find(&format!("data-account=\"{id}\""))
                .unwrap_or_else(|| panic!("account {id} missing:\n{dom}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "order {order:?}:\n{dom}"
    );
    let reauth = account_row(&dom, "102");
    assert!(reauth.contains("needs re-authorization"), "{reauth}");
    // The reason is text on the page, not markup.
    assert!(
        reauth.contains("&lt;b&gt;refresh token revoked&lt;/b&gt;"),
        "{reauth}"
    );
    assert!(
        !dom.contains("<b>refresh"),
        "the reason became markup:\n{dom}"
    );
    let paused = account_row(&dom, "101");
    assert!(
        paused.contains("paused by an operator") && paused.contains("resumes in"),
        "{paused}"
    );
    let spent = account_row(&dom, "103");
    assert!(spent.contains("3 / 3"), "{spent}");
    assert!(spent.contains("window spent (3 of 3)"), "{spent}");
    assert!(spent.contains("bar full"), "{spent}");
    let worker: String =
        sqlx::query_scalar("SELECT leased_by FROM followq.accounts WHERE user_id = '103'")
            .fetch_one(pool)
            .await
            .expect("103's holder");
    assert!(
        spent.contains(&worker),
        "103's lease holder {worker}: {spent}"
    );

    // The live daemon and its heartbeat age.
    let daemons = &dom[dom.find("id=\"daemons\"").expect("the daemons section")..];
    assert!(
        daemons.contains(&worker) && daemons.contains(" s ago"),
        "{daemons}"
    );

    // The failure and its why, as `followq jobs show` says it; its markup is text.
    let failures = &dom[dom.find("id=\"failures\"").expect("the failures section")..];
    assert!(
        failures.contains(&format!(
            "after 1 attempt(s): a 403 (You are unable to follow &lt;script&gt;alert(1)&lt;/script&gt; this user); `followq jobs retry {failed_job}` queues it again"
        )),
        "{failures}"
    );
    assert!(
        !dom.contains("<script"),
        "a script element on the page:\n{dom}"
    );

    // The chart has a point above the baseline in every outcome class.
    let baseline = chart_points(&dom, "succeeded")
        .iter()
        .map(|(_, y)| *y)
        .fold(f64::MIN, f64::max);
    for series in ["succeeded", "rate_limited", "transient", "permanent"] {
        let points = chart_points(&dom, series);
        assert_eq!(points.len(), 60, "{series}: one point a minute");
        assert!(
            points.iter().any(|(_, y)| *y < baseline),
            "{series} has no request in the chart: {points:?}"
        );
    }
    assert!(dom.contains("id=\"total-succeeded\""), "{dom}");

    // No secret on the page.
    assert!(
        !dom.contains(&tokens.access_token),
        "the access token is on the page"
    );
    assert!(
        !dom.contains("postgres://"),
        "a database URL is on the page"
    );

    // The JSON: the fields of `followq status --json`, and the page's own.
    let (status, body) = daemon.get("/api/status").await;
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).expect("JSON");
    let report = followq::admin::status::report(pool, rust_decimal::Decimal::ZERO)
        .await
        .expect("report");
    let report = serde_json::to_value(report).expect("report as JSON");
    for key in report.as_object().expect("an object").keys() {
        assert!(json.get(key).is_some(), "/api/status lacks {key}: {body}");
    }
    assert_eq!(json["queue"]["queued_blocked"], 4, "{body}");
    assert_eq!(json["accounts"][0]["user_id"], "102", "{body}");
    let spent_card = json["accounts"]
        .as_array()
        .and_then(|cards| cards.iter().find(|card| card["user_id"] == "103"))
        .unwrap_or_else(|| panic!("103 is not in the JSON: {body}"));
    assert_eq!(spent_card["window_spent"], 3, "{body}");
    assert_eq!(
        json["requests_per_minute"].as_array().map(Vec::len),
        Some(60)
    );
    assert_eq!(json["recent_failures"][0]["job_id"], failed_job, "{body}");
    assert!(
        !body.contains(&tokens.access_token),
        "the access token is in the JSON"
    );

    // A screenshot, as README shows it.
    let screenshot = screenshot_path();
    chromium(
        &[
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1200,1300".to_owned(),
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a blank screenshot ({} bytes)",
        png.len()
    );

    // The server's time is in the answer's headers.
    let response = reqwest::get(&url).await.expect("GET /");
    let timing = response
        .headers()
        .get("server-timing")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        timing.starts_with("db;dur=") && timing.contains("render;dur="),
        "Server-Timing: {timing:?}"
    );

    // An app-wide stop: a banner saying what to do, and every account but the one that needs
    // new tokens held by it (once the cached snapshot has expired).
    sqlx::query("INSERT INTO followq.app_pause (reason) VALUES ('app_forbidden')")
        .execute(pool)
        .await
        .expect("stop the app");
    tokio::time::sleep(followq::http::page::PAGE_TTL).await;
    let dom = chromium(&["--dump-dom".to_owned()], &url).await;
    let banner = &dom[dom
        .find("id=\"app-stop\"")
        .unwrap_or_else(|| panic!("no app-stop banner:\n{dom}"))..];
    assert!(
        banner.contains("App-wide stop: app_forbidden")
            && banner.contains("X refused the app itself")
            && banner.contains("until an operator runs `followq app resume`"),
        "{banner}"
    );
    assert!(
        account_row(&dom, "101").contains("held by the app-wide stop (app_forbidden)"),
        "{dom}"
    );
    assert!(
        account_row(&dom, "102").contains("needs re-authorization"),
        "{dom}"
    );

    daemon.stop().await;
}

/// Where the screenshot goes: `STATUS_PAGE_SCREENSHOT` (to refresh `docs/status-page.png`;
/// not `FOLLOWQ_…`, which the settings would read as a config key),
/// else the target directory.
fn screenshot_path() -> PathBuf {
    match std::env::var_os("STATUS_PAGE_SCREENSHOT") {
        Some(path) => Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png"),
    }
}

#[tokio::test]
async fn the_page_over_100_000_accounts_lists_the_most_urgent_and_counts_the_rest() {
    const ACCOUNTS: i64 = 100_000;
    let _serial = serial().await;
    let db = crate::common::TestDb::new().await;
    let pool = &db.pool;
    // 1% needs_reauth, 10% paused, the rest active; half have a queued job; a day of ledger
    // (two requests per account, one in the last hour), each row with the answer_by a claim
    // writes (17 s after it was sent with the default settings).
    sqlx::query(
        "INSERT INTO followq.accounts (user_id, auth_kind, status, paused_until, pause_reason) \
         SELECT (1000000 + i)::text, 'oauth2', \
                CASE WHEN i % 100 = 0 THEN 'needs_reauth' WHEN i % 10 = 1 THEN 'paused' \
                     ELSE 'active' END, \
                CASE WHEN i % 10 = 1 THEN now() + interval '10 minutes' END, \
                CASE WHEN i % 100 = 0 THEN 'refused' WHEN i % 10 = 1 THEN 'rate_limit_window' END \
         FROM generate_series(1, $1) AS i",
    )
    .bind(ACCOUNTS)
    .execute(pool)
    .await
    .expect("accounts");
    sqlx::query(
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) \
         SELECT (1000000 + i)::text, '42' FROM generate_series(1, $1, 2) AS i",
    )
    .bind(ACCOUNTS)
    .execute(pool)
    .await
    .expect("jobs");
    sqlx::query(
        "INSERT INTO followq.attempts \
         (job_id, account_user_id, worker_id, sent_at, completed_at, answer_by, outcome, \
          http_status) \
         SELECT i, (1000000 + i % $1)::text, 'bench', at, at, at + interval '17 seconds', \
                CASE WHEN i % 50 = 0 THEN 'transient' ELSE 'succeeded' END, \
                CASE WHEN i % 50 = 0 THEN 503 ELSE 200 END \
         FROM generate_series(1, 2 * $1) AS i, \
              LATERAL (SELECT now() - (i % 86400) * interval '1 second' \
                              * (CASE WHEN i <= $1 THEN 1.0 / 24 ELSE 1 END) AS at) AS sent",
    )
    .bind(ACCOUNTS)
    .execute(pool)
    .await
    .expect("ledger");
    // As autovacuum leaves a settled database: statistics, hint bits and the visibility map
    // set, so that neither the planner's guesses nor a vacuum running meanwhile skew the
    // figures.
    sqlx::query("VACUUM ANALYZE")
        .execute(pool)
        .await
        .expect("vacuum analyze");

    let limits = Limits {
        requests_per_period: 50,
        period: Duration::from_secs(900),
        daily_follows_per_account: 400,
        default_max_attempts: 8,
        answer_within: Duration::from_secs(17),
        price_per_request: rust_decimal::Decimal::new(15, 3),
    };
    // Cold: a fresh cache each time, so every snapshot reads the whole hour of the ledger, as
    // the first view after a start does. Warm: the chart's settled minutes kept, as every
    // later refresh. The first snapshot only warms Postgres's caches; the figures are medians
    // of five.
    let mut settled = SettledMinutes::default();
    let mut page = (
        dashboard::snapshot(pool, &limits, &mut settled)
            .await
            .expect("snapshot"),
        String::new(),
    );
    let mut figures = Vec::new();
    for warm in [false, true] {
        let (mut snapshot_ms, mut render_ms) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let mut fresh = SettledMinutes::default();
            let cache = if warm { &mut settled } else { &mut fresh };
            let started = Instant::now();
            let data = dashboard::snapshot(pool, &limits, cache)
                .await
                .expect("snapshot");
            snapshot_ms.push(started.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            let html = followq::http::page::render(&data);
            render_ms.push(started.elapsed().as_secs_f64() * 1e3);
            page = (data, html);
        }
        snapshot_ms.sort_by(f64::total_cmp);
        render_ms.sort_by(f64::total_cmp);
        figures.push((warm, snapshot_ms[2], render_ms[2]));
    }
    for (warm, snapshot_ms, render_ms) in figures {
        println!(
            "status page, {ACCOUNTS} accounts, {}: snapshot {snapshot_ms:.1} ms + render {render_ms:.1} ms = {:.1} ms of server time (median of 5)",
            if warm { "refresh" } else { "first view" },
            snapshot_ms + render_ms
        );
    }
    print_breakdown(pool, &limits).await;

    let (data, html) = page;
    // Every account with work: the needs_reauth and paused ones, and those with a job.
    let with_work: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM followq.accounts AS a WHERE a.status = 'needs_reauth' \
         OR EXISTS (SELECT 1 FROM followq.follow_jobs AS j WHERE j.source_user_id = a.user_id)",
    )
    .fetch_one(pool)
    .await
    .expect("count");
    assert_eq!(
        data.accounts.len(),
        usize::try_from(ACCOUNTS_SHOWN).unwrap_or(0)
    );
    assert_eq!(
        data.accounts_not_shown,
        with_work - ACCOUNTS_SHOWN,
        "the rest are counted"
    );
    assert!(
        data.accounts
            .iter()
            .all(|a| a.status == followq::states::AccountStatus::NeedsReauth),
        "the 1,000 needs_reauth accounts come first"
    );
    assert_eq!(
        html.matches("class=\"account\"").count(),
        data.accounts.len(),
        "one row per listed account"
    );
    assert!(
        html.contains(&format!("and {} more", with_work - ACCOUNTS_SHOWN)),
        "the page says how many are not shown"
    );
    for list in [
        &data.status.paused_accounts.len(),
        &data.status.needs_reauth_accounts.len(),
    ] {
        assert_eq!(*list, usize::try_from(ACCOUNTS_SHOWN).unwrap_or(0));
    }
    assert!(html.len() < 200_000, "the page is {} bytes", html.len());
}

/// Prints the time of each statement of a snapshot (one run, after the medians): which part
/// of the server time is `followq status`'s and which the page's own.
async fn print_breakdown(pool: &sqlx::PgPool, limits: &Limits) {
    use followq::admin::status::{self, LIVE_HEARTBEAT_SECONDS};
    use followq::store;
    let mut tx = store::dashboard::snapshot(pool).await.expect("snapshot");
    let mut parts = Vec::new();
    macro_rules! timed {
        ($name:expr, $call:expr) => {{
            let started = Instant::now();
            $call.await.expect($name);
            parts.push(format!(
                "{} {:.1}",
                $name,
                started.elapsed().as_secs_f64() * 1e3
            ));
        }};
    }
    timed!("status::queue_depth", store::status::queue_depth(&mut tx));
    timed!("status::oldest_ready", store::status::oldest_ready(&mut tx));
    timed!(
        "status::recent_throughput",
        store::status::recent_throughput(&mut tx)
    );
    timed!("status::app_pause", status::app_pause(&mut tx));
    timed!(
        "status::paused_accounts",
        store::status::paused_accounts(&mut tx, Some(ACCOUNTS_SHOWN))
    );
    timed!("status::blocked_accounts x2", async {
        store::status::blocked_accounts(&mut tx, "needs_reauth", Some(ACCOUNTS_SHOWN)).await?;
        store::status::blocked_accounts(&mut tx, "disabled", Some(ACCOUNTS_SHOWN)).await
    });
    timed!(
        "status::live_daemons",
        store::status::live_daemons(&mut tx, LIVE_HEARTBEAT_SECONDS)
    );
    let refresh_from = chrono::Utc::now() - chrono::TimeDelta::minutes(limits.settle_minutes());
    timed!(
        "dashboard::requests_per_minute (refresh)",
        store::dashboard::requests_per_minute(&mut tx, refresh_from)
    );
    timed!(
        "dashboard::accounts_with_work",
        store::dashboard::accounts_with_work(&mut tx, &limits.accounts_with_work(false))
    );
    timed!(
        "dashboard::recent_failed_jobs",
        store::dashboard::recent_failed_jobs(
            &mut tx,
            dashboard::FAILURES_SHOWN,
            dashboard::FAILURE_SCAN
        )
    );
    tx.commit().await.expect("commit");
    println!("status page, statements in ms: {}", parts.join(", "));
}
