//! `e2e`: ingress and worker as separate processes; webhooks at a fixed rate in, events
//! consumed from a bench queue bound to `<prefix>.events` with `#`. Reports the event rate,
//! the ingress backlog when sending stops and 5 s later, and exactly-once delivery per id.

use crate::broker;
use crate::ingress::pool_size;
use crate::load::{self, OpenLoopPlan, OpenLoopResult};
use crate::machine::{CpuMeter, CpuUse};
use crate::names;
use crate::payload::Payloads;
use crate::process::{Bench, Role, Stopped};
use crate::server_metrics::{self, ServerMetrics};
use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// Time between the two backlog readings.
const BACKLOG_GAP: Duration = Duration::from_secs(5);
/// Give up waiting for missing events after this long without a new one...
const NO_PROGRESS_LIMIT: Duration = Duration::from_secs(15);
/// ...or this long after sending stopped.
const WAIT_LIMIT: Duration = Duration::from_secs(180);

/// What the end-to-end run measured.
pub(crate) struct E2eResult {
    /// Requests per second asked for.
    pub(crate) rate: f64,
    /// The open loop's figures.
    pub(crate) load: OpenLoopResult,
    /// Events consumed.
    pub(crate) events: u64,
    /// Events per second from the first send to the last event.
    pub(crate) events_rate: f64,
    /// Ready messages in `<prefix>.ingress` when sending stopped.
    pub(crate) backlog_at_stop: u32,
    /// The same, 5 s later.
    pub(crate) backlog_later: u32,
    /// The same once every event arrived (or the wait gave up).
    pub(crate) backlog_final: u32,
    /// Accepted ids whose event never arrived.
    pub(crate) missing: u64,
    /// Extra copies of events that arrived more than once.
    pub(crate) duplicates: u64,
    /// Events for ids that were not answered 200 (or not ours).
    pub(crate) unexpected: u64,
    /// From each accepted webhook's intended send time to its (first) event.
    pub(crate) latency: Histogram<u64>,
    /// CPU use while sending.
    pub(crate) cpu: CpuUse,
    /// Peak RSS of the worker, KiB.
    pub(crate) worker_rss_kib: u64,
    /// The worker's `/metrics` at the end.
    pub(crate) worker: ServerMetrics,
    /// How the processes stopped.
    pub(crate) stopped: Vec<Stopped>,
}

impl E2eResult {
    /// The ingress accepted at least 90 % of the scheduled rate.
    pub(crate) fn rate_sustained(&self) -> bool {
        self.load.achieved_rate >= 0.9 * self.rate
    }

    /// Events per second as a share of `ceiling` msg/s, when there is one.
    pub(crate) fn of_ceiling(&self, ceiling: Option<f64>) -> Option<f64> {
        ceiling.filter(|c| *c > 0.0).map(|c| self.events_rate / c)
    }

    /// Every accepted id arrived exactly once.
    pub(crate) fn exactly_once(&self) -> bool {
        self.missing == 0 && self.duplicates == 0
    }
}

#[derive(Default)]
struct Received {
    /// Copies and first arrival per id.
    counts: HashMap<Uuid, (u32, Instant)>,
    total: u64,
    foreign: u64,
    last: Option<Instant>,
}

