//! hookline's configuration: built-in defaults, then the TOML file, then
//! `HOOKLINE__<SECTION>__<KEY>` environment variables, then validation that names the
//! file and the key at fault.

use crate::provider::{self, Provider};
use crate::secret::Secret;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[ingress]`: the HTTP side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressConfig {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
    /// A delivery the broker has not confirmed by then goes to the spool.
    pub ack_deadline_ms: u64,
    /// A confirm later than this races a spool write; the first durable one answers.
    /// 0: broker first, always (no hedge; the spool only while the broker is away,
    /// blocked or failing).
    pub hedge_after_ms: u64,
    /// A body not complete this long after its headers: 408, connection closed.
    pub body_timeout_ms: u64,
    /// Longest time from a request's headers to its answer.
    pub request_timeout_ms: u64,
    /// Open connections at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Requests being read or stored at once; more get 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// Body bytes held in memory at once across all requests; beyond it, 503.
    pub body_budget_bytes: usize,
    /// Request headers allowed (more: 431).
    pub max_headers: usize,
    /// Where `/metrics` (and `/healthz`) are served instead of `listen`; unset: on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain; with `tls_key`, `listen` serves HTTPS (reloaded on SIGHUP).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 8080).into(),
            max_body_bytes: 262_144,
            ack_deadline_ms: 800,
            hedge_after_ms: 3,
            body_timeout_ms: 10_000,
            request_timeout_ms: 15_000,
            max_connections: 10_000,
            max_in_flight: 1024,
            body_budget_bytes: 64 * 1024 * 1024,
            max_headers: 256,
            metrics_listen: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl IngressConfig {
    /// `ack_deadline_ms` as a duration.
    pub fn ack_deadline(&self) -> Duration {
        Duration::from_millis(self.ack_deadline_ms)
    }

    /// `hedge_after_ms` as a duration; `None` when hedging is off.
    pub fn hedge_after(&self) -> Option<Duration> {
        (self.hedge_after_ms > 0).then(|| Duration::from_millis(self.hedge_after_ms))
    }

    /// `body_timeout_ms` as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The certificate and key files when HTTPS is configured (validation ensures both or
    /// neither).
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }
}

/// The broker used when neither `amqp.url` nor `amqp.urls` is set.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `[amqp]`: where RabbitMQ is and how hookline names things there.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// AMQP URI of one node; it may carry a password, so `Debug` hides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Several nodes of one cluster, tried in turn on (re)connect (instead of `url`).
    pub urls: Vec<String>,
    /// Prefix of every queue and exchange name.
    pub prefix: String,
    /// Kind of the queues hookline declares (ingress, dead letters, unrouted, subscriptions).
    pub queue_type: QueueType,
    /// Worker replicas: one consumes at a time, the processed ids are shared on a stream.
    pub failover: bool,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: None,
            urls: Vec::new(),
            prefix: "hookline".into(),
            queue_type: QueueType::Classic,
            failover: false,
        }
    }
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .field("urls", &format!("[{} redacted]", self.urls.len()))
            .field("prefix", &self.prefix)
            .field("queue_type", &self.queue_type)
            .field("failover", &self.failover)
            .finish()
    }
}

/// `amqp.queue_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Classic queues on one node.
    Classic,
    /// Quorum queues, replicated across the cluster (Raft).
    Quorum,
}

/// `[storage]`: local state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds `spool/` (ingress) and `processed/` (worker).
    pub dir: PathBuf,
    /// This process's name among replicas sharing `dir` (empty: the host's name); each
    /// ingress spools to `spool/<instance>/`.
    pub instance: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: "data".into(),
            instance: String::new(),
        }
    }
}

