//! Names under a run's `<prefix>.`: hookline's own queues and exchanges and the bench's,
//! in one place so every mode and the final clean-up agree on them.

/// hookline's raw-delivery queue.
pub(crate) const INGRESS_QUEUE: &str = "ingress";
/// hookline's topic exchange of events.
pub(crate) const EVENTS_EXCHANGE: &str = "events";
/// `ceiling`'s queue.
pub(crate) const CEILING_QUEUE: &str = "bench.ceiling";
/// `naive`'s queue (the in-process server publishes there).
pub(crate) const NAIVE_QUEUE: &str = "naive";
/// `e2e`'s event queue (consumed by the bench).
pub(crate) const E2E_EVENTS_QUEUE: &str = "bench.events";
/// `burst`'s observer queue (counted, never consumed).
pub(crate) const BURST_EVENTS_QUEUE: &str = "bench.burst-events";
/// `worker`'s observer queue (counted, never consumed).
pub(crate) const WORKER_EVENTS_QUEUE: &str = "bench.worker-events";

/// Every queue a run may leave behind.
pub(crate) const QUEUES: [&str; 8] = [
    INGRESS_QUEUE,
    "unrouted",
    "dead",
    CEILING_QUEUE,
    NAIVE_QUEUE,
    E2E_EVENTS_QUEUE,
    BURST_EVENTS_QUEUE,
    WORKER_EVENTS_QUEUE,
];
/// Every exchange hookline declares.
pub(crate) const EXCHANGES: [&str; 3] = [EVENTS_EXCHANGE, "unrouted", "dead"];

/// `<prefix>.<suffix>`.
pub(crate) fn under(prefix: &str, suffix: &str) -> String {
    format!("{prefix}.{suffix}")
}
