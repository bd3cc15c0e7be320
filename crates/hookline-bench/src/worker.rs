//! `worker`: the worker alone, draining a backlog. `<prefix>.ingress` is pre-filled with N
//! distinct raw deliveries in the ingress's format before any worker runs; then
//! `hookline worker` starts with an observer queue bound to `<prefix>.events` with `#`,
//! and the bench times the drain: worker start → `<prefix>.ingress` empty and N events in
//! the observer queue. Also the worker's CPU and peak RSS.

use crate::broker;
use crate::machine::{CpuMeter, CpuUse};
use crate::names;
use crate::observer::{self, Drained};
use crate::payload;
use crate::process::{Bench, Role, Stopped};
use crate::server_metrics::{self, ServerMetrics};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hookline_core::DeliveryMeta;
use hookline_core::wire;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, Connection};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

/// Deliveries pre-filled by default: 10–20 s of draining on a 2-core box.
pub(crate) const DEFAULT_DELIVERIES: u64 = 100_000;
/// Deliveries per pre-filled message: what the ingress packs at a moderate load.
pub(crate) const DEFAULT_BATCH: usize = 32;
/// Unconfirmed pre-fill messages kept in flight.
const PREFILL_WINDOW: usize = 1024;
/// Give up when neither queue changed for this long...
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// ...or after this long in all.
const DRAIN_LIMIT: Duration = Duration::from_secs(900);
/// Wait after the drain before the final count, so duplicates right behind show up.
const GRACE: Duration = Duration::from_secs(1);

/// What the worker run measured.
pub(crate) struct WorkerResult {
    /// Deliveries pre-filled (= events expected).
    pub(crate) deliveries: u64,
    /// How long the pre-fill took (confirmed).
    pub(crate) prefill_took: Duration,
    /// The poll from the worker's start to the end of the drain.
    pub(crate) drained: Drained,
    /// From the worker's start to `/healthz` answering and "Worker consuming" logged.
    pub(crate) ready_after: Duration,
    /// Events in the observer queue a moment after the drain.
    pub(crate) events_final: u32,
    /// CPU use from the worker's start to the end of the drain.
    pub(crate) cpu: CpuUse,
    /// Peak RSS of the worker, KiB.
    pub(crate) peak_rss_kib: u64,
    /// The worker's `/metrics` at the end.
    pub(crate) server: ServerMetrics,
    /// How the worker stopped.
    pub(crate) stopped: Vec<Stopped>,
}

impl WorkerResult {
    /// Worker start → ingress queue empty and every event in the observer queue.
    pub(crate) fn drain_time(&self) -> Option<Duration> {
        self.drained.took()
    }

    /// Events per second over the whole drain, start-up included.
    pub(crate) fn events_per_sec(&self) -> Option<f64> {
        let took = self.drain_time()?.as_secs_f64();
        (took > 0.0).then(|| self.deliveries as f64 / took)
    }

    /// Events per second from the first poll that saw an event to the end.
    pub(crate) fn steady_events_per_sec(&self) -> Option<f64> {
        let took = self
            .drained
            .done?
            .saturating_duration_since(self.drained.first_event?)
            .as_secs_f64();
        (took > 0.0).then(|| self.deliveries as f64 / took)
    }

    /// Every delivery became exactly one event.
    pub(crate) fn complete(&self) -> bool {
        self.drained.done.is_some() && u64::from(self.events_final) == self.deliveries
    }
}

