//! `hookline-bench`: starts hookline itself (temp config, random AMQP prefix, child
//! processes), drives load from 127.0.0.1, prints a markdown report and cleans up its
//! queues and exchanges, also after an error, a panic or Ctrl-C.

mod attack;
mod broker;
mod burst;
mod ceiling;
mod e2e;
mod ingress;
mod load;
mod machine;
mod naive;
mod names;
mod observer;
mod outage;
mod payload;
mod process;
mod rate;
mod report;
mod server_metrics;
mod worker;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use machine::MachineInfo;
use process::Bench;
use report::Report;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Benchmarks hookline against the local RabbitMQ: broker ceiling, a naive server, ingress
/// throughput, open-loop latency, end to end, a burst, the worker's drain, a broker outage,
/// and hostile clients.
#[derive(Parser)]
#[command(name = "hookline-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    #[command(flatten)]
    options: Options,
}

/// Options every mode takes.
#[derive(Args, Clone)]
struct Options {
    /// Measured seconds per mode [default: 10; attack: 60 per round].
    #[arg(long, global = true)]
    seconds: Option<u64>,
    /// Client connections (closed loop: one request outstanding on each; open loop: pool).
    #[arg(long, global = true, default_value_t = 64)]
    connections: usize,
    /// The hookline binary [default: `hookline` beside this executable].
    #[arg(long, global = true)]
    hookline: Option<PathBuf>,
    /// RabbitMQ on this machine (loopback only).
    #[arg(
        long,
        global = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// RUST_LOG for the hookline processes.
    #[arg(long, global = true, default_value = "info")]
    rust_log: String,
    /// Keep the temp directory (configs, storage, logs) for inspection.
    #[arg(long, global = true)]
    keep: bool,
    /// A config override for every hookline started, e.g. `--set ingress.hedge_after_ms=10`
    /// (repeatable; passed as `HOOKLINE__INGRESS__HEDGE_AFTER_MS`).
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(Subcommand, Clone, Copy)]
enum Mode {
    /// Bare lapin publisher: persistent messages, confirms, 1024 in flight (no hookline).
    Ceiling {
        /// Unconfirmed messages kept in flight.
        #[arg(long, default_value_t = ceiling::WINDOW)]
        window: usize,
        /// Publish as hookline's ingress does: its properties and headers, `mandatory`,
        /// round robin over 4 channels.
        #[arg(long)]
        ingress_like: bool,
    },
    /// A 40-line axum + lapin server in the bench (one confirm channel), ingress's closed loop.
    Naive,
    /// hookline ingress alone, closed loop: req/s, latency, peak RSS.
    Ingress,
    /// hookline ingress alone, open loop at a fixed rate: latency from the intended send time.
    Rate {
        /// Requests per second.
        #[arg(default_value_t = 1000.0)]
        rate: f64,
    },
    /// Ingress and worker: events rate, backlog, exactly-once delivery.
    E2e {
        /// Requests per second to send [default: 2000].
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Ingress and worker offered more than they take: latency, then the drain and losses.
    Burst {
        /// Requests per second to offer [default: 1.5 × 10,000; in `all`: 1.5 × ceiling].
        #[arg(long)]
        rate: Option<f64>,
    },
    /// The worker alone draining a pre-filled `<prefix>.ingress`: time, events/s, CPU, RSS.
    Worker {
        /// Deliveries to pre-fill.
        #[arg(long, default_value_t = worker::DEFAULT_DELIVERIES)]
        deliveries: u64,
        /// Deliveries per pre-filled message (1: single-delivery messages).
        #[arg(long, default_value_t = worker::DEFAULT_BATCH)]
        batch: usize,
    },
    /// Ingress while RabbitMQ's app is stopped: spooling, reconnect and drain.
    Outage,
    /// Ingress under slow-body, idle and forged-signature clients, twice: RSS, fds, signed 200s.
    Attack(AttackArgs),
    /// ceiling, naive, ingress, rate 1000, e2e, burst, worker, outage in one run, one table.
    All {
        /// e2e send rate [default: 80% of the ingress req/s measured in this run, at most the ceiling].
        #[arg(long)]
        rate: Option<f64>,
        /// burst rate [default: 1.5 × the ceiling measured in this run].
        #[arg(long)]
        burst_rate: Option<f64>,
        /// Deliveries the worker mode drains.
        #[arg(long, default_value_t = worker::DEFAULT_DELIVERIES)]
        deliveries: u64,
    },
}

/// The attack's mix (per round; two rounds against the same ingress).
#[derive(Args, Clone, Copy)]
struct AttackArgs {
    /// Slow-body connections (complete headers, then 1 body byte per interval).
    #[arg(long, default_value_t = attack::TRICKLE_CONNECTIONS)]
    trickle_connections: usize,
    /// Milliseconds between two body bytes of a slow-body connection.
    #[arg(long, default_value_t = attack::TRICKLE_INTERVAL_MS)]
    trickle_interval_ms: u64,
    /// Content-Length the slow bodies announce.
    #[arg(long, default_value_t = attack::TRICKLE_CONTENT_LENGTH)]
    trickle_content_length: u64,
    /// Connections that connect and send nothing.
    #[arg(long, default_value_t = attack::IDLE_CONNECTIONS)]
    idle_connections: usize,
    /// Keep-alive connections sending forged-signature requests back to back.
    #[arg(long, default_value_t = attack::FORGED_CONNECTIONS)]
    forged_connections: usize,
    /// Correctly signed deliveries per second from a separate well-behaved client.
    #[arg(long, default_value_t = attack::SIGNED_RATE)]
    signed_rate: f64,
    /// Time limit of one signed request, ms.
    #[arg(long, default_value_t = attack::SIGNED_TIMEOUT_MS)]
    signed_timeout_ms: u64,
    /// Pause after each round (connections close) before counting and the next round, s.
    #[arg(long, default_value_t = attack::PAUSE_SECONDS)]
    pause_seconds: u64,
    /// Stop a round early when the ingress's RSS passes this (protects a shared box), MiB.
    #[arg(long, default_value_t = attack::RSS_LIMIT_MIB)]
    rss_limit_mib: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hookline-bench: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookline-bench: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let options = cli.options.clone();
    let seconds = options.seconds.unwrap_or(match cli.mode {
        Mode::Attack(_) => attack::DEFAULT_SECONDS,
        _ => DEFAULT_SECONDS,
    });
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    if options.connections == 0 {
        bail!("--connections must be at least 1");
    }
    ensure_loopback(&options.amqp_url)?;
    let bench = Arc::new(Bench::new(
        options.hookline.clone(),
        options.amqp_url.clone(),
        options.rust_log.clone(),
        options.keep,
        &options.overrides,
    )?);
    eprintln!(
        "hookline-bench: prefix {}, temp dir {}",
        bench.prefix,
        bench.dir().display()
    );
    let machine = MachineInfo::read().await;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = Report::new(
        machine,
        command,
        bench.binary(),
        seconds,
        options.connections,
    );

