//! Broker faults under load: stopped and started, a resource alarm, a frozen connection.
//! Every 200'd delivery must arrive as its event; duplicates stay within the window of
//! deliveries in flight when the connection failed (README, "Guarantees").

use crate::harness::{
    BrokerGuard, FreezableProxy, QueueReport, expect_all, load, rabbitmqctl, serial,
};
use crate::support::{AMQP_URL, Broker, Process, TestConfig, wait_for_status};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Deliveries the worker may hold unacked (the test config's prefetch): the bound on
/// duplicates a lost connection can cause.
const IN_FLIGHT_BOUND: usize = 64;

struct Running {
    config: TestConfig,
    base: String,
    ingress: Process,
    worker: Process,
    observer: String,
    _report: QueueReport,
    _dir: tempfile::TempDir,
}

async fn start(amqp_url: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestConfig::new(dir.path());
    config.amqp_url = amqp_url.to_owned();
    let path = config.write();
    let ingress = Process::start(&path, "ingress");
    let worker = Process::start(&path, "worker");
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    wait_for_status(&format!("{}/healthz", worker.metrics_base().await), 200).await;
    let observer = Broker::connect(&config.prefix).await.observe_events().await;
    let report = QueueReport {
        prefix: config.prefix.clone(),
    };
    Running {
        config,
        base,
        ingress,
        worker,
        observer,
        _report: report,
        _dir: dir,
    }
}

impl Running {
    /// The ingress's "spooling" state-change lines so far.
    async fn spooled(&self) -> Vec<serde_json::Value> {
        self.ingress
            .logged(
                "message",
                "Broker unavailable or slow; spooling deliveries to disk until it recovers.",
                1,
            )
            .await
    }

    fn base(&self) -> String {
        self.base.clone()
    }

    async fn finish(self, accepted: &[String]) -> usize {
        let broker = Broker::connect(&self.config.prefix).await;
        let mut events = broker.watch_queue(&self.observer).await;
        let duplicates = expect_all(&mut events, accepted, Duration::from_secs(90)).await;
        broker.cleanup(&[&self.observer]).await;
        drop((self.ingress, self.worker));
        duplicates
    }
}

/// Aisle waits this long for an answer, and is the least patient sender.
const AISLE_BUDGET: Duration = Duration::from_millis(1000);

#[tokio::test]
async fn broker_stopped_and_started_under_load() {
    let _serial = serial().await;
    let _restore = BrokerGuard;
    let run = start(&format!("{AMQP_URL}?heartbeat=2")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(load(run.base(), "stop", 1500, 150, stop));
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    rabbitmqctl(&["start_app"]);
    let result = sender.await.unwrap();
    assert!(
        result.failed.is_empty(),
        "every request answered 200: {:?}",
        result.failed
    );
    let p99 = result.quantile(0.99);
    let spooled = run.spooled().await;
    assert!(
        !spooled.is_empty(),
        "the ingress spooled while the broker was down"
    );
    let duplicates = run.finish(&result.accepted).await;
    eprintln!(
        "stop_app: {} accepted, p99 {p99:?}, {duplicates} duplicate ids",
        result.accepted.len()
    );
    assert!(duplicates <= IN_FLIGHT_BOUND, "{duplicates} duplicates");
}

#[tokio::test]
async fn resource_alarm_spools_within_the_deadline_then_drains() {
    let _serial = serial().await;
    let _restore = BrokerGuard;
    let run = start(&format!("{AMQP_URL}?heartbeat=2")).await;
    // Far above the free space: RabbitMQ raises a disk alarm and blocks every publisher.
    rabbitmqctl(&["set_disk_free_limit", "100000GB"]);
    let stop = Arc::new(AtomicBool::new(false));
    let result = load(run.base(), "alarm", 600, 150, stop).await;
    let (p99, max) = (result.quantile(0.99), result.quantile(1.0));
    rabbitmqctl(&["set_disk_free_limit", "50000000"]);
    assert!(result.failed.is_empty(), "{:?}", result.failed);
    let spooled = run.spooled().await;
    assert!(!spooled.is_empty(), "the ingress spooled during the alarm");
    // A blocked publish is hedged by the spool after hedge_after_ms: every answer comes
    // well inside Aisle's 1000 ms (the README reports the measured maximum).
    assert!(max < AISLE_BUDGET, "slowest answer {max:?}");
    let duplicates = run.finish(&result.accepted).await;
    eprintln!(
        "alarm: {} accepted, p99 {p99:?}, max {max:?}, {duplicates} duplicate ids",
        result.accepted.len()
    );
    assert!(duplicates <= IN_FLIGHT_BOUND);
}

#[tokio::test]
async fn frozen_connection_is_noticed_by_heartbeats() {
    let _serial = serial().await;
    let proxy = FreezableProxy::start().await;
    let run = start(&format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=2",
        proxy.port
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(load(run.base(), "frozen", 900, 100, stop));
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.freeze_current();
    let result = sender.await.unwrap();
    assert!(result.failed.is_empty(), "{:?}", result.failed);
    let lost = run
        .ingress
        .log_lines_with("message", "RabbitMQ connection lost; reconnecting.")
        .len()
        + run
            .ingress
            .log_lines_with("message", "RabbitMQ connection closed; reconnecting.")
            .len();
    assert!(
        lost > 0,
        "the ingress noticed the frozen connection: {:#?}",
        run.ingress.all_lines()
    );
    let max = result.quantile(1.0);
    assert!(max < AISLE_BUDGET, "slowest answer {max:?}");
    let duplicates = run.finish(&result.accepted).await;
    eprintln!(
        "frozen: {} accepted, p99 {:?}, max {max:?}, {duplicates} duplicate ids",
        result.accepted.len(),
        result.quantile(0.99)
    );
    assert!(duplicates <= IN_FLIGHT_BOUND);
}
