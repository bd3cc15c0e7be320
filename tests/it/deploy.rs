//! The deploy assets: promtool accepts the alert rules and the Prometheus config and the
//! alerts' unit tests pass; every metric a Grafana panel or an alert rule names is one
//! hookline exports (scraped from real processes); docker-compose.yml is valid for each
//! profile and safe by default; HAProxy's config is valid; the docker configs load.
//!
//! Needs `promtool` (Debian: prometheus), `docker-compose` and `haproxy`, and fails loudly
//! without them; `.ci/run` installs them. No Docker engine is needed: compose is only asked
//! to resolve and validate the file.

use crate::support::{self, Broker, NO_BROKER_URL, scrape};
use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Metrics the dashboard or the alerts use that another branch adds; they are not exported
/// by this tree yet, so the metrics test lets them pass and says so.
const NOT_YET_EXPORTED: &[(&str, &str)] = &[(
    "hookline_worker_active",
    "the amqp.failover work: 1 on the worker replica holding the single active consumer",
)];

/// Config keys the docker configs set that other branches add (unknown to this tree's
/// `check-config`, which stops at the first unknown key): the config test removes them
/// from a copy and checks the rest.
const PENDING_KEYS: &[&str] = &["ingress.metrics_listen", "amqp.failover"];

/// Services by profile (`""`: the services that always run).
const PROFILES: &[(&str, &[&str])] = &[
    ("", &["rabbitmq", "ingress", "worker"]),
    ("monitoring", &["prometheus", "grafana"]),
    (
        "ha",
        &["haproxy", "ingress-1", "ingress-2", "worker-1", "worker-2"],
    ),
];

/// The hookline containers, and the config file each one mounts.
const HOOKLINE_SERVICES: &[(&str, &str)] = &[
    ("ingress", "config/hookline.docker.toml"),
    ("worker", "config/hookline.docker.toml"),
    ("ingress-1", "config/hookline.ha.toml"),
    ("ingress-2", "config/hookline.ha.toml"),
    ("worker-1", "config/hookline.ha.toml"),
    ("worker-2", "config/hookline.ha.toml"),
];

/// The one port published on every interface: the webhook endpoint.
const PUBLIC: &[(&str, u16)] = &[("ingress", 8080), ("haproxy", 8080)];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `program` in the repository, failing loudly when it is not installed.
fn tool(program: &str, args: &[&str], install: &str) -> Output {
    match Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed, and this test needs it: {install} (.ci/run does)")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn promtool(args: &[&str]) -> Output {
    tool("promtool", args, "apt-get install prometheus")
}

fn compose(args: &[&str]) -> Output {
    tool("docker-compose", args, "apt-get install docker-compose")
}

fn yaml(path: &str) -> Yaml {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/hookline.json")).expect("the dashboard is JSON")
}

/// Every query of the dashboard: panel targets' `expr` and template variables' queries.
fn dashboard_queries(value: &Json, out: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Json::String(text)) => out.push(text.clone()),
                    _ => dashboard_queries(value, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|item| dashboard_queries(item, out)),
        _ => {}
    }
}

/// The alert rules: (name, rule).
fn alert_rules() -> Vec<(String, Yaml)> {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("every rule is an alert")
                .to_owned();
            out.push((name, rule.clone()));
        }
    }
    out
}

/// Names matching `hookline_[a-z_]+` that start a word (not inside another identifier).
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "hookline_";
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(PREFIX) {
        let start = from + found;
        let mut end = start + PREFIX.len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if word_start && end > start + PREFIX.len() {
            names.insert(text[start..end].to_owned());
        }
        from = end;
    }
    names
}

/// A histogram's or summary's series name → the metric's name.
fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

