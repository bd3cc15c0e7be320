//! The config loader on arbitrary file contents (the same path `Config::load` takes after
//! reading the file).

use hookline_core::config::{Config, ConfigError};
use std::path::Path;

/// The file name problems are reported against.
const FILE: &str = "fuzz.toml";

/// Strings shorter than this are too common to tell a leaked secret from a coincidence.
const MIN_SECRET_LEN: usize = 8;

/// Loads `data` as a config file; checks that the outcome is deterministic, that what it
/// accepts is valid, and that no problem repeats a secret.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let outcome = Config::from_toml(text, Path::new(FILE));
    let again = Config::from_toml(text, Path::new(FILE));
    assert_eq!(
        format!("{outcome:?}"),
        format!("{again:?}"),
        "not deterministic"
    );
    match outcome {
        Ok(config) => check_valid(&config),
        Err(error) => check_problems(text, &error),
    }
}

fn check_valid(config: &Config) {
    assert!(!config.amqp_uris.is_empty(), "no broker to connect to");
    assert!(!config.amqp.prefix.is_empty());
    assert!(config.ingress.max_body_bytes > 0);
    assert!(config.ingress.body_budget_bytes >= config.ingress.max_body_bytes);
    assert!(config.worker.prefetch > 0 && config.worker.max_attempts > 0);
    for (i, source) in config.sources.iter().enumerate() {
        assert!(!source.name.is_empty());
        assert!(
            source
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
            "source name {:?} names a route",
            source.name
        );
        assert!(config.sources[..i].iter().all(|s| s.name != source.name));
        assert!(
            !source.secrets.is_empty(),
            "source {:?} has no secret",
            source.name
        );
        assert!(!source.budget.is_zero());
    }
    for subscription in &config.subscriptions {
        assert!(!subscription.queue.is_empty());
        assert!(!subscription.patterns.is_empty());
        assert!(subscription.patterns.iter().all(|p| !p.is_empty()));
    }
}

fn check_problems(text: &str, error: &ConfigError) {
    assert!(!error.problems.is_empty(), "an error without a problem");
    let shown = error.to_string();
    for problem in &error.problems {
        assert!(
            problem.origin == FILE || problem.origin.contains("HOOKLINE__"),
            "origin {:?}",
            problem.origin
        );
    }
    // Secrets as written under `secrets` must not come back in the problems (unless the same
    // text also appears elsewhere in the file, where echoing it is fine).
    let Ok(document) = text.parse::<toml::Table>() else {
        return;
    };
    let (mut secrets, mut others) = (Vec::new(), Vec::new());
    collect(
        &toml::Value::Table(document),
        false,
        &mut secrets,
        &mut others,
    );
    for secret in secrets {
        if secret.len() < MIN_SECRET_LEN || others.iter().any(|o| o.contains(secret.as_str())) {
            continue;
        }
        assert!(
            !shown.contains(&secret),
            "a problem shows a secret: {shown}"
        );
    }
}

/// Sorts every string (keys included) of `value` into secrets and the rest.
fn collect(value: &toml::Value, secret: bool, secrets: &mut Vec<String>, others: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if secret => secrets.push(s.clone()),
        toml::Value::String(s) => others.push(s.clone()),
        toml::Value::Array(items) => {
            for item in items {
                collect(item, secret, secrets, others);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table {
                others.push(key.clone());
                collect(item, secret || key == "secrets", secrets, others);
            }
        }
        other => others.push(other.to_string()),
    }
}
