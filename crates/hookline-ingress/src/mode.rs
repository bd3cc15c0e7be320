//! Where new deliveries go first, decided from what is measured: **direct** (batched to the
//! broker, the spool only as a hedge) while confirms come back fast; **spooled** (fsynced
//! group commit, the drainer publishes in large batches) while the broker is away, blocked,
//! failing, saturated (deliveries pile up waiting for slots) or slow (the recent confirm
//! latency is above the hedge margin, so most requests would be written twice anyway).
//! Back to direct once the drainer finds the broker quick and the spool nearly empty.

use crate::telemetry;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Deliveries waiting for the broker beyond which it is saturated.
const SATURATED_DEPTH: usize = 4 * crate::publisher::MAX_BATCH;
/// Spooled deliveries below which the backlog is small enough to go direct again.
const BACKLOG_LOW: u64 = 2 * crate::publisher::MAX_BATCH as u64;
/// Least time spent spooling after a slow or saturated broker, so the two paths do not
/// flap (each change is logged).
const DWELL: Duration = Duration::from_secs(3);
/// Weight of the newest confirm in the moving average.
const EWMA_WEIGHT: f64 = 0.1;

/// The adaptive durability mode (shared by the request path and the drainer).
pub(crate) struct Mode {
    direct: AtomicBool,
    /// Moving average of direct confirm latency, in microseconds (as f64 bits).
    ewma_us: AtomicU64,
    /// When the latest switch to spooling happened, and whether dwelling applies.
    spooled_at: Mutex<(Instant, bool)>,
    /// `None`: broker first always, no hedging and no switching on latency.
    hedge_after: Option<Duration>,
}

impl Mode {
    /// Direct at first; `hedge_after` is the confirm latency above which a request also
    /// writes the spool (`None`: never).
    pub(crate) fn new(hedge_after: Option<Duration>) -> Self {
        telemetry::direct_mode(true);
        Self {
            direct: AtomicBool::new(true),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            spooled_at: Mutex::new((Instant::now(), false)),
            hedge_after,
        }
    }

    /// Whether new deliveries go to the broker first.
    pub(crate) fn direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// The confirm latency after which a request also writes the spool, if it does.
    pub(crate) fn hedge_after(&self) -> Option<Duration> {
        self.hedge_after
    }

    /// A direct confirm arrived after `latency`; `waiting` deliveries are queued for slots.
    pub(crate) fn confirmed(&self, latency: Duration, waiting: usize) {
        let sample = latency.as_secs_f64() * 1e6;
        let blend = |old: f64| {
            if old == 0.0 {
                sample
            } else {
                old + EWMA_WEIGHT * (sample - old)
            }
        };
        // fetch_update hands back the previous value; the new one is blended from it.
        let previous = self
            .ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(blend(f64::from_bits(old)).to_bits())
            })
            .unwrap_or_else(|old| old);
        let ewma = blend(f64::from_bits(previous));
        let Some(hedge_after) = self.hedge_after else {
            // Broker first: only an absent or failing broker sends deliveries to the spool.
            return;
        };
        if waiting > SATURATED_DEPTH {
            self.spool(
                &"the broker is saturated: deliveries are queueing for confirms",
                true,
            );
        } else if ewma > 2.0 * hedge_after.as_secs_f64() * 1e6 {
            self.spool(
                &format!(
                    "broker confirms are slow ({:.1} ms on average)",
                    ewma / 1000.0
                ),
                true,
            );
        }
    }

    /// Deliveries must go to the spool for `reason`; `dwell` keeps them there a while.
    pub(crate) fn spool(&self, reason: &dyn std::fmt::Display, dwell: bool) {
        if self.direct.swap(false, Ordering::Relaxed) {
            *self.spooled_at.lock().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), dwell);
            telemetry::spooling_started(reason);
        }
    }

    /// The drainer published spooled deliveries with a confirm after `latency`, and
    /// `backlog` remain: back to direct when the broker is quick and the backlog small.
    pub(crate) fn drained(&self, latency: Duration, backlog: u64) {
        let quick = self
            .hedge_after
            .is_none_or(|hedge_after| latency <= hedge_after * 4);
        if self.direct() || backlog > BACKLOG_LOW || !quick {
            return;
        }
        let (since, dwell) = *self.spooled_at.lock().unwrap_or_else(|e| e.into_inner());
        if dwell && since.elapsed() < DWELL {
            return;
        }
        self.ewma_us.store(0f64.to_bits(), Ordering::Relaxed);
        if !self.direct.swap(true, Ordering::Relaxed) {
            telemetry::spooling_stopped(backlog);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_or_saturated_broker_spools_and_a_quick_one_comes_back() {
        let mode = Mode::new(Some(Duration::from_millis(3)));
        for _ in 0..50 {
            mode.confirmed(Duration::from_millis(1), 10);
        }
        assert!(mode.direct());
        mode.confirmed(Duration::from_millis(1), SATURATED_DEPTH + 1);
        assert!(!mode.direct(), "saturated");
        // Dwelling: a quick drain right after does not switch back yet.
        mode.drained(Duration::from_millis(1), 0);
        assert!(!mode.direct());
        *mode.spooled_at.lock().unwrap() = (Instant::now() - DWELL, true);
        mode.drained(Duration::from_millis(100), 0);
        assert!(!mode.direct(), "a slow drain keeps spooling");
        mode.drained(Duration::from_millis(1), BACKLOG_LOW + 1);
        assert!(!mode.direct(), "a big backlog keeps spooling");
        mode.drained(Duration::from_millis(1), 0);
        assert!(mode.direct());

        for _ in 0..100 {
            mode.confirmed(Duration::from_millis(20), 0);
        }
        assert!(!mode.direct(), "slow confirms");

        // A broker that was simply away comes back at once.
        let mode = Mode::new(Some(Duration::from_millis(3)));
        mode.spool(&"not connected", false);
        mode.drained(Duration::from_millis(1), 0);
        assert!(mode.direct());

        // Broker first: slow or saturated confirms never switch to the spool.
        let mode = Mode::new(None);
        for _ in 0..100 {
            mode.confirmed(Duration::from_millis(500), SATURATED_DEPTH + 1);
        }
        assert!(mode.direct());
        mode.spool(&"not connected", false);
        mode.drained(Duration::from_secs(1), 0);
        assert!(mode.direct(), "back as soon as the spool is drained");
    }
}