/// Starts ingress and worker, sends at `rate` for `seconds`, waits for the events.
pub(crate) async fn run(
    bench: &Bench,
    rate: f64,
    seconds: Duration,
    connections: usize,
) -> Result<E2eResult> {
    let payloads = Arc::new(Payloads::generate(&bench.secret, pool_size(rate, seconds)));
    let mut hookline = bench.start(&[Role::Ingress, Role::Worker]).await?;

    let connection = broker::connect(&bench.amqp_url).await?;
    let channel = connection.create_channel().await?;
    let queue = names::under(&bench.prefix, names::E2E_EVENTS_QUEUE);
    // Durable like a real subscription queue, so the broker does the same work as in production.
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            names::under(&bench.prefix, names::EVENTS_EXCHANGE).into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("cannot bind the bench queue to <prefix>.events")?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "hookline-bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let received = Arc::new(Mutex::new(Received::default()));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let consuming = {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                let delivery = tokio::select! {
                    _ = stop_rx.changed() => break,
                    next = consumer.next() => match next {
                        Some(Ok(delivery)) => delivery,
                        Some(Err(error)) => return Err(anyhow::Error::from(error)),
                        None => break,
                    },
                };
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .and_then(|id| id.as_str().strip_prefix("aisle:").map(Uuid::parse_str));
                let now = Instant::now();
                let mut received = received.lock().unwrap_or_else(PoisonError::into_inner);
                received.total += 1;
                received.last = Some(now);
                match id {
                    Some(Ok(id)) => received.counts.entry(id).or_insert((0, now)).0 += 1,
                    _ => received.foreign += 1,
                }
            }
            anyhow::Ok(())
        })
    };

    let ingress_queue = names::under(&bench.prefix, names::INGRESS_QUEUE);
    let meter = CpuMeter::start(&[
        ("ingress", hookline.proc(Role::Ingress)?.pid()),
        ("worker", hookline.proc(Role::Worker)?.pid()),
    ]);
    let plan = OpenLoopPlan {
        rate,
        warmup: Duration::ZERO,
        measure: seconds,
        connections,
        keep_ids: true,
    };
    let load = load::open_loop(hookline.ingress_addr, payloads, plan).await?;
    let cpu = meter.finish();
    let backlog_at_stop = broker::queue_depth(&channel, &ingress_queue).await?;
    let sending_stopped = Instant::now();
    tokio::time::sleep(BACKLOG_GAP).await;
    let backlog_later = broker::queue_depth(&channel, &ingress_queue).await?;

    let expected = load.accepted_ids.len() as u64;
    let mut last_progress = (0, Instant::now());
    loop {
        let total = received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total;
        if total >= expected
            || sending_stopped.elapsed() >= WAIT_LIMIT
            || last_progress.1.elapsed() >= NO_PROGRESS_LIMIT
        {
            break;
        }
        if total > last_progress.0 {
            last_progress = (total, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A short grace period shows duplicates that would arrive right behind the last event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let backlog_final = broker::queue_depth(&channel, &ingress_queue).await?;
    let _ = stop_tx.send(true);
    consuming
        .await
        .context("the event consumer task failed")??;
    hookline.ensure_running()?;
    let worker_rss_kib = hookline.proc(Role::Worker)?.peak_rss_kib()?;
    let worker = server_metrics::read(hookline.worker_addr)
        .await
        .unwrap_or_default();
    let stopped = hookline.stop().await;
    // Left bound, the queue would take a copy of every event of the modes after this one.
    if let Err(error) = broker::delete_queue(&connection, &queue).await {
        eprintln!("hookline-bench: e2e: {error:#}");
    }
    let _ = connection.close(200, "e2e done".into()).await;

    let received = std::mem::take(&mut *received.lock().unwrap_or_else(PoisonError::into_inner));
    let accepted: HashSet<Uuid> = load.accepted_ids.iter().map(|(id, _)| *id).collect();
    let mut missing = 0;
    let mut duplicates = 0;
    let mut latency = load::latency_histogram();
    for (id, sent) in &load.accepted_ids {
        match received.counts.get(id) {
            None => missing += 1,
            Some(&(n, arrived)) => {
                duplicates += u64::from(n.saturating_sub(1));
                let micros = arrived.saturating_duration_since(*sent).as_micros();
                latency.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
            }
        }
    }
    let unexpected = received.foreign
        + received
            .counts
            .iter()
            .filter(|(id, _)| !accepted.contains(id))
            .map(|(_, (n, _))| u64::from(*n))
            .sum::<u64>();
    let last_event = received.last.unwrap_or(load.started);
    let span = last_event
        .saturating_duration_since(load.started)
        .as_secs_f64();
    Ok(E2eResult {
        rate,
        events: received.total,
        events_rate: if span > 0.0 {
            received.total as f64 / span
        } else {
            0.0
        },
        backlog_at_stop,
        backlog_later,
        backlog_final,
        missing,
        duplicates,
        unexpected,
        latency,
        load,
        cpu,
        worker_rss_kib,
        worker,
        stopped,
    })
}
