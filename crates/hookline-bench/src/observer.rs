//! An observer of `<prefix>.events`: a durable queue bound with `#` that the worker
//! declares and binds itself (`[[subscriptions]]`) before it starts consuming, so no event
//! can slip past it. Nobody consumes it: the broker counts the events, and a slow consumer
//! cannot hold the worker back. A poller waits until it holds a target number of events
//! and `<prefix>.ingress` has no ready message left.

use crate::broker;
use anyhow::Result;
use lapin::Channel;
use std::time::{Duration, Instant};

/// How often the queues are polled.
const POLL: Duration = Duration::from_millis(50);

/// The `[[subscriptions]]` entry that makes the worker declare `queue` (durable, no
/// arguments) and bind it to `<prefix>.events` with `#` before it consumes.
pub(crate) fn subscription_toml(queue: &str) -> String {
    format!("\n[[subscriptions]]\nqueue = {queue:?}\npatterns = [\"#\"]\n")
}

/// What the poller saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drained {
    /// When it started polling.
    pub(crate) since: Instant,
    /// The first poll that found an event.
    pub(crate) first_event: Option<Instant>,
    /// The first poll that found `target` events and an empty ingress queue (`None`: it
    /// gave up).
    pub(crate) done: Option<Instant>,
    /// Events in the observer queue at the last poll.
    pub(crate) events: u32,
    /// Ready messages in `<prefix>.ingress` at the last poll.
    pub(crate) ingress_left: u32,
}

impl Drained {
    /// From the start of polling to done.
    pub(crate) fn took(&self) -> Option<Duration> {
        self.done
            .map(|done| done.saturating_duration_since(self.since))
    }
}

/// Polls `observer` and `ingress` until `observer` holds at least `target` events and
/// `ingress` has no ready message; gives up after `stall` without any change in either,
/// or after `limit` in all.
pub(crate) async fn wait_for(
    channel: &Channel,
    ingress: &str,
    observer: &str,
    target: u64,
    stall: Duration,
    limit: Duration,
) -> Result<Drained> {
    let since = Instant::now();
    let mut drained = Drained {
        since,
        first_event: None,
        done: None,
        events: 0,
        ingress_left: 0,
    };
    let mut last_seen = (u32::MAX, u32::MAX);
    let mut last_change = since;
    loop {
        let ingress_left = broker::queue_depth(channel, ingress).await?;
        let events = broker::queue_depth(channel, observer).await?;
        let now = Instant::now();
        drained.events = events;
        drained.ingress_left = ingress_left;
        if events > 0 && drained.first_event.is_none() {
            drained.first_event = Some(now);
        }
        if u64::from(events) >= target && ingress_left == 0 {
            drained.done = Some(now);
            return Ok(drained);
        }
        if (events, ingress_left) != last_seen {
            last_seen = (events, ingress_left);
            last_change = now;
        }
        if now.duration_since(last_change) >= stall || now.duration_since(since) >= limit {
            return Ok(drained);
        }
        tokio::time::sleep(POLL).await;
    }
}