impl StorageConfig {
    /// The directory holding every ingress instance's spool (one subdirectory each).
    pub fn spool_root(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// Where the ingress instance `instance` spools deliveries the broker could not take.
    pub fn spool_dir(&self, instance: &str) -> PathBuf {
        self.spool_root().join(instance)
    }

    /// Where the worker keeps processed event ids. With failover each replica keeps its own
    /// copy of the shared history (`processed/<instance>`); without, one store that survives
    /// a renamed host.
    pub fn processed_dir(&self, failover: bool, instance: &str) -> PathBuf {
        if failover {
            self.dir.join("processed").join(instance)
        } else {
            self.dir.join("processed")
        }
    }
}

/// `[worker]`: consuming and publishing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Deliveries in flight per worker.
    pub prefetch: u16,
    /// Failed processing attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Processed ids older than this are pruned.
    pub retention_days: u32,
    /// Address of the worker's `/metrics` and `/healthz`.
    pub metrics_listen: SocketAddr,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            prefetch: 256,
            max_attempts: 5,
            retention_days: 7,
            metrics_listen: ([0, 0, 0, 0], 9091).into(),
        }
    }
}

impl WorkerConfig {
    /// `retention_days` as a duration.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.retention_days) * 86_400)
    }
}

/// `[[sources]]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    provider: String,
    secrets: Option<Vec<Secret>>,
    secret_env: Option<String>,
    timestamp_tolerance_s: Option<u64>,
    budget_ms: Option<u64>,
}

/// `[[subscriptions]]`: a durable queue the worker declares and binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Queue name (used as is, without the prefix).
    pub queue: String,
    /// Topic patterns bound on `<prefix>.events`.
    pub patterns: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    ingress: IngressConfig,
    amqp: AmqpConfig,
    storage: StorageConfig,
    worker: WorkerConfig,
    sources: Vec<RawSource>,
    subscriptions: Vec<Subscription>,
}

/// Default `[[sources]] timestamp_tolerance_s`: the Standard Webhooks scheme's 5 minutes.
pub const DEFAULT_TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(300);

/// One validated endpoint: `POST /webhooks/<name>`.
#[derive(Clone)]
pub struct SourceSpec {
    /// Endpoint name (`[a-z0-9_-]+`).
    pub name: String,
    /// The provider that signs and shapes its deliveries.
    pub provider: &'static dyn Provider,
    /// Every accepted HMAC key (rotation), as the provider derives them from the secrets.
    pub secrets: Vec<Secret>,
    /// How far a signed timestamp may be from the receive time (providers that sign one).
    pub timestamp_tolerance: Duration,
    /// How long the provider waits for an answer: answers slower than this are counted.
    pub budget: Duration,
}

impl SourceSpec {
    /// A source with the provider's defaults; the error says why a secret is unusable.
    pub fn new(
        name: impl Into<String>,
        provider: &'static dyn Provider,
        secrets: Vec<Secret>,
    ) -> Result<Self, String> {
        let keys = secrets
            .iter()
            .map(|secret| {
                let text = String::from_utf8_lossy(secret.expose());
                provider.signing_key(&text).map(Secret::from_key)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: name.into(),
            provider,
            secrets: keys,
            timestamp_tolerance: DEFAULT_TIMESTAMP_TOLERANCE,
            budget: provider.response_budget(),
        })
    }
}

impl fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceSpec")
            .field("name", &self.name)
            .field("provider", &self.provider.name())
            .field("secrets", &self.secrets)
            .field("timestamp_tolerance", &self.timestamp_tolerance)
            .field("budget", &self.budget)
            .finish()
    }
}

/// A parsed AMQP URL; `Debug` and `Display` show only host and port (it may hold a password).
#[derive(Clone, PartialEq)]
pub struct AmqpUri(pub amq_protocol_uri::AMQPUri);

impl fmt::Display for AmqpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let authority = &self.0.authority;
        write!(f, "{}:{}", authority.host, authority.port)
    }
}

impl fmt::Debug for AmqpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpUri({self})")
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[ingress]`.
    pub ingress: IngressConfig,
    /// `[amqp]`.
    pub amqp: AmqpConfig,
    /// The broker nodes to connect to, parsed from `amqp.url`.
    pub amqp_uris: Vec<AmqpUri>,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[worker]`.
    pub worker: WorkerConfig,
    /// `[[sources]]`.
    pub sources: Vec<SourceSpec>,
    /// `[[subscriptions]]`.
    pub subscriptions: Vec<Subscription>,
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the bad value came from: the file, or the environment variables.
    pub origin: String,
    /// The key at fault, e.g. `sources[1].name`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Everything wrong with a configuration; each line names the file (or variable) and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems found, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(Problem::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

