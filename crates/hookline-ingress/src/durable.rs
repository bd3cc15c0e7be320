//! "200 means durable": a delivery is answered once the broker confirmed it on
//! `<prefix>.ingress` or the spool fsynced it, whichever comes first.
//!
//! In direct mode a delivery joins the next batch ([`crate::publisher`]); if its confirm is
//! later than the hedge margin, a spool write races it and the first durable one answers.
//! When the broker's confirm wins, the spool copy is removed as soon as it is written; when
//! the spool wins, the spool copy is removed if the confirm still arrives, and otherwise
//! drained like any record (the worker drops the second copy as a duplicate). In spool mode
//! ([`crate::mode`]) deliveries go straight to the spool. Nothing is answered 200 before one
//! of the two is durable.

use crate::mode::Mode;
use crate::publisher::{Outcome, Publisher};
use crate::spool::Spool;
use crate::telemetry;
use hookline_amqp::Broker;
use hookline_core::VerifiedDelivery;
use hookline_core::storage::StorageError;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Where a delivery was made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredIn {
    /// Confirmed by RabbitMQ on `<prefix>.ingress`.
    Broker,
    /// Fsynced to the local spool; the drainer will publish it.
    Spool,
}

impl StoredIn {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            StoredIn::Broker => "broker",
            StoredIn::Spool => "spool",
        }
    }

    pub(crate) fn label(self) -> telemetry::Label {
        telemetry::Label(self.as_str())
    }
}

/// The durable-store step of the request path (cheap to clone).
#[derive(Clone)]
pub struct Durable {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    spool: Spool,
    publisher: Publisher,
    mode: Mode,
    queue: String,
    deadline: Duration,
    wake_drainer: Notify,
    /// Spool records whose broker copy may still be confirmed: the drainer leaves them to
    /// the hedge's clean-up instead of publishing them a second time.
    hedged: Mutex<HashSet<u64>>,
}

/// A delivery neither the broker nor the spool took in time.
#[derive(Debug, thiserror::Error)]
#[error("neither the broker nor the spool stored the delivery")]
pub struct NotStored;

type Append = JoinHandle<Result<u64, StorageError>>;

