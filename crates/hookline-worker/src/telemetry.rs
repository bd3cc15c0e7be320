//! Every notable worker happening, logged and counted in one place so the two agree.
//! One INFO line per event (CONTRACT section 7).

use hookline_core::{Envelope, SourceSpec};
use tracing::{error, info, warn};

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Published and confirmed.
    Published,
    /// Already published before; dropped.
    Duplicate,
    /// Its delivery went to the dead-letter queue.
    DeadLettered,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Published => "published",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
        }
    }
}

/// The per-event log line and counter.
pub(crate) fn event(envelope: &Envelope, outcome: Outcome) {
    let routing_key = envelope.routing_key();
    let message = match outcome {
        Outcome::Published => "Event published.",
        Outcome::Duplicate => "Duplicate event dropped.",
        Outcome::DeadLettered => "Event dead-lettered with its delivery.",
    };
    info!(
        event_id = %envelope.id,
        provider = %envelope.provider,
        source = %envelope.source,
        r#type = %envelope.event_type,
        routing_key = %routing_key,
        outcome = outcome.as_str(),
        delivery_id = %envelope.delivery_id,
        "{message}"
    );
    metrics::counter!(
        "hookline_worker_events_total",
        "provider" => envelope.provider.clone(),
        "source" => envelope.source.clone(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
}

/// Creates the event series of every configured source, and the delivery series, at 0 from
/// startup, so "no events from this source for N minutes" can be asked of Prometheus.
pub(crate) fn register(sources: &[SourceSpec]) {
    for source in sources {
        for outcome in [
            Outcome::Published,
            Outcome::Duplicate,
            Outcome::DeadLettered,
        ] {
            metrics::counter!(
                "hookline_worker_events_total",
                "provider" => source.provider.name(),
                "source" => source.name.clone(),
                "outcome" => outcome.as_str()
            )
            .absolute(0);
        }
    }
    for outcome in ["acked", "retried", "dead_lettered"] {
        metrics::counter!("hookline_worker_deliveries_total", "outcome" => outcome).absolute(0);
    }
    metrics::gauge!("hookline_worker_active").set(0.0);
}

/// A delivery went to `<prefix>.dead`: an operator should look at it.
pub(crate) fn dead_lettered(delivery_id: &str, attempts: u32, reason: &str) {
    error!(
        delivery_id,
        attempts,
        reason,
        outcome = "dead_lettered",
        "Delivery dead-lettered."
    );
    metrics::counter!("hookline_worker_deliveries_total", "outcome" => "dead_lettered")
        .increment(1);
}

/// Processing failed and the delivery will be tried again.
pub(crate) fn retrying(delivery_id: &str, attempts: u32, reason: &str) {
    warn!(
        delivery_id,
        attempts, reason, "Delivery failed; it will be retried."
    );
    metrics::counter!("hookline_worker_deliveries_total", "outcome" => "retried").increment(1);
}

/// A delivery was fully processed and acked.
pub(crate) fn acked() {
    metrics::counter!("hookline_worker_deliveries_total", "outcome" => "acked").increment(1);
}

/// This replica received its first delivery of a session (with failover: it is the active
/// one) and caught up with the shared history in `took`.
pub(crate) fn active(took: std::time::Duration) {
    info!(
        catch_up_ms = took.as_millis() as u64,
        "Active worker: caught up with the processed-id history; processing."
    );
    metrics::gauge!("hookline_worker_active").set(1.0);
    metrics::counter!("hookline_worker_takeovers_total").increment(1);
}

/// Consuming started without failover: this worker is the one that processes.
pub(crate) fn consuming() {
    metrics::gauge!("hookline_worker_active").set(1.0);
}

/// This replica's consuming session ended.
pub(crate) fn inactive() {
    metrics::gauge!("hookline_worker_active").set(0.0);
}
