//! Cluster faults: a throwaway three-node RabbitMQ cluster beside the machine's broker, one
//! node stopped under load with quorum queues, and the quorum topology as declared. The
//! machine's own node (`rabbit@localhost`, 5672) is never stopped and never joins.

use crate::harness::{expect_all, load, serial};
use crate::support::{Broker, Process, TestConfig, field_of, wait_for_status};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// One extra node: `rabbit<n>@localhost`, AMQP on `5680 + n`, Erlang distribution on
/// `25680 + n`, clear of the machine's node (5672 and 25672).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node(u16);

/// The cluster's nodes; the first is the one the others join.
const NODES: [Node; 3] = [Node(2), Node(3), Node(4)];

impl Node {
    fn name(self) -> String {
        format!("rabbit{}@localhost", self.0)
    }

    fn amqp_port(self) -> u16 {
        5680 + self.0
    }

    fn dist_port(self) -> u16 {
        25680 + self.0
    }

    /// The node's AMQP URL (guest works on loopback).
    pub(crate) fn url(self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port())
    }

    /// The node hookline names as `host:port` in its logs.
    fn from_address(address: &str) -> Option<Node> {
        let port: u16 = address.rsplit(':').next()?.parse().ok()?;
        NODES.into_iter().find(|n| n.amqp_port() == port)
    }

    /// `rabbitmqctl -q -n <node> args...`, bounded by `timeout`.
    fn ctl(self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut all = vec!["-q", "-n"];
        let name = self.name();
        all.push(&name);
        all.extend_from_slice(args);
        run("rabbitmqctl", &all, &[], timeout)
    }

    /// Like [`Node::ctl`], panicking with the output on failure.
    fn must(self, args: &[&str]) -> String {
        self.ctl(args, Duration::from_secs(90))
            .unwrap_or_else(|e| panic!("rabbitmqctl -n {} {args:?}: {e}", self.name()))
    }

    /// The node's `beam.smp` processes, found by the node name in their environment (the
    /// command line does not carry it), so no other broker is ever touched.
    fn beam_pids(self) -> Vec<u32> {
        let wanted = format!("RABBITMQ_NODENAME={}", self.name());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "beam.smp")
                    && std::fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == wanted.as_bytes()))
            })
            .collect()
    }

    /// Stops the node politely, then kills whatever of it is left; waits until it is gone.
    fn halt(self) {
        if self.beam_pids().is_empty() {
            return;
        }
        let _ = self.ctl(&["stop"], Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.beam_pids();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for pid in left {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                std::thread::sleep(Duration::from_millis(500));
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs `program` with `args` and `envs`; its stdout, or why it failed. A missing program
/// panics: the cluster tests must fail loudly, never skip.
fn run(
    program: &str,
    args: &[&str],
    envs: &[(&str, String)],
    timeout: Duration,
) -> Result<String, String> {
    let child = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed for the cluster tests: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => Err(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            Err(format!("no answer within {timeout:?}"))
        }
    }
}

/// A running three-node cluster; dropping it halts every node and removes their
/// directories, also when the test panics.
pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    /// How long starting and joining took.
    pub(crate) started_in: Duration,
}

impl Cluster {
    /// Starts rabbit2..4@localhost in a fresh directory, joins 3 and 4 to 2, and makes sure
    /// quorum queues and streams are enabled. Blocks for about a minute.
    pub(crate) fn start() -> Cluster {
        let started = Instant::now();
        // A crashed earlier run may have left nodes of these names (and their ports) behind.
        for node in NODES {
            node.halt();
        }
        let dir = tempfile::Builder::new()
            .prefix("hookline-cluster-")
            .tempdir()
            .unwrap();
        // The server runs as `rabbitmq`, which must reach the node directories inside.
        chmod(dir.path(), "755");
        // From here on, a panic halts whatever started.
        let mut cluster = Cluster {
            dir,
            started_in: Duration::ZERO,
        };
        for node in NODES {
            if let Ok(taken) = std::net::TcpListener::bind(("127.0.0.1", node.amqp_port())) {
                drop(taken);
            } else {
                panic!(
                    "port {} is taken by something other than a leftover {}",
                    node.amqp_port(),
                    node.name()
                );
            }
            cluster.launch(node);
        }
        for node in NODES {
            cluster.await_startup(node);
        }
        let seed = NODES[0].name();
        for node in &NODES[1..] {
            node.must(&["stop_app"]);
            node.must(&["join_cluster", &seed]);
            node.must(&["start_app"]);
        }
        cluster.enable_feature_flags();
        let status = NODES[0].must(&["cluster_status", "--formatter", "json"]);
        let status: serde_json::Value = serde_json::from_str(&status)
            .unwrap_or_else(|e| panic!("cluster_status is not JSON ({e}): {status}"));
        let running = status["running_nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Exactly these three: the machine's node must never be part of it.
        assert_eq!(running.len(), NODES.len(), "unexpected members: {status}");
        for node in NODES {
            assert!(
                running.iter().any(|n| n.as_str() == Some(&node.name())),
                "the cluster did not form: {} not running in {status}",
                node.name()
            );
        }
        cluster.started_in = started.elapsed();
        cluster
    }

    fn node_dir(&self, node: Node) -> PathBuf {
        self.dir.path().join(format!("rmq{}", node.0))
    }

    fn launch(&self, node: Node) {
        let dir = self.node_dir(node);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{}\n", node.amqp_port()),
        )
        .unwrap();
        let out = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status()
            .expect("chown runs");
        assert!(out.success(), "chown -R rabbitmq {}", dir.display());
        let path = |name: &str| dir.join(name).display().to_string();
        let envs = [
            ("RABBITMQ_NODENAME", node.name()),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq")),
            ("RABBITMQ_DIST_PORT", node.dist_port().to_string()),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_PID_FILE", path("pid")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("plugins")),
        ];
        run(
            "rabbitmq-server",
            &["-detached"],
            &envs,
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("rabbitmq-server -detached for {}: {e}", node.name()));
    }

    /// Waits for the node to boot; until it has registered with epmd, `await_startup` says
    /// it is not running at all, so that answer is retried too.
    fn await_startup(&self, node: Node) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match node.ctl(
                &["await_startup", "--timeout", "60"],
                Duration::from_secs(70),
            ) {
                Ok(_) => return,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "{} did not start within 120 s: {error}\n{}",
                        node.name(),
                        self.log_tail(node, 30)
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Quorum queues and streams need their feature flags (on by default in 3.10, but an
    /// older default or a changed one must not make the test silently classic).
    fn enable_feature_flags(&self) {
        let seed = NODES[0];
        let flags = seed.must(&["list_feature_flags", "name", "state"]);
        for flag in ["quorum_queue", "stream_queue"] {
            let enabled = flags.lines().any(|l| {
                let mut parts = l.split('\t');
                parts.next() == Some(flag) && parts.next() == Some("enabled")
            });
            if !enabled {
                seed.must(&["enable_feature_flag", flag]);
            }
        }
    }

    /// The node's `[error]` lines so far (a crashed channel is told to the client only as
    /// INTERNAL_ERROR; the reason is here).
    pub(crate) fn errors(&self, node: Node, most: usize) -> Vec<String> {
        let log = self
            .node_dir(node)
            .join("log")
            .join(format!("{}.log", node.name()));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("[error]"))
            .take(most)
            .map(str::to_owned)
            .collect()
    }

    fn log_tail(&self, node: Node, lines: usize) -> String {
        let log = self
            .node_dir(node)
            .join("log")
            .join(format!("{}.log", node.name()));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in NODES {
                eprintln!(
                    "--- {} log (tail) ---\n{}",
                    node.name(),
                    self.log_tail(node, 15)
                );
            }
        }
        // In parallel: a node stopping waits for its peers' answers a while otherwise.
        let halts: Vec<_> = NODES
            .into_iter()
            .map(|node| std::thread::spawn(move || node.halt()))
            .collect();
        for halt in halts {
            let _ = halt.join();
        }
        // The temp directory goes when `dir` drops, after the nodes are gone.
    }
}

fn chmod(path: &Path, mode: &str) {
    let status = Command::new("chmod")
        .arg(mode)
        .arg(path)
        .status()
        .expect("chmod runs");
    assert!(status.success(), "chmod {mode} {}", path.display());
}

/// `x-queue-type = quorum`, for the test's own queues on the cluster.
fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// A JSON log line's `timestamp` (tracing writes RFC 3339).
fn logged_at(line: &serde_json::Value) -> Option<OffsetDateTime> {
    let text = field_of(line, "timestamp")?.as_str()?;
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Seconds from `from` to `to` (negative when `to` is earlier).
fn seconds(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64()
}

/// One scrape of the ingress's `/metrics`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: OffsetDateTime,
    spool: f64,
    broker: f64,
    direct: f64,
}

/// Sums the samples of `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes the ingress's metrics every 200 ms until `stop`.
fn sample_metrics(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut samples = Vec::new();
        let mut ticks = tokio::time::interval(Duration::from_millis(200));
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            ticks.tick().await;
            let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
                continue;
            };
            let Ok(text) = response.text().await else {
                continue;
            };
            let accepted = "code=\"accepted\"";
            samples.push(Sample {
                at: OffsetDateTime::now_utc(),
                spool: metric(
                    &text,
                    "hookline_ingress_requests_total",
                    &[accepted, "stored=\"spool\""],
                ),
                broker: metric(
                    &text,
                    "hookline_ingress_requests_total",
                    &[accepted, "stored=\"broker\""],
                ),
                direct: metric(&text, "hookline_ingress_direct", &[]),
            });
        }
        samples
    })
}

