//! Bounds the log volume a client can cause: per key (a source and a reason), the first
//! few lines of every window are written and the rest only counted; the next line written
//! for that key says how many were left out. Counters keep the exact numbers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines written per key and window.
const LINES_PER_WINDOW: u32 = 5;
/// How long a window lasts.
const WINDOW: Duration = Duration::from_secs(10);

/// Per-key log sampling. Keys must come from a bounded set (configured sources, `unknown`,
/// fixed reason codes), never from request text, or the map would grow with the attack.
#[derive(Default)]
pub(crate) struct Sampler {
    windows: Mutex<HashMap<(String, &'static str), Window>>,
}

struct Window {
    started: Instant,
    written: u32,
    left_out: u64,
}

impl Sampler {
    /// Whether a line for `key` may be written now; `Some(n)` says `n` lines for this key
    /// were left out since the last one written.
    pub(crate) fn admit(&self, source: &str, reason: &'static str) -> Option<u64> {
        self.admit_at(source, reason, Instant::now())
    }

    fn admit_at(&self, source: &str, reason: &'static str, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = match windows.get_mut(&(source.to_owned(), reason)) {
            Some(window) => window,
            None => windows
                .entry((source.to_owned(), reason))
                .or_insert(Window {
                    started: now,
                    written: 0,
                    left_out: 0,
                }),
        };
        if now.duration_since(window.started) >= WINDOW {
            window.started = now;
            window.written = 0;
        }
        if window.written < LINES_PER_WINDOW {
            window.written += 1;
            Some(std::mem::take(&mut window.left_out))
        } else {
            window.left_out += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_per_window_then_a_count() {
        let sampler = Sampler::default();
        let start = Instant::now();
        let written: Vec<_> = (0..100)
            .filter_map(|_| sampler.admit_at("aisle", "invalid_signature", start))
            .collect();
        assert_eq!(written, vec![0; LINES_PER_WINDOW as usize]);
        // Another key has its own window.
        assert_eq!(
            sampler.admit_at("unknown", "unknown_source", start),
            Some(0)
        );
        let later = start + WINDOW;
        assert_eq!(
            sampler.admit_at("aisle", "invalid_signature", later),
            Some(100 - u64::from(LINES_PER_WINDOW))
        );
        assert_eq!(
            sampler.admit_at("aisle", "invalid_signature", later),
            Some(0)
        );
    }
}