const ENV_PREFIX: &str = "HOOKLINE__";
const ENV_ORIGIN: &str = "environment (HOOKLINE__<SECTION>__<KEY>)";

impl Config {
    /// Reads `path` and the process environment, and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        if !path.is_file() {
            return Err(ConfigError {
                problems: vec![Problem {
                    origin,
                    key: String::new(),
                    message: "config file not found (set --config or HOOKLINE_CONFIG)".into(),
                }],
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                origin,
                key: String::new(),
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        Self::from_toml(&text, path)
    }

    /// [`Config::load`] of a file holding `text` at `path`: the defaults, `text`, the process
    /// environment, then validation. Tests and the fuzzer use it without touching the disk.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let figment = Figment::from(Serialized::defaults(Defaults::default()))
            .merge(Toml::string(text))
            .merge(Env::prefixed(ENV_PREFIX).split("__"));
        let raw: RawConfig = figment
            .extract()
            .map_err(|e| figment_problems(e, &origin))?;
        validate(raw, path, &|name| std::env::var(name).ok())
    }

    /// This process's instance name: `storage.instance`, else the host's name (on Linux, the
    /// kernel's hostname, which is the container id under Docker), with characters that
    /// cannot name a directory replaced; `default` when there is no name at all.
    pub fn instance(&self) -> String {
        if !self.storage.instance.is_empty() {
            return self.storage.instance.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let name: String = host
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if is_instance_name(&name) {
            name
        } else {
            "default".into()
        }
    }

    /// Looks a source up by name.
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// The defaults as a figment layer, so env overrides of a section absent from the file work.
#[derive(Default, Serialize)]
struct Defaults {
    ingress: IngressConfig,
    amqp: AmqpConfig,
    storage: StorageConfig,
    worker: WorkerConfig,
}

fn figment_problems(error: figment::Error, file: &str) -> ConfigError {
    let problems = error
        .into_iter()
        .map(|e| {
            let origin = match e.metadata.as_ref() {
                Some(m) if m.name.contains(ENV_PREFIX) => ENV_ORIGIN.to_owned(),
                _ => file.to_owned(),
            };
            // A secret written in the wrong shape (`secrets = "..."`) is still a secret.
            let message = if e.path.iter().any(|key| key == "secrets") {
                without_value(&e.kind)
            } else {
                without_snippet(&e.kind.to_string())
            };
            Problem {
                origin,
                key: e.path.join("."),
                message,
            }
        })
        .collect();
    ConfigError { problems }
}

/// A TOML syntax error without the toml crate's quote of the line (`3 | secrets = [...`):
/// the line may hold a secret, and "line 3, column 11" finds it as well.
fn without_snippet(message: &str) -> String {
    let quoted = |line: &str| {
        let rest = line
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        rest.trim_start().starts_with('|')
    };
    message
        .lines()
        .filter(|line| !quoted(line))
        .collect::<Vec<_>>()
        .join(": ")
}

/// What is wrong with a value, without the value (figment's own text repeats it).
fn without_value(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    const NOT_SHOWN: &str = "the value is not shown: it may be a secret";
    match kind {
        Kind::InvalidType(_, expected) => {
            format!("invalid type: expected {expected} ({NOT_SHOWN})")
        }
        Kind::InvalidValue(_, expected) => {
            format!("invalid value: expected {expected} ({NOT_SHOWN})")
        }
        Kind::InvalidLength(..) | Kind::MissingField(_) | Kind::DuplicateField(_) => {
            kind.to_string()
        }
        _ => format!("invalid value ({NOT_SHOWN})"),
    }
}

fn validate(
    raw: RawConfig,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| {
        problems.push(Problem {
            origin: origin.clone(),
            key,
            message,
        })
    };

    if raw.ingress.max_body_bytes == 0 {
        problem(
            "ingress.max_body_bytes".into(),
            "must be greater than 0".into(),
        );
    }
    for (key, value) in [
        ("ack_deadline_ms", raw.ingress.ack_deadline_ms),
        ("body_timeout_ms", raw.ingress.body_timeout_ms),
        ("request_timeout_ms", raw.ingress.request_timeout_ms),
        ("max_connections", raw.ingress.max_connections as u64),
        ("max_in_flight", raw.ingress.max_in_flight as u64),
        ("max_headers", raw.ingress.max_headers as u64),
    ] {
        if value == 0 {
            problem(format!("ingress.{key}"), "must be greater than 0".into());
        }
    }
    if raw.ingress.body_budget_bytes < raw.ingress.max_body_bytes {
        problem(
            "ingress.body_budget_bytes".into(),
            format!(
                "must be at least ingress.max_body_bytes ({}), or no body of that size could ever be read",
                raw.ingress.max_body_bytes
            ),
        );
    }
    match (&raw.ingress.tls_cert, &raw.ingress.tls_key) {
        (Some(_), None) => problem(
            "ingress.tls_key".into(),
            "must be set when ingress.tls_cert is (HTTPS needs both)".into(),
        ),
        (None, Some(_)) => problem(
            "ingress.tls_cert".into(),
            "must be set when ingress.tls_key is (HTTPS needs both)".into(),
        ),
        _ => {}
    }
    for (key, path) in [
        ("tls_cert", &raw.ingress.tls_cert),
        ("tls_key", &raw.ingress.tls_key),
    ] {
        if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            problem(format!("ingress.{key}"), "must not be empty".into());
        }
    }
    // Port 0 asks for any free port, so two such addresses never collide.
    if let Some(address) = raw.ingress.metrics_listen
        && address == raw.ingress.listen
        && address.port() != 0
    {
        problem(
            "ingress.metrics_listen".into(),
            format!("must differ from ingress.listen ({address})"),
        );
    }
    if raw.amqp.prefix.is_empty() {
        problem("amqp.prefix".into(), "must not be empty".into());
    }
    let mut amqp_uris = Vec::new();
    let urls: Vec<(String, &str)> = match (&raw.amqp.url, raw.amqp.urls.as_slice()) {
        (Some(_), [_, ..]) => {
            problem(
                "amqp".into(),
                "set either `url` (one node) or `urls` (several nodes), not both".into(),
            );
            Vec::new()
        }
        (Some(url), []) => vec![("amqp.url".into(), url.as_str())],
        (None, []) => vec![("amqp.url".into(), DEFAULT_AMQP_URL)],
        (None, urls) => urls
            .iter()
            .enumerate()
            .map(|(i, url)| (format!("amqp.urls[{i}]"), url.as_str()))
            .collect(),
    };
    for (key, url) in urls {
        match amqp_url(url) {
            Ok(uri) => amqp_uris.push(uri),
            Err(message) => problem(key, message),
        }
    }
    if !raw.storage.instance.is_empty() && !is_instance_name(&raw.storage.instance) {
        problem(
            "storage.instance".into(),
            format!(
                "{:?} must match [A-Za-z0-9._-]+ (it names a directory)",
                raw.storage.instance
            ),
        );
    }
    if raw.worker.prefetch == 0 {
        problem("worker.prefetch".into(), "must be at least 1".into());
    }
    if raw.worker.max_attempts == 0 {
        problem("worker.max_attempts".into(), "must be at least 1".into());
    }
    if raw.worker.retention_days == 0 {
        problem("worker.retention_days".into(), "must be at least 1".into());
    }

    let mut sources: Vec<SourceSpec> = Vec::new();
    for (i, source) in raw.sources.into_iter().enumerate() {
        let at = |key: &str| format!("sources[{i}].{key}");
        if !is_source_name(&source.name) {
            problem(
                at("name"),
                format!("{:?} must match [a-z0-9_-]+", source.name),
            );
        } else if sources.iter().any(|s| s.name == source.name) {
            problem(
                at("name"),
                format!("duplicate source name {:?}", source.name),
            );
        }
        let Some(provider) = provider::find(&source.provider) else {
            problem(
                at("provider"),
                format!(
                    "unknown provider {:?} (expected one of: {})",
                    source.provider,
                    provider::names().join(", ")
                ),
            );
            continue;
        };
        let (secrets, key) = match (source.secrets, source.secret_env) {
            (Some(_), Some(_)) => {
                problem(
                    format!("sources[{i}]"),
                    "set either `secrets` or `secret_env`, not both".into(),
                );
                continue;
            }
            (Some(list), None) => (list, at("secrets")),
            (None, Some(var)) => match env(&var) {
                Some(value) => (
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(Secret::new)
                        .collect(),
                    format!("{} (environment variable {var})", at("secret_env")),
                ),
                None => {
                    problem(
                        at("secret_env"),
                        format!("environment variable {var} is not set"),
                    );
                    continue;
                }
            },
            (None, None) => {
                problem(
                    format!("sources[{i}]"),
                    format!(
                        "source {:?} has no secret: set `secrets` or `secret_env`",
                        source.name
                    ),
                );
                continue;
            }
        };
        if secrets.is_empty() {
            problem(key.clone(), "no secret given".into());
        }
        for (j, secret) in secrets.iter().enumerate() {
            let len = secret.char_len();
            if len < provider.min_secret_len() {
                problem(
                    format!("{key}[{j}]"),
                    format!(
                        "{} secrets must be at least {} characters (this one has {len})",
                        provider.name(),
                        provider.min_secret_len()
                    ),
                );
            }
        }
        let mut spec = match SourceSpec::new(source.name, provider, secrets) {
            Ok(spec) => spec,
            Err(message) => {
                problem(key, message);
                continue;
            }
        };
        if let Some(seconds) = source.timestamp_tolerance_s {
            spec.timestamp_tolerance = Duration::from_secs(seconds);
        }
        match source.budget_ms {
            Some(0) => problem(at("budget_ms"), "must be greater than 0".into()),
            Some(ms) => spec.budget = Duration::from_millis(ms),
            None => {}
        }
        sources.push(spec);
    }

    for (i, sub) in raw.subscriptions.iter().enumerate() {
        if sub.queue.is_empty() {
            problem(
                format!("subscriptions[{i}].queue"),
                "must not be empty".into(),
            );
        }
        if sub.patterns.is_empty() || sub.patterns.iter().any(String::is_empty) {
            problem(
                format!("subscriptions[{i}].patterns"),
                "needs at least one non-empty pattern".into(),
            );
        }
    }

    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(Config {
        path: path.to_owned(),
        ingress: raw.ingress,
        amqp: raw.amqp,
        amqp_uris,
        storage: raw.storage,
        worker: raw.worker,
        sources,
        subscriptions: raw.subscriptions,
    })
}

/// Parses an AMQP URL the way the broker client will; the message never repeats the URL,
/// which may hold a password.
pub fn amqp_url(url: &str) -> Result<AmqpUri, String> {
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err("must start with amqp:// or amqps://".into());
    }
    url.parse()
        .map(AmqpUri)
        .map_err(|e: String| format!("not a valid AMQP URL: {}", e.replace(url, "<url>")))
}

