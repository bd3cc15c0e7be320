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
    let results = futures_util::future::join_all(entries.iter().map(|e| handle(ctx, e))).await;
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

async fn handle(ctx: &Context, entry: &Entry) -> Result<(), ProcessError> {
    let envelopes = normalize_delivery(&entry.meta, &entry.body)?;
    publish_new(ctx, envelopes, lane(entry)).await
}

/// One channel for all of a delivery's events keeps a batch's events in their order.
fn lane(entry: &Entry) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    entry.meta.delivery_id.hash(&mut hasher);
    hasher.finish() as usize
}

async fn publish_new(
    ctx: &Context,
    envelopes: Vec<Envelope>,
    lane: usize,
) -> Result<(), ProcessError> {
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        if seen.insert(envelope.id.clone()) {
            unique.push(envelope);
        } else {
            telemetry::event(&envelope, Outcome::Duplicate);
        }
    }
    let ids: Vec<String> = unique.iter().map(|e| e.id.clone()).collect();
    let _held = ctx.claims.claim(ids.clone()).await;
    let known = ctx.store.known(ids).await?;
    let mut fresh = Vec::with_capacity(unique.len());
    for (envelope, known) in unique.into_iter().zip(known) {
        if known {
            telemetry::event(&envelope, Outcome::Duplicate);
        } else {
            fresh.push(envelope);
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }

    let exchange = ctx.topology.events_exchange();
    let mut failure = None;
    let mut pending = Vec::with_capacity(fresh.len());
    let bodies: Vec<Vec<u8>> = fresh
        .iter()
        .map(|e| serde_json::to_vec(e).expect("an envelope always serializes"))
        .collect();
    for (envelope, body) in fresh.iter().zip(&bodies) {
        let sent = ctx
            .session
            .send(
                lane,
                &exchange,
                &envelope.routing_key(),
                body,
                properties(envelope),
                false,
            )
            .await;
        match sent {
            Ok(confirm) => pending.push(confirm),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let confirms = futures_util::future::join_all(pending.into_iter().map(|p| p.confirmed())).await;
    let mut published = Vec::with_capacity(confirms.len());
    for ((envelope, body), confirm) in fresh.iter().zip(&bodies).zip(confirms) {
        match confirm {
            Ok(()) => published.push((envelope, body)),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    if !published.is_empty() {
        let ids = published.iter().map(|(e, _)| e.id.clone()).collect();
        ctx.recorder.record(ids).await?;
        let observe = ctx.topology.observe_exchange();
        for (envelope, body) in published {
            telemetry::event(envelope, Outcome::Published);
            // Observers (`hookline tail`) get a copy; losing one costs them a line, not data.
            let copy = ctx
                .session
                .send_best_effort(
                    &observe,
                    &envelope.routing_key(),
                    body,
                    properties(envelope),
                )
                .await;
            if let Err(error) = copy {
                debug!(%error, "Cannot copy an event to the observers' exchange.");
            }
        }
    }
    failure.map_or(Ok(()), |error| Err(error.into()))
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