impl Durable {
    /// Publishes to `queue` on `broker`, hedged by `spool` after `hedge_after` (at least, if
    /// the queue is `replicated`); a store that is not durable after `deadline` fails.
    pub fn new(
        broker: Broker,
        spool: Spool,
        queue: String,
        deadline: Duration,
        hedge_after: Option<Duration>,
        replicated: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                publisher: Publisher::start(broker.clone(), queue.clone()),
                broker,
                spool,
                mode: Mode::new(hedge_after, replicated),
                queue,
                deadline,
                wake_drainer: Notify::new(),
                hedged: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Makes `delivery` durable, or says it could not.
    pub async fn store(&self, delivery: &VerifiedDelivery) -> Result<StoredIn, NotStored> {
        let inner = &self.inner;
        if inner.mode.direct() && !inner.broker.is_ready() {
            let reason = if inner.broker.is_blocked() {
                "broker blocked publishing (resource alarm)"
            } else {
                "not connected to the broker"
            };
            inner.mode.spool(&reason, false);
        }
        if inner.mode.direct() {
            self.direct(delivery).await
        } else {
            self.spooled(delivery).await
        }
    }

    /// Whether a delivery can be made durable right now (`/readyz`).
    pub fn ready(&self) -> bool {
        self.inner.broker.is_ready() || self.inner.spool.healthy()
    }

    async fn direct(&self, delivery: &VerifiedDelivery) -> Result<StoredIn, NotStored> {
        let inner = &self.inner;
        let mut confirm = inner.publisher.submit(delivery);
        // Without hedging the confirm gets the whole deadline.
        let wait = inner.mode.hedge_after().unwrap_or(inner.deadline);
        match tokio::time::timeout(wait, &mut confirm).await {
            Ok(outcome) => {
                return match self.confirmed(outcome) {
                    true => Ok(StoredIn::Broker),
                    false => self.spooled(delivery).await,
                };
            }
            Err(_) if inner.mode.hedge_after().is_none() => {
                inner
                    .mode
                    .spool(&"no confirm within ack_deadline_ms", false);
                return self.spooled(delivery).await;
            }
            Err(_) => {}
        }
        // The confirm is late: race a spool write against it.
        let mut append: Append = {
            let (spool, delivery) = (inner.spool.clone(), delivery.clone());
            tokio::spawn(async move { spool.append(&delivery).await })
        };
        let deadline = tokio::time::sleep(inner.deadline);
        tokio::pin!(deadline);
        let mut confirm_failed = false;
        let mut append_failed = false;
        loop {
            tokio::select! {
                outcome = &mut confirm, if !confirm_failed => {
                    if self.confirmed(outcome) {
                        telemetry::hedge_won_by(StoredIn::Broker.label());
                        self.discard_when_written(append);
                        return Ok(StoredIn::Broker);
                    }
                    confirm_failed = true;
                    if append_failed {
                        return Err(NotStored);
                    }
                }
                appended = &mut append, if !append_failed => match appended {
                    Ok(Ok(seq)) => {
                        telemetry::hedge_won_by(StoredIn::Spool.label());
                        if confirm_failed {
                            inner.wake_drainer.notify_one();
                        } else {
                            self.discard_if_confirmed(seq, confirm);
                        }
                        return Ok(StoredIn::Spool);
                    }
                    failed => {
                        telemetry::spool_failed(&spool_error(failed));
                        append_failed = true;
                        if confirm_failed {
                            return Err(NotStored);
                        }
                    }
                },
                _ = &mut deadline => {
                    telemetry::spool_failed(&"neither a confirm nor the spool within ack_deadline_ms");
                    // Whatever still completes stays durable; a second copy is a duplicate
                    // the worker drops.
                    return Err(NotStored);
                }
            }
        }
    }

    /// Records a direct confirm's outcome with the mode; true when it was confirmed.
    fn confirmed(&self, outcome: Result<Outcome, oneshot::error::RecvError>) -> bool {
        let inner = &self.inner;
        match outcome {
            Ok(Ok(latency)) => {
                inner.mode.confirmed(latency, inner.publisher.depth());
                true
            }
            Ok(Err(error)) => {
                inner.mode.spool(&error, false);
                false
            }
            Err(_) => {
                inner.mode.spool(&"the publisher stopped", false);
                false
            }
        }
    }

    /// The broker won the race: remove the spool copy once it is written.
    fn discard_when_written(&self, append: Append) {
        let spool = self.inner.spool.clone();
        tokio::spawn(async move {
            if let Ok(Ok(seq)) = append.await {
                let _ = spool.remove(vec![seq]).await;
            }
        });
    }

    /// The spool won: the record waits for the confirm that was already underway, and is
    /// removed if it arrives; otherwise the drainer publishes it.
    fn discard_if_confirmed(&self, seq: u64, confirm: oneshot::Receiver<Outcome>) {
        let durable = self.clone();
        self.hedged().insert(seq);
        tokio::spawn(async move {
            let confirmed = match confirm.await {
                Ok(Ok(latency)) => {
                    durable.inner.mode.confirmed_late(latency);
                    true
                }
                _ => false,
            };
            if confirmed {
                let _ = durable.inner.spool.remove(vec![seq]).await;
            }
            durable.hedged().remove(&seq);
            if !confirmed {
                durable.inner.wake_drainer.notify_one();
            }
        });
    }

    async fn spooled(&self, delivery: &VerifiedDelivery) -> Result<StoredIn, NotStored> {
        let inner = &self.inner;
        // The spool gets its own deadline: a stalled disk must answer 503, not hang.
        match tokio::time::timeout(inner.deadline, inner.spool.append(delivery)).await {
            Ok(Ok(_)) => {
                inner.wake_drainer.notify_one();
                Ok(StoredIn::Spool)
            }
            Ok(Err(error)) => {
                telemetry::spool_failed(&error);
                Err(NotStored)
            }
            Err(_) => {
                telemetry::spool_failed(&"spool write did not finish within ack_deadline_ms");
                Err(NotStored)
            }
        }
    }

    fn hedged(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.inner.hedged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the drainer should leave `seq` to a hedge still awaiting its confirm.
    pub(crate) fn is_hedged(&self, seq: u64) -> bool {
        self.hedged().contains(&seq)
    }

    pub(crate) fn mode(&self) -> &Mode {
        &self.inner.mode
    }

    pub(crate) fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    pub(crate) fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    pub(crate) fn queue(&self) -> &str {
        &self.inner.queue
    }

    pub(crate) async fn drainer_woken(&self) {
        self.inner.wake_drainer.notified().await;
    }
}

fn spool_error(failed: Result<Result<u64, StorageError>, tokio::task::JoinError>) -> String {
    match failed {
        Ok(Err(error)) => error.to_string(),
        Err(join) => format!("spool write task failed: {join}"),
        Ok(Ok(_)) => "no error".into(),
    }
}
