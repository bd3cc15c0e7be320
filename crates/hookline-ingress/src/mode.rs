//! Where new deliveries go first, decided from what is measured: **direct** (batched to the
//! broker, the spool only as a hedge) while confirms come back fast; **spooled** (fsynced
//! group commit, the drainer publishes in large batches) while the broker is away, blocked,
//! failing, saturated (deliveries pile up waiting for slots) or slow (the recent confirm
//! latency is above the hedge margin, so most requests would be written twice anyway).
//! Back to direct once the drainer finds the broker quick and the spool nearly empty.
//!
//! Replicated (quorum) queues confirm only once a majority of nodes has the message, so
//! their confirms are slower by nature, and the spool (one local disk) is a weaker home than
//! the queue the operator chose: there, the hedge margin follows the recent confirm latency
//! (a hedge is for a confirm later than usual, not for every one) and a slow broker is no
//! reason to spool; away, blocked, failing or saturated still are.

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
/// With replicated queues, a confirm later than this many times the recent average is late.
const LATE_FACTOR: f64 = 2.0;
/// Most a replicated queue's hedge margin grows to: a spool write after it still answers
/// well within any provider's budget.
const MAX_ADAPTIVE_HEDGE: Duration = Duration::from_millis(100);

/// The adaptive durability mode (shared by the request path and the drainer).
pub(crate) struct Mode {
    direct: AtomicBool,
    /// Moving average of direct confirm latency, in microseconds (as f64 bits).
    ewma_us: AtomicU64,
    /// When the latest switch to spooling happened, and whether dwelling applies.
    spooled_at: Mutex<(Instant, bool)>,
    /// `None`: broker first always, no hedging and no switching on latency.
    hedge_after: Option<Duration>,
    /// Replicated queues: an adaptive hedge margin, no spooling for slowness.
    replicated: bool,
}

impl Mode {
    /// Direct at first; `hedge_after` is the confirm latency above which a request also
    /// writes the spool (`None`: never), the least margin when the queue is `replicated`.
    pub(crate) fn new(hedge_after: Option<Duration>, replicated: bool) -> Self {
        telemetry::direct_mode(true);
        Self {
            direct: AtomicBool::new(true),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            spooled_at: Mutex::new((Instant::now(), false)),
            hedge_after,
            replicated,
        }
    }

    /// Whether new deliveries go to the broker first.
    pub(crate) fn direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// The confirm latency after which a request also writes the spool, if it does.
    pub(crate) fn hedge_after(&self) -> Option<Duration> {
        let least = self.hedge_after?;
        if !self.replicated {
            return Some(least);
        }
        let usual = f64::from_bits(self.ewma_us.load(Ordering::Relaxed)) * LATE_FACTOR / 1e6;
        Some(Duration::from_secs_f64(usual).clamp(least, MAX_ADAPTIVE_HEDGE.max(least)))
    }

    /// A confirm that lost its race to the spool arrived after `latency`. A replicated
    /// queue's margin follows every confirm (else it would only see those quicker than
    /// itself); a classic queue's average keeps to the confirms that answered.
    pub(crate) fn confirmed_late(&self, latency: Duration) {
        if self.replicated {
            self.average(latency);
        }
    }

    /// Blends `latency` into the moving average; returns the new average in microseconds.
    fn average(&self, latency: Duration) -> f64 {
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
        blend(f64::from_bits(previous))
    }

    /// A direct confirm arrived after `latency`; `waiting` deliveries are queued for slots.
    pub(crate) fn confirmed(&self, latency: Duration, waiting: usize) {
        let ewma = self.average(latency);
        let Some(hedge_after) = self.hedge_after else {
            // Broker first: only an absent or failing broker sends deliveries to the spool.
            return;
        };
        if waiting > SATURATED_DEPTH {
            self.spool(
                &"the broker is saturated: deliveries are queueing for confirms",
                true,
            );
        } else if !self.replicated && ewma > 2.0 * hedge_after.as_secs_f64() * 1e6 {
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
            .hedge_after()
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
        let mode = Mode::new(Some(Duration::from_millis(3)), false);
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
        let mode = Mode::new(Some(Duration::from_millis(3)), false);
        mode.spool(&"not connected", false);
        mode.drained(Duration::from_millis(1), 0);
        assert!(mode.direct());

        // Broker first: slow or saturated confirms never switch to the spool.
        let mode = Mode::new(None, false);
        for _ in 0..100 {
            mode.confirmed(Duration::from_millis(500), SATURATED_DEPTH + 1);
        }
        assert!(mode.direct());
        mode.spool(&"not connected", false);
        mode.drained(Duration::from_secs(1), 0);
        assert!(mode.direct(), "back as soon as the spool is drained");
    }

    #[test]
    fn replicated_queues_hedge_late_confirms_and_do_not_spool_for_slowness() {
        let least = Duration::from_millis(3);
        let mode = Mode::new(Some(least), true);
        assert_eq!(mode.hedge_after(), Some(least), "no average yet");
        for _ in 0..100 {
            mode.confirmed(Duration::from_millis(20), 10);
        }
        assert!(mode.direct(), "a quorum confirm of 20 ms is not slow");
        let margin = mode.hedge_after().unwrap();
        assert!(
            margin > Duration::from_millis(35) && margin < Duration::from_millis(45),
            "{margin:?}"
        );
        // Late confirms count too, up to the cap.
        for _ in 0..100 {
            mode.confirmed_late(Duration::from_secs(1));
        }
        assert_eq!(mode.hedge_after(), Some(MAX_ADAPTIVE_HEDGE));
        mode.confirmed(Duration::from_millis(20), SATURATED_DEPTH + 1);
        assert!(!mode.direct(), "saturated still spools");

        // A classic queue's margin stays put, and its average ignores late confirms.
        let classic = Mode::new(Some(least), false);
        classic.confirmed_late(Duration::from_secs(1));
        assert_eq!(classic.hedge_after(), Some(least));
        assert_eq!(f64::from_bits(classic.ewma_us.load(Ordering::Relaxed)), 0.0);
    }
}
