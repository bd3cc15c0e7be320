//! `burst`: ingress and worker under more than the box can take. An open loop offers
//! `--rate` requests per second (by default 1.5 × the broker ceiling) for `--seconds`,
//! latency counted from each request's intended send time; then the bench times the tail:
//! from the last answer until every `200`'d delivery is an event in an observer queue
//! bound to `<prefix>.events` with `#` and `<prefix>.ingress` is empty.

use crate::broker;
use crate::ingress::pool_size;
use crate::load::{self, OpenLoopPlan, OpenLoopResult};
use crate::machine::{CpuMeter, CpuUse};
use crate::names;
use crate::observer::{self, Drained};
use crate::payload::Payloads;
use crate::process::{Bench, Role, Stopped};
use anyhow::Result;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The burst, as a multiple of the broker ceiling.
pub(crate) const CEILING_FACTOR: f64 = 1.5;
/// The ceiling assumed when the run has not measured one.
pub(crate) const ASSUMED_CEILING: f64 = 10_000.0;
/// Answers slower than this are counted.
pub(crate) const SLOW_ANSWER: Duration = Duration::from_millis(1000);
/// Give up on the tail when neither queue changed for this long...
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// ...or after this long in all.
const TAIL_LIMIT: Duration = Duration::from_secs(600);
/// Wait after the tail before the final count, so duplicates right behind show up.
const GRACE: Duration = Duration::from_secs(1);

/// What the burst run measured.
pub(crate) struct BurstResult {
    /// Requests per second offered.
    pub(crate) rate: f64,
    /// The open loop's figures.
    pub(crate) load: OpenLoopResult,
    /// Answers slower than [`SLOW_ANSWER`] (from the intended send time).
    pub(crate) slow_answers: u64,
    /// Events in the observer queue at the last answer.
    pub(crate) events_at_end: u32,
    /// Ready messages in `<prefix>.ingress` at the last answer.
    pub(crate) backlog_at_end: u32,
    /// From the schedule's end to the last answer.
    pub(crate) answers_lag: Duration,
    /// The poll from the last answer until all events were there.
    pub(crate) tail: Drained,
    /// Events in the observer queue a moment after the tail.
    pub(crate) events_final: u32,
    /// CPU use from the first request to the end of the tail.
    pub(crate) cpu: CpuUse,
    /// Peak RSS of the ingress and of the worker, KiB.
    pub(crate) peak_rss_kib: (u64, u64),
    /// How the processes stopped.
    pub(crate) stopped: Vec<Stopped>,
}

impl BurstResult {
    /// `200` answers.
    pub(crate) fn accepted(&self) -> u64 {
        self.load.tally.ok
    }

    /// `200`'d deliveries that never became an event.
    pub(crate) fn lost(&self) -> u64 {
        self.accepted().saturating_sub(u64::from(self.events_final))
    }

    /// Events beyond the `200`s: duplicates (or deliveries whose answer never arrived).
    pub(crate) fn extra(&self) -> u64 {
        u64::from(self.events_final).saturating_sub(self.accepted())
    }

    /// Events per second during the tail (events that arrived after the last answer).
    pub(crate) fn drain_rate(&self) -> Option<f64> {
        let took = self.tail.took()?.as_secs_f64();
        let drained = self.tail.events.saturating_sub(self.events_at_end);
        (took > 0.0 && drained > 0).then(|| f64::from(drained) / took)
    }
}

/// Starts ingress and worker, offers `rate` for `seconds`, waits for the tail, cleans up.
pub(crate) async fn run(
    bench: &Bench,
    rate: f64,
    seconds: Duration,
    connections: usize,
) -> Result<BurstResult> {
    let payloads = Arc::new(Payloads::generate(&bench.secret, pool_size(rate, seconds)));
    let ingress = names::under(&bench.prefix, names::INGRESS_QUEUE);
    let observer_queue = names::under(&bench.prefix, names::BURST_EVENTS_QUEUE);
    let connection = broker::connect(&bench.amqp_url).await?;
    let channel = connection.create_channel().await?;
    broker::declare_durable(&channel, &observer_queue).await?;
    broker::purge(&connection, &observer_queue).await?;

    let mut hookline = bench
        .start_with(
            &[Role::Ingress, Role::Worker],
            &observer::subscription_toml(&observer_queue),
        )
        .await?;
    broker::purge(&connection, &ingress).await?;
    let meter = CpuMeter::start(&[
        ("ingress", hookline.proc(Role::Ingress)?.pid()),
        ("worker", hookline.proc(Role::Worker)?.pid()),
    ]);
    let plan = OpenLoopPlan {
        rate,
        warmup: Duration::ZERO,
        measure: seconds,
        connections,
        keep_ids: false,
    };
    let load = load::open_loop(hookline.ingress_addr, payloads, plan).await?;
    let answered = Instant::now();
    let answers_lag = answered.saturating_duration_since(load.started + seconds);
    let events_at_end = broker::queue_depth(&channel, &observer_queue).await?;
    let backlog_at_end = broker::queue_depth(&channel, &ingress).await?;
    let mut tail = observer::wait_for(
        &channel,
        &ingress,
        &observer_queue,
        load.tally.ok,
        STALL_LIMIT,
        TAIL_LIMIT,
    )
    .await?;
    // Timed from the last answer, not from the end of the depth reads above.
    tail.since = answered;
    let cpu = meter.finish();
    tokio::time::sleep(GRACE).await;
    let events_final = broker::queue_depth(&channel, &observer_queue).await?;
    hookline.ensure_running()?;
    let peak_rss_kib = (
        hookline.proc(Role::Ingress)?.peak_rss_kib()?,
        hookline.proc(Role::Worker)?.peak_rss_kib()?,
    );
    let stopped = hookline.stop().await;

    broker::delete_queue(&connection, &observer_queue).await?;
    broker::purge(&connection, &ingress).await?;
    let _ = connection.close(200, "burst done".into()).await;
    let slow_answers = load::count_above(&load.latency, SLOW_ANSWER.as_micros() as u64);
    Ok(BurstResult {
        rate,
        slow_answers,
        events_at_end,
        backlog_at_end,
        answers_lag,
        tail,
        events_final,
        cpu,
        peak_rss_kib,
        stopped,
        load,
    })
}