#[test]
fn promtool_accepts_rules_and_config_and_the_alert_tests_pass() {
    let check = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert_success("promtool check rules deploy/prometheus/alerts.yml", &check);
    // Offline: it reads the file and the rule files it names, and resolves nothing.
    let check = promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    assert_success(
        "promtool check config deploy/prometheus/prometheus.yml",
        &check,
    );

    // Every alert explains itself and says how urgent it is.
    for (name, rule) in alert_rules() {
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.len() > 20, "alert {name} lacks a useful {annotation}");
        }
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "alert {name}: severity {severity:?}"
        );
    }

    // The unit tests, on a copy of the rules without annotations (promtool would compare
    // every annotation's text verbatim).
    let dir = tempfile::tempdir().unwrap();
    let mut rules = yaml("deploy/prometheus/alerts.yml");
    for group in rules["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            rule.as_mapping_mut().unwrap().remove("annotations");
        }
    }
    std::fs::write(
        dir.path().join("alerts.yml"),
        serde_norway::to_string(&rules).unwrap(),
    )
    .unwrap();
    let tests = dir.path().join("alerts.test.yml");
    std::fs::copy(repo().join("deploy/prometheus/alerts.test.yml"), &tests).unwrap();
    let run = promtool(&["test", "rules", tests.to_str().unwrap()]);
    assert_success(
        "promtool test rules deploy/prometheus/alerts.test.yml",
        &run,
    );

    // The dashboard's PromQL parses: each query becomes a recording rule for promtool, with
    // Grafana's variables replaced.
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    let rules: Vec<Yaml> = queries
        .iter()
        .filter(|q| !q.starts_with("label_values("))
        .enumerate()
        .map(|(i, query)| {
            let expr = query
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("$source", ".*");
            serde_norway::from_str(&format!(
                "{{record: \"dashboard:query_{i}\", expr: {}}}",
                serde_json::to_string(&expr).unwrap()
            ))
            .unwrap()
        })
        .collect();
    assert!(
        rules.len() > 20,
        "the dashboard has only {} queries",
        rules.len()
    );
    let file = dir.path().join("dashboard-queries.yml");
    let groups = serde_norway::to_string(&serde_json::json!({
        "groups": [{"name": "dashboard", "rules": rules}]
    }))
    .unwrap();
    std::fs::write(&file, groups).unwrap();
    let check = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert_success("promtool check rules on the dashboard's queries", &check);
}

/// What one `/metrics` answer exports: every sample's name, and each `# TYPE`.
#[derive(Default)]
struct Exported {
    samples: BTreeSet<String>,
    types: BTreeMap<String, String>,
}

impl Exported {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    self.types.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                self.samples.insert(line[..end].to_owned());
            }
        }
    }

    /// `name` as used in a query is a series hookline exports: a sample of that name (for a
    /// histogram's `_bucket`, one observation must have happened) of a metric whose base
    /// name has a `# TYPE`.
    fn has(&self, name: &str) -> bool {
        self.samples.contains(name)
            && (self.types.contains_key(name) || self.types.contains_key(base_name(name)))
    }
}

