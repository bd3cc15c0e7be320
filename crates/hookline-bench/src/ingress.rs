//! `ingress`: hookline ingress alone (no worker), closed loop over keep-alive connections;
//! throughput of `200`s, latency percentiles and the ingress's peak RSS.

use crate::broker;
use crate::load::{self, ClosedLoopResult};
use crate::machine::{CpuMeter, CpuUse};
use crate::names;
use crate::payload::Payloads;
use crate::process::{Bench, Role, Stopped};
use crate::server_metrics::{self, ServerMetrics};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;

/// Unmeasured time at the start of the run.
pub(crate) const WARMUP: Duration = Duration::from_secs(2);

/// How the ingress run is shaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IngressPlan {
    /// Measured seconds.
    pub(crate) seconds: Duration,
    /// Keep-alive connections, each with one request outstanding.
    pub(crate) connections: usize,
    /// Expected requests per second, to size the pre-generated body pool.
    pub(crate) expected_rate: f64,
}

/// What the ingress run measured.
pub(crate) struct IngressResult {
    /// The closed loop's figures.
    pub(crate) load: ClosedLoopResult,
    /// `VmHWM` of the ingress process, KiB.
    pub(crate) peak_rss_kib: u64,
    /// CPU use during the measured window.
    pub(crate) cpu: CpuUse,
    /// The ingress's own view (ack time histogram, where deliveries were stored).
    pub(crate) server: ServerMetrics,
    /// How the process stopped.
    pub(crate) stopped: Vec<Stopped>,
    /// Bodies generated during timing because the pool was too small.
    pub(crate) made_late: u64,
}

/// Starts an ingress, loads it, stops it and purges `<prefix>.ingress`.
pub(crate) async fn run(bench: &Bench, plan: IngressPlan) -> Result<IngressResult> {
    let payloads = Arc::new(Payloads::generate(
        &bench.secret,
        pool_size(plan.expected_rate, WARMUP + plan.seconds),
    ));
    let mut hookline = bench.start(&[Role::Ingress]).await?;
    let addr = hookline.ingress_addr;
    let pid = hookline.proc(Role::Ingress)?.pid();

    let load = load::closed_loop(
        addr,
        payloads.clone(),
        plan.connections,
        WARMUP,
        plan.seconds,
    );
    // CPU is metered over the measured window only.
    let metered = async {
        tokio::time::sleep(WARMUP).await;
        let meter = CpuMeter::start(&[("ingress", pid)]);
        tokio::time::sleep(plan.seconds).await;
        meter.finish()
    };
    let (load, cpu) = tokio::join!(load, metered);
    let load = load?;
    hookline.ensure_running()?;
    let peak_rss_kib = hookline.proc(Role::Ingress)?.peak_rss_kib()?;
    let server = server_metrics::read(addr).await?;
    let stopped = hookline.stop().await;

    let connection = broker::connect(&bench.amqp_url).await?;
    broker::purge(
        &connection,
        &names::under(&bench.prefix, names::INGRESS_QUEUE),
    )
    .await?;
    let _ = connection.close(200, "purged".into()).await;
    Ok(IngressResult {
        load,
        peak_rss_kib,
        cpu,
        server,
        stopped,
        made_late: payloads.made_late(),
    })
}

/// Bodies for `rate` requests per second over `span`, with headroom (capped at 2 million).
pub(crate) fn pool_size(rate: f64, span: Duration) -> usize {
    let wanted = rate * span.as_secs_f64() * 1.3 + 1000.0;
    wanted.clamp(1000.0, 2_000_000.0) as usize
}
