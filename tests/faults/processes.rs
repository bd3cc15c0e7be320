//! kill -9 of the ingress and of the worker mid-load, and a spool reopened after a kill.

use crate::harness::{Target, expect_all, load, resend_publishes_nothing, serial};
use crate::support::{Broker, NO_BROKER_URL, Process, TestConfig, wait_for_status};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const IN_FLIGHT_BOUND: usize = 64;

#[tokio::test]
async fn ingress_killed_mid_load_loses_nothing_it_accepted() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path());
    let path = config.write();
    let mut ingress = Process::start(&path, "ingress");
    let _worker = Process::start(&path, "worker");
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    let broker = Broker::connect(&config.prefix).await;
    let observer = broker.observe_events().await;

    let stop = Arc::new(AtomicBool::new(false));
    let target = Target::new(base);
    let sender = tokio::spawn(load(target.clone(), "k9i", 1200, 300, stop));
    tokio::time::sleep(Duration::from_secs(2)).await;
    ingress.kill9();
    let restarted = Process::start(&path, "ingress");
    target.set(restarted.base().await);
    let result = sender.await.unwrap();
    // The kill landed mid-load: requests failed while no ingress ran, and the restarted
    // one took the rest of the load.
    assert!(
        !result.failed.is_empty(),
        "no request failed: the kill missed the load"
    );
    assert!(
        result.accepted.iter().any(|id| id.ends_with("-1199")),
        "the restarted ingress did not take the end of the load"
    );
    let mut events = broker.watch_queue(&observer).await;
    let duplicates = expect_all(&mut events, &result.accepted, Duration::from_secs(60)).await;
    eprintln!(
        "ingress kill -9: {} accepted, {:?} refused, {duplicates} duplicates",
        result.accepted.len(),
        result.failed
    );
    assert_eq!(duplicates, 0, "an ingress crash never duplicates events");
    broker.cleanup(&[&observer]).await;
}

#[tokio::test]
async fn worker_killed_mid_load_then_resends_publish_nothing_new() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path());
    let path = config.write();
    let ingress = Process::start(&path, "ingress");
    let mut worker = Process::start(&path, "worker");
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    let broker = Broker::connect(&config.prefix).await;
    let observer = broker.observe_events().await;

    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(load(base.clone(), "k9w", 1500, 500, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    worker.kill9();
    let restarted = Process::start(&path, "worker");
    let result = sender.await.unwrap();
    assert!(result.failed.is_empty(), "{:?}", result.failed);
    let mut events = broker.watch_queue(&observer).await;
    let duplicates = expect_all(&mut events, &result.accepted, Duration::from_secs(60)).await;
    eprintln!(
        "worker kill -9: {} accepted, {duplicates} duplicates (window: in-flight deliveries)",
        result.accepted.len()
    );
    assert!(duplicates <= IN_FLIGHT_BOUND, "{duplicates}");

    // The provider sends everything again: the restarted worker's store drops it all.
    resend_publishes_nothing(&base, "k9w", 1500, &broker, &restarted, &mut events).await;
    broker.cleanup(&[&observer]).await;
}

#[tokio::test]
async fn spool_survives_kill_9_and_drains_on_restart() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestConfig::new(dir.path());
    // Nothing listens there: every delivery goes to the spool.
    let good_url = config.amqp_url.clone();
    config.amqp_url = NO_BROKER_URL.into();
    let path = config.write();
    let mut ingress = Process::start(&path, "ingress");
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    let result = load(
        base.clone(),
        "spool",
        200,
        200,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    assert_eq!(result.accepted.len(), 200, "{:?}", result.failed);
    eprintln!(
        "spooling without a broker: p50 {:?}, p99 {:?}",
        result.quantile(0.5),
        result.quantile(0.99)
    );
    ingress.kill9();
    // The spool file outlives the process, in this instance's own directory.
    let spools: Vec<_> = std::fs::read_dir(dir.path().join("data/spool"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("spool.redb"))
        .filter(|file| file.exists())
        .collect();
    assert_eq!(spools.len(), 1, "{spools:?}");

    config.amqp_url = good_url;
    let path = config.write();
    let broker = Broker::connect(&config.prefix).await;
    let _ingress = Process::start(&path, "ingress");
    let observer = broker.observe_events().await;
    let _worker = Process::start(&path, "worker");
    let mut events = broker.watch_queue(&observer).await;
    let duplicates = expect_all(&mut events, &result.accepted, Duration::from_secs(30)).await;
    assert_eq!(duplicates, 0);
    broker.cleanup(&[&observer]).await;
}
