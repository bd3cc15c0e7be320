//! The `hookline` binary: parses arguments, loads the config, runs one subcommand.
//! Exit status: 0 after a graceful shutdown, 2 for a bad config or arguments, 1 otherwise.

mod logging;
mod shutdown;
mod tools;

use clap::{Parser, Subcommand};
use hookline_core::Config;
use hookline_core::config::{ConfigError, Problem};
use hookline_ingress::Tls;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Receives provider webhooks, verifies them, and publishes deduplicated events on RabbitMQ.
#[derive(Parser)]
#[command(name = "hookline", version, about)]
struct Cli {
    /// Config file (TOML).
    #[arg(
        long,
        global = true,
        env = "HOOKLINE_CONFIG",
        default_value = "config/hookline.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// HTTP server: verifies each delivery, makes it durable, answers.
    Ingress,
    /// Consumes deliveries, normalizes, deduplicates, publishes events.
    Worker,
    /// Ingress and worker in one process.
    Run,
    /// Validates the config; prints what is wrong and exits 2.
    CheckConfig,
    /// Sends a realistic delivery for a source, signed as its provider signs; exit 0 on 200.
    Send(tools::SendArgs),
    /// Prints each event as it is published (one line, or --json), without changing routing.
    Tail(tools::TailArgs),
    /// Lists, shows, replays or purges the dead letters.
    #[command(subcommand)]
    Dlq(tools::DlqCommand),
    /// Drains spools left behind by ingress replicas that are gone.
    #[command(subcommand)]
    Spool(tools::SpoolCommand),
}

/// The daemons, which `serve` runs (the tools have their own entry points).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Daemon {
    Ingress,
    Worker,
    Run,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = match cli.command {
        Command::Ingress => Some(Daemon::Ingress),
        Command::Worker => Some(Daemon::Worker),
        Command::Run => Some(Daemon::Run),
        _ => None,
    };
    logging::init(
        if daemon.is_some() || matches!(cli.command, Command::CheckConfig) {
            logging::Sink::Stdout
        } else {
            logging::Sink::Stderr
        },
    );
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(problems) => {
            logging::config_problems(&problems);
            return ExitCode::from(2);
        }
    };
    // check-config checks the certificate files as `run` would read them.
    let reads_tls = match (&cli.command, daemon) {
        (_, Some(daemon)) => Some(daemon),
        (Command::CheckConfig, None) => Some(Daemon::Run),
        _ => None,
    };
    let tls = match reads_tls.map_or(Ok(None), |daemon| load_tls(daemon, &config)) {
        Ok(tls) => tls,
        Err(problems) => {
            logging::config_problems(&problems);
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::CheckConfig) {
        logging::config_ok(&config);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "Cannot start the async runtime.");
            return ExitCode::from(1);
        }
    };
    let daemon = match (daemon, cli.command) {
        (Some(daemon), _) => daemon,
        (None, Command::Send(args)) => return runtime.block_on(tools::send(config, args)),
        (None, Command::Tail(args)) => return runtime.block_on(tools::tail(config, args)),
        (None, Command::Dlq(command)) => return runtime.block_on(tools::dlq(config, command)),
        (None, Command::Spool(command)) => return runtime.block_on(tools::spool(config, command)),
        (None, _) => unreachable!("every command is a daemon or a tool"),
    };
    match runtime.block_on(serve(daemon, config, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %format!("{e:#}"), "hookline stopped on a fatal error.");
            ExitCode::from(1)
        }
    }
}

/// The ingress's certificate and key, read before anything starts so that an unusable file
/// is a config error (exit 2, and `check-config` finds it) naming the key and the file.
/// The worker alone serves no HTTPS and does not read them.
fn load_tls(command: Daemon, config: &Config) -> Result<Option<Tls>, ConfigError> {
    if command == Daemon::Worker {
        return Ok(None);
    }
    let Some((cert, key)) = config.ingress.tls_files() else {
        return Ok(None);
    };
    Tls::load(cert, key).map(Some).map_err(|error| ConfigError {
        problems: vec![Problem {
            origin: config.path.display().to_string(),
            key: error.key.to_owned(),
            message: error.to_string(),
        }],
    })
}

async fn serve(command: Daemon, config: Config, tls: Option<Tls>) -> anyhow::Result<()> {
    let metrics = install_metrics()?;
    let shutdown = CancellationToken::new();
    shutdown::on_signal(shutdown.clone());
    shutdown::on_hangup(tls.clone());

    let with_ingress = matches!(command, Daemon::Ingress | Daemon::Run);
    let with_worker = matches!(command, Daemon::Worker | Daemon::Run);
    // In `run`, both /metrics would render the same registry: one listener serves both
    // when the two keys name the same address, instead of the second bind failing.
    let shared_metrics = command == Daemon::Run
        && config.ingress.metrics_listen == Some(config.worker.metrics_listen)
        && config.worker.metrics_listen.port() != 0;
    let ingress_listeners = if with_ingress {
        let public = bind(config.ingress.listen, "ingress.listen").await?;
        let metrics = match config.ingress.metrics_listen {
            Some(address) if !shared_metrics => {
                Some(bind(address, "ingress.metrics_listen").await?)
            }
            _ => None,
        };
        Some(hookline_ingress::Listeners { public, metrics })
    } else {
        None
    };
    let worker_listener = if with_worker {
        Some(bind(config.worker.metrics_listen, "worker.metrics_listen").await?)
    } else {
        None
    };
    if shared_metrics && let Some(listener) = &worker_listener {
        info!(
            key = "ingress.metrics_listen",
            listen = %listener.local_addr()?,
            shared_with = "worker.metrics_listen",
            "Listening."
        );
    }

    let ingress = ingress_listeners.map(|listeners| {
        let (config, metrics, shutdown) = (config.clone(), metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            let result =
                hookline_ingress::run(&config, listeners, tls, metrics, shutdown.clone()).await;
            shutdown.cancel();
            result
        })
    });
    let worker = worker_listener.map(|listener| {
        let (config, metrics, shutdown) = (config.clone(), metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            let result =
                hookline_worker::run(&config, Some(listener), metrics, shutdown.clone()).await;
            shutdown.cancel();
            result
        })
    });
    info!(config = %config.path.display(), "hookline started.");

    if let Some(task) = ingress {
        task.await??;
    }
    if let Some(task) = worker {
        task.await??;
    }
    Ok(())
}

/// Binds `address` (port 0 picks a free port) and logs the address bound, which is how
/// tests and scripts learn a port chosen by the system.
async fn bind(address: std::net::SocketAddr, key: &'static str) -> anyhow::Result<TcpListener> {
    let listener =
        listen(address).map_err(|e| anyhow::anyhow!("cannot listen on {address} ({key}): {e}"))?;
    let bound = listener.local_addr()?;
    info!(key, listen = %bound, "Listening.");
    Ok(listener)
}

/// Connections the kernel may hold for us before we accept them (it caps this at
/// `net.core.somaxconn`): a burst of thousands must not overflow into SYN retries, which
/// would cost a legitimate sender a second.
const BACKLOG: u32 = 8192;

fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