/// The ingress's spooling episodes as (start, end) from its mode-change lines; an episode
/// still open ends at `now`.
fn spool_episodes(ingress: &Process, now: OffsetDateTime) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let mut changes: Vec<(OffsetDateTime, bool)> = Vec::new();
    for (message, spooling) in [
        (
            "Broker unavailable or slow; spooling deliveries to disk until it recovers.",
            true,
        ),
        (
            "Broker keeps up; publishing deliveries directly again.",
            false,
        ),
    ] {
        for line in ingress.log_lines_with("message", message) {
            if let Some(at) = logged_at(&line) {
                changes.push((at, spooling));
            }
        }
    }
    changes.sort_by_key(|(at, _)| *at);
    let mut episodes = Vec::new();
    let mut open = None;
    for (at, spooling) in changes {
        match (spooling, open) {
            (true, None) => open = Some(at),
            (false, Some(start)) => {
                episodes.push((start, at));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        episodes.push((start, now));
    }
    episodes
}

/// Prints the cluster's view of a test's queues when the test fails.
struct ClusterQueueReport {
    prefix: String,
}

impl Drop for ClusterQueueReport {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for node in NODES {
            let listed = node.ctl(
                &[
                    "list_queues",
                    "name",
                    "type",
                    "leader",
                    "messages_ready",
                    "messages_unacknowledged",
                    "consumers",
                ],
                Duration::from_secs(20),
            );
            if let Ok(text) = listed {
                eprintln!("--- queues of {} (via {}) ---", self.prefix, node.name());
                text.lines()
                    .filter(|l| l.starts_with(&self.prefix))
                    .for_each(|l| eprintln!("{l}"));
                return;
            }
        }
    }
}

