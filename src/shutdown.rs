//! SIGTERM/SIGINT start a graceful shutdown; a second signal, or 10 s without finishing,
//! ends the process at once.

use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// The contract's bound on a graceful shutdown, less a margin for process teardown.
const HARD_DEADLINE: Duration = Duration::from_millis(9_500);

/// Cancels `token` on the first SIGTERM or SIGINT.
pub(crate) fn on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("Cannot install signal handlers.");
            return;
        };
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "Shutting down gracefully."),
            _ = int.recv() => info!(signal = "SIGINT", "Shutting down gracefully."),
        }
        token.cancel();
        // A plain thread, so the deadline holds even if every runtime thread is stuck.
        std::thread::spawn(|| {
            std::thread::sleep(HARD_DEADLINE);
            error!("Graceful shutdown took too long: exiting now.");
            std::process::exit(1);
        });
        tokio::select! {
            _ = term.recv() => error!("Second signal: exiting now."),
            _ = int.recv() => error!("Second signal: exiting now."),
        }
        std::process::exit(1);
    });
}

/// Resolves on the first SIGTERM or SIGINT (for the tools, which just stop).
pub(crate) async fn signalled() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