#[tokio::test]
async fn every_metric_on_the_dashboard_and_in_the_alerts_is_exported() {
    // What the dashboard and the alerts ask Prometheus for.
    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    for name in queries.iter().flat_map(|q| metric_names(q)) {
        used.entry(name).or_default().insert("dashboard");
    }
    for (_, rule) in alert_rules() {
        for name in metric_names(rule["expr"].as_str().expect("expr")) {
            used.entry(name).or_default().insert("alerts");
        }
    }
    assert!(used.len() > 20, "only {} metric names found", used.len());

    // `hookline run` on the real broker, with one signed delivery through it, so the
    // request, confirm, batch and processed-id histograms have an observation...
    let (config, run, base) = support::start("run").await;
    let broker = Broker::connect(&config.prefix).await;
    let worker = run.metrics_base().await;
    // /readyz is 200 as soon as the spool can write: wait for the broker, so the delivery
    // is published directly (the spool's drainer has no batch or confirm histograms).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&format!("{base}/metrics")).await;
        if text.contains("\nhookline_ingress_direct 1\n")
            && text.contains("\nhookline_amqp_connected{role=\"ingress\"} 1\n")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ingress never published directly"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivery = || {
        format!(
            r#"{{"id":"{}","event":"ticket_created","broadcasted_at":"2026-11-22T10:00:00Z","data":{{"id":"b1"}}}}"#,
            uuid::Uuid::new_v4()
        )
    };
    let body = delivery();
    let (status, answer) = support::post_signed(&base, "aisle", "aisle", &body).await;
    assert_eq!(status, 200, "{answer}");
    // ...and an ingress with no broker, whose delivery is spooled, for the spool's.
    let (_spool_config, _spooling, spool_base) =
        support::start_with("ingress", |c| c.amqp_url = NO_BROKER_URL.into()).await;
    let (status, answer) = support::post_signed(&spool_base, "aisle", "aisle", &body).await;
    assert_eq!(status, 200, "{answer}");

    let allowed: BTreeMap<&str, &str> = NOT_YET_EXPORTED.iter().copied().collect();
    let endpoints = [
        format!("{base}/metrics"),
        format!("{worker}/metrics"),
        format!("{spool_base}/metrics"),
    ];
    // The worker records the event shortly after the 200: scrape until everything shows.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (exported, missing) = loop {
        let mut exported = Exported::default();
        for url in &endpoints {
            exported.add(&scrape(url).await);
        }
        let missing: Vec<&String> = used
            .keys()
            .filter(|name| !exported.has(name) && !allowed.contains_key(base_name(name)))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (exported, missing);
        }
        // Should the first one have gone to the spool after all (a hedge or a mode change),
        // another delivery gives the broker path its observations.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, answer) = support::post_signed(&base, "aisle", "aisle", &delivery()).await;
        assert_eq!(status, 200, "{answer}");
    };
    broker.cleanup(&[]).await;

    for (name, why) in NOT_YET_EXPORTED {
        if exported.types.contains_key(*name) {
            println!(
                "{name} is exported now: remove it from NOT_YET_EXPORTED in tests/it/deploy.rs"
            );
        } else {
            println!("allowed though not exported by this tree: {name} ({why})");
        }
    }
    let unused: Vec<&String> = exported
        .types
        .keys()
        .filter(|name| name.starts_with("hookline_") && !used.keys().any(|u| base_name(u) == *name))
        .collect();
    println!("exported, on neither the dashboard nor an alert: {unused:?}");
    assert!(
        missing.is_empty(),
        "used but not exported by hookline: {:?}\n(exported: {:?})",
        missing
            .iter()
            .map(|name| format!("{name} (in {:?})", used[*name]))
            .collect::<Vec<_>>(),
        exported.samples
    );
}

/// `KEY=value` lines of an env file.
fn env_file(path: &str) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// One published port of a resolved service: the host address (`None`: every interface)
/// and the container port.
#[derive(Debug)]
struct Published {
    host_ip: Option<String>,
    target: u16,
}

fn published_ports(service: &Yaml) -> Vec<Published> {
    let Some(ports) = service["ports"].as_sequence() else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|port| match port {
            Yaml::String(text) => {
                let spec = text.split('/').next().unwrap();
                let parts: Vec<&str> = spec.split(':').collect();
                let (host_ip, target) = match parts.as_slice() {
                    [ip, _, target] => (Some(ip.to_string()), *target),
                    [_, target] | [target] => (None, *target),
                    _ => panic!("port {text:?}"),
                };
                Published {
                    host_ip: host_ip.filter(|ip| !ip.is_empty() && ip != "0.0.0.0"),
                    target: target.parse().unwrap_or_else(|_| panic!("port {text:?}")),
                }
            }
            Yaml::Mapping(_) => Published {
                host_ip: port["host_ip"]
                    .as_str()
                    .filter(|ip| *ip != "0.0.0.0")
                    .map(str::to_owned),
                target: port["target"].as_u64().expect("target") as u16,
            },
            other => panic!("port {other:?}"),
        })
        .collect()
}

