//! `hookline-bench`: starts hookline itself (temp config, random AMQP prefix, child
//! processes), drives load from 127.0.0.1, prints a markdown report and cleans up its
//! queues and exchanges, also after an error, a panic or Ctrl-C.

mod broker;
mod ceiling;
mod e2e;
mod ingress;
mod load;
mod machine;
mod names;
mod outage;
mod payload;
mod process;
mod rate;
mod report;
mod server_metrics;

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

/// Benchmarks hookline against the local RabbitMQ: broker ceiling, ingress throughput,
/// open-loop latency, end to end, and a broker outage.
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
    /// Measured seconds per mode.
    #[arg(long, global = true, default_value_t = 10)]
    seconds: u64,
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
    /// Ingress while RabbitMQ's app is stopped: spooling, reconnect and drain.
    Outage,
    /// ceiling, ingress, rate 1000, e2e, outage in one run, one table.
    All {
        /// e2e send rate [default: 80% of the ingress req/s measured in this run].
        #[arg(long)]
        rate: Option<f64>,
    },
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
    if options.seconds == 0 {
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
        options.seconds,
        options.connections,
    );

    let mut task = tokio::spawn(run_mode(bench.clone(), cli.mode, options.clone(), report));
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
    options: Options,
    mut report: Report,
) -> Result<Report> {
    let seconds = Duration::from_secs(options.seconds);
    let connections = options.connections;
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
        Mode::Outage => {
            let run = outage::run(bench, seconds, connections, DEFAULT_EXPECTED_RATE);
            report.outage = Some(step("outage", run).await?);
        }
        Mode::All { rate } => run_all(bench, &mut report, seconds, connections, rate).await,
    }
    Ok(report)
}

/// Sizes body pools when nothing was measured yet.
const DEFAULT_EXPECTED_RATE: f64 = 20_000.0;
/// `e2e`'s rate when run alone.
const DEFAULT_E2E_RATE: f64 = 2000.0;
/// Lets the broker settle (purges, deletes, GC) between modes.
const PAUSE_BETWEEN_MODES: Duration = Duration::from_secs(5);

async fn run_all(
    bench: &Bench,
    report: &mut Report,
    seconds: Duration,
    connections: usize,
    e2e_rate: Option<f64>,
) {
    let plan = ceiling::CeilingPlan {
        seconds,
        window: ceiling::WINDOW,
        ingress_like: false,
    };
    match step("ceiling", ceiling::run(bench, plan)).await {
        Ok(result) => report.ceiling = Some(result),
        Err(error) => report.failures.push(("ceiling", format!("{error:#}"))),
    }
    tokio::time::sleep(PAUSE_BETWEEN_MODES).await;

    let expected_rate = report
        .ceiling
        .as_ref()
        .map_or(DEFAULT_EXPECTED_RATE, |c| c.msgs_per_sec.max(1000.0));
    let plan = ingress::IngressPlan {
        seconds,
        connections,
        expected_rate,
    };
    match step("ingress", ingress::run(bench, plan)).await {
        Ok(result) => report.ingress = Some(result),
        Err(error) => report.failures.push(("ingress", format!("{error:#}"))),
    }
    tokio::time::sleep(PAUSE_BETWEEN_MODES).await;

    match step("rate", rate::run(bench, 1000.0, seconds, connections)).await {
        Ok(result) => report.rate = Some(result),
        Err(error) => report.failures.push(("rate", format!("{error:#}"))),
    }
    tokio::time::sleep(PAUSE_BETWEEN_MODES).await;

    let ingress_rate = report.ingress.as_ref().map(|i| i.load.ok_per_sec());
    let rate = e2e_rate
        .or(ingress_rate.filter(|r| *r > 0.0).map(|r| (0.8 * r).round()))
        .unwrap_or(DEFAULT_E2E_RATE);
    match step("e2e", e2e::run(bench, rate, seconds, connections)).await {
        Ok(result) => report.e2e = Some(result),
        Err(error) => report.failures.push(("e2e", format!("{error:#}"))),
    }
    tokio::time::sleep(PAUSE_BETWEEN_MODES).await;

    let spool_expected = ingress_rate.unwrap_or(DEFAULT_EXPECTED_RATE).max(5000.0) * 2.0;
    match step(
        "outage",
        outage::run(bench, seconds, connections, spool_expected),
    )
    .await
    {
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
