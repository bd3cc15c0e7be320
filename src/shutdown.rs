//! SIGTERM/SIGINT start a graceful shutdown; a second signal, or 10 s without finishing,
//! ends the process at once. SIGHUP reloads the ingress's TLS certificate and never ends
//! the process.

use hookline_ingress::Tls;
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

/// On each SIGHUP, re-reads the ingress's certificate and key (the reload logs its own
/// outcome); without TLS, says there is nothing to reload. SIGHUP's default action would
/// end the process: a `systemctl reload` or a closed terminal must not take it down, so the
/// handler is installed in every mode, before this returns.
pub(crate) fn on_hangup(tls: Option<Tls>) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        error!("Cannot install the SIGHUP handler.");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match &tls {
                Some(tls) => {
                    let tls = tls.clone();
                    // File reads: off the runtime threads that serve connections.
                    let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
                }
                None => info!(
                    signal = "SIGHUP",
                    "Nothing to reload: this process serves no TLS (ingress.tls_cert is not set)."
                ),
            }
        }
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
