//! "200 means durable": the broker confirms the delivery within `ack_deadline_ms`, or it
//! is written to the local spool and fsynced. After one miss, deliveries go straight to
//! the spool until the drainer has emptied it, so a slow broker costs one deadline, not one
//! per request.

use crate::spool::Spool;
use crate::telemetry;
use hookline_amqp::message::properties;
use hookline_amqp::{Broker, PublishError};
use hookline_core::{VerifiedDelivery, wire};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

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
}

/// The durable-store step of the request path (cheap to clone).
#[derive(Clone)]
pub struct Durable {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    spool: Spool,
    queue: String,
    deadline: Duration,
    direct: AtomicBool,
    wake_drainer: Notify,
}

/// A delivery neither the broker nor the spool took in time.
#[derive(Debug, thiserror::Error)]
#[error("neither the broker nor the spool stored the delivery")]
pub struct NotStored;

impl Durable {
    /// Publishes to `queue` on `broker`, falling back to `spool` after `deadline`.
    pub fn new(broker: Broker, spool: Spool, queue: String, deadline: Duration) -> Self {
        telemetry::direct_mode(true);
        Self {
            inner: Arc::new(Inner {
                broker,
                spool,
                queue,
                deadline,
                direct: AtomicBool::new(true),
                wake_drainer: Notify::new(),
            }),
        }
    }

    /// Makes `delivery` durable, or says it could not.
    pub async fn store(&self, delivery: &VerifiedDelivery) -> Result<StoredIn, NotStored> {
        let inner = &self.inner;
        if inner.direct.load(Ordering::Relaxed) && !inner.broker.is_ready() {
            let reason = if inner.broker.is_blocked() {
                "broker blocked publishing (resource alarm)"
            } else {
                "not connected to the broker"
            };
            self.fall_back(&reason);
        }
        if inner.direct.load(Ordering::Relaxed) {
            let message = wire::single(delivery.meta(), delivery.body());
            let publish =
                inner
                    .broker
                    .publish("", &inner.queue, &message.body, properties(&message), true);
            match tokio::time::timeout(inner.deadline, publish).await {
                Ok(Ok(())) => return Ok(StoredIn::Broker),
                Ok(Err(error)) => self.fall_back(&error),
                Err(_) => self.fall_back(&format!(
                    "no confirm within ack_deadline_ms ({} ms)",
                    inner.deadline.as_millis()
                )),
            }
        }
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

    /// Whether a delivery can be made durable right now (`/readyz`).
    pub fn ready(&self) -> bool {
        self.inner.broker.is_ready() || self.inner.spool.healthy()
    }

    fn fall_back(&self, reason: &dyn std::fmt::Display) {
        if self.inner.direct.swap(false, Ordering::Relaxed) {
            telemetry::spooling_started(reason);
        }
    }

    /// Called by the drainer once the spool is empty and the broker answers.
    pub(crate) fn resume_direct(&self) {
        if !self.inner.direct.swap(true, Ordering::Relaxed) {
            telemetry::spooling_stopped();
        }
    }

    /// Called by the drainer when the broker fails it too.
    pub(crate) fn suspend_direct(&self, error: &PublishError) {
        self.fall_back(error);
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
