//! One message from `<prefix>.ingress`, carrying one delivery or a batch of them
//! ([`hookline_core::wire`]): each delivery is normalized, its known events dropped, each new
//! event published with a confirm and its id recorded; then the message is acked. The order
//! is what makes the crash window small: a kill between a confirm and the record's flush is
//! the only way an event is published twice.
//!
//! A delivery that can never succeed is dead-lettered on its own, in the single-delivery
//! format, while the rest of its batch goes on. One that fails transiently is retried: a
//! single-delivery message is requeued after a pause; from a batch, the failed deliveries
//! are put back on the queue as single-delivery messages (confirmed) before the batch is
//! acked, so the deliveries that succeeded are not processed again.

use crate::claims::Claims;
use crate::failures::Failures;
use crate::history::{History, HistoryError};
use crate::observers::Observers;
use crate::processed::ProcessedStore;
use crate::recorder::Recorder;
use crate::telemetry::{self, Outcome};
use hookline_amqp::headers::{self, ATTEMPTS, DIED_AT, ERROR, PROVIDER, SOURCE};
use hookline_amqp::lapin::BasicProperties;
use hookline_amqp::lapin::message::Delivery;
use hookline_amqp::lapin::options::{BasicAckOptions, BasicNackOptions};
use hookline_amqp::lapin::types::AMQPValue;
use hookline_amqp::message::properties as message_properties;
use hookline_amqp::{Broker, PublishError, Session, Topology};
use hookline_core::envelope::NormalizeError;
use hookline_core::storage::StorageError;
use hookline_core::timestamp::format_timestamp;
use hookline_core::wire::{self, Entry, FormatError};
use hookline_core::{Envelope, normalize_delivery};
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use tracing::{debug, warn};

/// Longest `x-hookline-error` kept on a dead letter.
const MAX_ERROR_LEN: usize = 1024;

/// What processing needs, for one broker session.
pub(crate) struct Context {
    pub(crate) broker: Broker,
    pub(crate) session: Session,
    pub(crate) store: ProcessedStore,
    pub(crate) recorder: Recorder,
    pub(crate) claims: Claims,
    pub(crate) failures: Failures,
    pub(crate) topology: Topology,
    pub(crate) max_attempts: u32,
    /// The shared processed-id history, with `amqp.failover`.
    pub(crate) history: Option<History>,
    /// Whether events are copied to `<prefix>.observe`.
    pub(crate) observers: Observers,
    /// `worker.prefetch`: also the most deliveries of one message handled at once.
    pub(crate) prefetch: usize,
}

/// Why processing a delivery failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcessError {
    /// The message is not in hookline's raw-delivery format.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The body cannot become events.
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
    /// An event was not confirmed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The processed-id store failed.
    #[error(transparent)]
    Store(#[from] StorageError),
    /// The shared processed-id history failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A step done once for several deliveries of a message failed for all of them.
    #[error(transparent)]
    Shared(Arc<ProcessError>),
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// It can never succeed: dead-letter now.
    Permanent,
    /// It may succeed later: counted towards `max_attempts`.
    Retry,
    /// The connection went away: the broker hands the message out again by itself.
    Lost,
}

impl ProcessError {
    fn disposition(&self) -> Disposition {
        match self {
            ProcessError::Format(_) | ProcessError::Normalize(_) => Disposition::Permanent,
            ProcessError::Publish(
                PublishError::NotConnected | PublishError::Amqp(_) | PublishError::Timeout(_),
            ) => Disposition::Lost,
            ProcessError::Publish(PublishError::Nacked | PublishError::Returned(_))
            | ProcessError::Store(_) => Disposition::Retry,
            ProcessError::History(HistoryError::Publish(
                PublishError::NotConnected | PublishError::Amqp(_) | PublishError::Timeout(_),
            )) => Disposition::Lost,
            ProcessError::History(_) => Disposition::Retry,
            ProcessError::Shared(error) => error.disposition(),
        }
    }
}

