//! One event per distinct id, however often it is delivered, across a worker restart.

use crate::support::{Broker, Process, TestConfig, post_signed, wait_for_status};
use std::time::Duration;

#[tokio::test]
async fn duplicates_are_dropped_across_a_worker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path());
    let path = config.write();
    let ingress = Process::start(&path, "ingress");
    let mut worker = Process::start(&path, "worker");
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    wait_for_status(&format!("{}/healthz", worker.metrics_base().await), 200).await;
    let broker = Broker::connect(&config.prefix).await;
    let mut events = broker.watch_events("#").await;

    let aisle = r#"{"id":"dup-1","event":"ticket_called","data":{"n":1}}"#;
    // The same inline events, re-sent in another batch with other whitespace and key order.
    let inline_a = r#"{"timestamp":1,"events":[{"type":"voucher-used","timestamp":5,"data":{"a":1,"b":[1,2]}}]}"#;
    let inline_b = r#"{"events":[ {"data":{"b":[1.0,2],"a":1},"timestamp":5,"type":"voucher-used"}, {"type":"voucher-issued","data":{}} ],"timestamp":2}"#;
    let asello = r#"{"id":"d1","attempt":1,"notifications":[{"action":"invoice.created","id":1}]}"#;
    let asello_retry =
        r#"{"id":"d1","attempt":2,"notifications":[{"action":"invoice.created","id":1}]}"#;

    for (provider, body) in [
        ("aisle", aisle),
        ("aisle", aisle),
        ("inline", inline_a),
        ("asello", asello),
    ] {
        assert_eq!(post_signed(&base, provider, provider, body).await.0, 200);
    }
    let first = events.take(3, Duration::from_secs(10)).await;
    assert!(
        events.rest(Duration::from_millis(500)).await.is_empty(),
        "aisle resend dropped"
    );
    let mut ids: Vec<String> = first
        .iter()
        .map(|s| s.body["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    // sha256 of JSON.stringify(sortDeep(event)), computed with node.
    let inline_key = "ea556703182e949a2b1849e989d11812a8ca836a54353f7995657e5a766aeb62";
    assert_eq!(
        ids,
        [
            "aisle:dup-1".to_owned(),
            "asello:d1:invoice.created:1".to_owned(),
            format!("inline:{inline_key}"),
        ],
        "one event per distinct id, with the documented id of each provider"
    );

    let (status, took) = worker.terminate();
    assert!(status.success(), "worker exits 0 after SIGTERM: {status:?}");
    assert!(took < Duration::from_secs(10), "worker stopped in {took:?}");

    // Delivered again while no worker runs, then processed by a new worker process.
    for (provider, body) in [
        ("aisle", aisle),
        ("inline", inline_b),
        ("asello", asello_retry),
    ] {
        assert_eq!(post_signed(&base, provider, provider, body).await.0, 200);
    }
    let worker = Process::start(&path, "worker");
    let second = events.take(1, Duration::from_secs(15)).await;
    assert_eq!(
        second[0].body["id"],
        "inline:8ca5359a0658a2824b4d9e37432ca0f86ff233ad2d8e0b748f676fc661bd2228",
        "only the new inline event"
    );
    assert!(events.rest(Duration::from_secs(1)).await.is_empty());
    let dropped = worker.logged("outcome", "duplicate", 3).await;
    assert_eq!(
        dropped.len(),
        3,
        "aisle, inline and asello resends: {dropped:#?}"
    );
    broker.cleanup(&[]).await;
}