/// The `list_queues name type arguments` line of `queue`.
fn queue_line<'a>(listing: &'a str, queue: &str) -> &'a str {
    listing
        .lines()
        .find(|l| l.split('\t').next() == Some(queue))
        .unwrap_or_else(|| panic!("queue {queue} missing:\n{listing}"))
}

/// Deliveries the worker may hold unacked (the test config's prefetch): the bound on
/// duplicates a lost connection can cause.
const IN_FLIGHT_BOUND: usize = 64;
/// The load: steady, long enough to span the loss, the election and the node's return.
const RATE: u64 = 200;
const LOAD_SECONDS: u64 = 30;
/// When the node goes, and how long it stays away.
const STOP_AFTER: Duration = Duration::from_secs(8);
const AWAY_FOR: Duration = Duration::from_secs(10);
/// Aisle's response budget.
const BUDGET: Duration = Duration::from_millis(1000);
/// The target for the time 200s are served from the spool after a node loss.
const SPOOL_TARGET_S: f64 = 15.0;

#[tokio::test]
async fn cluster_node_lost_under_load_with_quorum_queues() {
    let _serial = serial().await;
    let test_started = Instant::now();
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    eprintln!(
        "cluster: 3 nodes started and joined in {:.1?}",
        cluster.started_in
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = TestConfig::new(dir.path());
    let p = config.prefix.clone();
    let urls: Vec<String> = NODES.iter().map(|n| format!("\"{}\"", n.url())).collect();
    config.amqp_url = String::new();
    config.amqp_extra = format!(
        "urls = [{}]\nqueue_type = \"quorum\"\nfailover = true\n",
        urls.join(", ")
    );
    let billing = format!("{p}.billing");
    config.extra =
        format!("[[subscriptions]]\nqueue = \"{billing}\"\npatterns = [\"auraconnect.order.#\"]\n");
    let path = config.write();
    let _report = ClusterQueueReport { prefix: p.clone() };
    let ingress = Process::start(&path, "ingress");
    let worker = Process::start(&path, "worker");
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    wait_for_status(&format!("{}/healthz", worker.metrics_base().await), 200).await;
    let connected = "Connected to RabbitMQ; topology declared.";
    for process in [&ingress, &worker] {
        assert!(
            !process.logged("message", connected, 1).await.is_empty(),
            "hookline never connected to the cluster"
        );
    }
    assert!(
        !worker
            .logged("message", "Worker consuming.", 1)
            .await
            .is_empty(),
        "the worker never consumed"
    );

    // The quorum topology, as RabbitMQ lists it.
    let listing = tokio::task::spawn_blocking(|| {
        NODES[0].must(&["list_queues", "name", "type", "arguments"])
    })
    .await
    .unwrap();
    for queue in [
        format!("{p}.ingress"),
        format!("{p}.dead"),
        format!("{p}.unrouted"),
        billing.clone(),
    ] {
        let line = queue_line(&listing, &queue);
        assert!(line.contains("\tquorum\t"), "{queue} is not quorum: {line}");
    }
    let ingress_line = queue_line(&listing, &format!("{p}.ingress"));
    // max_attempts = 3 in the test config: the backstop is 3 + 5.
    for part in [
        "{\"x-delivery-limit\",8}",
        &format!("{{\"x-dead-letter-exchange\",\"{p}.dead\"}}"),
        "{\"x-single-active-consumer\",true}",
    ] {
        assert!(
            ingress_line.contains(part),
            "{part} missing: {ingress_line}"
        );
    }
    let stream = queue_line(&listing, &format!("{p}.processed"));
    assert!(stream.contains("\tstream\t"), "{stream}");
    eprintln!("quorum topology: {ingress_line}");

    // Events must outlive the node loss too: the observer is a quorum queue, declared through
    // the first node, as hookline's queues are, so its leader goes with that node.
    let observer = {
        let broker = Broker::connect_to(&NODES[0].url(), &p).await;
        let name = broker.observe_events_with(quorum()).await;
        let _ = broker.connection.close(200, "".into()).await;
        name
    };

    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_metrics(base.clone(), stop_sampling.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let total = (RATE * LOAD_SECONDS) as usize;
    let sender = tokio::spawn(load(base.clone(), "node-loss", total, RATE, stop));
    tokio::time::sleep(STOP_AFTER).await;

    let lines = ingress.log_lines_with("message", connected);
    let node_field = |line: &serde_json::Value| {
        field_of(line, "node")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let before = lines.last().map(node_field).unwrap_or_default();
    let lost = Node::from_address(&before)
        .unwrap_or_else(|| panic!("the ingress's node {before:?} is not a cluster node"));
    let stopped_at = OffsetDateTime::now_utc();
    let stopping = Instant::now();
    tokio::task::spawn_blocking(move || lost.must(&["stop_app"]))
        .await
        .unwrap();
    eprintln!(
        "node loss: stop_app on {} (the ingress's node) took {:.1?}",
        lost.name(),
        stopping.elapsed()
    );
    tokio::time::sleep(AWAY_FOR.saturating_sub(stopping.elapsed())).await;
    let restarting = Instant::now();
    tokio::task::spawn_blocking(move || lost.must(&["start_app"]))
        .await
        .unwrap();
    eprintln!(
        "node back: start_app on {} took {:.1?}",
        lost.name(),
        restarting.elapsed()
    );

    let result = sender.await.unwrap();
    stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let finished_at = OffsetDateTime::now_utc();

    // Reconnection: the first connect after the loss, to another node.
    let reconnect = ingress
        .log_lines_with("message", connected)
        .into_iter()
        .filter_map(|line| Some((logged_at(&line)?, node_field(&line))))
        .find(|(at, _)| *at > stopped_at);
    let (reconnected_at, after) = reconnect.unwrap_or_else(|| {
        panic!(
            "the ingress never reconnected after {} stopped: {:#?}",
            lost.name(),
            ingress.all_lines()
        )
    });
    assert_ne!(
        Node::from_address(&after),
        Some(lost),
        "the ingress reconnected to the node that was stopped"
    );
    let reconnect_s = seconds(stopped_at, reconnected_at);
    // stop_app takes a while before it closes connections: time the reconnect itself too.
    let dropped_at = ingress
        .log_lines_with("message", "RabbitMQ connection lost; reconnecting.")
        .iter()
        .chain(&ingress.log_lines_with("message", "RabbitMQ connection closed; reconnecting."))
        .filter_map(logged_at)
        .filter(|at| *at > stopped_at)
        .min();
    let reconnect_after_drop = dropped_at.map_or(f64::NAN, |at| seconds(at, reconnected_at));

    // Time served from the spool: the spooling episodes from the loss on, by the mode-change
    // lines, and the span over which spooled 200s grew, by the metrics.
    let episodes = spool_episodes(&ingress, finished_at);
    let spooled_after_loss: f64 = episodes
        .iter()
        .filter(|(_, end)| *end > stopped_at)
        .map(|(start, end)| seconds((*start).max(stopped_at), *end))
        .sum();
    // Hedges won by the spool happen all along (a confirm later than usual); what counts
    // is the time most 200s came from the spool.
    let spool_mostly = samples
        .windows(2)
        .filter(|w| w[1].at > stopped_at)
        .filter(|w| w[1].spool - w[0].spool > w[1].broker - w[0].broker)
        .map(|w| seconds(w[0].at, w[1].at))
        .sum::<f64>();
    let spooled_after = samples
        .iter()
        .rev()
        .find(|s| s.at <= stopped_at)
        .zip(samples.last())
        .map_or(0.0, |(before, last)| last.spool - before.spool);
    // Each sample stands for the 200 ms before it.
    let gauge_spooling = samples
        .iter()
        .filter(|s| s.at > stopped_at && s.direct == 0.0)
        .count() as f64
        * 0.2;
    let spooled_total = samples.last().map_or(0.0, |s| s.spool);
    let brokered_total = samples.last().map_or(0.0, |s| s.broker);
    let slowest = result.latencies.iter().max().copied().unwrap_or_default();

    let broker = Broker::connect_to(&NODES[2].url(), &p).await;
    let dead = broker.depth(&format!("{p}.dead")).await;
    let mut events = broker.watch_queue(&observer).await;
    let duplicates = expect_all(&mut events, &result.accepted, Duration::from_secs(120)).await;

    eprintln!(
        "node loss under load: {} accepted of {total} ({:?} refused), slowest answer {slowest:?}, p99 {:?}",
        result.accepted.len(),
        result.failed,
        result.quantile(0.99)
    );
    eprintln!(
        "  ingress reconnected to {after} {reconnect_s:.1} s after stop_app of {} began, {reconnect_after_drop:.2} s after its connection dropped",
        lost.name()
    );
    eprintln!(
        "  spooling after the loss: {spooled_after_loss:.1} s by the mode lines ({} episodes in all: {:?}); `hookline_ingress_direct` 0 for {gauge_spooling:.1} s; most 200s came from the spool for {spool_mostly:.1} s; {spooled_after} spooled 200s after the loss; {spooled_total} stored in the spool, {brokered_total} by broker confirm",
        episodes.len(),
        episodes
            .iter()
            .map(|(s, e)| format!(
                "{:+.1}s..{:+.1}s",
                seconds(stopped_at, *s),
                seconds(stopped_at, *e)
            ))
            .collect::<Vec<_>>()
    );
    eprintln!("  {duplicates} duplicate event ids (bound {IN_FLIGHT_BOUND}), {dead} dead letters");
    let worker_nodes: Vec<String> = worker
        .log_lines_with("message", connected)
        .iter()
        .map(node_field)
        .collect();
    eprintln!("  worker connected to {worker_nodes:?}");
    for line in worker.all_lines() {
        if line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"") {
            eprintln!("  worker: {line}");
        }
    }
    // Seen once at the worker's first consume (the stream just declared): the client only
    // gets INTERNAL_ERROR, the broker's log says why.
    let internal = [&ingress, &worker]
        .iter()
        .any(|p| p.all_lines().iter().any(|l| l.contains("INTERNAL_ERROR")));
    if internal {
        for node in NODES {
            for line in cluster.errors(node, 40) {
                eprintln!("  {}: {line}", node.name());
            }
        }
    }
    eprintln!(
        "  total test time {:.1?} (cluster start {:.1?})",
        test_started.elapsed(),
        cluster.started_in
    );

    assert!(
        result.failed.is_empty(),
        "every request answered 200: {:?}",
        result.failed
    );
    assert!(slowest < BUDGET, "slowest answer {slowest:?}");
    assert!(duplicates <= IN_FLIGHT_BOUND, "{duplicates} duplicates");
    assert_eq!(dead, 0, "deliveries were dead-lettered");
    assert!(
        spooled_after_loss <= SPOOL_TARGET_S,
        "200s served from the spool for {spooled_after_loss:.1} s after the node loss"
    );
    drop((ingress, worker));
    drop(cluster);
}

/// Needs no cluster: the machine's broker, a fresh prefix, nothing stopped.
#[tokio::test]
async fn cluster_quorum_config_over_a_classic_queue_names_the_migration() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestConfig::new(dir.path());
    config.amqp_extra = "queue_type = \"quorum\"\n".into();
    let p = config.prefix.clone();
    let queue = format!("{p}.ingress");
    let broker = Broker::connect(&p).await;
    // What an earlier, classic configuration left behind.
    let channel = broker.connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = channel.close(200, "".into()).await;

    // hookline's default filter (lapin's own lines off), as an operator runs it.
    let ingress = Process::start_with_env(
        &config.write(),
        "ingress",
        &[("RUST_LOG", "info,lapin=off")],
    );
    let mismatch = "RabbitMQ topology does not match the config.";
    let lines = ingress.logged("message", mismatch, 1).await;
    let Some(line) = lines.first() else {
        broker.cleanup(&[]).await;
        panic!("no mismatch line: {:#?}", ingress.all_lines());
    };
    // Reconnect attempts go on with backoff; the operator is told once per streak.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let repeated = ingress.log_lines_with("message", mismatch).len();
    let all = ingress.all_lines();
    broker.cleanup(&[]).await;

    eprintln!("mismatch: {line}");
    assert_eq!(
        field_of(line, "level").and_then(|l| l.as_str()),
        Some("ERROR")
    );
    let error = field_of(line, "error")
        .and_then(|e| e.as_str())
        .unwrap_or_default();
    for part in [
        &queue,
        "x-queue-type = quorum",
        "x-delivery-limit = 8",
        &format!("x-dead-letter-exchange = {p}.dead"),
        "To migrate",
        "run the worker with its previous config",
        &format!("rabbitmqctl delete_queue {queue}"),
        "start the worker with the new config",
    ] {
        assert!(error.contains(part), "{part:?} missing from {error:?}");
    }
    assert_eq!(repeated, 1, "one ERROR per streak: {all:#?}");
    let bare: Vec<&String> = all
        .iter()
        .filter(|l| l.contains("PRECONDITION_FAILED") && !l.contains(mismatch))
        .collect();
    assert!(bare.is_empty(), "a bare PRECONDITION_FAILED: {bare:#?}");
}
