//! Test support: start the real `hookline` binary on free ports with a random prefix
//! against the real RabbitMQ, sign like each provider, and watch what reaches the broker.

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The broker every test uses.
pub(crate) const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Secrets of the test config, per provider.
pub(crate) const AISLE_SECRET: &str = "aisle-test-secret";
pub(crate) const INLINE_SECRET: &str = "inline-test-secret";
pub(crate) const AURA_SECRET: &str = "aura-test-secret";
pub(crate) const SIXPARK_SECRET: &str = "b7bcf4a088215ed9396b07c9e8b931a5697bc0c4";
pub(crate) const ASELLO_SECRET: &str = "test-example-secret-with-minimum-length-32-chars";

/// A broker URL nothing answers: port 1 is privileged and never listened on here, so every
/// delivery goes to the spool. (A port picked as "free" earlier could be taken by now.)
pub(crate) const NO_BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// Standard Webhooks secret of the test config (the scheme's published example key).
pub(crate) const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A fresh name prefix so parallel tests never share queues.
pub(crate) fn random_prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// The config file of a test instance.
#[derive(Clone)]
pub(crate) struct TestConfig {
    pub(crate) prefix: String,
    pub(crate) dir: PathBuf,
    /// `ingress.listen`: port 0 by default, so the system picks a free port the process
    /// keeps from the moment it binds it ([`Process::base`] reads it from the log).
    pub(crate) ingress_listen: String,
    /// `worker.metrics_listen`, port 0 by default.
    pub(crate) metrics_listen: String,
    /// `amqp.url`; empty leaves it out (e.g. for `urls` in [`TestConfig::amqp_extra`]).
    pub(crate) amqp_url: String,
    /// Lines added to `[amqp]`.
    pub(crate) amqp_extra: String,
    /// `ingress.max_body_bytes` (4096 unless a test needs more).
    pub(crate) max_body_bytes: usize,
    /// Lines added to `[ingress]`.
    pub(crate) ingress_extra: String,
    /// Lines added to `[storage]`.
    pub(crate) storage_extra: String,
    /// Text appended to the file (more sections or sources).
    pub(crate) extra: String,
    /// Keeps a directory made by [`start`] alive as long as the config.
    _tmp: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl TestConfig {
    /// All six providers, one source each, named after the provider.
    pub(crate) fn new(dir: &std::path::Path) -> Self {
        Self {
            prefix: random_prefix(),
            dir: dir.to_owned(),
            ingress_listen: "127.0.0.1:0".into(),
            metrics_listen: "127.0.0.1:0".into(),
            amqp_url: AMQP_URL.into(),
            amqp_extra: String::new(),
            max_body_bytes: 4096,
            ingress_extra: String::new(),
            storage_extra: String::new(),
            extra: String::new(),
            _tmp: None,
        }
    }

    /// The TOML text.
    pub(crate) fn toml(&self) -> String {
        format!(
            r#"
[ingress]
listen = "{ingress}"
max_body_bytes = {max_body_bytes}
ack_deadline_ms = 800
{ingress_extra}
[amqp]
{url}prefix = "{prefix}"
{amqp_extra}
[storage]
dir = "{dir}"
{storage_extra}
[worker]
prefetch = 64
max_attempts = 3
metrics_listen = "{metrics}"
[[sources]]
name = "aisle"
provider = "aisle"
secrets = ["old-rotated-secret", "{AISLE_SECRET}"]
[[sources]]
name = "inline"
provider = "inline"
secrets = ["{INLINE_SECRET}"]
[[sources]]
name = "auraconnect"
provider = "auraconnect"
secrets = ["{AURA_SECRET}"]
[[sources]]
name = "sixpark"
provider = "sixpark"
secrets = ["{SIXPARK_SECRET}"]
[[sources]]
name = "asello"
provider = "asello"
secrets = ["{ASELLO_SECRET}"]
[[sources]]
name = "standard-webhooks"
provider = "standard-webhooks"
secrets = ["{SW_SECRET}"]
{extra}
"#,
            ingress = self.ingress_listen,
            metrics = self.metrics_listen,
            ingress_extra = self.ingress_extra,
            storage_extra = self.storage_extra,
            max_body_bytes = self.max_body_bytes,
            // Setting both `url` and `urls` is a config error.
            url = if self.amqp_url.is_empty() {
                String::new()
            } else {
                format!("url = \"{}\"\n", self.amqp_url)
            },
            amqp_extra = self.amqp_extra,
            prefix = self.prefix,
            dir = self.dir.join("data").display(),
            extra = self.extra,
        )
    }

    /// Writes the file and returns its path.
    pub(crate) fn write(&self) -> PathBuf {
        self.write_as("hookline.toml")
    }

    /// Writes the file under another name (a second process's config) and returns its path.
    pub(crate) fn write_as(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, self.toml()).unwrap();
        path
    }
}

