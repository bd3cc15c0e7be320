//! More than one of each process: worker replicas with `amqp.failover` (kill -9 of the
//! active one under load, a new replica on an empty disk), and ingress replicas sharing one
//! storage directory (one killed with deliveries in its spool, picked up by another replica
//! or by `hookline spool drain`).

use crate::harness::{QueueReport, Target, expect_all, load, resend_publishes_nothing, serial};
use crate::support::{Broker, NO_BROKER_URL, Process, TestConfig, wait_for_status};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Duplicates a lost active worker may cause: the deliveries it had in flight (the test
/// config's prefetch).
const IN_FLIGHT_BOUND: usize = 64;

/// A failover config on a shared storage directory; `instance` names the replica.
fn replica(config: &TestConfig, instance: &str) -> std::path::PathBuf {
    let mut config = config.clone();
    config.storage_extra = format!("instance = \"{instance}\"");
    config.write_as(&format!("hookline-{instance}.toml"))
}

/// Which of the workers logged that it became the active one, waiting up to `within`.
async fn active(workers: &[&Process], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        for (i, worker) in workers.iter().enumerate() {
            if !worker.log_lines_with("message", ACTIVE).is_empty() {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no worker became active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A config with `amqp.failover` on, and the queue report a failing test prints.
fn failover_config(dir: &std::path::Path) -> (TestConfig, QueueReport) {
    let mut config = TestConfig::new(dir);
    config.amqp_extra = "failover = true".into();
    let report = QueueReport {
        prefix: config.prefix.clone(),
    };
    (config, report)
}

const ACTIVE: &str = "Active worker: caught up with the processed-id history; processing.";

#[tokio::test]
async fn active_worker_killed_under_load_the_standby_takes_over() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _report) = failover_config(dir.path());
    let ingress = Process::start(&replica(&config, "in"), "ingress");
    let mut a = Process::start(&replica(&config, "a"), "worker");
    let mut b = Process::start(&replica(&config, "b"), "worker");
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    for worker in [&a, &b] {
        wait_for_status(&format!("{}/healthz", worker.metrics_base().await), 200).await;
    }
    let broker = Broker::connect(&config.prefix).await;
    let observer = broker.observe_events().await;

    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(load(base.clone(), "fo", 1500, 300, stop.clone()));
    let first = active(&[&a, &b], Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (killed, standby) = if first == 0 {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    let killed_at = Instant::now();
    killed.kill9();
    // The standby becomes active (its first delivery and catch-up with the stream).
    let deadline = killed_at + Duration::from_secs(30);
    while standby.log_lines_with("message", ACTIVE).is_empty() {
        assert!(Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let takeover = killed_at.elapsed();
    let result = sender.await.unwrap();
    assert!(result.failed.is_empty(), "{:?}", result.failed);
    let mut events = broker.watch_queue(&observer).await;
    let duplicates = expect_all(&mut events, &result.accepted, Duration::from_secs(60)).await;
    eprintln!(
        "failover: takeover {takeover:?} after kill -9 of the active worker; {} accepted, {duplicates} duplicates",
        result.accepted.len()
    );
    assert!(
        takeover <= Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    assert!(duplicates <= IN_FLIGHT_BOUND, "{duplicates}");

    // The provider sends everything again: the new active worker knows every id.
    resend_publishes_nothing(&base, "fo", 1500, &broker, standby, &mut events).await;
    broker.cleanup(&[&observer]).await;
}

#[tokio::test]
async fn a_new_replica_on_an_empty_disk_knows_the_history() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _report) = failover_config(dir.path());
    let ingress = Process::start(&replica(&config, "in"), "ingress");
    let mut old = Process::start(&replica(&config, "old"), "worker");
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    let broker = Broker::connect(&config.prefix).await;
    let observer = broker.observe_events().await;
    let stop = Arc::new(AtomicBool::new(false));
    let first = load(base.clone(), "empty", 400, 400, stop.clone()).await;
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    let mut events = broker.watch_queue(&observer).await;
    assert_eq!(
        expect_all(&mut events, &first.accepted, Duration::from_secs(30)).await,
        0
    );

    // A second storage directory: nothing on disk but what the stream tells it.
    let other = tempfile::tempdir().unwrap();
    let mut fresh_config = config.clone();
    fresh_config.dir = other.path().to_owned();
    let new = Process::start(&replica(&fresh_config, "new"), "worker");
    let metrics = new.metrics_base().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = crate::support::scrape(&format!("{metrics}/metrics")).await;
        let ids = text
            .lines()
            .find(|l| l.starts_with("hookline_processed_ids "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if ids >= first.accepted.len() as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new replica rebuilt only {ids} ids"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, took) = old.terminate();
    assert!(status.success() && took < Duration::from_secs(10));

    let again = load(base.clone(), "empty", 400, 400, stop).await;
    assert!(again.failed.is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    while new.log_lines_with("message", ACTIVE).is_empty() {
        assert!(Instant::now() < deadline, "the new replica never took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingress_queue = format!("{}.ingress", config.prefix);
    for _ in 0..100 {
        if broker.depth(&ingress_queue).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let extra = events.rest(Duration::from_secs(2)).await;
    assert!(
        extra.is_empty(),
        "{} events republished by the new replica",
        extra.len()
    );
    // At least every resend (a hedged delivery can also arrive twice, dropped the same way).
    let dropped = new.logged("outcome", "duplicate", 400).await;
    assert!(
        dropped.len() >= 400,
        "{} resends dropped as duplicates",
        dropped.len()
    );
    broker.cleanup(&[&observer]).await;
}

#[tokio::test]
async fn an_ingress_replica_killed_with_a_full_spool_is_drained_by_another() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path());
    let _report = QueueReport {
        prefix: config.prefix.clone(),
    };
    // Replica "a" cannot reach the broker: everything it accepts waits in its spool.
    let mut stranded = config.clone();
    stranded.amqp_url = NO_BROKER_URL.into();
    let mut a = Process::start(&replica(&stranded, "a"), "ingress");
    let b = Process::start(&replica(&config, "b"), "ingress");
    let _worker = Process::start(&replica(&config, "w"), "worker");
    let (base_a, base_b) = (a.base().await, b.base().await);
    for base in [&base_a, &base_b] {
        wait_for_status(&format!("{base}/readyz"), 200).await;
    }
    let broker = Broker::connect(&config.prefix).await;
    let observer = broker.observe_events().await;

    // Both replicas under load, as behind a load balancer; "a" dies with its spool full.
    let stop = Arc::new(AtomicBool::new(false));
    let to_a = tokio::spawn(load(Target::new(base_a), "ra", 300, 150, stop.clone()));
    let to_b = tokio::spawn(load(Target::new(base_b), "rb", 300, 150, stop.clone()));
    let (from_a, from_b) = (to_a.await.unwrap(), to_b.await.unwrap());
    assert!(from_a.failed.is_empty() && from_b.failed.is_empty());
    a.kill9();
    let spool_a = dir.path().join("data/spool/a/spool.redb");
    assert!(spool_a.exists(), "replica a's spool holds its deliveries");

    let accepted: Vec<String> = from_a
        .accepted
        .iter()
        .chain(&from_b.accepted)
        .cloned()
        .collect();
    let mut events = broker.watch_queue(&observer).await;
    let started = Instant::now();
    let duplicates = expect_all(&mut events, &accepted, Duration::from_secs(45)).await;
    eprintln!(
        "ingress replicas: {} deliveries stranded in a dead replica's spool arrived {:?} later",
        from_a.accepted.len(),
        started.elapsed()
    );
    assert_eq!(duplicates, 0);
    assert!(
        b.logged("message", "Drained a spool left by another instance.", 1)
            .await
            .len()
            == 1
    );
    assert!(!spool_a.exists(), "the drained spool is removed");
    broker.cleanup(&[&observer]).await;
}

#[tokio::test]
async fn spool_drain_publishes_what_a_dead_ingress_left() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path());
    let mut stranded = config.clone();
    stranded.amqp_url = NO_BROKER_URL.into();
    let mut a = Process::start(&replica(&stranded, "a"), "ingress");
    let base = a.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    let result = load(base, "drain", 200, 200, Arc::new(AtomicBool::new(false))).await;
    assert_eq!(result.accepted.len(), 200, "{:?}", result.failed);
    a.kill9();

    let broker = Broker::connect(&config.prefix).await;
    let _worker = Process::start(&replica(&config, "w"), "worker");
    let observer = broker.observe_events().await;
    let drained = std::process::Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("--config")
        .arg(config.write())
        .args(["spool", "drain"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&drained.stdout);
    assert!(
        drained.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    assert!(
        text.contains("200 deliveries published, spool removed"),
        "{text}"
    );
    let mut events = broker.watch_queue(&observer).await;
    assert_eq!(
        expect_all(&mut events, &result.accepted, Duration::from_secs(30)).await,
        0
    );
    broker.cleanup(&[&observer]).await;
}
