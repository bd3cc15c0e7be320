//! Every notable ingress happening, logged and counted in one place so the two agree.

use crate::durable::StoredIn;
use crate::error::ApiError;
use crate::sampler::Sampler;
use std::sync::LazyLock;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// Refusals and failures are caused by clients: their lines are sampled per source and code.
static SAMPLED: LazyLock<Sampler> = LazyLock::new(Sampler::default);

/// A delivery was accepted (200).
pub(crate) fn accepted(
    source: &str,
    delivery_id: &uuid::Uuid,
    stored: StoredIn,
    elapsed: Duration,
) {
    debug!(
        source,
        %delivery_id,
        stored = stored.as_str(),
        "Delivery accepted."
    );
    metrics::counter!("hookline_ingress_requests_total", "source" => source.to_owned(), "code" => "accepted", "stored" => stored.as_str()).increment(1);
    metrics::histogram!("hookline_ingress_ack_seconds", "stored" => stored.as_str())
        .record(elapsed.as_secs_f64());
}

/// A request was refused; `source` is `unknown` for names not in the config.
///
/// Logged at most a few times per source, code and 10 s (the counter counts every one);
/// `left_out` says how many lines were skipped since the previous one.
pub(crate) fn refused(source: &str, error: &ApiError) {
    let (status, code) = error.status_and_code();
    metrics::counter!("hookline_ingress_requests_total", "source" => source.to_owned(), "code" => code, "stored" => "none").increment(1);
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
pub(crate) fn hedge_won_by(winner: StoredIn) {
    metrics::counter!("hookline_ingress_hedges_total", "winner" => winner.as_str()).increment(1);
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
