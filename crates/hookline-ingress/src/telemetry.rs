//! Every notable ingress happening, logged and counted in one place so the two agree.

use crate::durable::StoredIn;
use crate::error::{ApiError, CODES};
use crate::sampler::Sampler;
use hookline_core::SourceSpec;
use std::sync::LazyLock;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// Refusals and failures are caused by clients: their lines are sampled per source and code.
static SAMPLED: LazyLock<Sampler> = LazyLock::new(Sampler::default);

/// The `source` label of every request to a name that is not configured: one series for
/// all of them, so an attacker's names never create new ones.
pub(crate) const UNKNOWN_SOURCE: &str = "unknown";

/// A label value from a fixed set, never request text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label(pub(crate) &'static str);

/// Creates every configured source's series at 0, so dashboards and alerts see them from
/// startup (an absent series and a zero look different to Prometheus).
pub(crate) fn register(sources: &[SourceSpec]) {
    for source in sources {
        let name = source.name.clone();
        let _ = metrics::histogram!("hookline_ingress_ack_seconds", "source" => name.clone());
        metrics::counter!("hookline_ingress_over_budget_total", "source" => name.clone())
            .absolute(0);
        for stored in ["broker", "spool"] {
            metrics::counter!("hookline_ingress_requests_total", "source" => name.clone(), "code" => "accepted", "stored" => stored).absolute(0);
        }
        for code in CODES.iter().filter(|c| **c != "unknown_source") {
            metrics::counter!("hookline_ingress_refused_total", "source" => name.clone(), "reason" => *code).absolute(0);
        }
    }
    metrics::counter!("hookline_ingress_refused_total", "source" => UNKNOWN_SOURCE, "reason" => "unknown_source").absolute(0);
    // Counters that only move when something goes wrong: a series that first appears at 1
    // is invisible to `increase()`, so the first failure would never alert.
    // `increment(0)` creates them without touching a value set before this point.
    for winner in [StoredIn::Broker, StoredIn::Spool] {
        metrics::counter!("hookline_ingress_hedges_total", "winner" => winner.as_str())
            .increment(0);
    }
    for to in ["spool", "direct"] {
        metrics::counter!("hookline_ingress_mode_changes_total", "to" => to).increment(0);
    }
    for name in [
        "hookline_ingress_accept_errors_total",
        "hookline_spool_appends_total",
        "hookline_spool_commits_total",
        "hookline_spool_drained_total",
        "hookline_spool_failures_total",
        "hookline_spool_corrupt_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// A delivery was accepted (200) after `elapsed`; `budget` is how long its provider waits.
pub(crate) fn accepted(
    source: &str,
    delivery_id: &uuid::Uuid,
    stored: Label,
    elapsed: Duration,
    budget: Duration,
) {
    debug!(source, %delivery_id, stored = stored.0, "Delivery accepted.");
    metrics::counter!("hookline_ingress_requests_total", "source" => source.to_owned(), "code" => "accepted", "stored" => stored.0).increment(1);
    metrics::histogram!("hookline_ingress_ack_seconds", "source" => source.to_owned())
        .record(elapsed.as_secs_f64());
    answered(source, elapsed, budget);
}

/// Any answer slower than the provider's budget counts: the provider gives up and retries.
pub(crate) fn answered(source: &str, elapsed: Duration, budget: Duration) {
    if elapsed > budget {
        metrics::counter!("hookline_ingress_over_budget_total", "source" => source.to_owned())
            .increment(1);
    }
}

/// A request was refused; `source` is `unknown` for names not in the config.
///
/// Logged at most a few times per source, code and 10 s (the counter counts every one);
/// `left_out` says how many lines were skipped since the previous one.
pub(crate) fn refused(source: &str, error: &ApiError) {
    let (status, code) = error.status_and_code();
    metrics::counter!("hookline_ingress_requests_total", "source" => source.to_owned(), "code" => code, "stored" => "none").increment(1);
    metrics::counter!("hookline_ingress_refused_total", "source" => source.to_owned(), "reason" => code).increment(1);
    let Some(left_out) = SAMPLED.admit(source, code) else {
        return;
    };
    if status.is_server_error() {
        warn!(source, code, status = status.as_u16(), reason = %error, left_out, "Delivery not accepted.");
    } else {
        info!(source, code, status = status.as_u16(), reason = %error, left_out, "Request refused.");
    }
}

/// The listener could not accept a connection (e.g. out of file descriptors).
pub(crate) fn accept_failed(error: &std::io::Error) {
    metrics::counter!("hookline_ingress_accept_errors_total").increment(1);
    if let Some(left_out) = SAMPLED.admit("", "accept") {
        warn!(%error, left_out, "Cannot accept a connection.");
    }
}

/// The broker is away, failing, slow or saturated: deliveries now go to the spool first.
pub(crate) fn spooling_started(reason: &dyn std::fmt::Display) {
    warn!(%reason, "Broker unavailable or slow; spooling deliveries to disk until it recovers.");
    metrics::counter!("hookline_ingress_mode_changes_total", "to" => "spool").increment(1);
    direct_mode(false);
}

/// The broker answers quickly and the spool is (nearly) drained.
pub(crate) fn spooling_stopped(backlog: u64) {
    info!(
        backlog,
        "Broker keeps up; publishing deliveries directly again."
    );
    metrics::counter!("hookline_ingress_mode_changes_total", "to" => "direct").increment(1);
    direct_mode(true);
}

/// A late confirm raced a spool write; `winner` answered first.
pub(crate) fn hedge_won_by(winner: Label) {
    metrics::counter!("hookline_ingress_hedges_total", "winner" => winner.0).increment(1);
}

/// Whether a delivery could be made durable now, as a gauge for alerts (`/readyz` as a
/// number).
pub(crate) fn ready(ready: bool) {
    metrics::gauge!("hookline_ingress_ready").set(if ready { 1.0 } else { 0.0 });
}

/// Whether deliveries are published directly (1) or spooled (0).
pub(crate) fn direct_mode(direct: bool) {
    metrics::gauge!("hookline_ingress_direct").set(if direct { 1.0 } else { 0.0 });
}

/// The spool could not take a delivery: it was answered 503.
pub(crate) fn spool_failed(error: &dyn std::fmt::Display) {
    metrics::counter!("hookline_spool_failures_total").increment(1);
    if let Some(left_out) = SAMPLED.admit("", "spool_failed") {
        error!(%error, left_out, "Spool write failed; answering 503.");
    }
}

/// Spooled deliveries reached the broker.
pub(crate) fn drained(count: usize) {
    debug!(count, "Spooled deliveries published.");
    metrics::counter!("hookline_spool_drained_total").increment(count as u64);
}

/// How a TLS handshake ended: the stream when it succeeded. Failures are the client's doing
/// (scanners, plain HTTP on the HTTPS port, old clients), so they are counted and logged at
/// DEBUG only: a client must not be able to fill the log.
pub(crate) fn handshake<S>(
    peer: &std::net::SocketAddr,
    done: Result<std::io::Result<S>, tokio::time::error::Elapsed>,
) -> Option<S> {
    let reason = match done {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(error)) => {
            debug!(%peer, %error, "TLS handshake failed.");
            "failed"
        }
        Err(_) => {
            debug!(%peer, "TLS handshake not done within the header-read timeout.");
            "timeout"
        }
    };
    metrics::counter!("hookline_ingress_tls_handshake_failures_total", "reason" => reason)
        .increment(1);
    None
}

/// Creates the TLS series at 0, so an alert on failures or failed reloads has a baseline.
pub(crate) fn tls_enabled() {
    for reason in ["failed", "timeout"] {
        metrics::counter!("hookline_ingress_tls_handshake_failures_total", "reason" => reason)
            .absolute(0);
    }
    for outcome in ["ok", "failed"] {
        metrics::counter!("hookline_ingress_tls_reloads_total", "outcome" => outcome).absolute(0);
    }
}
