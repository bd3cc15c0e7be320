//! `rate R`: hookline ingress alone under an open-loop schedule of R requests per second;
//! latency counted from each request's intended send time (no coordinated omission).

use crate::broker;
use crate::ingress::pool_size;
use crate::load::{self, OpenLoopPlan, OpenLoopResult};
use crate::machine::{CpuMeter, CpuUse};
use crate::names;
use crate::payload::Payloads;
use crate::process::{Bench, Role, Stopped};
use crate::server_metrics::{self, ServerMetrics};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;

/// Scheduled but unmeasured time at the start (connections, first confirms).
pub(crate) const WARMUP: Duration = Duration::from_secs(1);

/// What the rate run measured.
pub(crate) struct RateResult {
    /// Requests per second asked for.
    pub(crate) rate: f64,
    /// The open loop's figures.
    pub(crate) load: OpenLoopResult,
    /// CPU use during the run.
    pub(crate) cpu: CpuUse,
    /// The ingress's own view (ack time histogram).
    pub(crate) server: ServerMetrics,
    /// How the process stopped.
    pub(crate) stopped: Vec<Stopped>,
}

/// Starts an ingress, runs the schedule, stops it and purges `<prefix>.ingress`.
pub(crate) async fn run(
    bench: &Bench,
    rate: f64,
    seconds: Duration,
    connections: usize,
) -> Result<RateResult> {
    let payloads = Arc::new(Payloads::generate(
        &bench.secret,
        pool_size(rate, WARMUP + seconds),
    ));
    let mut hookline = bench.start(&[Role::Ingress]).await?;
    let pid = hookline.proc(Role::Ingress)?.pid();
    let meter = CpuMeter::start(&[("ingress", pid)]);
    let plan = OpenLoopPlan {
        rate,
        warmup: WARMUP,
        measure: seconds,
        connections,
        keep_ids: false,
    };
    let load = load::open_loop(hookline.ingress_addr, payloads, plan).await?;
    let cpu = meter.finish();
    hookline.ensure_running()?;
    let server = server_metrics::read(hookline.ingress_addr).await?;
    let stopped = hookline.stop().await;

    let connection = broker::connect(&bench.amqp_url).await?;
    broker::purge(
        &connection,
        &names::under(&bench.prefix, names::INGRESS_QUEUE),
    )
    .await?;
    let _ = connection.close(200, "purged".into()).await;
    Ok(RateResult {
        rate,
        load,
        cpu,
        server,
        stopped,
    })
}