/// Processes one message to the end: acked, requeued or dead-lettered, delivery by delivery.
pub(crate) async fn process(
    ctx: &Context,
    delivery: Delivery,
    entries: Result<Vec<Entry>, FormatError>,
) {
    let entries = match entries {
        Ok(entries) => entries,
        Err(error) => {
            // Not ours to split: the message goes to the dead letters exactly as it came.
            let key = message_key(&delivery);
            let reason = error.to_string();
            let dead =
                dead_letter(ctx, delivery.properties.clone(), &delivery.data, 1, &reason).await;
            match dead {
                Ok(()) => {
                    telemetry::dead_lettered(&key, 1, &reason);
                    ack(&delivery).await;
                }
                Err(error) => lost(ctx, &key, &error),
            }
            return;
        }
    };
    // A batch larger than the prefetch goes in parts of at most `prefetch` deliveries, so
    // the deliveries published but not yet recorded (the duplicate window) never exceed it.
    let mut results = Vec::with_capacity(entries.len());
    for part in entries.chunks(ctx.prefetch.max(1)) {
        results.extend(handle(ctx, part).await);
    }
    let single = delivery
        .properties
        .content_type()
        .as_ref()
        .is_none_or(|c| c.as_str() != wire::BATCH_CONTENT_TYPE);
    let mut retry = Vec::new();
    for (entry, result) in entries.iter().zip(results) {
        let key = entry.meta.delivery_id.to_string();
        let error = match result {
            Ok(()) => {
                ctx.failures.clear(&key);
                continue;
            }
            Err(error) => error,
        };
        let attempts = match error.disposition() {
            Disposition::Lost => return lost(ctx, &key, &error),
            Disposition::Permanent => 1,
            Disposition::Retry => {
                let attempts = ctx.failures.record(&key);
                if attempts < ctx.max_attempts {
                    telemetry::retrying(&key, attempts, &error.to_string());
                    retry.push((entry, attempts));
                    continue;
                }
                ctx.failures.clear(&key);
                attempts
            }
        };
        // A single-delivery message keeps whatever else it carried; a batch entry becomes one.
        let (properties, body) = if single {
            (delivery.properties.clone(), delivery.data.clone())
        } else {
            let message = wire::single(&entry.meta, &entry.body);
            (message_properties(&message), message.body.to_vec())
        };
        let reason = error.to_string();
        if let Err(error) = dead_letter(ctx, properties, &body, attempts, &reason).await {
            return lost(ctx, &key, &error);
        }
        dead_lettered_events(entry);
        telemetry::dead_lettered(&key, attempts, &reason);
    }
    if retry.is_empty() {
        ack(&delivery).await;
        telemetry::acked();
        return;
    }
    let most = retry.iter().map(|(_, a)| *a).max().unwrap_or(1);
    tokio::time::sleep(retry_pause(most)).await;
    if single {
        requeue(&delivery).await;
        return;
    }
    for (entry, _) in &retry {
        let message = wire::single(&entry.meta, &entry.body);
        let queue = ctx.topology.ingress_queue();
        let put_back = ctx
            .session
            .publish(
                "",
                &queue,
                &message.body,
                message_properties(&message),
                true,
            )
            .await;
        if let Err(error) = put_back {
            // The whole batch comes back; its finished deliveries are then duplicates.
            debug!(%error, "Cannot put a failed delivery back on its own; requeueing its batch.");
            requeue(&delivery).await;
            return;
        }
    }
    ack(&delivery).await;
}

/// The delivery id a message is logged under.
fn message_key(delivery: &Delivery) -> String {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_else(|| format!("tag-{}", delivery.delivery_tag))
}

/// Unacked, the message returns to the queue when this connection closes; if only a channel
/// failed, closing the connection is what makes that happen.
fn lost(ctx: &Context, key: &str, error: &dyn std::fmt::Display) {
    debug!(delivery_id = %key, %error, "Processing failed mid-message; reconnecting, the broker will redeliver it.");
    ctx.broker.reconnect();
}

fn retry_pause(attempts: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6))).min(Duration::from_secs(5))
}

