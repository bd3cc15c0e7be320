//! Counts failed processing attempts per delivery, so a delivery that keeps failing goes
//! to the dead-letter queue after `max_attempts` instead of looping forever.
//!
//! The count lives in memory: a lost connection does not count as an attempt, and a
//! restarted worker starts counting again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Failed attempts by delivery id (cheap to clone).
#[derive(Clone, Default)]
pub(crate) struct Failures {
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Failures {
    /// Counts one more failure and returns the total.
    pub(crate) fn record(&self, delivery_id: &str) -> u32 {
        let mut counts = self.counts.lock().expect("failures lock");
        let count = counts.entry(delivery_id.to_owned()).or_default();
        *count += 1;
        *count
    }

    /// Forgets a delivery that succeeded or was dead-lettered.
    pub(crate) fn clear(&self, delivery_id: &str) {
        self.counts
            .lock()
            .expect("failures lock")
            .remove(delivery_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_delivery() {
        let failures = Failures::default();
        assert_eq!(failures.record("a"), 1);
        assert_eq!(failures.record("a"), 2);
        assert_eq!(failures.record("b"), 1);
        failures.clear("a");
        assert_eq!(failures.record("a"), 1);
    }
}
