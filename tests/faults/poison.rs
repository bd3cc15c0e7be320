//! Deliveries the worker can never process go to `<prefix>.dead` with `x-hookline-error`,
//! once, instead of looping.

use crate::harness::serial;
use crate::support::{Broker, Process, TestConfig, wait_for_status};
use hookline_amqp::headers::{self, PROVIDER, RECEIVED_AT, SOURCE};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use std::time::Duration;

#[tokio::test]
async fn poison_deliveries_are_dead_lettered_with_their_error() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path());
    let path = config.write();
    let worker = Process::start(&path, "worker");
    wait_for_status(&format!("{}/healthz", worker.metrics_base().await), 200).await;
    let broker = Broker::connect(&config.prefix).await;
    let ingress_queue = format!("{}.ingress", config.prefix);
    let mut dead = broker.watch_queue(&format!("{}.dead", config.prefix)).await;

    let ours = |provider: &str| {
        headers::string_headers([
            (SOURCE, "aisle"),
            (PROVIDER, provider),
            (RECEIVED_AT, "2026-11-22T10:00:00.000Z"),
        ])
    };
    let cases: Vec<(&str, BasicProperties, &str)> = vec![
        (
            "no headers",
            BasicProperties::default().with_message_id("p1".into()),
            "missing header",
        ),
        (
            "not JSON",
            BasicProperties::default()
                .with_message_id("0192f0c4-0000-7000-8000-000000000002".into())
                .with_headers(ours("aisle")),
            "not JSON",
        ),
        (
            "unknown provider",
            BasicProperties::default()
                .with_message_id("0192f0c4-0000-7000-8000-000000000003".into())
                .with_headers(ours("paypal")),
            "unknown provider",
        ),
        (
            "missing id",
            BasicProperties::default()
                .with_message_id("0192f0c4-0000-7000-8000-000000000004".into())
                .with_headers(ours("aisle")),
            "`id`",
        ),
        (
            "no message id",
            BasicProperties::default().with_headers(ours("aisle")),
            "message_id",
        ),
        (
            "message id not a delivery id",
            BasicProperties::default()
                .with_message_id("p6".into())
                .with_headers(ours("aisle")),
            "not a delivery id",
        ),
    ];
    let bodies = [
        "{}",
        "not json {",
        "{}",
        r#"{"event":"ticket_created"}"#,
        r#"{"id":"x","event":"y"}"#,
        r#"{"id":"x","event":"y"}"#,
    ];
    let channel = broker.connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for ((_, props, _), body) in cases.iter().zip(bodies) {
        channel
            .basic_publish(
                "".into(),
                ingress_queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props.clone(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let got = dead.take(cases.len(), Duration::from_secs(10)).await;
    for ((name, _, expected), body) in cases.iter().zip(bodies) {
        let seen = got
            .iter()
            .find(|s| {
                s.raw == body.as_bytes()
                    && headers::header_str(s.properties.headers().as_ref(), "x-hookline-error")
                        .is_some_and(|e| e.contains(expected))
            })
            .unwrap_or_else(|| panic!("{name}: not dead-lettered with {expected:?}: {got:#?}"));
        assert!(
            seen.properties
                .headers()
                .as_ref()
                .unwrap()
                .inner()
                .contains_key("x-hookline-attempts")
        );
    }
    assert!(
        dead.rest(Duration::from_secs(1)).await.is_empty(),
        "each poison delivery once"
    );
    assert_eq!(
        broker.depth(&ingress_queue).await,
        0,
        "nothing left looping"
    );
    assert!(
        !worker
            .logged("outcome", "dead_lettered", 1)
            .await
            .is_empty()
    );
    broker.cleanup(&[]).await;
}
