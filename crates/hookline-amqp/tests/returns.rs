//! Against the machine's RabbitMQ (127.0.0.1:5672, guest/guest; the test fails without it):
//! with many mandatory publishes in flight, routable and unroutable mixed, each one learns
//! its own fate. The ingress's "200 only when stored" rests on this: an unroutable delivery
//! reported as confirmed would be lost after its 200.

use futures_util::future::join_all;
use hookline_amqp::lapin::BasicProperties;
use hookline_amqp::lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use hookline_amqp::{Broker, BrokerOptions, PublishError, Topology};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mandatory_publish_learns_its_own_return() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("returns{}", nanos % 1_000_000_000_000);
    let stop = CancellationToken::new();
    let broker = Broker::start(
        BrokerOptions {
            uris: vec![URL.parse().unwrap()],
            role: "test",
            channels: 2,
            topology: Topology::new(&prefix, vec![]),
        },
        stop.clone(),
    );
    let session = tokio::time::timeout(Duration::from_secs(15), broker.connected())
        .await
        .expect("RabbitMQ must run at 127.0.0.1:5672 (guest/guest) for this test")
        .expect("a session");
    let stored = format!("{prefix}.ingress");
    let missing = format!("{prefix}.nowhere");

    let mut wrong = Vec::new();
    let mut routed = 0u32;
    for round in 0..20 {
        let mut pending = Vec::new();
        for i in 0..100 {
            // Every few messages one for a queue that does not exist, among stored ones.
            let unroutable = (round + i) % 5 == 2;
            routed += u32::from(!unroutable);
            let to = if unroutable { &missing } else { &stored };
            let sent = session
                .send_mandatory("", to, b"{}", BasicProperties::default())
                .await
                .expect("sent");
            pending.push((round * 100 + i, unroutable, sent));
        }
        let outcomes =
            join_all(pending.into_iter().map(|(n, unroutable, sent)| async move {
                (n, unroutable, sent.confirmed().await)
            }))
            .await;
        for (n, unroutable, outcome) in outcomes {
            match (unroutable, &outcome) {
                (true, Err(PublishError::Returned(_))) | (false, Ok(())) => {}
                _ => wrong.push(format!("#{n} unroutable={unroutable}: {outcome:?}")),
            }
        }
    }

    let channel = session.create_channel().await.unwrap();
    let depth = channel
        .queue_delete(stored.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    for queue in ["unrouted", "dead"] {
        let name = format!("{prefix}.{queue}");
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in ["events", "unrouted", "dead", "observe"] {
        let name = format!("{prefix}.{exchange}");
        let _ = channel
            .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    stop.cancel();
    assert!(wrong.is_empty(), "{} misreported: {wrong:#?}", wrong.len());
    assert_eq!(
        depth, routed,
        "the queue holds exactly the routable messages"
    );
}
