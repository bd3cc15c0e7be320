//! `outage`: hookline ingress alone while RabbitMQ's application is stopped
//! (`rabbitmqctl stop_app`, always restored by a guard). Measures the closed loop while
//! deliveries go to the spool, then after `start_app` the reconnect delay and the drain
//! of the spool into `<prefix>.ingress`.

use crate::broker::{self, AppStopped};
use crate::ingress::pool_size;
use crate::load::{self, ClosedLoopResult};
use crate::machine::{CpuMeter, CpuUse};
use crate::names;
use crate::payload::Payloads;
use crate::process::{Bench, Hookline, Role, Stopped};
use crate::server_metrics::{self, ServerMetrics};
use anyhow::{Result, bail};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Queue depth poll interval while draining.
const POLL: Duration = Duration::from_millis(20);
/// Longest wait for the first drained delivery after `start_app` (backoff is ≤ 10 s).
const RECONNECT_LIMIT: Duration = Duration::from_secs(60);
/// Give up on the drain after this long without progress.
const DRAIN_STALL_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for the spool-depth gauge to reach 0 once the queue holds everything.
const GAUGE_LIMIT: Duration = Duration::from_secs(15);

/// What the outage run measured.
pub(crate) struct OutageResult {
    /// The closed loop while spooling.
    pub(crate) load: ClosedLoopResult,
    /// `200`s during the outage: what the queue must hold at the end.
    pub(crate) accepted: u64,
    /// `hookline_spool_depth` just before `start_app`.
    pub(crate) spool_depth_before: Option<f64>,
    /// How long `rabbitmqctl start_app` took.
    pub(crate) start_app_took: Duration,
    /// From `start_app` returning to the first delivery in the queue.
    pub(crate) reconnect_delay: Option<Duration>,
    /// From the first delivery in the queue to all of them.
    pub(crate) drain_time: Option<Duration>,
    /// Deliveries per second while draining (those after the first poll that saw any).
    pub(crate) drain_rate: Option<f64>,
    /// Deliveries in `<prefix>.ingress` at the end (batch messages counted by content).
    pub(crate) queued: u64,
    /// `hookline_spool_depth` at the end (should be 0).
    pub(crate) spool_depth_end: Option<f64>,
    /// `hookline_ingress_direct` at the end (1: publishing directly again).
    pub(crate) direct_end: Option<f64>,
    /// The ingress's metrics at the end (spool commits).
    pub(crate) server: ServerMetrics,
    /// CPU use while spooling.
    pub(crate) cpu: CpuUse,
    /// How the process stopped.
    pub(crate) stopped: Vec<Stopped>,
}

impl OutageResult {
    /// Every accepted delivery reached the queue and the spool is empty.
    pub(crate) fn complete(&self) -> bool {
        self.queued >= self.accepted && self.spool_depth_end == Some(0.0)
    }
}

/// Runs the outage; RabbitMQ's application is running again whatever happens.
pub(crate) async fn run(
    bench: &Bench,
    seconds: Duration,
    connections: usize,
    expected_rate: f64,
) -> Result<OutageResult> {
    let payloads = Arc::new(Payloads::generate(
        &bench.secret,
        pool_size(expected_rate, seconds),
    ));
    let mut hookline = bench.start(&[Role::Ingress]).await?;
    let addr = hookline.ingress_addr;
    let queue = names::under(&bench.prefix, names::INGRESS_QUEUE);
    {
        let connection = broker::connect(&bench.amqp_url).await?;
        broker::purge(&connection, &queue).await?;
        let _ = connection.close(200, "before outage".into()).await;
    }

    let app = AppStopped::stop().await?;
    wait_disconnected(&mut hookline, addr).await?;
    let meter = CpuMeter::start(&[("ingress", hookline.proc(Role::Ingress)?.pid())]);
    let load = load::closed_loop(addr, payloads, connections, Duration::ZERO, seconds).await?;
    let cpu = meter.finish();
    hookline.ensure_running()?;
    let accepted = load.all_ok;
    let spool_depth_before = server_metrics::read(addr)
        .await
        .ok()
        .and_then(|m| m.sum("hookline_spool_depth", &[]));

    let start_app_took = app.start().await?;
    let started = Instant::now();
    let connection = broker::connect_patiently(&bench.amqp_url, Duration::from_secs(60)).await?;
    // The drain is followed by the spool's own depth: the queue holds batch messages, so its
    // message count says little about deliveries.
    let before = spool_depth_before.unwrap_or(accepted as f64);
    let mut first: Option<(Instant, f64)> = None;
    let mut last: (Instant, f64) = (Instant::now(), before);
    loop {
        hookline.ensure_running()?;
        let depth = server_metrics::read(addr)
            .await
            .ok()
            .and_then(|m| m.sum("hookline_spool_depth", &[]))
            .unwrap_or(before);
        let now = Instant::now();
        if depth < before && first.is_none() {
            first = Some((now, depth));
        }
        if depth < last.1 {
            last = (now, depth);
        }
        if depth <= 0.0 {
            break;
        }
        let stalled = match first {
            None => started.elapsed() >= RECONNECT_LIMIT,
            Some(_) => last.0.elapsed() >= DRAIN_STALL_LIMIT,
        };
        if stalled {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let all_at = Instant::now();
    let reconnect_delay = first.map(|(at, _)| at.saturating_duration_since(started));
    let drain_time = first.map(|(at, _)| all_at.saturating_duration_since(at));
    let drain_rate = match (first, drain_time) {
        (Some((_, seen)), Some(time)) if !time.is_zero() && seen > last.1 => {
            Some((seen - last.1) / time.as_secs_f64())
        }
        _ => None,
    };
    let queued = broker::count_deliveries(&connection, &queue).await?;

    let (server, spool_depth_end) = wait_spool_empty(addr).await;
    let direct_end = server.sum("hookline_ingress_direct", &[]);
    hookline.ensure_running()?;
    let stopped = hookline.stop().await;
    broker::purge(&connection, &queue).await?;
    let _ = connection.close(200, "outage done".into()).await;
    Ok(OutageResult {
        load,
        accepted,
        spool_depth_before,
        start_app_took,
        reconnect_delay,
        drain_time,
        drain_rate,
        queued,
        spool_depth_end,
        direct_end,
        server,
        cpu,
        stopped,
    })
}

/// Waits until the ingress reports its broker connection down.
async fn wait_disconnected(hookline: &mut Hookline, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        hookline.ensure_running()?;
        let metrics = server_metrics::read(addr).await?;
        if metrics.sum("hookline_amqp_connected", &["role=\"ingress\""]) == Some(0.0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the ingress did not notice the broker going away within 15 s")
}

/// Polls `/metrics` until `hookline_spool_depth` is 0 (or the limit passes).
async fn wait_spool_empty(addr: SocketAddr) -> (ServerMetrics, Option<f64>) {
    let deadline = Instant::now() + GAUGE_LIMIT;
    loop {
        let metrics = server_metrics::read(addr).await.unwrap_or_default();
        let depth = metrics.sum("hookline_spool_depth", &[]);
        if depth == Some(0.0) || Instant::now() >= deadline {
            return (metrics, depth);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
