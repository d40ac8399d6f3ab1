//! deploy/compose.yaml against the binary it runs, with no container engine: each service of
//! the followq image runs a command the binary accepts (its arguments parsed by the binary
//! itself, up to `--help`), and sets only variables followq reads: configuration keys of
//! config/default.toml as FOLLOWQ_<SECTION>__<KEY>, DATABASE_URL, and the token variables of
//! `accounts add`; and the binary loads its settings from each service's environment.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::yaml::{self, Yaml};

/// The image's ENTRYPOINT and CMD (Dockerfile).
const IMAGE_ENTRYPOINT: &[&str] = &["followq"];
const IMAGE_CMD: &[&str] = &["run"];
/// The image the followq services use (compose builds it from the Dockerfile).
const FOLLOWQ_IMAGE: &str = "followq:local";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Yaml {
    let text = std::fs::read_to_string(root().join("deploy/compose.yaml")).expect("read compose");
    yaml::parse(&text).unwrap_or_else(|e| panic!("deploy/compose.yaml: {e}"))
}

/// Runs the built binary with `args`, only `env` (and PATH) in its environment, and the
/// project's config directory.
fn followq(args: &[String], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_followq"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("FOLLOWQ_CONFIG_DIR", root().join("config"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run followq")
}

/// Every configuration key default.toml documents, as `section.key` paths (`x_api.oauth2.
/// client_id`): set ones and the commented-out `# key = value` examples of optional ones.
fn configuration_keys() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(root().join("config/default.toml")).expect("read default.toml");
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let setting = line.strip_prefix("# ").unwrap_or(line);
        if let Some((key, _)) = setting.split_once(" = ")
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

/// The services that run the followq image, with their merged environment.
fn followq_services(doc: &Yaml) -> Vec<(String, &Yaml)> {
    let services = doc.get("services").expect("a services mapping");
    services
        .entries()
        .iter()
        .filter(|(_, service)| service.get("image").and_then(Yaml::as_str) == Some(FOLLOWQ_IMAGE))
        .map(|(name, service)| (name.clone(), service))
        .collect()
}

