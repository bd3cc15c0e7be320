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
            "missing message_id",
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

    let mut got = dead.take(cases.len(), Duration::from_secs(10)).await;
    for ((name, props, expected), body) in cases.iter().zip(bodies) {
        // Each letter matches one case only: same body, same message id, its own error.
        let index = got
            .iter()
            .position(|s| {
                s.raw == body.as_bytes()
                    && s.properties.message_id() == props.message_id()
                    && headers::header_str(s.properties.headers().as_ref(), "x-hookline-error")
                        .is_some_and(|e| e.contains(expected))
            })
            .unwrap_or_else(|| panic!("{name}: not dead-lettered with {expected:?}: {got:#?}"));
        let seen = got.remove(index);
        // Dead-lettered at once, not after max_attempts retries.
        assert_eq!(
            seen.properties
                .headers()
                .as_ref()
                .unwrap()
                .inner()
                .get("x-hookline-attempts"),
            Some(&lapin::types::AMQPValue::LongUInt(1)),
            "{name}"
        );
    }
    assert!(
        dead.rest(Duration::from_secs(1)).await.is_empty(),
        "each poison delivery once"
    );
    broker
        .wait_empty(&ingress_queue, Duration::from_secs(5))
        .await;
    let letters = worker.log_lines_with("message", "Delivery dead-lettered.");
    assert_eq!(
        letters.len(),
        cases.len(),
        "one ERROR line per poison delivery"
    );
    assert!(letters.iter().all(|l| l["level"] == "ERROR"));
    assert!(
        worker
            .log_lines_with("message", "Delivery failed; it will be retried.")
            .is_empty(),
        "poison is never retried"
    );
    broker.cleanup(&[]).await;
}

/// A batch message (as the ingress packs them) holding good and poison deliveries: the
/// good ones become events, each poison one is dead-lettered on its own in the
/// single-delivery format, and a batch that cannot be split is dead-lettered whole.
#[tokio::test]
async fn one_poison_delivery_in_a_batch_is_dead_lettered_alone() {
    use hookline_core::DeliveryMeta;
    use hookline_core::wire::{self, Entry};

    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path());
    let path = config.write();
    let worker = Process::start(&path, "worker");
    wait_for_status(&format!("{}/healthz", worker.metrics_base().await), 200).await;
    let broker = Broker::connect(&config.prefix).await;
    let ingress_queue = format!("{}.ingress", config.prefix);
    let mut dead = broker.watch_queue(&format!("{}.dead", config.prefix)).await;
    let mut events = broker.watch_events("#").await;

    let entry = |provider: &str, body: &str| Entry {
        meta: DeliveryMeta {
            delivery_id: uuid::Uuid::now_v7(),
            source: "aisle".into(),
            provider: provider.into(),
            received_at: hookline_core::timestamp::to_millis(time::OffsetDateTime::now_utc()),
            headers: Vec::new(),
        },
        body: bytes::Bytes::from(body.to_owned()),
    };
    let entries = vec![
        entry("aisle", r#"{"id":"batch-good-1","event":"ticket_created"}"#),
        entry("aisle", r#"{"event":"ticket_created"}"#),
        entry("aisle", r#"{"id":"batch-good-2","event":"ticket_called"}"#),
        entry("paypal", r#"{"id":"x"}"#),
    ];
    let message = wire::batch_entries(&entries);
    let channel = broker.connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let publish = |body: Vec<u8>, properties: BasicProperties| {
        let (channel, queue) = (channel.clone(), ingress_queue.clone());
        async move {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties.with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish(
        message.body.to_vec(),
        hookline_amqp::message::properties(&message),
    )
    .await;
    // Claims to be a batch but is not one: nothing to split, dead-lettered as it came.
    publish(
        b"HLB\x01\xff\xff\xff\xff".to_vec(),
        BasicProperties::default()
            .with_message_id("corrupt-batch".into())
            .with_content_type(wire::BATCH_CONTENT_TYPE.into()),
    )
    .await;

    let got = events.take(2, Duration::from_secs(10)).await;
    let mut ids: Vec<&str> = got.iter().map(|e| e.body["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["aisle:batch-good-1", "aisle:batch-good-2"]);

    let letters = dead.take(3, Duration::from_secs(10)).await;
    for (poison, error) in [(&entries[1], "`id`"), (&entries[3], "unknown provider")] {
        let letter = letters
            .iter()
            .find(|l| l.raw == poison.body.as_ref())
            .unwrap_or_else(|| panic!("{error}: not dead-lettered alone: {letters:#?}"));
        let props = &letter.properties;
        let header = |k: &str| headers::header_str(props.headers().as_ref(), k);
        assert_eq!(
            props.message_id().as_ref().map(|id| id.to_string()),
            Some(poison.meta.delivery_id.to_string()),
            "single-delivery format: message_id is the delivery id"
        );
        assert_eq!(header(SOURCE).as_deref(), Some("aisle"));
        assert_eq!(
            header(PROVIDER).as_deref(),
            Some(poison.meta.provider.as_str())
        );
        assert!(header(RECEIVED_AT).is_some());
        assert!(header("x-hookline-error").is_some_and(|e| e.contains(error)));
        assert!(header("x-hookline-died-at").is_some());
        assert_eq!(
            props
                .headers()
                .as_ref()
                .unwrap()
                .inner()
                .get("x-hookline-attempts"),
            Some(&lapin::types::AMQPValue::LongUInt(1)),
            "dead-lettered at once"
        );
        // Put back as it is, it would be read like any single-delivery message.
        let message = hookline_amqp::message::received(props, &letter.raw);
        assert_eq!(wire::decode(&message).unwrap()[0].meta, poison.meta);
    }
    let corrupt = letters
        .iter()
        .find(|l| l.properties.message_id().as_ref().map(|i| i.as_str()) == Some("corrupt-batch"))
        .expect("the unsplittable batch is dead-lettered whole");
    assert_eq!(corrupt.raw, b"HLB\x01\xff\xff\xff\xff");
    assert!(dead.rest(Duration::from_secs(1)).await.is_empty());
    assert!(events.rest(Duration::from_millis(500)).await.is_empty());
    // Nothing ready and nothing held unacked: the batch was acked.
    broker
        .wait_empty(&ingress_queue, Duration::from_secs(5))
        .await;
    assert!(
        worker
            .log_lines_with("message", "Delivery failed; it will be retried.")
            .is_empty()
    );
    broker.cleanup(&[]).await;
}