/// `source:target[:mode]` of each volume of a resolved service.
fn volumes(service: &Yaml) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .map(|volumes| {
            volumes
                .iter()
                .map(|volume| match volume {
                    Yaml::String(text) => {
                        let mut parts = text.split(':');
                        let source = parts.next().unwrap_or_default().to_owned();
                        (source, parts.next().unwrap_or_default().to_owned())
                    }
                    _ => (
                        volume["source"].as_str().unwrap_or_default().to_owned(),
                        volume["target"].as_str().unwrap_or_default().to_owned(),
                    ),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_is_valid_for_every_profile_and_needs_the_broker_credentials() {
    for profile in ["", "monitoring", "ha"] {
        let mut args = vec!["--env-file", ".env.example"];
        if !profile.is_empty() {
            args.extend(["--profile", profile]);
        }
        args.extend(["config", "-q"]);
        assert_success(
            &format!("docker-compose {}", args.join(" ")),
            &compose(&args),
        );
    }
    // Without a broker password, compose refuses the file instead of using a default.
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("env");
    let without: String = read(".env.example")
        .lines()
        .filter(|line| !line.starts_with("RABBITMQ_DEFAULT_PASS="))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&env, without).unwrap();
    let output = Command::new("docker-compose")
        .args(["--env-file", env.to_str().unwrap(), "config", "-q"])
        .current_dir(repo())
        .env_remove("RABBITMQ_DEFAULT_PASS")
        .output()
        .expect("docker-compose runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("RABBITMQ_DEFAULT_PASS"),
        "compose accepted the file without RABBITMQ_DEFAULT_PASS: {stderr}"
    );
}

#[test]
fn compose_file_is_safe_by_default() {
    let output = compose(&["--env-file", ".env.example", "config"]);
    assert_success("docker-compose --env-file .env.example config", &output);
    let resolved: Yaml = serde_norway::from_slice(&output.stdout).expect("compose prints YAML");
    let services = resolved["services"].as_mapping().expect("services");
    let service = |name: &str| -> &Yaml {
        services
            .get(name)
            .unwrap_or_else(|| panic!("no service {name}"))
    };
    let example = env_file(".env.example");

    // The profiles, and the services that run without one.
    let mut by_profile: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, definition) in services {
        let profiles = strings(&definition["profiles"]);
        assert!(profiles.len() <= 1, "{name:?} is in several profiles");
        let profile = profiles.into_iter().next().unwrap_or_default();
        by_profile
            .entry(profile)
            .or_default()
            .insert(name.as_str().unwrap().to_owned());
    }
    let expected: BTreeMap<String, BTreeSet<String>> = PROFILES
        .iter()
        .map(|(profile, names)| {
            let names = names.iter().map(|n| n.to_string()).collect();
            (profile.to_string(), names)
        })
        .collect();
    assert_eq!(by_profile, expected, "services by profile");

    for (name, definition) in services {
        let name = name.as_str().unwrap();
        // Logs rotate.
        let logging = &definition["logging"];
        assert_eq!(
            logging["driver"].as_str(),
            Some("json-file"),
            "{name}: logging"
        );
        for option in ["max-size", "max-file"] {
            assert!(
                logging["options"][option].as_str().is_some(),
                "{name}: logging option {option}"
            );
        }
        // Only the webhook endpoint is published beyond the host.
        for port in published_ports(definition) {
            if PUBLIC.contains(&(name, port.target)) {
                continue;
            }
            assert_eq!(
                port.host_ip.as_deref(),
                Some("127.0.0.1"),
                "{name}: port {} is published beyond 127.0.0.1",
                port.target
            );
        }
        // No guest account anywhere.
        if let Some(environment) = definition["environment"].as_mapping() {
            for (key, value) in environment {
                let value = value.as_str().unwrap_or_default().to_lowercase();
                assert!(!value.contains("guest"), "{name}: {key:?} mentions guest");
            }
        }
    }
    for (name, target) in PUBLIC {
        assert!(
            published_ports(service(name))
                .iter()
                .any(|p| p.target == *target && p.host_ip.is_none()),
            "{name}: the webhook port {target} is not published"
        );
    }
    let rabbitmq = service("rabbitmq");
    let ports: Vec<u16> = published_ports(rabbitmq).iter().map(|p| p.target).collect();
    assert_eq!(ports, [5672, 15672], "rabbitmq's published ports");
    assert_eq!(
        rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"].as_str(),
        Some(example["RABBITMQ_DEFAULT_USER"].as_str())
    );
    assert_eq!(
        rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"].as_str(),
        Some(example["RABBITMQ_DEFAULT_PASS"].as_str())
    );
    for key in ["RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"] {
        assert!(
            !example[key].to_lowercase().contains("guest"),
            ".env.example: {key}"
        );
    }
    // The raw file gives the credentials no default: a missing .env entry is an error.
    let raw = read("docker-compose.yml");
    for key in ["RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"] {
        assert!(
            raw.contains(&format!("${{{key}:?")),
            "{key} must be required"
        );
        assert!(!raw.contains(&format!("${{{key}:-")), "{key} has a default");
    }

    // The hookline containers.
    let url = format!(
        "amqp://{}:{}@rabbitmq:5672/%2f",
        example["RABBITMQ_DEFAULT_USER"], example["RABBITMQ_DEFAULT_PASS"]
    );
    let mut data_volumes = BTreeMap::new();
    for (name, config) in HOOKLINE_SERVICES {
        let s = service(name);
        assert_eq!(s["image"].as_str(), Some("hookline:latest"), "{name}");
        assert_eq!(s["read_only"].as_bool(), Some(true), "{name}: read_only");
        assert_eq!(s["user"].as_str(), Some("10001:10001"), "{name}: user");
        assert!(
            strings(&s["tmpfs"]).iter().any(|t| t.starts_with("/tmp")),
            "{name}: tmpfs /tmp"
        );
        // The hostname names the ingress's spool directory: it must not change.
        assert_eq!(s["hostname"].as_str(), Some(*name), "{name}: hostname");
        let test = strings(&s["healthcheck"]["test"]);
        assert_eq!(
            test.first().map(String::as_str),
            Some("CMD"),
            "{name}: the healthcheck must not need a shell"
        );
        assert_eq!(test.get(1).map(String::as_str), Some("curl"), "{name}");
        assert_eq!(
            s["environment"]["HOOKLINE__AMQP__URL"].as_str(),
            Some(url.as_str()),
            "{name}: broker URL"
        );
        let volumes = volumes(s);
        assert!(
            volumes
                .iter()
                .any(|(source, target)| source.ends_with(config)
                    && target == "/etc/hookline/hookline.toml"),
            "{name}: mounts {config}: {volumes:?}"
        );
        let data = volumes
            .iter()
            .find(|(_, target)| target == "/var/lib/hookline/data")
            .unwrap_or_else(|| panic!("{name}: no data volume"));
        data_volumes.insert(*name, data.0.clone());
    }
    // The ingress replicas share the data volume (each spools in its own directory); each
    // ha worker has its own.
    assert_eq!(data_volumes["ingress-1"], data_volumes["ingress-2"]);
    assert_eq!(data_volumes["ingress-1"], data_volumes["ingress"]);
    assert_ne!(data_volumes["worker-1"], data_volumes["worker-2"]);
    assert_ne!(data_volumes["worker-1"], data_volumes["worker"]);

    // The profiles' services get their files from deploy/.
    let mounts = |name: &str, source: &str, target: &str| {
        assert!(
            volumes(service(name))
                .iter()
                .any(|(s, t)| s.ends_with(source) && t == target),
            "{name} does not mount {source} at {target}"
        );
    };
    mounts(
        "haproxy",
        "deploy/haproxy/haproxy.cfg",
        "/usr/local/etc/haproxy/haproxy.cfg",
    );
    mounts("prometheus", "deploy/prometheus", "/etc/prometheus");
    mounts(
        "grafana",
        "deploy/grafana/provisioning",
        "/etc/grafana/provisioning",
    );
    mounts(
        "grafana",
        "deploy/grafana/hookline.json",
        "/etc/grafana/dashboards/hookline.json",
    );

    // The image runs as the same non-root user, and has curl for the healthchecks.
    let dockerfile = read("Dockerfile");
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    let user = runtime
        .lines()
        .filter_map(|line| line.trim().strip_prefix("USER "))
        .next_back()
        .expect("the runtime stage sets USER");
    assert_eq!(user.trim(), "10001:10001", "Dockerfile USER");
    assert!(runtime.contains(" curl"), "the runtime image installs curl");
}

#[test]
fn haproxy_config_is_valid_and_checks_readiness() {
    let check = tool(
        "haproxy",
        &["-c", "-f", "deploy/haproxy/haproxy.cfg"],
        "apt-get install haproxy",
    );
    assert_success("haproxy -c -f deploy/haproxy/haproxy.cfg", &check);
    let config = read("deploy/haproxy/haproxy.cfg");
    for line in [
        "http-check send meth GET uri /readyz",
        "http-check expect status 200",
        "server ingress-1 ingress-1:8080",
        "server ingress-2 ingress-2:8080",
        "bind :8080",
    ] {
        assert!(config.contains(line), "haproxy.cfg lacks {line:?}");
    }
}

#[test]
fn grafana_provisioning_matches_the_dashboard() {
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let datasource = &datasources["datasources"][0];
    let uid = datasource["uid"].as_str().expect("datasource uid");
    assert_eq!(datasource["url"].as_str(), Some("http://prometheus:9090"));

    let providers = yaml("deploy/grafana/provisioning/dashboards/hookline.yml");
    assert_eq!(
        providers["providers"][0]["options"]["path"].as_str(),
        Some("/etc/grafana/dashboards"),
        "the provider reads where the compose file mounts the dashboard"
    );

    let dashboard = dashboard();
    assert_eq!(dashboard["uid"].as_str(), Some("hookline"));
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {title:?} has no description"
        );
        assert_eq!(panel["datasource"]["uid"].as_str(), Some(uid), "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"].as_str(), Some(uid), "{title}");
            assert!(target["expr"].as_str().is_some(), "{title}");
        }
    }
}

