//! The status page's HTML: one server-rendered page from a [`Dashboard`], inline CSS and SVG,
//! no script. Every string from the database (account ids, pause reasons, error details,
//! worker ids) goes through [`esc`] before it reaches the HTML.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::page::REFRESH_SECONDS;
use crate::admin::dashboard::{self, Dashboard};
use crate::admin::status::amount;
use crate::admin::why::{is_indefinite, when};
use crate::states::AccountStatus;
use crate::store::dashboard::{AccountCard, MinuteRequests};

/// Escapes text for an HTML text node or a quoted attribute value.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:12px 20px;color:#1d232a;background:#f6f7f9}
h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:0 0 8px}
header p{margin:0;color:#5b6570}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 14px;margin:12px 0}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{font-weight:600;color:#5b6570;font-size:12px;text-transform:uppercase}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#b42318;color:#fff;border-radius:6px;padding:12px 14px;margin:12px 0}
.banner code{background:rgba(255,255,255,.2);padding:1px 4px;border-radius:3px}
.grid{display:grid;grid-template-columns:repeat(4,1fr);gap:8px}
.tile{border:1px solid #eef0f3;border-radius:6px;padding:8px}.tile b{display:block;font-size:22px}
.bar{position:relative;background:#eef0f3;border-radius:3px;height:8px;width:140px;margin-top:3px}
.bar span{position:absolute;left:0;top:0;bottom:0;border-radius:3px;background:#2e7d32}
.bar.full span{background:#c62828}.bar.high span{background:#ef8d00}
.st{display:inline-block;padding:0 6px;border-radius:9px;font-size:12px;background:#eef0f3}
.st.needs_reauth{background:#fde2e1;color:#b42318}.st.paused{background:#fff1d6;color:#8a4b00}
.st.disabled{background:#e4e7eb}.st.active{background:#e3f4e4;color:#1b5e20}
.muted{color:#5b6570}.legend span{margin-right:14px}.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
svg text{font-size:10px;fill:#5b6570}
"#;

/// The chart's series: the field of [`MinuteRequests`], its label and its colour.
const SERIES: [(&str, &str, &str); 4] = [
    ("succeeded", "succeeded", "#2e7d32"),
    ("rate_limited", "429", "#ef8d00"),
    ("transient", "transient", "#1565c0"),
    ("permanent", "permanent", "#c62828"),
];

fn series_value(minute: &MinuteRequests, series: &str) -> i64 {
    match series {
        "succeeded" => minute.succeeded,
        "rate_limited" => minute.rate_limited,
        "transient" => minute.transient,
        _ => minute.permanent,
    }
}

/// The whole page.
pub fn render(d: &Dashboard) -> String {
    let now = d.status.generated_at;
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>followq status</title><style>{STYLE}</style></head><body>\
         <header><h1>followq status</h1><p>at {} · one snapshot, refreshed every {REFRESH_SECONDS} s</p></header>",
        esc(&when(now, now))
    );
    app_stop_banner(&mut out, d);
    queue_section(&mut out, d);
    spend_section(&mut out, d);
    chart_section(&mut out, &d.requests_per_minute);
    accounts_section(&mut out, d);
    daemons_section(&mut out, d);
    failures_section(&mut out, d);
    out.push_str("</body></html>\n");
    out
}

fn app_stop_banner(out: &mut String, d: &Dashboard) {
    let Some(stop) = &d.status.app_pause else {
        return;
    };
    let now = d.status.generated_at;
    let what = match stop.reason.meaning() {
        "" => "every account has stopped sending",
        meaning => meaning,
    };
    let todo = match stop.paused_until {
        None => format!("It lasts until {}.", esc(stop.reason.ends_when_untimed())),
        Some(at) => format!(
            "Sending resumes by itself at {}; {}.",
            esc(&when(at, now)),
            esc(stop.reason.remedy())
        ),
    };
    let _ = write!(
        out,
        "<div class=\"banner\" role=\"alert\" id=\"app-stop\"><strong>App-wide stop: {}</strong> since {}. {}. {todo}</div>",
        esc(stop.reason.as_str()),
        esc(&when(stop.created_at, now)),
        esc(what)
    );
}

fn queue_section(out: &mut String, d: &Dashboard) {
    let q = &d.status.queue;
    let now = d.status.generated_at;
    out.push_str("<section id=\"queue\"><h2>Queue</h2><div class=\"grid\">");
    for (label, value, hint) in [
        ("ready", q.queued_ready, "due, account free to send"),
        ("scheduled", q.queued_scheduled, "run_at ahead"),
        (
            "blocked",
            q.queued_blocked,
            "account paused, needs_reauth or disabled",
        ),
        ("running", q.running, "request in flight"),
    ] {
        let _ = write!(
            out,
            "<div class=\"tile\" id=\"queue-{label}\">{label}<b>{value}</b><span class=\"muted\">{hint}</span></div>"
        );
    }
    let _ = write!(
        out,
        "</div><p id=\"finished\">Finished in the last 24 h: {} succeeded, {} failed, {} cancelled.",
        q.succeeded_last_24h, q.failed_last_24h, q.cancelled_last_24h
    );
    if let Some(o) = &d.status.oldest_ready {
        let _ = write!(
            out,
            " Oldest ready: job {} of account {}, ready since {}.",
            o.job_id,
            esc(&o.source_user_id),
            esc(&when(o.run_at, now))
        );
    }
    out.push_str("</p></section>");
}

fn spend_section(out: &mut String, d: &Dashboard) {
    let spend = &d.status.spend;
    let price = spend.price_per_request;
    let money = !price.is_zero();
    out.push_str("<section id=\"spend\"><h2>Spend at X</h2><div class=\"grid\">");
    for (id, label, period) in [
        ("hour", "last hour", &spend.last_hour),
        ("day", "today (UTC)", &spend.day),
        ("month", "this month (UTC)", &spend.month),
    ] {
        let headline = match period.billed_cost {
            Some(cost) if money => amount(cost, price),
            _ => period.billed_requests.to_string(),
        };
        let possibly = match period.possibly_billed_cost {
            Some(cost) if money => format!(
                "{} billed; {} possibly ({})",
                period.billed_requests,
                period.possibly_billed_requests,
                amount(cost, price)
            ),
            _ => format!(
                "requests billed; {} possibly",
                period.possibly_billed_requests
            ),
        };
        let _ = write!(
            out,
            "<div class=\"tile\" id=\"spend-{id}\">{label}<b>{}</b><span class=\"muted\">{}</span></div>",
            esc(&headline),
            esc(&possibly)
        );
    }
    out.push_str("</div><p class=\"muted\">Billed: X answered 2xx. Possibly billed: X may have acted and gave no final answer (5xx, none yet).");
    if money {
        let _ = write!(
            out,
            " At {} per request.",
            esc(&price.normalize().to_string())
        );
    }
    out.push_str("</p></section>");
}

fn chart_section(out: &mut String, minutes: &[MinuteRequests]) {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 170.0;
    const LEFT: f64 = 36.0;
    const RIGHT: f64 = 8.0;
    const TOP: f64 = 8.0;
    const BOTTOM: f64 = 20.0;
    let peak = minutes
        .iter()
        .flat_map(|m| SERIES.iter().map(move |(s, _, _)| series_value(m, s)))
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let step = plot_w / (minutes.len().max(2) - 1) as f64;
    let y = |v: i64| TOP + plot_h - plot_h * (v as f64) / (peak as f64);

    out.push_str(
        "<section id=\"requests\"><h2>Requests per minute, last hour</h2><p class=\"legend\">",
    );
    for (series, label, colour) in SERIES {
        let total: i64 = minutes.iter().map(|m| series_value(m, series)).sum();
        let _ = write!(
            out,
            "<span id=\"total-{series}\"><i style=\"background:{colour}\"></i>{label}: {total}</span>"
        );
    }
    let _ = write!(
        out,
        "</p><svg id=\"chart\" role=\"img\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" preserveAspectRatio=\"none\">\
         <title>Requests per minute over the last hour, by outcome</title>\
         <line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" stroke=\"#c9ced6\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{right}\" y2=\"{TOP}\" stroke=\"#eef0f3\"/>\
         <text x=\"{label_x}\" y=\"{top_label}\" text-anchor=\"end\">{peak}</text>\
         <text x=\"{label_x}\" y=\"{base}\" text-anchor=\"end\">0</text>\
         <text x=\"{LEFT}\" y=\"{HEIGHT}\">-60 min</text>\
         <text x=\"{right}\" y=\"{HEIGHT}\" text-anchor=\"end\">now</text>",
        base = TOP + plot_h,
        right = WIDTH - RIGHT,
        label_x = LEFT - 4.0,
        top_label = TOP + 8.0,
    );
    for (series, _, colour) in SERIES {
        let mut points = String::with_capacity(minutes.len() * 12);
        for (i, m) in minutes.iter().enumerate() {
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                LEFT + step * i as f64,
                y(series_value(m, series))
            );
        }
        let _ = write!(
            out,
            "<polyline class=\"series\" data-series=\"{series}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\" points=\"{}\"/>",
            points.trim_end()
        );
    }
    out.push_str("</svg></section>");
}

fn bar(spent: i64, limit: i64) -> String {
    let fraction = if limit > 0 {
        (spent as f64 / limit as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let class = if fraction >= 1.0 {
        "bar full"
    } else if fraction >= 0.8 {
        "bar high"
    } else {
        "bar"
    };
    format!(
        "<div class=\"{class}\"><span style=\"width:{:.0}%\"></span></div>",
        fraction * 100.0
    )
}

/// "in 3m 20s" from `now` to `at`; "now" when it has passed.
fn time_to(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (at - now).num_seconds();
    if seconds <= 0 {
        return "now".to_owned();
    }
    format!(
        "in {}",
        humantime::format_duration(Duration::from_secs(seconds.unsigned_abs()))
    )
}

fn accounts_section(out: &mut String, d: &Dashboard) {
    let now = d.status.generated_at;
    let total = i64::try_from(d.accounts.len())
        .unwrap_or(i64::MAX)
        .saturating_add(d.accounts_not_shown);
    let _ = write!(
        out,
        "<section id=\"accounts\"><h2>Accounts with work ({total})</h2>"
    );
    if d.accounts.is_empty() {
        out.push_str("<p>none</p></section>");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>account</th><th>status</th><th>window</th><th>24 h</th>\
         <th>queued</th><th>lease</th><th>why</th></tr></thead><tbody>",
    );
    for a in &d.accounts {
        account_row(out, a, now);
    }
    out.push_str("</tbody></table>");
    if d.accounts_not_shown > 0 {
        let _ = write!(
            out,
            "<p id=\"accounts-more\">and {} more (the {} shown need attention first; <code>followq accounts list</code> lists all)</p>",
            d.accounts_not_shown,
            d.accounts.len()
        );
    }
    out.push_str("</section>");
}

fn account_row(out: &mut String, a: &AccountCard, now: DateTime<Utc>) {
    let resets = match a.window_resets_at {
        Some(at) if a.window_spent > 0 => format!("resets {}", time_to(at, now)),
        _ => "unused".to_owned(),
    };
    let status = match (a.status, a.paused_until) {
        (AccountStatus::Paused, Some(at)) if at <= now => "active".to_owned(),
        (AccountStatus::Paused, Some(at)) if is_indefinite(at) => "paused".to_owned(),
        (AccountStatus::Paused, Some(at)) => format!("paused, resumes {}", time_to(at, now)),
        (other, _) => other.to_string(),
    };
    let status_class =
        if a.status == AccountStatus::Paused && a.paused_until.is_some_and(|at| at <= now) {
            "active"
        } else {
            a.status.as_str()
        };
    let mut queued = if a.queued >= dashboard::QUEUED_COUNT_CAP {
        format!("{}+", a.queued)
    } else {
        a.queued.to_string()
    };
    if a.in_flight > 0 {
        let _ = write!(
            queued,
            " <span class=\"muted\">+{} in flight</span>",
            a.in_flight
        );
    }
    let _ = write!(
        out,
        "<tr class=\"account\" data-account=\"{id}\"><td>{id}</td>\
         <td><span class=\"st {sc}\">{status}</span></td>\
         <td>{spent} / {limit} <span class=\"muted\">{resets}</span>{wbar}</td>\
         <td>{day} / {cap}{dbar}</td><td class=\"n\">{queued}</td><td>{lease}</td><td>{why}</td></tr>",
        id = esc(&a.user_id),
        sc = esc(status_class),
        status = esc(&status),
        spent = a.window_spent,
        limit = a.window_limit,
        resets = esc(&resets),
        wbar = bar(a.window_spent, a.window_limit),
        day = a.follows_24h,
        cap = a.daily_cap,
        dbar = bar(a.follows_24h, a.daily_cap),
        lease = a.leased_by.as_deref().map_or_else(|| "-".to_owned(), esc),
        why = esc(&a.why),
    );
}

fn daemons_section(out: &mut String, d: &Dashboard) {
    let now = d.status.generated_at;
    let _ = write!(
        out,
        "<section id=\"daemons\"><h2>Live daemons ({})</h2>",
        d.status.daemons.len()
    );
    if d.status.daemons.is_empty() {
        out.push_str("<p>none: no daemon has a recent heartbeat or a live lease</p></section>");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>worker</th><th>heartbeat</th><th>started</th>\
         <th>accounts</th><th>running</th></tr></thead><tbody>",
    );
    for daemon in &d.status.daemons {
        let heartbeat = daemon.heartbeat_at.map_or_else(
            || "(lease only)".to_owned(),
            |at| format!("{} s ago", (now - at).num_seconds().max(0)),
        );
        let started = daemon
            .started_at
            .map_or_else(|| "-".to_owned(), |at| when(at, now));
        let _ = write!(
            out,
            "<tr class=\"daemon\"><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&daemon.worker_id),
            esc(&heartbeat),
            esc(&started),
            daemon.accounts_leased,
            daemon.jobs_running
        );
    }
    out.push_str("</tbody></table></section>");
}

fn failures_section(out: &mut String, d: &Dashboard) {
    let now = d.status.generated_at;
    out.push_str("<section id=\"failures\"><h2>Recent failures</h2>");
    if d.recent_failures.is_empty() {
        let _ = write!(
            out,
            "<p>none among the last {} finished jobs</p></section>",
            dashboard::FAILURE_SCAN
        );
        return;
    }
    out.push_str(
        "<table><thead><tr><th>job</th><th>account → target</th><th>finished</th><th>why</th></tr></thead><tbody>",
    );
    for f in &d.recent_failures {
        let _ = write!(
            out,
            "<tr class=\"failure\"><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td></tr>",
            f.job_id,
            esc(&f.source_user_id),
            esc(&f.target_user_id),
            esc(&f
                .finished_at
                .map_or_else(|| "-".to_owned(), |at| when(at, now))),
            esc(&f.why)
        );
    }
    out.push_str("</tbody></table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("plain 123"), "plain 123");
    }

    #[test]
    fn bars_are_clamped_and_coloured_by_use() {
        assert_eq!(
            bar(0, 0),
            "<div class=\"bar\"><span style=\"width:0%\"></span></div>"
        );
        assert!(bar(60, 50).starts_with("<div class=\"bar full\"><span style=\"width:100%\""));
        assert!(bar(41, 50).starts_with("<div class=\"bar high\">"));
    }
}