/// Handles every delivery of a message; one result per delivery, in order.
///
/// The work is done once per message, not per delivery: one claim and one store lookup for
/// all its event ids, every new event published before any confirm is awaited, and one
/// record of what was confirmed. A failure is its delivery's own (a body that cannot be
/// normalized, an event the broker refused), or, for a step done once, the failure of
/// every delivery that needed it.
async fn handle(ctx: &Context, entries: &[Entry]) -> Vec<Result<(), ProcessError>> {
    let mut results: Vec<Result<(), ProcessError>> = Vec::with_capacity(entries.len());
    // Each new event id once, with the delivery it came from.
    let mut events: Vec<(usize, Envelope)> = Vec::new();
    let mut seen = HashSet::new();
    for (owner, entry) in entries.iter().enumerate() {
        match normalize_delivery(&entry.meta, &entry.body) {
            Ok(envelopes) => {
                results.push(Ok(()));
                for envelope in envelopes {
                    if seen.insert(envelope.id.clone()) {
                        events.push((owner, envelope));
                    } else {
                        telemetry::event(&envelope, Outcome::Duplicate);
                    }
                }
            }
            Err(error) => results.push(Err(error.into())),
        }
    }
    if events.is_empty() {
        return results;
    }
    let ids: Vec<String> = events.iter().map(|(_, e)| e.id.clone()).collect();
    let _held = ctx.claims.claim(ids.clone()).await;
    let known = match ctx.store.known(ids).await {
        Ok(known) => known,
        Err(error) => {
            fail_all(
                &mut results,
                events.iter().map(|(owner, _)| *owner),
                error.into(),
            );
            return results;
        }
    };
    let mut fresh = Vec::with_capacity(events.len());
    for ((owner, envelope), known) in events.into_iter().zip(known) {
        if known {
            telemetry::event(&envelope, Outcome::Duplicate);
        } else {
            let body = serde_json::to_vec(&envelope).expect("an envelope always serializes");
            fresh.push((owner, envelope, body));
        }
    }
    if fresh.is_empty() {
        return results;
    }

    // Every publish first, then every confirm: one round trip for the whole message.
    let exchange = ctx.topology.events_exchange();
    let mut pending = Vec::with_capacity(fresh.len());
    for (owner, envelope, body) in &fresh {
        let sent = ctx
            .session
            .send(
                lane(&entries[*owner]),
                &exchange,
                &envelope.routing_key(),
                body,
                properties(envelope),
            )
            .await;
        pending.push(sent);
    }
    let confirms = futures_util::future::join_all(pending.into_iter().map(|sent| async move {
        match sent {
            Ok(confirm) => confirm.confirmed().await,
            Err(error) => Err(error),
        }
    }))
    .await;
    let mut published = Vec::with_capacity(fresh.len());
    for ((owner, envelope, body), confirm) in fresh.iter().zip(confirms) {
        match confirm {
            Ok(()) => published.push((*owner, envelope, body)),
            Err(error) => {
                if results[*owner].is_ok() {
                    results[*owner] = Err(error.into());
                }
            }
        }
    }
    if published.is_empty() {
        return results;
    }

    let ids: Vec<String> = published.iter().map(|(_, e, _)| e.id.clone()).collect();
    // With failover, the shared history first: a replica taking over must know these ids
    // even if this one dies before its own store has them.
    let recorded = async {
        if let Some(history) = &ctx.history {
            history.append(ids.clone()).await?;
        }
        ctx.recorder.record(ids).await?;
        Ok::<(), ProcessError>(())
    };
    if let Err(error) = recorded.await {
        fail_all(
            &mut results,
            published.iter().map(|(owner, _, _)| *owner),
            error,
        );
        return results;
    }
    let observe = ctx
        .observers
        .present()
        .then(|| ctx.topology.observe_exchange());
    for (_, envelope, body) in published {
        telemetry::event(envelope, Outcome::Published);
        let Some(observe) = &observe else { continue };
        // Observers (`hookline tail`) get a copy; losing one costs them a line, not data.
        let copy = ctx
            .session
            .send_best_effort(observe, &envelope.routing_key(), body, properties(envelope))
            .await;
        if let Err(error) = copy {
            debug!(%error, "Cannot copy an event to the observers' exchange.");
        }
    }
    results
}

/// Fails, with one shared `error`, each of `owners` that has not failed on its own already.
fn fail_all(
    results: &mut [Result<(), ProcessError>],
    owners: impl IntoIterator<Item = usize>,
    error: ProcessError,
) {
    let shared = Arc::new(error);
    for owner in owners {
        if results[owner].is_ok() {
            results[owner] = Err(ProcessError::Shared(shared.clone()));
        }
    }
}

/// One channel for all of a delivery's events keeps a delivery's events in their order.
fn lane(entry: &Entry) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    entry.meta.delivery_id.hash(&mut hasher);
    hasher.finish() as usize
}

/// Properties of a normalized event (CONTRACT section 6).
fn properties(envelope: &Envelope) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(envelope.id.as_str().into())
        .with_type(envelope.event_type.as_str().into())
        .with_app_id("hookline".into())
        .with_timestamp(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        )
        .with_headers(headers::string_headers([
            (SOURCE, envelope.source.as_str()),
            (PROVIDER, envelope.provider.as_str()),
        ]))
}

/// Publishes a dead letter to `<prefix>.dead` with why, how often and when, and waits for
/// the confirm: only then may the caller ack what it came from.
async fn dead_letter(
    ctx: &Context,
    properties: BasicProperties,
    body: &[u8],
    attempts: u32,
    reason: &str,
) -> Result<(), PublishError> {
    let mut table = properties.headers().clone().unwrap_or_default();
    let reason = cut(reason, MAX_ERROR_LEN);
    table.insert(
        ERROR.into(),
        AMQPValue::LongString(reason.as_bytes().to_vec().into()),
    );
    table.insert(ATTEMPTS.into(), AMQPValue::LongUInt(attempts));
    table.insert(
        DIED_AT.into(),
        AMQPValue::LongString(
            format_timestamp(OffsetDateTime::now_utc())
                .into_bytes()
                .into(),
        ),
    );
    ctx.session
        .publish(
            &ctx.topology.dead(),
            &ctx.topology.ingress_queue(),
            body,
            properties.with_headers(table),
            false,
        )
        .await
}

/// The per-event lines of a dead-lettered delivery, when its events can be read at all.
fn dead_lettered_events(entry: &Entry) {
    if let Ok(envelopes) = normalize_delivery(&entry.meta, &entry.body) {
        for envelope in &envelopes {
            telemetry::event(envelope, Outcome::DeadLettered);
        }
    }
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

async fn ack(delivery: &Delivery) {
    if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
        warn!(%error, "Cannot ack a delivery; it will be redelivered and dropped as a duplicate.");
    }
}

async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = delivery.acker.nack(options).await {
        debug!(%error, "Cannot requeue a delivery; the broker will redeliver it.");
    }
}
