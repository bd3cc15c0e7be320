//! Publishes spooled deliveries to `<prefix>.ingress`, oldest first, in batch messages, as
//! soon as the broker answers; each record is removed only after its confirm. Each round
//! tells the mode how quick the broker was and how much is left.

use crate::durable::Durable;
use crate::publisher::{MAX_BATCH, MAX_BATCH_BYTES};
use crate::spool::Spool;
use crate::telemetry;
use hookline_amqp::Broker;
use hookline_amqp::PublishError;
use hookline_amqp::message::properties;
use hookline_core::storage::{Failure, StorageError};
use hookline_core::{VerifiedDelivery, wire};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Records read and sent per round (as several batch messages); their confirms are awaited
/// together.
const ROUND: usize = 2048;
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
            let target = Target {
                spool: durable.spool(),
                broker: durable.broker(),
                queue: durable.queue(),
                skip: &|seq| durable.is_hedged(seq),
            };
            match drain_round(&target).await {
                Ok(Round { drained: 0, .. }) => {
                    // Nothing (or only hedged records) left: the broker keeps up.
                    durable
                        .mode()
                        .drained(Duration::ZERO, durable.spool().depth());
                    pause = IDLE;
                    break;
                }
                Ok(Round { latency, .. }) => {
                    durable.mode().drained(latency, durable.spool().depth());
                    pause = IDLE;
                }
                Err(DrainError::Spool(error)) => {
                    warn!(%error, "Cannot read the spool; retrying with backoff.");
                    pause = (pause * 2).min(MAX_PAUSE);
                    break;
                }
                Err(DrainError::Publish(error)) => {
                    durable.mode().spool(&error, false);
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

/// A spool and where its records go.
pub(crate) struct Target<'a> {
    /// The spool to empty.
    pub(crate) spool: &'a Spool,
    /// The broker to publish on.
    pub(crate) broker: &'a Broker,
    /// `<prefix>.ingress`.
    pub(crate) queue: &'a str,
    /// Records to leave alone this round (hedges still waiting for their confirm).
    pub(crate) skip: &'a (dyn Fn(u64) -> bool + Sync),
}

/// What one round did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Round {
    /// Records published and removed.
    pub(crate) drained: usize,
    /// From the first send to the last confirm.
    pub(crate) latency: Duration,
}

/// Why a drain round stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DrainError {
    /// The broker did not take a record.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The spool could not be read: records may remain, so this is never "empty".
    #[error(transparent)]
    Spool(#[from] StorageError),
}

/// Publishes up to one round of records as batch messages; removes those confirmed.
pub(crate) async fn drain_round(target: &Target<'_>) -> Result<Round, DrainError> {
    let spool = target.spool;
    let records = match spool.oldest(ROUND).await {
        Ok(records) => records,
        Err(error) => {
            if let Failure::Corrupt { seq } = error.failure {
                // An unreadable record would block every record behind it forever.
                error!(seq, %error, "Dropping a corrupt spool record; it cannot be published.");
                metrics::counter!("hookline_spool_corrupt_total").increment(1);
                spool.remove(vec![seq]).await?;
                return Ok(Round {
                    drained: 1,
                    latency: Duration::ZERO,
                });
            }
            return Err(error.into());
        }
    };
    // A hedged record may still be confirmed by the broker: its clean-up decides.
    let records: Vec<_> = records
        .into_iter()
        .filter(|(seq, _)| !(target.skip)(*seq))
        .collect();
    if records.is_empty() {
        return Ok(Round {
            drained: 0,
            latency: Duration::ZERO,
        });
    }
    let session = target.broker.session().ok_or(PublishError::NotConnected)?;
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut first_error = None;
    for chunk in batches(&records, |(_, d): &(u64, VerifiedDelivery)| d.body().len()) {
        let deliveries: Vec<_> = chunk.iter().map(|(_, d)| d).collect();
        let message = wire::batch(&deliveries);
        let seqs: Vec<u64> = chunk.iter().map(|(seq, _)| *seq).collect();
        // Each batch goes out alone on a channel (`Session::send_mandatory`), sent oldest
        // first, so the queue gets them in about spool order.
        let sent = session
            .send_mandatory("", target.queue, &message.body, properties(&message))
            .await;
        match sent {
            Ok(confirm) => pending.push((seqs, confirm)),
            Err(error) => {
                first_error = Some(error);
                break;
            }
        }
    }
    let confirms =
        futures_util::future::join_all(pending.into_iter().map(|(seqs, confirm)| async move {
            let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, confirm.confirmed()).await;
            (seqs, outcome)
        }));
    let mut done = Vec::new();
    for (seqs, outcome) in confirms.await {
        match outcome {
            Ok(Ok(())) => done.extend(seqs),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {
                first_error.get_or_insert(PublishError::Timeout(CONFIRM_TIMEOUT));
            }
        }
    }
    let latency = started.elapsed();
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
        None => Ok(Round { drained, latency }),
    }
}

/// Splits records, in order, into batch messages within the publisher's caps.
fn batches<T>(records: &[T], body_len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, record) in records.iter().enumerate() {
        let size = body_len(record);
        if i > start && (i - start >= MAX_BATCH || bytes + size > MAX_BATCH_BYTES) {
            out.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_both_caps_and_keep_order() {
        let sizes = |chunks: Vec<&[usize]>| chunks.iter().map(|c| c.len()).collect::<Vec<_>>();
        let small = vec![600; 600];
        assert_eq!(sizes(batches(&small, |n| *n)), [256, 256, 88]);
        let big = vec![MAX_BATCH_BYTES; 3];
        assert_eq!(
            sizes(batches(&big, |n| *n)),
            [1, 1, 1],
            "an oversized delivery goes alone"
        );
        let mixed = vec![100_000, 100_000, 100_000, 10];
        assert_eq!(sizes(batches(&mixed, |n| *n)), [2, 2]);
        let numbered: Vec<usize> = (0..600).collect();
        let flat: Vec<usize> = batches(&numbered, |_| 1).concat();
        assert_eq!(flat, numbered, "order kept");
        assert!(batches(&Vec::<usize>::new(), |n| *n).is_empty());
    }
}