/// Starts `hookline <command>` on a fresh config in a fresh temp directory and waits until
/// it answers; returns the config (which keeps the directory), the process and the
/// ingress base URL.
pub(crate) async fn start(command: &str) -> (TestConfig, Process, String) {
    start_with(command, |_| {}).await
}

/// Like [`start`], changing the config first.
pub(crate) async fn start_with(
    command: &str,
    change: impl FnOnce(&mut TestConfig),
) -> (TestConfig, Process, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestConfig::new(dir.path());
    config._tmp = Some(std::sync::Arc::new(dir));
    change(&mut config);
    let process = Process::start(&config.write(), command);
    let base = if command == "worker" {
        let metrics = process.metrics_base().await;
        wait_for_status(&format!("{metrics}/healthz"), 200).await;
        metrics
    } else {
        let base = process.base().await;
        wait_for_status(&format!("{base}/readyz"), 200).await;
        base
    };
    (config, process, base)
}

/// A running `hookline` process; killed on drop.
pub(crate) struct Process {
    child: Child,
    command: String,
    pub(crate) lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `hookline --config <path> <command>` with JSON logs captured.
    pub(crate) fn start(config: &std::path::Path, command: &str) -> Self {
        Self::start_with_env(config, command, &[])
    }

    /// Like [`Process::start`], with extra environment variables.
    pub(crate) fn start_with_env(
        config: &std::path::Path,
        command: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
            .arg("--config")
            .arg(config)
            .arg(command)
            .env("HOOKLINE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookline binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self {
            child,
            command: command.to_owned(),
            lines,
        }
    }

