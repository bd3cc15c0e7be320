//! Publishes spooled deliveries to `<prefix>.ingress`, oldest first, as soon as the broker
//! answers; each record is removed only after its confirm.

use crate::durable::Durable;
use crate::telemetry;
use hookline_amqp::PublishError;
use hookline_amqp::message::properties;
use hookline_core::storage::{Failure, StorageError};
use hookline_core::wire;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Records read and sent per round; their confirms are awaited together.
const BATCH: usize = 2048;
/// Pause between rounds while the broker is unavailable, and the idle poll interval.
const IDLE: Duration = Duration::from_millis(250);
/// Longest pause between failing rounds.
const MAX_PAUSE: Duration = Duration::from_secs(8);
/// Longest wait for one round's confirms before the round counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until `shutdown`.
pub(crate) async fn run(durable: Durable, shutdown: CancellationToken) {
    let mut pause = IDLE;
    loop {
        let failing = pause > IDLE;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            // New spool writes wake an idle drainer; a failing one keeps its backoff, since
            // every round it retries resends records the broker may already hold.
            _ = durable.drainer_woken(), if !failing => {}
            _ = tokio::time::sleep(pause) => {}
        }
        while !shutdown.is_cancelled() && durable.broker().is_ready() {
            match drain_round(&durable).await {
                Ok(0) => {
                    durable.resume_direct();
                    pause = IDLE;
                    break;
                }
                Ok(_) => pause = IDLE,
                Err(DrainError::Spool(error)) => {
                    warn!(%error, "Cannot read the spool; retrying with backoff.");
                    pause = (pause * 2).min(MAX_PAUSE);
                    break;
                }
                Err(DrainError::Publish(error)) => {
                    durable.suspend_direct(&error);
                    if matches!(error, PublishError::Returned(_) | PublishError::Amqp(_)) {
                        // The queue is gone or a channel closed: reconnecting re-declares
                        // the topology and opens fresh channels.
                        durable.broker().reconnect();
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                    break;
                }
            }
        }
    }
}

/// Why a drain round stopped early.
#[derive(Debug, thiserror::Error)]
enum DrainError {
    /// The broker did not take a record.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The spool could not be read: records may remain, so this is never "empty".
    #[error(transparent)]
    Spool(#[from] StorageError),
}

/// Publishes up to one batch; returns how many records were removed.
async fn drain_round(durable: &Durable) -> Result<usize, DrainError> {
    let spool = durable.spool();
    let batch = match spool.oldest(BATCH).await {
        Ok(batch) => batch,
        Err(error) => {
            if let Failure::Corrupt { seq } = error.failure {
                // An unreadable record would block every record behind it forever.
                error!(seq, %error, "Dropping a corrupt spool record; it cannot be published.");
                metrics::counter!("hookline_spool_corrupt_total").increment(1);
                spool.remove(vec![seq]).await?;
                return Ok(1);
            }
            return Err(error.into());
        }
    };
    if batch.is_empty() {
        return Ok(0);
    }
    let session = durable
        .broker()
        .session()
        .ok_or(PublishError::NotConnected)?;
    let mut pending = Vec::with_capacity(batch.len());
    let mut first_error = None;
    for (seq, delivery) in batch {
        let message = wire::single(delivery.meta(), delivery.body());
        let sent = session
            // One lane keeps the queue in spool order (oldest first).
            .send(
                0,
                "",
                durable.queue(),
                &message.body,
                properties(&message),
                true,
            )
            .await;
        match sent {
            Ok(confirm) => pending.push((seq, confirm)),
            Err(error) => {
                first_error = Some(error);
                break;
            }
        }
    }
    let confirms =
        futures_util::future::join_all(pending.into_iter().map(|(seq, confirm)| async move {
            let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, confirm.confirmed()).await;
            (seq, outcome)
        }));
    let mut done = Vec::new();
    for (seq, outcome) in confirms.await {
        match outcome {
            Ok(Ok(())) => done.push(seq),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {
                first_error.get_or_insert(PublishError::Timeout(CONFIRM_TIMEOUT));
            }
        }
    }
    let drained = done.len();
    if drained > 0 {
        if let Err(error) = spool.remove(done).await {
            // The records stay and are published again: a duplicate, never a loss.
            warn!(%error, "Cannot remove drained records from the spool; they will be sent again.");
        }
        telemetry::drained(drained);
    }
    match first_error {
        Some(error) => Err(error.into()),
        None => Ok(drained),
    }
}