    let mut task = tokio::spawn(run_mode(
        bench.clone(),
        cli.mode,
        Duration::from_secs(seconds),
        options.connections,
        report,
    ));
    let outcome = tokio::select! {
        joined = &mut task => joined.map_err(|e| {
            if e.is_panic() { anyhow!("the benchmark panicked") } else { anyhow!("the benchmark was cancelled") }
        }).and_then(|r| r),
        () = interrupted() => {
            eprintln!("hookline-bench: interrupted; stopping hookline, restoring RabbitMQ, cleaning up");
            task.abort();
            let _ = task.await;
            Err(anyhow!("interrupted"))
        }
    };
    let cleanup = broker::delete_topology(&bench.amqp_url, &bench.prefix).await;
    if options.keep {
        eprintln!("hookline-bench: kept {}", bench.dir().display());
    }
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            if let Err(cleanup) = cleanup {
                eprintln!("hookline-bench: clean-up failed too: {cleanup:#}");
            }
            return Err(error);
        }
    };
    println!("{}", report.render());
    cleanup.context("deleting the bench's queues and exchanges")?;
    if !report.failures.is_empty() {
        bail!("{} mode(s) failed; see the notes", report.failures.len());
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// The bench sends traffic to this machine only.
fn ensure_loopback(url: &str) -> Result<()> {
    let uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e| anyhow!("--amqp-url is not a valid AMQP URL: {e}"))?;
    let host = uri.authority.host.as_str();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--amqp-url must point at this machine (127.0.0.1 or localhost), not {host}");
    }
    Ok(())
}