/// Pre-fills `<prefix>.ingress`, starts a worker, times the drain, stops it, cleans up.
pub(crate) async fn run(bench: &Bench, deliveries: u64, batch: usize) -> Result<WorkerResult> {
    if deliveries == 0 {
        bail!("--deliveries must be at least 1");
    }
    let ingress = names::under(&bench.prefix, names::INGRESS_QUEUE);
    let observer_queue = names::under(&bench.prefix, names::WORKER_EVENTS_QUEUE);
    let connection = broker::connect(&bench.amqp_url).await?;
    let channel = connection.create_channel().await?;
    // Declared as hookline declares them (durable, no arguments), and empty.
    broker::declare_durable(&channel, &ingress).await?;
    broker::declare_durable(&channel, &observer_queue).await?;
    broker::purge(&connection, &ingress).await?;
    broker::purge(&connection, &observer_queue).await?;

    eprintln!("hookline-bench: worker: pre-filling {deliveries} deliveries, {batch} per message");
    let began = Instant::now();
    prefill(&connection, &ingress, deliveries, batch).await?;
    let prefill_took = began.elapsed();
    let queued = broker::count_deliveries(&connection, &ingress).await?;
    if queued != deliveries {
        bail!("{ingress} holds {queued} deliveries after pre-filling {deliveries}");
    }

    let mut meter = CpuMeter::start(&[]);
    let poll_channel = connection.create_channel().await?;
    let (ingress_name, observer_name) = (ingress.clone(), observer_queue.clone());
    let poller = tokio::spawn(async move {
        observer::wait_for(
            &poll_channel,
            &ingress_name,
            &observer_name,
            deliveries,
            STALL_LIMIT,
            DRAIN_LIMIT,
        )
        .await
    });
    let spawned = Instant::now();
    let started = bench
        .start_with(
            &[Role::Worker],
            &observer::subscription_toml(&observer_queue),
        )
        .await;
    let mut hookline = match started {
        Ok(hookline) => hookline,
        Err(error) => {
            poller.abort();
            return Err(error);
        }
    };
    let ready_after = spawned.elapsed();
    meter.add_started_since("worker", hookline.proc(Role::Worker)?.pid());
    let drained = poller.await.context("the queue poller failed")??;
    let cpu = meter.finish();
    hookline.ensure_running()?;
    let peak_rss_kib = hookline.proc(Role::Worker)?.peak_rss_kib()?;
    let server = server_metrics::read(hookline.worker_addr)
        .await
        .unwrap_or_default();
    tokio::time::sleep(GRACE).await;
    let events_final = broker::queue_depth(&channel, &observer_queue).await?;
    let stopped = hookline.stop().await;

    broker::delete_queue(&connection, &observer_queue).await?;
    broker::purge(&connection, &ingress).await?;
    let _ = connection.close(200, "worker done".into()).await;
    Ok(WorkerResult {
        deliveries,
        prefill_took,
        drained,
        ready_after,
        events_final,
        cpu,
        peak_rss_kib,
        server,
        stopped,
    })
}

/// Pre-fills `queue` with `count` distinct Aisle deliveries in the ingress's raw-delivery
/// format ([`hookline_core::wire`]): `batch` deliveries per message (1: single-delivery
/// messages), as the ingress packs them under load.
pub(crate) async fn prefill(
    connection: &Connection,
    queue: &str,
    count: u64,
    batch: usize,
) -> Result<()> {
    let batch = batch.max(1) as u64;
    let messages = count.div_ceil(batch);
    publish_confirmed(connection, queue, messages, PREFILL_WINDOW, |i| {
        let size = batch.min(count - i * batch);
        let entries: Vec<wire::Entry> = (0..size)
            .map(|_| wire::Entry {
                meta: DeliveryMeta {
                    delivery_id: Uuid::now_v7(),
                    source: "aisle".into(),
                    provider: "aisle".into(),
                    received_at: OffsetDateTime::now_utc(),
                    headers: Vec::new(),
                },
                body: payload::aisle_body(Uuid::new_v4()),
            })
            .collect();
        let message = wire::batch_entries(&entries);
        let properties = hookline_amqp::message::properties(&message).with_delivery_mode(2);
        (message.body, properties)
    })
    .await
}

/// Publishes `count` messages made by `make(i)` to `queue` through the default exchange on
/// one confirm channel, `window` unconfirmed at most; fails on any nack.
async fn publish_confirmed(
    connection: &Connection,
    queue: &str,
    count: u64,
    window: usize,
    mut make: impl FnMut(u64) -> (Bytes, BasicProperties),
) -> Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0u64;
    let mut nacked = 0u64;
    loop {
        while in_flight.len() < window && sent < count {
            let (body, properties) = make(sent);
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
                .context("basic_publish failed while pre-filling")?;
            sent += 1;
            in_flight.push(confirm);
        }
        match in_flight.next().await {
            Some(confirmation) => match confirmation.context("publisher confirm failed")? {
                Confirmation::Ack(_) => {}
                Confirmation::Nack(_) | Confirmation::NotRequested => nacked += 1,
            },
            None => break,
        }
    }
    let _ = channel.close(200, "pre-filled".into()).await;
    if nacked > 0 {
        bail!("the broker nacked {nacked} of {count} pre-fill messages");
    }
    Ok(())
}
