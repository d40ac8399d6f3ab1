//! deploy/alerts.yaml: every metric its rules use is one the daemon's registry exports (or one
//! listed below as proposed, not exported yet), and Prometheus's own `promtool` accepts the
//! rules and passes their unit tests (deploy/alerts.test.yaml). promtool comes with Debian's
//! `prometheus` package; .ci/run installs it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use followq::metrics::Metrics;

/// Metrics the rules use that no daemon exports yet, each with why it is there. A rule on one
/// of them loads and stays silent until a daemon exports it.
const NOT_EXPORTED_YET: &[(&str, &str)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `followq_*` names in the rules' expressions and in the queries of their templates.
fn names_used_by_the_rules() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("deploy/alerts.yaml")).expect("read alerts");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || !(line.starts_with("expr:") || line.contains("query \"")) {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("followq_") {
            let name: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[start + name.len()..];
            names.insert(name);
        }
    }
    names
}

/// The sample names a daemon's /metrics can hold: from each family's `# TYPE` line (a counter
/// `x` is sampled as `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`) and from the
/// samples themselves.
fn exported_names() -> BTreeSet<String> {
    let text = Metrics::new().encode().expect("the registry encodes");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Guards the rules against a renamed or removed metric: a rule on a name no daemon exports
/// never fires, silently.
#[test]
fn every_metric_the_alerting_rules_use_is_exported() {
    let used = names_used_by_the_rules();
    let exported = exported_names();
    assert!(
        exported.contains("followq_rate_limited_total")
            && exported.contains("followq_request_duration_seconds_bucket")
            && exported.contains("followq_app_stopped"),
        "the registry's names: {exported:?}"
    );
    for expected in ["followq_app_stopped", "followq_accounts_paused"] {
        assert!(
            used.contains(expected),
            "{expected} not found in the rules: {used:?}"
        );
    }
    let pending: BTreeSet<&str> = NOT_EXPORTED_YET.iter().map(|(name, _)| *name).collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !exported.contains(*name) && !pending.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/alerts.yaml uses metrics followq does not export: {missing:?}\nexported: {exported:?}"
    );
    // The list of exceptions holds only names the rules still use.
    for name in &pending {
        assert!(
            used.contains(*name),
            "{name} is listed as not exported yet, but no rule uses it"
        );
    }
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install it (`apt-get install -y prometheus`; \
                 .ci/run does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Guards the rules' syntax and behaviour as Prometheus itself reads them: each alert fires
/// on the series that should raise it, after its `for`, with its annotations, and not before.
#[test]
fn promtool_accepts_the_rules_and_passes_their_unit_tests() {
    let checked = promtool(&["check", "rules", "deploy/alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "deploy/alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}
