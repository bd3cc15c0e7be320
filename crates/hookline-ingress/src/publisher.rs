//! Natural batching onto `<prefix>.ingress`, as a group commit or a Kafka producer does it:
//! a delivery that finds a free publishing slot goes out at once (no added wait when idle);
//! deliveries that arrive while every slot awaits its confirm are packed into the next
//! message ([`hookline_core::wire::batch`], capped in count and bytes) and share one confirm.

use hookline_amqp::message::properties;
use hookline_amqp::{Broker, PublishError};
use hookline_core::{VerifiedDelivery, wire};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Messages awaiting their confirm at once: while they do, the next batch fills.
const SLOTS: usize = 4;
/// Most deliveries in one message.
pub(crate) const MAX_BATCH: usize = 256;
/// Most body bytes in one message: bounds the worker's memory per prefetched message.
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;
/// A confirm later than this counts as lost (a frozen connection is dropped by heartbeats
/// sooner; this frees the slot even if it is not).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// The outcome a waiting request gets: confirmed (with the confirm's latency), or why not.
pub(crate) type Outcome = Result<Duration, Arc<PublishError>>;

struct Item {
    delivery: VerifiedDelivery,
    reply: oneshot::Sender<Outcome>,
}

/// Handle to the batching publisher (cheap to clone).
#[derive(Clone)]
pub(crate) struct Publisher {
    tx: mpsc::UnboundedSender<Item>,
    waiting: Arc<AtomicUsize>,
}

impl Publisher {
    /// Starts the publishing loop for `queue` on `broker`; it ends when every handle is gone.
    pub(crate) fn start(broker: Broker, queue: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(broker, queue, rx, waiting.clone()));
        Self { tx, waiting }
    }

    /// Queues `delivery` for the next message; the receiver resolves with its confirm.
    ///
    /// The queue is unbounded on purpose: `ingress.max_in_flight` bounds the requests that
    /// can wait in it.
    pub(crate) fn submit(&self, delivery: &VerifiedDelivery) -> oneshot::Receiver<Outcome> {
        let (reply, outcome) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if self
            .tx
            .send(Item {
                delivery: delivery.clone(),
                reply,
            })
            .is_err()
        {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Deliveries queued or awaiting a confirm right now.
    pub(crate) fn depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

async fn run(
    broker: Broker,
    queue: String,
    mut rx: mpsc::UnboundedReceiver<Item>,
    waiting: Arc<AtomicUsize>,
) {
    let slots = Arc::new(Semaphore::new(SLOTS));
    let mut carry: Option<Item> = None;
    loop {
        let first = match carry.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        // Waiting here is what batches: everything that arrives meanwhile joins this message.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.delivery.body().len();
        let mut items = vec![first];
        while items.len() < MAX_BATCH {
            let Ok(item) = rx.try_recv() else { break };
            if bytes + item.delivery.body().len() > MAX_BATCH_BYTES {
                carry = Some(item);
                break;
            }
            bytes += item.delivery.body().len();
            items.push(item);
        }
        let count = items.len();
        let Some(session) = broker.session() else {
            answer(items, &waiting, Err(Arc::new(PublishError::NotConnected)));
            continue;
        };
        let message = {
            let deliveries: Vec<&VerifiedDelivery> = items.iter().map(|i| &i.delivery).collect();
            wire::batch(&deliveries)
        };
        let started = Instant::now();
        let sent = session
            .send_mandatory("", &queue, &message.body, properties(&message))
            .await;
        metrics::histogram!("hookline_ingress_batch_deliveries").record(count as f64);
        match sent {
            Err(error) => answer(items, &waiting, Err(Arc::new(error))),
            Ok(pending) => {
                let waiting = waiting.clone();
                tokio::spawn(async move {
                    let outcome =
                        match tokio::time::timeout(CONFIRM_TIMEOUT, pending.confirmed()).await {
                            Ok(Ok(())) => Ok(started.elapsed()),
                            Ok(Err(error)) => Err(Arc::new(error)),
                            Err(_) => Err(Arc::new(PublishError::Timeout(CONFIRM_TIMEOUT))),
                        };
                    if let Ok(latency) = &outcome {
                        metrics::histogram!("hookline_ingress_confirm_seconds")
                            .record(latency.as_secs_f64());
                    }
                    answer(items, &waiting, outcome);
                    drop(slot);
                });
            }
        }
    }
}

fn answer(items: Vec<Item>, waiting: &AtomicUsize, outcome: Outcome) {
    waiting.fetch_sub(items.len(), Ordering::Relaxed);
    for item in items {
        // A dropped receiver is a request that stopped waiting; its delivery is still durable.
        let _ = item.reply.send(outcome.clone());
    }
}
