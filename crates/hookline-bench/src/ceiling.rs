//! `ceiling`: the broker's own limit on this box. A bare lapin publisher (no hookline) sends
//! persistent messages of the webhook body size to a fresh durable queue with publisher
//! confirms, keeping a window of unconfirmed messages (1024 by default). With
//! `--ingress-like` it publishes the way hookline's ingress does (same properties and
//! headers, `mandatory`, round robin over 4 channels) to tell broker cost from hookline's.

use crate::broker;
use crate::load;
use crate::machine::{CpuMeter, CpuUse};
use crate::names;
use crate::payload;
use crate::process::Bench;
use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Unconfirmed messages kept in flight by default.
pub(crate) const WINDOW: usize = 1024;
/// Confirm channels hookline's ingress publishes on.
const INGRESS_CHANNELS: usize = 4;

/// How the ceiling run publishes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CeilingPlan {
    /// Measured seconds.
    pub(crate) seconds: Duration,
    /// Unconfirmed messages kept in flight.
    pub(crate) window: usize,
    /// Publish like hookline's ingress instead of bare messages.
    pub(crate) ingress_like: bool,
}

/// What the ceiling run measured.
pub(crate) struct CeilingResult {
    /// The plan it ran.
    pub(crate) plan: CeilingPlan,
    /// Confirmed messages per second.
    pub(crate) msgs_per_sec: f64,
    /// Confirmed messages.
    pub(crate) confirmed: u64,
    /// Nacked messages (should be none).
    pub(crate) nacked: u64,
    /// Publish → confirm latency, µs.
    pub(crate) confirm_latency: Histogram<u64>,
    /// Body size in bytes.
    pub(crate) body_bytes: usize,
    /// CPU use during the run.
    pub(crate) cpu: CpuUse,
}

/// Publishes for `plan.seconds` with `plan.window` confirms outstanding, then deletes the queue.
pub(crate) async fn run(bench: &Bench, plan: CeilingPlan) -> Result<CeilingResult> {
    if plan.window == 0 {
        bail!("--window must be at least 1");
    }
    let connection = broker::connect(&bench.amqp_url).await?;
    let queue = names::under(&bench.prefix, names::CEILING_QUEUE);
    let lanes = if plan.ingress_like {
        INGRESS_CHANNELS
    } else {
        1
    };
    let mut channels: Vec<Channel> = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    channels[0]
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot declare {queue}"))?;
    let body = payload::sample_body();
    let options = BasicPublishOptions {
        mandatory: plan.ingress_like,
        ..BasicPublishOptions::default()
    };

    let meter = CpuMeter::start(&[]);
    let started = Instant::now();
    let deadline = started + plan.seconds;
    let mut in_flight = FuturesUnordered::new();
    let (mut confirmed, mut nacked, mut sent_count) = (0u64, 0u64, 0usize);
    let mut last_confirm = started;
    let mut confirm_latency = load::latency_histogram();
    loop {
        while in_flight.len() < plan.window && Instant::now() < deadline {
            let properties = if plan.ingress_like {
                ingress_properties()
            } else {
                BasicProperties::default()
            };
            let sent = Instant::now();
            let confirm = channels[sent_count % lanes]
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    options,
                    &body,
                    properties.with_delivery_mode(2),
                )
                .await
                .context("basic_publish failed")?;
            sent_count += 1;
            in_flight.push(async move { (sent, confirm.await) });
        }
        match in_flight.next().await {
            Some((sent, confirmation)) => {
                match confirmation.context("publisher confirm failed")? {
                    Confirmation::Ack(_) => confirmed += 1,
                    Confirmation::Nack(_) | Confirmation::NotRequested => nacked += 1,
                }
                last_confirm = Instant::now();
                let micros = u64::try_from((last_confirm - sent).as_micros()).unwrap_or(u64::MAX);
                confirm_latency.saturating_record(micros.max(1));
            }
            None => break,
        }
    }
    let cpu = meter.finish();
    let elapsed = last_confirm.duration_since(started).as_secs_f64();

    let deleted = channels[0]
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "ceiling done".into()).await;
    deleted.with_context(|| format!("cannot delete {queue}"))?;
    if elapsed <= 0.0 {
        bail!("no publisher confirm arrived");
    }
    Ok(CeilingResult {
        plan,
        msgs_per_sec: confirmed as f64 / elapsed,
        confirmed,
        nacked,
        confirm_latency,
        body_bytes: body.len(),
        cpu,
    })
}

/// The properties hookline's ingress puts on a raw delivery (see CONTRACT section 5).
fn ingress_properties() -> BasicProperties {
    let mut headers = FieldTable::default();
    for (key, value) in [
        ("x-hookline-source", "aisle"),
        ("x-hookline-provider", "aisle"),
        ("x-hookline-received-at", "2026-11-22T10:00:00.123Z"),
    ] {
        headers.insert(
            ShortString::from(key),
            AMQPValue::LongString(value.as_bytes().to_vec().into()),
        );
    }
    BasicProperties::default()
        .with_message_id(Uuid::now_v7().to_string().into())
        .with_content_type("application/json".into())
        .with_app_id("hookline".into())
        .with_headers(headers)
}