/// Runs one mode (or all of them) and fills the report.
async fn run_mode(
    bench: Arc<Bench>,
    mode: Mode,
    seconds: Duration,
    connections: usize,
    mut report: Report,
) -> Result<Report> {
    let bench = bench.as_ref();
    match mode {
        Mode::Ceiling {
            window,
            ingress_like,
        } => {
            let plan = ceiling::CeilingPlan {
                seconds,
                window,
                ingress_like,
            };
            report.ceiling = Some(step("ceiling", ceiling::run(bench, plan)).await?);
        }
        Mode::Naive => {
            let run = naive::run(bench, seconds, connections, DEFAULT_EXPECTED_RATE);
            report.naive = Some(step("naive", run).await?);
        }
        Mode::Ingress => {
            let plan = ingress::IngressPlan {
                seconds,
                connections,
                expected_rate: DEFAULT_EXPECTED_RATE,
            };
            report.ingress = Some(step("ingress", ingress::run(bench, plan)).await?);
        }
        Mode::Rate { rate } => {
            report.rate = Some(step("rate", rate::run(bench, rate, seconds, connections)).await?);
        }
        Mode::E2e { rate } => {
            let rate = rate.unwrap_or(DEFAULT_E2E_RATE);
            report.e2e = Some(step("e2e", e2e::run(bench, rate, seconds, connections)).await?);
        }
        Mode::Burst { rate } => {
            let rate = rate.unwrap_or(burst::CEILING_FACTOR * burst::ASSUMED_CEILING);
            let run = burst::run(bench, rate, seconds, connections);
            report.burst = Some(step("burst", run).await?);
        }
        Mode::Worker { deliveries, batch } => {
            report.worker = Some(step("worker", worker::run(bench, deliveries, batch)).await?);
        }
        Mode::Outage => {
            let run = outage::run(bench, seconds, connections, DEFAULT_EXPECTED_RATE);
            report.outage = Some(step("outage", run).await?);
        }
        Mode::Attack(args) => {
            let plan = attack::AttackPlan {
                seconds,
                trickle_connections: args.trickle_connections,
                trickle_interval: Duration::from_millis(args.trickle_interval_ms),
                trickle_content_length: args.trickle_content_length,
                idle_connections: args.idle_connections,
                forged_connections: args.forged_connections,
                signed_rate: args.signed_rate,
                signed_timeout: Duration::from_millis(args.signed_timeout_ms),
                pause: Duration::from_secs(args.pause_seconds),
                rss_limit_kib: args.rss_limit_mib.saturating_mul(1024),
            };
            report.attack = Some(step("attack", attack::run(bench, plan)).await?);
        }
        Mode::All {
            rate,
            burst_rate,
            deliveries,
        } => {
            let rates = AllRates {
                e2e: rate,
                burst: burst_rate,
                deliveries,
            };
            run_all(bench, &mut report, seconds, connections, rates).await;
        }
    }
    Ok(report)
}

/// Measured seconds per mode when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 10;
/// Sizes body pools when nothing was measured yet.
const DEFAULT_EXPECTED_RATE: f64 = 20_000.0;
/// `e2e`'s rate when run alone.
const DEFAULT_E2E_RATE: f64 = 2000.0;
/// Lets the broker settle (purges, deletes, GC) between modes.
const PAUSE_BETWEEN_MODES: Duration = Duration::from_secs(5);

/// `all`'s choices that are not derived from its own measurements.
struct AllRates {
    e2e: Option<f64>,
    burst: Option<f64>,
    deliveries: u64,
}