fn environment(service: &Yaml) -> Vec<(String, String)> {
    service
        .get("environment")
        .map(|env| {
            env.entries()
                .iter()
                .map(|(k, v)| {
                    let value = v
                        .as_str()
                        .unwrap_or_else(|| panic!("{k}: not a string: {v:?}"));
                    (k.clone(), value.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The service's argv after `followq`: its entrypoint and command, or the image's.
fn arguments(name: &str, service: &Yaml) -> Vec<String> {
    let strings = |key: &str, default: &[&str]| -> Vec<String> {
        match service.get(key) {
            Some(value) => value
                .strings()
                .unwrap_or_else(|e| panic!("{name}.{key}: {e}")),
            None => default.iter().map(|s| s.to_string()).collect(),
        }
    };
    let mut argv = strings("entrypoint", IMAGE_ENTRYPOINT);
    argv.extend(strings("command", IMAGE_CMD));
    assert_eq!(
        argv.first().map(String::as_str),
        Some("followq"),
        "{name}: runs {argv:?}, not followq"
    );
    argv.remove(0);
    argv
}

/// What is wrong with one service, if anything.
fn problems(name: &str, service: &Yaml, keys: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let args = arguments(name, service);
    // Arguments up to --help are parsed (names and values) and the help printed: exit 0 only
    // when the binary accepts every one of them. Nothing runs.
    let mut with_help = args.clone();
    with_help.push("--help".into());
    let help = followq(&with_help, &[]);
    if !help.status.success() {
        problems.push(format!(
            "`followq {}` is refused: {}",
            args.join(" "),
            String::from_utf8_lossy(&help.stderr).trim()
        ));
    }
    let help_text = String::from_utf8_lossy(&help.stdout);
    let env = environment(service);
    for (variable, _) in &env {
        if variable == "DATABASE_URL" {
            continue;
        }
        let Some(rest) = variable.strip_prefix("FOLLOWQ_") else {
            problems.push(format!("{variable}: not a variable followq reads"));
            continue;
        };
        match rest.split_once("__") {
            Some(_) => {
                let path = rest.to_ascii_lowercase().replace("__", ".");
                let key_id = path.strip_prefix("credentials.keys.");
                if !(keys.contains(&path) || key_id.is_some_and(|id| !id.contains('.'))) {
                    problems.push(format!(
                        "{variable}: no configuration key {path} in config/default.toml"
                    ));
                }
            }
            // The token variables of `accounts add`, named in its help.
            None => {
                if !help_text.contains(variable.as_str()) {
                    problems.push(format!(
                        "{variable}: not a setting, nor named by `followq {} --help`",
                        args.join(" ")
                    ));
                }
            }
        }
    }
    // The binary loads its settings from the service's environment (unknown keys and bad
    // values stop it); `credentials new-key` needs nothing else.
    let loaded = followq(&["credentials".into(), "new-key".into()], &env);
    if !loaded.status.success() {
        problems.push(format!(
            "the settings do not load from its environment: {}",
            String::from_utf8_lossy(&loaded.stderr).trim()
        ));
    }
    problems
}

/// Guards the compose file against drift from the binary: a renamed flag or subcommand, a
/// misspelt or removed setting, a bad value, or a token variable `accounts add` does not read.
#[test]
fn every_compose_service_runs_a_command_and_variables_the_binary_accepts() {
    let doc = compose();
    let keys = configuration_keys();
    assert!(
        keys.contains("worker.shutdown_grace") && keys.contains("x_api.oauth2.client_secret"),
        "default.toml's keys, commented-out ones too: {keys:?}"
    );
    let services = followq_services(&doc);
    let names: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["migrate", "register", "sim", "followq", "enqueue"],
        "the followq services (a new one is checked too: list it here)"
    );
    let all: Vec<String> = services
        .iter()
        .flat_map(|(name, service)| {
            problems(name, service, &keys)
                .into_iter()
                .map(move |p| format!("{name}: {p}"))
        })
        .collect();
    assert!(all.is_empty(), "deploy/compose.yaml:\n{}", all.join("\n"));
}

/// Guards the check itself: a misspelt flag, subcommand, setting or token variable is found.
#[test]
fn the_check_finds_a_bad_flag_setting_or_variable() {
    let keys = configuration_keys();
    let bad = yaml::parse(
        r#"
bad:
  image: followq:local
  command: ["accounts", "add", "--user-id", "100", "--quota", "5"]
  environment:
    DATABASE_URL: postgres://x@y/z
    FOLLOWQ_OAUTH2_ACCESS_TOKN: t
    FOLLOWQ_RATE_LIMIT__REQUEST_PER_PERIOD: "5"
    FOLLOWQ_WORKER__SHUTDOWN_GRACE: soon
    PGPASSWORD: x
"#,
    )
    .expect("parses");
    let found = problems("bad", bad.get("bad").expect("bad"), &keys).join("\n");
    for expected in [
        "`followq accounts add --user-id 100 --quota 5` is refused",
        "FOLLOWQ_OAUTH2_ACCESS_TOKN: not a setting",
        "no configuration key rate_limit.request_per_period",
        "the settings do not load",
        "PGPASSWORD: not a variable followq reads",
    ] {
        assert!(found.contains(expected), "{expected:?} not in:\n{found}");
    }
    let fine = yaml::parse(
        "ok:\n  image: followq:local\n  environment:\n    FOLLOWQ_CREDENTIALS__KEYS__K1: \"7FKZYQbVGsjznELIKySAbG+7aoZ5Qn/q+RkYBgcu/uI=\"\n",
    )
    .expect("parses");
    assert_eq!(
        problems("ok", fine.get("ok").expect("ok"), &keys),
        Vec::<String>::new()
    );
}
