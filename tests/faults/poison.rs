//! Deliveries the worker can never process go to `<prefix>.dead` with `x-hookline-error`,
//! once, instead of looping.

use crate::harness::serial;
use crate::support::{Broker, Process, TestConfig, wait_for_status};
use hookline_amqp::headers::{self, PROVIDER, RECEIVED_AT, SOURCE};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use std::time::Duration;

/// A worker alone on a fresh prefix, and a confirmed channel to put raw messages on its
/// ingress queue as if an ingress had.
struct Rig {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _dir: tempfile::TempDir,
    worker: Process,
    broker: Broker,
    ingress_queue: String,
    dead: crate::support::Watch,
    channel: lapin::Channel,
}

impl Rig {
    async fn start() -> Self {
        let serial = serial().await;
        let dir = tempfile::tempdir().unwrap();
        let config = TestConfig::new(dir.path());
        let worker = Process::start(&config.write(), "worker");
        wait_for_status(&format!("{}/healthz", worker.metrics_base().await), 200).await;
        let broker = Broker::connect(&config.prefix).await;
        let dead = broker.watch_queue(&format!("{}.dead", config.prefix)).await;
        let channel = broker.connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            _serial: serial,
            _dir: dir,
            worker,
            broker,
            ingress_queue: format!("{}.ingress", config.prefix),
            dead,
            channel,
        }
    }

    /// Publishes `body` on the ingress queue and waits for the broker's confirm.
    async fn publish(&self, body: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                self.ingress_queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The queue is drained and nothing was ever put back for a retry.
    async fn assert_settled_without_retries(&self) {
        self.broker
            .wait_empty(&self.ingress_queue, Duration::from_secs(5))
            .await;
        assert!(
            self.worker
                .log_lines_with("message", "Delivery failed; it will be retried.")
                .is_empty(),
            "poison is never retried"
        );
    }
}

/// How many attempts a dead letter says were made.
fn attempts(properties: &BasicProperties) -> Option<&lapin::types::AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-hookline-attempts"))
}

#[tokio::test]
async fn poison_deliveries_are_dead_lettered_with_their_error() {
    let mut rig = Rig::start().await;

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
    for ((_, props, _), body) in cases.iter().zip(bodies) {
        rig.publish(body.as_bytes(), props.clone()).await;
    }

    let mut got = rig.dead.take(cases.len(), Duration::from_secs(10)).await;
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
            attempts(&seen.properties),
            Some(&lapin::types::AMQPValue::LongUInt(1)),
            "{name}"
        );
    }
    assert!(
        rig.dead.rest(Duration::from_secs(1)).await.is_empty(),
        "each poison delivery once"
    );
    rig.assert_settled_without_retries().await;
    let letters = rig
        .worker
        .log_lines_with("message", "Delivery dead-lettered.");
    assert_eq!(
        letters.len(),
        cases.len(),
        "one ERROR line per poison delivery"
    );
    assert!(letters.iter().all(|l| l["level"] == "ERROR"));
    rig.broker.cleanup(&[]).await;
}

/// A batch message (as the ingress packs them) holding good and poison deliveries: the
/// good ones become events, each poison one is dead-lettered on its own in the
/// single-delivery format, and a batch that cannot be split is dead-lettered whole.
#[tokio::test]
async fn one_poison_delivery_in_a_batch_is_dead_lettered_alone() {
    use hookline_core::DeliveryMeta;
    use hookline_core::wire::{self, Entry};

    let mut rig = Rig::start().await;
    let mut events = rig.broker.watch_events("#").await;

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
    rig.publish(&message.body, hookline_amqp::message::properties(&message))
        .await;
    // Claims to be a batch but is not one: nothing to split, dead-lettered as it came.
    rig.publish(
        b"HLB\x01\xff\xff\xff\xff",
        BasicProperties::default()
            .with_message_id("corrupt-batch".into())
            .with_content_type(wire::BATCH_CONTENT_TYPE.into()),
    )
    .await;

    let got = events.take(2, Duration::from_secs(10)).await;
    let mut ids: Vec<&str> = got.iter().map(|e| e.body["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["aisle:batch-good-1", "aisle:batch-good-2"]);

    let letters = rig.dead.take(3, Duration::from_secs(10)).await;
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
            attempts(props),
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
    assert!(rig.dead.rest(Duration::from_secs(1)).await.is_empty());
    assert!(events.rest(Duration::from_millis(500)).await.is_empty());
    // Nothing ready and nothing held unacked: the batch was acked.
    rig.assert_settled_without_retries().await;
    rig.broker.cleanup(&[]).await;
}
