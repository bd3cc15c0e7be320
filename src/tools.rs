//! The operator tools' command lines (`send`, `tail`, `dlq`) and their exit statuses; the
//! work itself is in the `hookline-tools` crate.

use clap::{Args, Subcommand};
use hookline_core::Config;
use hookline_ingress::spool::orphans::Drained;
use hookline_tools::{dlq, send, tail};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing::error;

/// `hookline send <source>`.
#[derive(Args, Clone)]
pub(crate) struct SendArgs {
    /// The configured source to send as (its provider decides body and signature).
    source: String,
    /// Ingress base URL [default: the configured ingress.listen].
    #[arg(long)]
    url: Option<String>,
    /// Sign with this secret instead of the source's configured one.
    #[arg(long)]
    secret: Option<String>,
    /// The provider's own event type, e.g. ticket_cancelled [default: the provider's first].
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Event id [default: a new uuid per delivery; ID-N with --count].
    #[arg(long)]
    id: Option<String>,
    /// Send this file's bytes as the body instead of a generated example.
    #[arg(long, value_name = "FILE")]
    body: Option<PathBuf>,
    /// asello's echo handshake (GET ?echo=X) instead of a delivery.
    #[arg(long)]
    echo: bool,
    /// Deliveries to send.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Deliveries in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// On failure, retry on the provider's documented schedule.
    #[arg(long)]
    retry: bool,
    /// Divide the retry schedule's pauses by this (60: a minute becomes a second).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Print only the summary line.
    #[arg(long)]
    quiet: bool,
}

/// `hookline tail [PATTERN...]`.
#[derive(Args, Clone)]
pub(crate) struct TailArgs {
    /// Topic patterns, e.g. `aisle.ticket.*` or `*.payment.*` [default: #].
    patterns: Vec<String>,
    /// Print each envelope as one JSON object per line.
    #[arg(long)]
    json: bool,
}

/// `hookline dlq ...`.
#[derive(Subcommand, Clone)]
pub(crate) enum DlqCommand {
    /// Lists dead letters: delivery id, provider, source, attempts, age, error.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead letter's headers and body.
    Show {
        /// Its delivery id.
        id: String,
    },
    /// Puts dead letters back on the ingress queue, through the worker again.
    Replay {
        /// Delivery ids to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// With --all: only this provider's.
        #[arg(long, requires = "all")]
        provider: Option<String>,
    },
    /// Deletes dead letters; without --yes, lists what it would remove and exits 2.
    Purge {
        /// Only letters that died longer ago than this, e.g. 7d, 12h, 30m.
        #[arg(long, value_parser = dlq::parse_age)]
        older_than: Option<Duration>,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

/// `hookline spool ...`.
#[derive(Subcommand, Clone)]
pub(crate) enum SpoolCommand {
    /// Publishes every spool under storage.dir that no running ingress holds, then removes it.
    Drain,
}

/// Runs `spool drain`: exit 0 when every spool nobody holds was emptied.
pub(crate) async fn spool(config: Config, command: SpoolCommand) -> ExitCode {
    let SpoolCommand::Drain = command;
    match hookline_ingress::drain_spools(&config).await {
        Ok(spools) => {
            if spools.is_empty() {
                println!("no spool under {}", config.storage.spool_root().display());
            }
            for (dir, drained) in spools {
                match drained {
                    Drained::Emptied { records } => {
                        println!(
                            "{}: {records} deliveries published, spool removed",
                            dir.display()
                        );
                    }
                    Drained::InUse => println!(
                        "{}: held by a running ingress, which drains it itself",
                        dir.display()
                    ),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => failed("spool drain", &e.into()),
    }
}

/// Runs `send`: exit 0 when every delivery got a 200, else 1.
pub(crate) async fn send(config: Config, args: SendArgs) -> ExitCode {
    let options = send::SendOptions {
        source: args.source,
        url: args.url,
        secret: args.secret,
        event_type: args.event_type,
        id: args.id,
        body: args.body,
        echo: args.echo,
        count: args.count,
        concurrency: args.concurrency,
        retry: args.retry,
        time_scale: args.time_scale,
        quiet: args.quiet,
    };
    match send::run(&config, options, &mut std::io::stdout()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => failed("send", &e),
    }
}

/// Runs `tail` until SIGINT or SIGTERM.
pub(crate) async fn tail(config: Config, args: TailArgs) -> ExitCode {
    let stop = async {
        let _ = crate::shutdown::signalled().await;
    };
    let mut out = std::io::stdout();
    match tail::run(&config, &args.patterns, args.json, &mut out, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed("tail", &e),
    }
}

/// Runs `dlq ...`; a purge without `--yes` exits 2.
pub(crate) async fn dlq(config: Config, command: DlqCommand) -> ExitCode {
    let action = match command {
        DlqCommand::List { json } => dlq::Action::List { json },
        DlqCommand::Show { id } => dlq::Action::Show { id },
        DlqCommand::Replay { ids, all, provider } => dlq::Action::Replay { ids, all, provider },
        DlqCommand::Purge { older_than, yes } => dlq::Action::Purge { older_than, yes },
    };
    match dlq::run(&config, action, &mut std::io::stdout()).await {
        Ok(dlq::Outcome::Done) => ExitCode::SUCCESS,
        Ok(dlq::Outcome::NotConfirmed) => ExitCode::from(2),
        Err(e) => failed("dlq", &e),
    }
}

fn failed(tool: &str, error: &anyhow::Error) -> ExitCode {
    error!(error = %format!("{error:#}"), "hookline {tool} failed.");
    ExitCode::from(1)
}