/// Records a mode's result, or its failure, and pauses before the next one.
async fn settle<T>(
    name: &'static str,
    result: Result<T>,
    slot: &mut Option<T>,
    failures: &mut Vec<(&'static str, String)>,
) {
    match result {
        Ok(result) => *slot = Some(result),
        Err(error) => failures.push((name, format!("{error:#}"))),
    }
    tokio::time::sleep(PAUSE_BETWEEN_MODES).await;
}

async fn run_all(
    bench: &Bench,
    report: &mut Report,
    seconds: Duration,
    connections: usize,
    rates: AllRates,
) {
    let plan = ceiling::CeilingPlan {
        seconds,
        window: ceiling::WINDOW,
        ingress_like: false,
    };
    let result = step("ceiling", ceiling::run(bench, plan)).await;
    settle("ceiling", result, &mut report.ceiling, &mut report.failures).await;
    let ceiling_rate = report.ceiling.as_ref().map(|c| c.msgs_per_sec);

    let expected_rate = ceiling_rate.map_or(DEFAULT_EXPECTED_RATE, |r| r.max(1000.0));
    let result = step(
        "naive",
        naive::run(bench, seconds, connections, expected_rate),
    )
    .await;
    settle("naive", result, &mut report.naive, &mut report.failures).await;

    let plan = ingress::IngressPlan {
        seconds,
        connections,
        expected_rate,
    };
    let result = step("ingress", ingress::run(bench, plan)).await;
    settle("ingress", result, &mut report.ingress, &mut report.failures).await;

    let result = step("rate", rate::run(bench, 1000.0, seconds, connections)).await;
    settle("rate", result, &mut report.rate, &mut report.failures).await;

    let ingress_rate = report.ingress.as_ref().map(|i| i.load.ok_per_sec());
    // Every event costs at least one persistent publish, so offering the pipeline more than
    // the ceiling only measures the client's queue; burst is the mode that overdrives it.
    let ceiling_rate = report
        .ceiling
        .as_ref()
        .map(|c| c.msgs_per_sec)
        .filter(|r| *r > 0.0);
    let rate = rates
        .e2e
        .or(ingress_rate.filter(|r| *r > 0.0).map(|r| {
            let offered = 0.8 * r;
            ceiling_rate.map_or(offered, |c| offered.min(c)).round()
        }))
        .unwrap_or(DEFAULT_E2E_RATE);
    let result = step("e2e", e2e::run(bench, rate, seconds, connections)).await;
    settle("e2e", result, &mut report.e2e, &mut report.failures).await;

    let rate = rates.burst.unwrap_or_else(|| {
        let ceiling = ceiling_rate
            .filter(|r| *r > 0.0)
            .unwrap_or(burst::ASSUMED_CEILING);
        (burst::CEILING_FACTOR * ceiling).round()
    });
    let result = step("burst", burst::run(bench, rate, seconds, connections)).await;
    settle("burst", result, &mut report.burst, &mut report.failures).await;

    let result = step(
        "worker",
        worker::run(bench, rates.deliveries, worker::DEFAULT_BATCH),
    )
    .await;
    settle("worker", result, &mut report.worker, &mut report.failures).await;

    let spool_expected = ingress_rate.unwrap_or(DEFAULT_EXPECTED_RATE).max(5000.0) * 2.0;
    let result = step(
        "outage",
        outage::run(bench, seconds, connections, spool_expected),
    )
    .await;
    match result {
        Ok(result) => report.outage = Some(result),
        Err(error) => report.failures.push(("outage", format!("{error:#}"))),
    }
}

/// Runs one mode with a progress line on stderr.
async fn step<T>(name: &str, run: impl Future<Output = Result<T>>) -> Result<T> {
    eprintln!("hookline-bench: {name} ...");
    let started = std::time::Instant::now();
    let result = run.await.with_context(|| format!("{name} failed"));
    eprintln!(
        "hookline-bench: {name} {} after {:.1} s",
        if result.is_ok() { "done" } else { "failed" },
        started.elapsed().as_secs_f64()
    );
    result
}
