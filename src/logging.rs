//! Log setup: `RUST_LOG` filters (default [`DEFAULT_FILTER`]); `HOOKLINE_LOG_FORMAT=json`
//! makes every line one JSON object.

use hookline_core::Config;
use hookline_core::config::ConfigError;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// Used when `RUST_LOG` is unset. lapin logs a dropped connection as two ERROR lines of its
/// own; hookline already logs that state change once, with the cause, at WARN, and an
/// operator reads ERROR as "look at this now".
const DEFAULT_FILTER: &str = "info,lapin=off";

/// Added to any filter that does not name it: lapin warns about every message the broker
/// returns, but hookline asks for returns on purpose (the ingress's `mandatory` publishes,
/// the worker's observer probe each second) and handles each one, so with `RUST_LOG=info`
/// these lines would be one false alarm a second.
const QUIET_RETURNS: &str = "lapin::returned_messages=off";

fn json() -> bool {
    std::env::var("HOOKLINE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}

/// Where log lines go: the daemons write to stdout (what `docker logs` collects); the
/// tools write their own output to stdout, so their log lines go to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Installs the global subscriber.
pub(crate) fn init(sink: Sink) {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let filter = if spec.contains("returned_messages") {
        filter
    } else {
        filter.add_directive(QUIET_RETURNS.parse().expect("a valid directive"))
    };
    let terminal = match sink {
        Sink::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
        Sink::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(terminal);
    match (json(), sink) {
        (true, Sink::Stdout) => builder.json().flatten_event(true).init(),
        (true, Sink::Stderr) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .init(),
        (false, Sink::Stdout) => builder.init(),
        (false, Sink::Stderr) => builder.with_writer(std::io::stderr).init(),
    }
}

/// Reports a bad config: plain lines on stderr, or one JSON log line per problem.
pub(crate) fn config_problems(error: &ConfigError) {
    if json() {
        for problem in &error.problems {
            error!(file = %problem.origin, key = %problem.key, "Invalid configuration: {}", problem.message);
        }
    } else {
        eprintln!("hookline: invalid configuration:");
        for problem in &error.problems {
            eprintln!("  {problem}");
        }
    }
}

/// Reports a valid config (`check-config`): a plain line, or one JSON log line.
pub(crate) fn config_ok(config: &Config) {
    let (sources, subscriptions) = (config.sources.len(), config.subscriptions.len());
    if json() {
        info!(file = %config.path.display(), sources, subscriptions, "Configuration is valid.");
    } else {
        println!(
            "{}: OK ({sources} sources, {subscriptions} subscriptions)",
            config.path.display()
        );
    }
}
