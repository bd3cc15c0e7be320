//! CONTRACT section 5: the declared topology, subscriptions, and the unrouted queue.

use crate::support::{Broker, post_signed, start, start_with};
use std::process::Command;
use std::time::Duration;

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(["-q"])
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed for these tests");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn subscriptions_and_unrouted() {
    let (config, _hookline, base) = start_with("run", |config| {
        config.extra = format!(
            "[[subscriptions]]\nqueue = \"{}.billing\"\npatterns = [\"*.payment.*\", \"auraconnect.order.#\"]\n",
            config.prefix
        );
    })
    .await;
    let billing = format!("{}.billing", config.prefix);
    let broker = Broker::connect(&config.prefix).await;
    let p = &config.prefix;

    let payment = r#"{"id":"evt_126","type":"payment.completed","created":"2025-08-08T10:21:00Z","data":{"object":{"id":2001}}}"#;
    let order = r#"{"id":"evt_123","type":"order.created","created":"2025-08-08T10:00:00Z","data":{"object":{"id":1001}}}"#;
    let ticket = r#"{"id":"tk-1","event":"ticket_served","data":{}}"#;
    for (provider, body) in [
        ("auraconnect", payment),
        ("auraconnect", order),
        ("aisle", ticket),
    ] {
        assert_eq!(post_signed(&base, provider, provider, body).await.0, 200);
    }

    let mut subscribed = broker.watch_queue(&billing).await;
    let mut keys: Vec<String> = subscribed
        .take(2, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|s| s.routing_key)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["auraconnect.order.created", "auraconnect.payment.completed"]
    );

    let mut unrouted = broker.watch_queue(&format!("{p}.unrouted")).await;
    let lost = unrouted.take(1, Duration::from_secs(10)).await;
    assert_eq!(lost[0].routing_key, "aisle.ticket.served");
    assert_eq!(lost[0].body["id"], "aisle:tk-1");
    assert!(subscribed.rest(Duration::from_millis(300)).await.is_empty());
    assert!(unrouted.rest(Duration::from_millis(300)).await.is_empty());

    let exchanges = rabbitmqctl(&["list_exchanges", "name", "type", "durable", "arguments"]);
    let line = |name: &str| {
        exchanges
            .lines()
            .find(|l| l.split('\t').next() == Some(name))
            .unwrap_or_else(|| panic!("exchange {name} missing: {exchanges}"))
            .to_owned()
    };
    let events = line(&format!("{p}.events"));
    assert!(events.contains("\ttopic\ttrue\t"), "{events}");
    assert!(
        events.contains("alternate-exchange") && events.contains(&format!("{p}.unrouted")),
        "{events}"
    );
    assert!(line(&format!("{p}.unrouted")).contains("\tfanout\ttrue\t"));
    assert!(line(&format!("{p}.dead")).contains("\tfanout\ttrue\t"));
    let queues = rabbitmqctl(&["list_queues", "name", "durable"]);
    for q in [
        format!("{p}.ingress"),
        format!("{p}.unrouted"),
        format!("{p}.dead"),
        billing.clone(),
    ] {
        assert!(
            queues.lines().any(|l| l == format!("{q}\ttrue")),
            "{q} durable: {queues}"
        );
    }
    broker.cleanup(&[&billing]).await;
}

#[tokio::test]
async fn deleted_topology_is_declared_again_and_nothing_is_lost() {
    let (config, _hookline, base) = start("run").await;
    let broker = Broker::connect(&config.prefix).await;
    let p = &config.prefix;
    // Wait until the topology exists, then delete the events exchange and the ingress queue
    // under the running processes.
    broker.depth(&format!("{p}.ingress")).await;
    let channel = broker.connection.create_channel().await.unwrap();
    channel
        .exchange_delete(format!("{p}.events").into(), Default::default())
        .await
        .unwrap();
    channel
        .queue_delete(format!("{p}.ingress").into(), Default::default())
        .await
        .unwrap();

    // The ingress's mandatory publish comes back unroutable: spooled, not lost; the
    // worker's publish to a missing exchange closes its channel: redelivered, not lost.
    let body = r#"{"id":"re-1","event":"ticket_removed","data":{}}"#;
    assert_eq!(post_signed(&base, "aisle", "aisle", body).await.0, 200);
    let mut unrouted = broker.watch_queue(&format!("{p}.unrouted")).await;
    let got = unrouted.take(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["id"], "aisle:re-1");
    broker.cleanup(&[]).await;
}