    /// Sends SIGTERM and waits (at most 15 s) for the exit status and the time it took.
    pub(crate) fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        signal(self.child.id(), "TERM");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no exit 15 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no goodbye.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Log lines so far that parse as JSON with `field` equal to `value`.
    pub(crate) fn log_lines_with(&self, field: &str, value: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| field_of(v, field).and_then(|f| f.as_str()) == Some(value))
            .collect()
    }

    /// Waits (at most 5 s) until at least `at_least` lines have `field` equal to `value`,
    /// then returns them; returns what there is on timeout, for the caller to assert on.
    /// Lines reach the test through a pipe and a reader thread, so they can trail the HTTP
    /// answer or the event they describe.
    pub(crate) async fn logged(
        &self,
        field: &str,
        value: &str,
        at_least: usize,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let lines = self.log_lines_with(field, value);
            if lines.len() >= at_least || Instant::now() >= deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every captured line.
    pub(crate) fn all_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The address the process bound for `key` (`ingress.listen`, `worker.metrics_listen`),
    /// from its "Listening." line; waits up to 10 s for it.
    pub(crate) async fn bound(&self, key: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .log_lines_with("message", "Listening.")
                .into_iter()
                .find(|line| field_of(line, "key").and_then(|k| k.as_str()) == Some(key))
                .and_then(|line| Some(field_of(&line, "listen")?.as_str()?.to_owned()));
            if let Some(address) = found {
                return address;
            }
            assert!(
                Instant::now() < deadline,
                "hookline {} never logged the address of {key}",
                self.command
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://<ingress address>`.
    pub(crate) async fn base(&self) -> String {
        format!("http://{}", self.bound("ingress.listen").await)
    }

    /// `http://<worker metrics address>`.
    pub(crate) async fn metrics_base(&self) -> String {
        format!("http://{}", self.bound("worker.metrics_listen").await)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `SIG<name>` (e.g. `HUP`) and returns at once.
    pub(crate) fn send_signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// The exit status, if the process has ended.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

/// A field of a JSON log line, flattened or nested under `fields`.
pub(crate) fn field_of<'a>(
    line: &'a serde_json::Value,
    field: &str,
) -> Option<&'a serde_json::Value> {
    line.get(field).or_else(|| line.get("fields")?.get(field))
}

/// How long [`Process::logged`] waits for a line to come through the pipe.
const LOG_WAIT: Duration = Duration::from_secs(5);

/// Per-event lines: too many to print, and the failing assertion already says which ids.
const PER_EVENT_MESSAGES: [&str; 2] = ["Event published.", "Duplicate event dropped."];

/// Log lines a failing test prints per process, newest last.
const LINES_ON_FAILURE: usize = 60;

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
        // A failing test is only as useful as what it says: show what the process logged.
        if std::thread::panicking() {
            let lines = self.all_lines();
            let wanted: Vec<&String> = lines
                .iter()
                .filter(|line| !PER_EVENT_MESSAGES.iter().any(|m| line.contains(m)))
                .collect();
            let skip = wanted.len().saturating_sub(LINES_ON_FAILURE);
            eprintln!(
                "--- hookline {} ({} lines, {} per-event lines left out) ---",
                self.command,
                lines.len(),
                lines.len() - wanted.len()
            );
            for line in &wanted[skip..] {
                eprintln!("{line}");
            }
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls `url` until it answers `status` (10 s at most).
pub(crate) async fn wait_for_status(url: &str, status: u16) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(resp) = client.get(url).send().await
            && resp.status().as_u16() == status
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test config's secret of `provider`.
fn secret_of(provider: &str) -> &'static str {
    match provider {
        "aisle" => AISLE_SECRET,
        "inline" => INLINE_SECRET,
        "auraconnect" => AURA_SECRET,
        "sixpark" => SIXPARK_SECRET,
        "asello" => ASELLO_SECRET,
        "standard-webhooks" => SW_SECRET,
        other => panic!("unknown provider {other}"),
    }
}

/// GETs `url` (a `/metrics` page), insisting on a 200, and returns the text.
pub(crate) async fn scrape(url: &str) -> String {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "{url}");
    response.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels include every `labels` pair (Prometheus
/// text).
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Signs `body` the way `provider` does (its own `Provider::sign`); returns (header, value)
/// for providers that sign with one header.
pub(crate) fn sign(provider: &str, body: &[u8]) -> (&'static str, String) {
    let mut headers = signed_headers(provider, body);
    assert_eq!(headers.len(), 1, "{provider} signs with several headers");
    headers.remove(0)
}

/// Every header `provider` would send with `body`, signed as it signs, now.
pub(crate) fn signed_headers(provider: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    use sha2::Digest;
    // The same body gets the same message id, as a sender's retry would.
    let id = format!("msg_{}", &hex::encode(sha2::Sha256::digest(body))[..24]);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    signed_as(provider, &id, now, body)
}

/// Standard Webhooks headers for `id` and `timestamp` over `body`, with the test secret.
pub(crate) fn sw_headers(id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    signed_as("standard-webhooks", id, timestamp, body)
}

fn signed_as(provider: &str, id: &str, unix: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let found = hookline_core::provider::find(provider).expect("a registered provider");
    let key = found.signing_key(secret_of(provider)).unwrap();
    let at = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    found.sign(body, &key, id, at)
}

/// POSTs a signed body to `/webhooks/<source>`; returns status and JSON body.
pub(crate) async fn post_signed(
    base: &str,
    source: &str,
    provider: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().post(format!("{base}/webhooks/{source}"));
    for (header, value) in signed_headers(provider, body.as_bytes()) {
        request = request.header(header, value);
    }
    let resp = request
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// One message seen on the broker.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) routing_key: String,
    pub(crate) properties: lapin::BasicProperties,
    pub(crate) body: serde_json::Value,
    pub(crate) raw: Vec<u8>,
}

/// A connection to the test broker that watches queues and cleans up a prefix.
pub(crate) struct Broker {
    pub(crate) connection: Connection,
    pub(crate) prefix: String,
}

impl Broker {
    /// Connects; fails loudly when RabbitMQ is not running.
    pub(crate) async fn connect(prefix: &str) -> Self {
        Self::connect_to(AMQP_URL, prefix).await
    }

    /// Connects to the node at `url` (e.g. one of a test cluster's).
    pub(crate) async fn connect_to(url: &str, prefix: &str) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ must run at {url} for these tests: {e}"));
        Self {
            connection,
            prefix: prefix.to_owned(),
        }
    }

    /// Binds a fresh exclusive queue to `<prefix>.events` with `pattern` and collects it.
    /// Waits for hookline to declare the exchange.
    pub(crate) async fn watch_events(&self, pattern: &str) -> Watch {
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let (channel, queue) = self
            .bind_to_events("", options, FieldTable::default(), pattern)
            .await;
        self.consume(channel, &queue).await
    }

    /// Declares `queue` and binds it to `<prefix>.events` with `pattern`, retrying until
    /// hookline has declared the exchange; returns the channel and the queue's name.
    async fn bind_to_events(
        &self,
        queue: &str,
        options: QueueDeclareOptions,
        arguments: FieldTable,
        pattern: &str,
    ) -> (lapin::Channel, String) {
        let exchange = format!("{}.events", self.prefix);
        retry_until_declared(|| async {
            let channel = self.connection.create_channel().await?;
            let declared = channel
                .queue_declare(queue.into(), options, arguments.clone())
                .await?;
            channel
                .queue_bind(
                    declared.name().clone(),
                    exchange.as_str().into(),
                    pattern.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok((channel, declared.name().to_string()))
        })
        .await
    }

    /// Collects every message of a queue hookline declares (acks them).
    pub(crate) async fn watch_queue(&self, queue: &str) -> Watch {
        let channel = retry_until_declared(|| async {
            let channel = self.connection.create_channel().await?;
            channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok(channel)
        })
        .await;
        self.consume(channel, queue).await
    }

    async fn consume(&self, channel: lapin::Channel, queue: &str) -> Watch {
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let seen = Seen {
                    routing_key: delivery.routing_key.to_string(),
                    properties: delivery.properties.clone(),
                    body: serde_json::from_slice(&delivery.data).unwrap_or(serde_json::Value::Null),
                    raw: delivery.data.clone(),
                };
                if tx.send(seen).is_err() {
                    break;
                }
            }
        });
        Watch { rx }
    }

    /// Declares a durable queue `<prefix>.observer` bound to every event, so a test can
    /// read what was published across a broker restart; returns its name.
    pub(crate) async fn observe_events(&self) -> String {
        self.observe_events_with(FieldTable::default()).await
    }

    /// Like [`Broker::observe_events`], declaring the queue with `arguments` (e.g. a quorum
    /// queue, whose events survive the loss of a cluster node).
    pub(crate) async fn observe_events_with(&self, arguments: FieldTable) -> String {
        let name = format!("{}.observer", self.prefix);
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let (channel, _) = self.bind_to_events(&name, options, arguments, "#").await;
        let _ = channel.close(200, "".into()).await;
        name
    }

    /// Puts a dead letter for delivery `id` into `queue`, as the worker writes them.
    pub(crate) async fn publish_dead_letter(&self, queue: &str, id: &str) {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let now = hookline_core::timestamp::format_timestamp(time::OffsetDateTime::now_utc());
        let headers = hookline_amqp::headers::string_headers([
            ("x-hookline-source", "aisle"),
            ("x-hookline-provider", "aisle"),
            ("x-hookline-received-at", now.as_str()),
            ("x-hookline-error", "missing required field `id`"),
            ("x-hookline-died-at", now.as_str()),
        ]);
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b"{}",
                lapin::BasicProperties::default()
                    .with_message_id(id.into())
                    .with_headers(headers)
                    .with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let _ = channel.close(200, "".into()).await;
    }

    /// Every message in `queue`, ready or held unacked by a consumer (from `rabbitmqctl`;
    /// a passive declare counts only the ready ones).
    pub(crate) fn total(&self, queue: &str) -> u64 {
        let out = Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "name", "messages"])
            .output()
            .expect("rabbitmqctl must be installed for these tests");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let (name, count) = line.split_once('\t')?;
                (name == queue).then(|| count.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("{queue} is not in rabbitmqctl list_queues"))
    }

    /// Waits (at most `within`) until `queue` holds no message at all, ready or unacked.
    pub(crate) async fn wait_empty(&self, queue: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let total = self.total(queue);
            if total == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{queue} still holds {total} messages"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Messages waiting in `queue` (passive declare).
    pub(crate) async fn depth(&self, queue: &str) -> u32 {
        retry_until_declared(|| async {
            let channel = self.connection.create_channel().await?;
            let q = channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let _ = channel.close(200, "".into()).await;
            Ok(q.message_count())
        })
        .await
    }

    /// Deletes the prefix's queues and exchanges (and `extra_queues`).
    pub(crate) async fn cleanup(&self, extra_queues: &[&str]) {
        let channel = self.connection.create_channel().await.unwrap();
        let p = &self.prefix;
        let mut queues: Vec<String> = ["ingress", "unrouted", "dead", "processed"]
            .iter()
            .map(|s| format!("{p}.{s}"))
            .collect();
        queues.extend(extra_queues.iter().map(|s| s.to_string()));
        for q in queues {
            let _ = channel
                .queue_delete(q.into(), QueueDeleteOptions::default())
                .await;
        }
        for x in ["events", "unrouted", "dead", "observe"] {
            let _ = channel
                .exchange_delete(format!("{p}.{x}").into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

/// Retries `attempt` while hookline is still connecting and declaring its topology
/// (a passive declare or bind fails until then, closing the channel).
async fn retry_until_declared<T, F, Fut>(attempt: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = lapin::Result<T>>,
{
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("hookline never declared its topology: {error}"),
        }
    }
}

/// Messages arriving on a watched queue.
pub(crate) struct Watch {
    rx: mpsc::UnboundedReceiver<Seen>,
}

impl Watch {
    /// Waits for `n` messages (at most `within`), panicking with what did arrive.
    pub(crate) async fn take(&mut self, n: usize, within: Duration) -> Vec<Seen> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(seen)) => got.push(seen),
                _ => panic!(
                    "expected {n} messages within {within:?}, got {}: {got:#?}",
                    got.len()
                ),
            }
        }
        got
    }

    /// Everything that arrives within `total`.
    pub(crate) async fn rest_within(&mut self, total: Duration) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + total;
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(seen)) => got.push(seen),
                Ok(None) => panic!("the watch's consumer ended: nothing more could be seen"),
                Err(_) => return got,
            }
        }
    }

    /// Whatever arrives within `quiet` (to assert that nothing more comes). Panics if the
    /// consumer is gone, which would make "nothing came" meaningless.
    pub(crate) async fn rest(&mut self, quiet: Duration) -> Vec<Seen> {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(quiet, self.rx.recv()).await {
                Ok(Some(seen)) => got.push(seen),
                Ok(None) => panic!("the watch's consumer ended: nothing more could be seen"),
                Err(_) => return got,
            }
        }
    }
}

/// Runs the hookline binary to completion with `args` and extra `env` (never the
/// caller's `HOOKLINE_CONFIG`): its exit code and stdout followed by stderr.
pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("HOOKLINE_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}
