//! One delivery from `<prefix>.ingress`: normalize, drop duplicates, publish each new
//! event with a confirm, record the ids, then ack. The order is what makes the crash
//! window small: a kill between a confirm and the record's flush is the only way an
//! event is published twice.

use crate::claims::Claims;
use crate::failures::Failures;
use crate::processed::ProcessedStore;
use crate::recorder::Recorder;
use crate::telemetry::{self, Outcome};
use hookline_amqp::headers::{self, ATTEMPTS, ERROR, PROVIDER, RECEIVED_AT, SOURCE};
use hookline_amqp::lapin::BasicProperties;
use hookline_amqp::lapin::message::Delivery;
use hookline_amqp::lapin::options::{BasicAckOptions, BasicNackOptions};
use hookline_amqp::lapin::types::AMQPValue;
use hookline_amqp::{Broker, PublishError, Session, Topology};
use hookline_core::{DeliveryMeta, Envelope, normalize_delivery};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};
use tracing::{debug, warn};

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

/// How processing a delivery failed.
enum Failure {
    /// It can never succeed (not from hookline, not JSON, missing fields): dead-letter now.
    Permanent(String),
    /// It may succeed later: counted towards `max_attempts`.
    Retry(String),
    /// The connection went away; the broker hands the delivery out again by itself.
    Lost(String),
}

impl From<PublishError> for Failure {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::NotConnected | PublishError::Amqp(_) => Failure::Lost(error.to_string()),
            PublishError::Nacked | PublishError::Returned(_) => Failure::Retry(error.to_string()),
        }
    }
}

/// Processes one delivery to the end: acked, requeued or dead-lettered.
pub(crate) async fn process(ctx: &Context, delivery: Delivery) {
    let key = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_else(|| format!("tag-{}", delivery.delivery_tag));
    match handle(ctx, &delivery).await {
        Ok(()) => {
            ctx.failures.clear(&key);
            ack(&delivery).await;
            telemetry::acked();
        }
        Err(Failure::Permanent(reason)) => dead_letter(ctx, &delivery, &key, 1, &reason).await,
        Err(Failure::Retry(reason)) => {
            let attempts = ctx.failures.record(&key);
            if attempts >= ctx.max_attempts {
                ctx.failures.clear(&key);
                dead_letter(ctx, &delivery, &key, attempts, &reason).await;
            } else {
                telemetry::retrying(&key, attempts, &reason);
                tokio::time::sleep(retry_pause(attempts)).await;
                requeue(&delivery).await;
            }
        }
        Err(Failure::Lost(reason)) => {
            // Unacked, the delivery returns to the queue when this connection closes; if
            // only a channel failed, closing the connection is what makes that happen.
            debug!(delivery_id = %key, %reason, "Publishing failed mid-delivery; reconnecting, the broker will redeliver it.");
            ctx.broker.reconnect();
        }
    }
}

fn retry_pause(attempts: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6))).min(Duration::from_secs(5))
}

async fn handle(ctx: &Context, delivery: &Delivery) -> Result<(), Failure> {
    let meta = read_meta(delivery).map_err(Failure::Permanent)?;
    let envelopes =
        normalize_delivery(&meta, &delivery.data).map_err(|e| Failure::Permanent(e.to_string()))?;
    publish_new(ctx, envelopes, delivery.delivery_tag as usize).await
}

/// The ingress's headers and message id, or why the message is not a hookline delivery.
fn read_meta(delivery: &Delivery) -> Result<DeliveryMeta, String> {
    let props = &delivery.properties;
    let header = |name: &str| {
        headers::header_str(props.headers().as_ref(), name)
            .ok_or_else(|| format!("missing header `{name}`"))
    };
    Ok(DeliveryMeta {
        delivery_id: props
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .ok_or("missing message_id")?,
        source: header(SOURCE)?,
        provider: header(PROVIDER)?,
        received_at: header(RECEIVED_AT)?,
    })
}

async fn publish_new(ctx: &Context, envelopes: Vec<Envelope>, lane: usize) -> Result<(), Failure> {
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        if seen.insert(envelope.id.clone()) {
            unique.push(envelope);
        } else {
            telemetry::event(&envelope, Outcome::Duplicate);
        }
    }
    let _held = ctx
        .claims
        .claim(unique.iter().map(|e| e.id.clone()).collect())
        .await;

    let mut fresh = Vec::with_capacity(unique.len());
    for envelope in unique {
        let known = ctx
            .store
            .contains(&envelope.id)
            .map_err(|e| Failure::Retry(e.to_string()))?;
        if known {
            telemetry::event(&envelope, Outcome::Duplicate);
        } else {
            fresh.push(envelope);
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }

    // One lane for the whole delivery keeps a batch's events in their original order.
    let exchange = ctx.topology.events_exchange();
    let mut failure = None;
    let mut pending = Vec::with_capacity(fresh.len());
    for envelope in &fresh {
        let body = serde_json::to_vec(envelope).expect("an envelope always serializes");
        let sent = ctx
            .session
            .send(
                lane,
                &exchange,
                &envelope.routing_key(),
                &body,
                properties(envelope),
                false,
            )
            .await;
        match sent {
            Ok(confirm) => pending.push(confirm),
            Err(error) => {
                failure = Some(Failure::from(error));
                break;
            }
        }
    }
    let confirms = futures_util::future::join_all(pending.into_iter().map(|p| p.confirmed())).await;
    let mut published = Vec::with_capacity(confirms.len());
    for (envelope, confirm) in fresh.iter().zip(confirms) {
        match confirm {
            Ok(()) => published.push(envelope),
            Err(error) => {
                failure.get_or_insert(Failure::from(error));
            }
        }
    }
    if !published.is_empty() {
        let ids = published.iter().map(|e| e.id.clone()).collect();
        ctx.recorder.record(ids).await.map_err(Failure::Retry)?;
        for envelope in published {
            telemetry::event(envelope, Outcome::Published);
        }
    }
    failure.map_or(Ok(()), Err)
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

/// Sends the delivery, unchanged but for two headers, to `<prefix>.dead`, then acks it.
async fn dead_letter(ctx: &Context, delivery: &Delivery, key: &str, attempts: u32, reason: &str) {
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    table.insert(
        ERROR.into(),
        AMQPValue::LongString(reason.as_bytes().to_vec().into()),
    );
    table.insert(ATTEMPTS.into(), AMQPValue::LongUInt(attempts));
    let properties = delivery.properties.clone().with_headers(table);
    let published = ctx
        .session
        .publish(
            &ctx.topology.dead(),
            delivery.routing_key.as_str(),
            &delivery.data,
            properties,
            false,
        )
        .await;
    match published {
        Ok(()) => {
            if let Ok(meta) = read_meta(delivery)
                && let Ok(envelopes) = normalize_delivery(&meta, &delivery.data)
            {
                for envelope in &envelopes {
                    telemetry::event(envelope, Outcome::DeadLettered);
                }
            }
            telemetry::dead_lettered(key, attempts, reason);
            ack(delivery).await;
        }
        Err(error) => {
            warn!(delivery_id = key, %error, "Cannot dead-letter a delivery; it will be retried.");
            requeue(delivery).await;
        }
    }
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