/// Whether `name` can name an instance's directory: no separators, no dot-dot tricks.
pub fn is_instance_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn is_source_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
// figment's Jail closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    const ASELLO_SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn load(jail: &mut Jail, toml: &str) -> Result<Config, ConfigError> {
        jail.create_file("hookline.toml", toml).unwrap();
        Config::load(Path::new("hookline.toml"))
    }

    fn problems(toml: &str) -> Vec<String> {
        let mut out = Vec::new();
        Jail::expect_with(|jail| {
            out = load(jail, toml)
                .unwrap_err()
                .problems
                .iter()
                .map(Problem::to_string)
                .collect();
            Ok(())
        });
        out
    }

    #[test]
    fn defaults_match_the_contract() {
        Jail::expect_with(|jail| {
            let config = load(jail, "").unwrap();
            assert_eq!(config.ingress, IngressConfig::default());
            assert_eq!(config.ingress.listen.to_string(), "0.0.0.0:8080");
            assert_eq!(config.ingress.max_body_bytes, 262_144);
            assert_eq!(config.ingress.ack_deadline_ms, 800);
            assert_eq!(config.amqp.url, None);
            assert_eq!(config.amqp_uris.len(), 1);
            assert_eq!(config.amqp_uris[0], amqp_url(DEFAULT_AMQP_URL).unwrap());
            assert_eq!(config.amqp.prefix, "hookline");
            assert_eq!(config.storage.dir, PathBuf::from("data"));
            assert_eq!(config.worker.prefetch, 256);
            assert_eq!(config.worker.max_attempts, 5);
            assert_eq!(config.worker.retention_days, 7);
            assert_eq!(config.worker.metrics_listen.to_string(), "0.0.0.0:9091");
            assert!(config.sources.is_empty() && config.subscriptions.is_empty());
            Ok(())
        });
    }

    #[test]
    fn shipped_config_documents_the_code_defaults() {
        // config/hookline.toml sets every key to its default (its header says so); this
        // keeps the file and the code from drifting apart.
        Jail::expect_with(|jail| {
            let shipped = include_str!("../../../config/hookline.toml");
            let config = load(jail, shipped).unwrap();
            assert_eq!(config.ingress, IngressConfig::default());
            // The file spells out the default URL; the code leaves `url` unset for it.
            assert_eq!(
                config.amqp,
                AmqpConfig {
                    url: Some(DEFAULT_AMQP_URL.into()),
                    ..AmqpConfig::default()
                }
            );
            assert_eq!(config.storage, StorageConfig::default());
            assert_eq!(config.worker, WorkerConfig::default());
            assert_eq!(config.sources.len(), 6, "one example source per provider");
            for source in &config.sources {
                assert_eq!(source.budget, source.provider.response_budget());
                assert_eq!(source.timestamp_tolerance, DEFAULT_TIMESTAMP_TOLERANCE);
            }
            // Every key the code knows appears in the file, commented or not.
            let defaults = figment::value::Value::serialize(Defaults::default()).unwrap();
            for (section, keys) in defaults.as_dict().unwrap() {
                for key in keys.as_dict().unwrap().keys() {
                    assert!(
                        shipped.contains(&format!("\n{key} ="))
                            || shipped.contains(&format!("\n# {key} =")),
                        "[{section}] {key} is not documented in config/hookline.toml"
                    );
                }
            }
            Ok(())
        });
    }

    #[test]
    fn standard_webhooks_secrets_must_be_base64() {
        let problems = problems(
            r#"[[sources]]
            name = "svix"
            provider = "standard-webhooks"
            secrets = ["whsec_not base64!"]"#,
        );
        assert_eq!(
            problems,
            [
                "hookline.toml: sources[0].secrets: a standard-webhooks secret must be `whsec_` followed by base64"
            ]
        );
        Jail::expect_with(|jail| {
            let config = load(
                jail,
                r#"[[sources]]
                name = "svix"
                provider = "standard-webhooks"
                secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
                timestamp_tolerance_s = 60
                budget_ms = 15000"#,
            )
            .unwrap();
            let source = config.source("svix").unwrap();
            assert_eq!(source.timestamp_tolerance, Duration::from_secs(60));
            assert_eq!(source.budget, Duration::from_millis(15_000));
            assert_eq!(source.secrets[0].expose().len(), 24, "the decoded key");
            Ok(())
        });
    }

    #[test]
    fn full_file_with_env_overrides() {
        Jail::expect_with(|jail| {
            jail.set_env("HOOKLINE__AMQP__URL", "amqp://u:p@broker:5672/%2f");
            jail.set_env("HOOKLINE__WORKER__PREFETCH", "32");
            jail.set_env("HOOKLINE__INGRESS__LISTEN", "127.0.0.1:9000");
            jail.set_env("AISLE_SECRETS", " one , two ,");
            let config = load(
                jail,
                &format!(
                    r#"
                    [amqp]
                    prefix = "hl"
                    [[sources]]
                    name = "aisle"
                    provider = "aisle"
                    secret_env = "AISLE_SECRETS"
                    [[sources]]
                    name = "shop-1"
                    provider = "asello"
                    secrets = ["{ASELLO_SECRET}"]
                    [[subscriptions]]
                    queue = "billing"
                    patterns = ["*.payment.*", "auraconnect.order.#"]
                    "#
                ),
            )
            .unwrap();
            assert_eq!(
                config.amqp.url.as_deref(),
                Some("amqp://u:p@broker:5672/%2f")
            );
            assert_eq!(config.amqp.prefix, "hl");
            assert_eq!(config.worker.prefetch, 32);
            assert_eq!(config.ingress.listen.to_string(), "127.0.0.1:9000");
            let aisle = config.source("aisle").unwrap();
            assert_eq!(aisle.secrets, [Secret::new("one"), Secret::new("two")]);
            assert_eq!(config.source("shop-1").unwrap().provider.name(), "asello");
            assert_eq!(config.subscriptions[0].patterns.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn each_rule_names_file_and_key() {
        let cases = [
            (
                r#"[[sources]]
                name = "a"
                provider = "stripe"
                secrets = ["x"]"#,
                r#"hookline.toml: sources[0].provider: unknown provider "stripe""#,
            ),
            (
                r#"[[sources]]
                name = "a"
                provider = "aisle"
                secrets = ["x"]
                [[sources]]
                name = "a"
                provider = "inline"
                secrets = ["y"]"#,
                r#"hookline.toml: sources[1].name: duplicate source name "a""#,
            ),
            (
                r#"[[sources]]
                name = "a"
                provider = "aisle""#,
                r#"hookline.toml: sources[0]: source "a" has no secret"#,
            ),
            (
                r#"[[sources]]
                name = "a"
                provider = "aisle"
                secrets = []"#,
                "hookline.toml: sources[0].secrets: no secret given",
            ),
            (
                r#"[[sources]]
                name = "shop"
                provider = "asello"
                secrets = ["short-secret"]"#,
                "hookline.toml: sources[0].secrets[0]: asello secrets must be at least 32 characters (this one has 12)",
            ),
            (
                r#"[[sources]]
                name = "Front Door"
                provider = "aisle"
                secrets = ["x"]"#,
                r#"hookline.toml: sources[0].name: "Front Door" must match [a-z0-9_-]+"#,
            ),
            (
                r#"[[sources]]
                name = "a"
                provider = "aisle"
                secret_env = "HOOKLINE_TEST_UNSET_VAR""#,
                "hookline.toml: sources[0].secret_env: environment variable HOOKLINE_TEST_UNSET_VAR is not set",
            ),
            (
                "[worker]\nprefetch = \"many\"",
                "hookline.toml: worker.prefetch: invalid type",
            ),
            (
                "[ingress]\nlisten = \"nowhere\"",
                "hookline.toml: ingress.listen: invalid socket address syntax",
            ),
            (
                "[ingres]\nlisten = \"x\"",
                "hookline.toml: ingres: unknown field",
            ),
            (
                "[worker]\nmax_attempts = 0",
                "hookline.toml: worker.max_attempts: must be at least 1",
            ),
            ("not toml", "hookline.toml: TOML parse error at line 1"),
            (
                "[ingress]\ntls_cert = \"cert.pem\"",
                "hookline.toml: ingress.tls_key: must be set when ingress.tls_cert is",
            ),
            (
                "[ingress]\ntls_key = \"key.pem\"",
                "hookline.toml: ingress.tls_cert: must be set when ingress.tls_key is",
            ),
            (
                "[ingress]\ntls_cert = \"\"\ntls_key = \"key.pem\"",
                "hookline.toml: ingress.tls_cert: must not be empty",
            ),
            (
                "[ingress]\nlisten = \"0.0.0.0:8080\"\nmetrics_listen = \"0.0.0.0:8080\"",
                "hookline.toml: ingress.metrics_listen: must differ from ingress.listen",
            ),
        ];
        for (toml, expected) in cases {
            let found = problems(toml);
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "expected a problem starting with {expected:?}, got {found:?}"
            );
        }
    }

    #[test]
    fn tls_and_metrics_listen_are_optional_and_overridable() {
        Jail::expect_with(|jail| {
            let config = load(jail, "").unwrap();
            assert_eq!(config.ingress.tls_files(), None);
            assert_eq!(config.ingress.metrics_listen, None);
            // Both on port 0: each gets its own free port, no conflict.
            load(
                jail,
                "[ingress]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"",
            )
            .unwrap();
            jail.set_env("HOOKLINE__INGRESS__TLS_KEY", "/etc/hookline/key.pem");
            jail.set_env("HOOKLINE__INGRESS__METRICS_LISTEN", "127.0.0.1:9090");
            let config = load(
                jail,
                "[ingress]\nlisten = \"0.0.0.0:0\"\ntls_cert = \"/etc/hookline/cert.pem\"",
            )
            .unwrap();
            assert_eq!(
                config.ingress.tls_files(),
                Some((
                    Path::new("/etc/hookline/cert.pem"),
                    Path::new("/etc/hookline/key.pem")
                ))
            );
            assert_eq!(
                config.ingress.metrics_listen,
                Some(([127, 0, 0, 1], 9090).into())
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let found = problems(
            r#"[[sources]]
            name = "shop"
            provider = "asello"
            secrets = ["super-secret-value"]"#,
        );
        assert_eq!(
            found.len(),
            1,
            "the too-short secret is reported: {found:?}"
        );
        assert!(
            found.iter().all(|p| !p.contains("super-secret-value")),
            "{found:?}"
        );
    }

    #[test]
    fn secrets_in_the_wrong_shape_are_not_repeated() {
        // Caught by the config_toml fuzz target's check on a hand-written input: figment's
        // "found string \"...\"" quoted the secret.
        for (value, expected) in [
            (
                r#""super-secret-value""#,
                "hookline.toml: sources.0.secrets: invalid type: expected a sequence",
            ),
            (
                "[98765432109876]",
                "hookline.toml: sources.0.secrets.0: invalid type: expected a string",
            ),
        ] {
            let found = problems(&format!(
                "[[sources]]\nname = \"a\"\nprovider = \"aisle\"\nsecrets = {value}"
            ));
            let secret = value.trim_matches(['"', '[', ']']);
            assert!(found.iter().all(|p| !p.contains(secret)), "{found:?}");
            assert!(found.iter().any(|p| p.starts_with(expected)), "{found:?}");
        }
    }

    #[test]
    fn env_errors_name_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("HOOKLINE__WORKER__PREFETCH", "lots");
            let err = load(jail, "").unwrap_err();
            assert!(err.to_string().contains(ENV_ORIGIN), "{err}");
            assert!(err.to_string().contains("worker.prefetch"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_syntax_error_names_line_and_column_but_never_quotes_the_line() {
        let text =
            "[[sources]]\nname = \"a\"\nprovider = \"aisle\"\nsecrets = [\"topsecret-value\n";
        let err = Config::from_toml(text, Path::new("hookline.toml")).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("line 4, column 28"), "{shown}");
        assert!(shown.contains("invalid basic string"), "{shown}");
    }

    #[test]
    fn from_toml_is_what_load_does_with_the_file() {
        let text = "[worker]\nprefetch = 8\n[[sources]]\nname = \"a\"\nprovider = \"aisle\"\nsecrets = [\"k\"]";
        Jail::expect_with(|jail| {
            let from_file = load(jail, text).unwrap();
            let from_text = Config::from_toml(text, Path::new("hookline.toml")).unwrap();
            assert_eq!(format!("{from_file:?}"), format!("{from_text:?}"));
            assert_eq!(
                load(jail, "[worker]\nprefetch = 0").unwrap_err(),
                Config::from_toml("[worker]\nprefetch = 0", Path::new("hookline.toml"))
                    .unwrap_err()
            );
            jail.create_binary("binary.toml", b"[worker]\xff")?;
            let err = Config::load(Path::new("binary.toml")).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("binary.toml: cannot read the config file"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_reported() {
        let err = Config::load(Path::new("/nonexistent/hookline.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/hookline.toml: config file not found")
        );
    }
}
