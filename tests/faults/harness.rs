//! What the fault tests share: the serial lock, a broker guard that always restores
//! RabbitMQ, a load generator that remembers which deliveries got 200, a freezable TCP
//! proxy, and the check that every 200'd delivery arrived as an event.

use crate::support::{Watch, sign};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the lock that keeps fault tests from running beside each other (a failed test
/// releases it like any other).
pub(crate) async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Runs `rabbitmqctl` with `args`; panics with its output on failure.
pub(crate) fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed for the fault tests");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Restores the broker when dropped: app started, default disk limit, alarms cleared.
pub(crate) struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "start_app"])
            .status();
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "set_disk_free_limit", "50000000"])
            .status();
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "await_startup", "--timeout", "60"])
            .status();
    }
}

/// Prints the broker's view of a test's queues when the test fails, so a failure says
/// whether events were never published, stuck in a queue or unconsumed.
pub(crate) struct QueueReport {
    pub(crate) prefix: String,
}

impl Drop for QueueReport {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let out = Command::new("rabbitmqctl")
            .args([
                "-q",
                "list_queues",
                "name",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
            ])
            .output();
        eprintln!(
            "--- queues of {} (ready, unacked, consumers) ---",
            self.prefix
        );
        match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|line| line.starts_with(&self.prefix))
                .for_each(|line| eprintln!("{line}")),
            Err(error) => eprintln!("rabbitmqctl list_queues: {error}"),
        }
    }
}

/// Outcome of a load run: the aisle event ids that got 200, and every latency.
#[derive(Default)]
pub(crate) struct Load {
    pub(crate) accepted: Vec<String>,
    pub(crate) failed: HashMap<u16, usize>,
    pub(crate) latencies: Vec<Duration>,
}

impl Load {
    /// The latency below which `q` of requests finished.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        let mut all = self.latencies.clone();
        all.sort();
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// Where the load goes: an ingress base URL that a test can change when it restarts the
/// ingress (which then binds a new port).
#[derive(Clone)]
pub(crate) struct Target(Arc<std::sync::RwLock<String>>);

impl Target {
    /// Load for `base`.
    pub(crate) fn new(base: String) -> Self {
        Self(Arc::new(std::sync::RwLock::new(base)))
    }

    /// Sends the rest of the load to `base`.
    pub(crate) fn set(&self, base: String) {
        *self.0.write().unwrap() = base;
    }

    fn get(&self) -> String {
        self.0.read().unwrap().clone()
    }
}

impl From<String> for Target {
    fn from(base: String) -> Self {
        Self::new(base)
    }
}

/// Sends `count` distinct signed aisle deliveries at about `rate` per second over a few
/// connections, until done or `stop` is set. Connection errors count as status 0.
pub(crate) async fn load(
    target: impl Into<Target>,
    tag: &str,
    count: usize,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> Load {
    let target = target.into();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let result = Arc::new(Mutex::new(Load::default()));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, result, next, stop) =
            (client.clone(), result.clone(), next.clone(), stop.clone());
        let (target, tag) = (target.clone(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i as usize >= count || stop.load(Ordering::Relaxed) {
                    return;
                }
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let id = format!("{tag}-{i}");
                let body =
                    format!(r#"{{"id":"{id}","event":"ticket_created","data":{{"n":{i}}}}}"#);
                let (header, value) = sign("aisle", body.as_bytes());
                let sent = Instant::now();
                let status = client
                    .post(format!("{}/webhooks/aisle", target.get()))
                    .header(header, value)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                let mut r = result.lock().unwrap();
                r.latencies.push(sent.elapsed());
                if status == 200 {
                    r.accepted.push(format!("aisle:{id}"));
                } else {
                    *r.failed.entry(status).or_default() += 1;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(result).ok().unwrap().into_inner().unwrap()
}

/// Waits until every id in `expected` has arrived on `events`; returns how many ids
/// arrived more than once. Panics with the missing ids after `within`.
pub(crate) async fn expect_all(events: &mut Watch, expected: &[String], within: Duration) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + within;
    while expected.iter().any(|id| !seen.contains_key(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} of {} accepted deliveries never arrived, e.g. {:?}",
            expected.iter().filter(|id| !seen.contains_key(*id)).count(),
            expected.len(),
            expected.iter().find(|id| !seen.contains_key(*id))
        );
        for event in events
            .rest_within(left.min(Duration::from_millis(500)))
            .await
        {
            *seen
                .entry(event.body["id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    // Late duplicates still count.
    for event in events.rest(Duration::from_millis(1500)).await {
        *seen
            .entry(event.body["id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    seen.values().filter(|&&n| n > 1).count()
}

/// A TCP proxy to RabbitMQ whose open connections can be frozen (bytes held, socket open),
/// the way a dead NAT or a hung peer looks to a client.
pub(crate) struct FreezableProxy {
    pub(crate) port: u16,
    generation: Arc<AtomicU64>,
    frozen_below: Arc<AtomicU64>,
}

impl FreezableProxy {
    /// Starts forwarding 127.0.0.1:<port> to 127.0.0.1:5672.
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let generation = Arc::new(AtomicU64::new(1));
        let frozen_below = Arc::new(AtomicU64::new(0));
        let (gen_, frozen) = (generation.clone(), frozen_below.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect("127.0.0.1:5672").await else {
                    continue;
                };
                let id = gen_.fetch_add(1, Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, id, frozen.clone()));
                tokio::spawn(pipe(sr, cw, id, frozen.clone()));
            }
        });
        Self {
            port,
            generation,
            frozen_below,
        }
    }

    /// Freezes every connection open now; later connections flow normally.
    pub(crate) fn freeze_current(&self) {
        self.frozen_below
            .store(self.generation.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    frozen_below: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if id < frozen_below.load(Ordering::SeqCst) {
            // Hold everything and keep the socket open, forever (bounded by the test).
            tokio::time::sleep(Duration::from_secs(120)).await;
            return;
        }
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if id < frozen_below.load(Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The provider sends the `count` deliveries of `tag` again: `worker` must drop every one
/// as a duplicate and publish nothing, and nothing may be left or dead-lettered.
pub(crate) async fn resend_publishes_nothing(
    base: &str,
    tag: &str,
    count: usize,
    broker: &crate::support::Broker,
    worker: &crate::support::Process,
    events: &mut Watch,
) {
    let before = worker.log_lines_with("outcome", "duplicate").len();
    let again = load(
        base.to_owned(),
        tag,
        count,
        1000,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    let prefix = &broker.prefix;
    broker
        .wait_empty(&format!("{prefix}.ingress"), Duration::from_secs(60))
        .await;
    let dropped = worker.logged("outcome", "duplicate", before + count).await;
    assert!(
        dropped.len() >= before + count,
        "only {} of {count} resends were dropped as duplicates",
        dropped.len() - before
    );
    assert_eq!(
        broker.total(&format!("{prefix}.dead")),
        0,
        "nothing dead-lettered"
    );
    let extra = events.rest(Duration::from_secs(2)).await;
    assert!(
        extra.is_empty(),
        "{} events published again after the resend",
        extra.len()
    );
}