/// Removes `key` (`section.name`) from a TOML text; true if it was there.
fn remove_key(text: &mut String, key: &str) -> bool {
    let (section, name) = key.split_once('.').unwrap();
    let mut in_section = false;
    let mut removed = false;
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                in_section = trimmed == format!("[{section}]");
            } else if in_section
                && !removed
                && trimmed
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                removed = true;
                return false;
            }
            true
        })
        .collect();
    *text = kept.join("\n");
    removed
}

/// `hookline check-config` on `path` with the secrets of .env.example; keys of
/// [`PENDING_KEYS`] the binary does not know yet are removed from a copy, one by one.
fn check_config(path: &str) {
    let secrets = env_file(".env.example");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(Path::new(path).file_name().unwrap());
    let mut text = read(path);
    let mut removed = Vec::new();
    loop {
        std::fs::write(&copy, &text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_hookline"))
            .arg("--config")
            .arg(&copy)
            .arg("check-config")
            .env_clear()
            .envs(&secrets)
            .env("HOOKLINE_LOG_FORMAT", "json")
            .output()
            .unwrap();
        if output.status.success() {
            break;
        }
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let keys: Vec<String> = all
            .lines()
            .filter_map(|line| serde_json::from_str::<Json>(line).ok())
            .filter_map(|line| Some(support::field_of(&line, "key")?.as_str()?.to_owned()))
            .collect();
        let pending = keys.iter().find(|k| PENDING_KEYS.contains(&k.as_str()));
        match pending {
            Some(key) if keys.len() == 1 && remove_key(&mut text, key) => removed.push(key.clone()),
            _ => panic!("{path} does not load:\n{all}"),
        }
    }
    if !removed.is_empty() {
        println!("{path}: loads once {removed:?} (added by other branches) are known");
    }
}

#[test]
fn docker_configs_load_and_share_their_sources() {
    for path in ["config/hookline.docker.toml", "config/hookline.ha.toml"] {
        check_config(path);
        let text = read(path);
        assert!(
            text.contains("metrics_listen = \"0.0.0.0:9090\""),
            "{path}: ingress.metrics_listen"
        );
    }
    let sources = |path: &str| {
        let text = read(path);
        let start = text.find("\n[[sources]]\n").expect("sources");
        text[start..].to_owned()
    };
    assert_eq!(
        sources("config/hookline.docker.toml"),
        sources("config/hookline.ha.toml"),
        "the ha config's [[sources]] differ from the docker config's"
    );
    assert!(read("config/hookline.ha.toml").contains("\nfailover = true"));
}
