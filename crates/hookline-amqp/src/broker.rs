//! The connection supervisor: connects with exponential backoff and jitter (forever),
//! notices a dead or frozen peer through AMQP heartbeats, re-declares the topology and
//! hands the new [`Session`] to whoever watches. One log line per state change.

use crate::error::PublishError;
use crate::session::Session;
use crate::topology::{Topology, TopologyError};
use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use futures_util::StreamExt;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Event};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Heartbeat used when the URL sets none: a dead peer is noticed within two intervals.
const DEFAULT_HEARTBEAT_SECS: u16 = 5;
/// Longest wait for one connection attempt (TCP, AMQP handshake, topology).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a [`Broker`] connects to and how.
#[derive(Clone)]
pub struct BrokerOptions {
    /// The nodes, validated by the config, tried in turn on every (re)connect (`heartbeat`
    /// is added when a URI sets none).
    pub uris: Vec<AMQPUri>,
    /// `ingress` or `worker`: names the connection in RabbitMQ and in logs.
    pub role: &'static str,
    /// Confirm channels to publish on.
    pub channels: usize,
    /// Declared after every connect.
    pub topology: Topology,
}

/// The URI with hookline's heartbeat when it sets none.
fn with_default_heartbeat(mut uri: AMQPUri) -> AMQPUri {
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    uri
}

/// A supervised broker connection (cheap to clone).
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    state: watch::Sender<Option<Session>>,
    blocked: AtomicBool,
    reset: Notify,
    shutdown: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Broker {
    /// Starts supervising in the background.
    pub fn start(options: BrokerOptions, shutdown: CancellationToken) -> Broker {
        let uris: Vec<AMQPUri> = options
            .uris
            .iter()
            .cloned()
            .map(with_default_heartbeat)
            .collect();
        let broker = Broker {
            inner: Arc::new(Inner {
                state: watch::Sender::new(None),
                blocked: AtomicBool::new(false),
                reset: Notify::new(),
                shutdown,
                task: std::sync::Mutex::new(None),
            }),
        };
        let task = tokio::spawn(supervise(broker.inner.clone(), options, uris));
        *broker.inner.task.lock().expect("task lock") = Some(task);
        broker
    }

    /// The live session, if connected.
    pub fn session(&self) -> Option<Session> {
        self.inner.state.borrow().clone().filter(Session::is_alive)
    }

    /// Connected and not blocked by a resource alarm: a publish can be confirmed now.
    pub fn is_ready(&self) -> bool {
        self.session().is_some() && !self.is_blocked()
    }

    /// Whether the broker has blocked publishing (memory or disk alarm).
    pub fn is_blocked(&self) -> bool {
        self.inner.blocked.load(Ordering::Relaxed)
    }

    /// Follows session changes (a new value after every connect and disconnect).
    pub fn watch(&self) -> watch::Receiver<Option<Session>> {
        self.inner.state.subscribe()
    }

    /// Waits for a live session; `None` once shutdown starts.
    pub async fn connected(&self) -> Option<Session> {
        let mut rx = self.watch();
        loop {
            if let Some(session) = rx.borrow_and_update().clone().filter(Session::is_alive) {
                return Some(session);
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return None,
                changed = rx.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// Publishes on the current session and waits for the confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let session = self.session().ok_or(PublishError::NotConnected)?;
        session
            .publish(exchange, routing_key, body, properties, mandatory)
            .await
    }

    /// Drops the current connection and reconnects (after a channel-level failure: a
    /// closed channel is never reopened on a live connection otherwise). Does nothing
    /// while disconnected, so a stale request cannot drop the next connection.
    pub fn reconnect(&self) {
        if self.session().is_some() {
            self.inner.reset.notify_one();
        }
    }

    /// Waits until the supervisor has closed the connection after shutdown was signalled.
    pub async fn stopped(&self) {
        let task = self.inner.task.lock().expect("task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn reconnect_policy() -> ExponentialBackoff {
    // No max_elapsed_time: the crate's default gives up after 15 minutes, a daemon must not.
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(200))
        .with_randomization_factor(0.5)
        .with_multiplier(2.0)
        .with_max_interval(Duration::from_secs(3))
        .with_max_elapsed_time(None)
        .build()
}

async fn supervise(inner: Arc<Inner>, options: BrokerOptions, uris: Vec<AMQPUri>) {
    let role = options.role;
    let name = format!("hookline-{role}");
    let mut policy = reconnect_policy();
    let mut failing = false;
    let mut mismatch_reported = false;
    // The node to try next: a lost or failed node hands over to the next one in the list.
    let mut next = 0usize;
    // Both series exist from the start, so "never connected" alerts like "disconnected".
    metrics::gauge!("hookline_amqp_connected", "role" => role).set(0.0);
    metrics::counter!("hookline_amqp_reconnects_total", "role" => role).increment(0);
    loop {
        let uri = uris[next % uris.len()].clone();
        let node = format!("{}:{}", uri.authority.host, uri.authority.port);
        let attempt = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Session::open(uri, &name, options.channels, &options.topology),
            ) => attempt,
        };
        let session = match attempt {
            Ok(Ok(session)) => session,
            failure => {
                next = next.wrapping_add(1);
                match failure {
                    Ok(Err(error @ TopologyError::Mismatch { .. })) => {
                        // An operator must act; once per streak, and at ERROR.
                        if !mismatch_reported {
                            error!(role, %node, %error, "RabbitMQ topology does not match the config.");
                            mismatch_reported = true;
                        }
                    }
                    failure => {
                        let error = match failure {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {CONNECT_TIMEOUT:?}"),
                        };
                        if !failing {
                            warn!(role, %node, %error, "Cannot connect to RabbitMQ; retrying with backoff.");
                            failing = true;
                        } else {
                            debug!(role, %node, %error, "RabbitMQ still unreachable.");
                        }
                    }
                }
                let wait = policy.next_backoff().unwrap_or(Duration::from_secs(3));
                tokio::select! {
                    _ = inner.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        policy.reset();
        failing = false;
        mismatch_reported = false;
        info!(role, %node, "Connected to RabbitMQ; topology declared.");
        metrics::gauge!("hookline_amqp_connected", "role" => role).set(1.0);
        let mut events = session.connection().events_listener();
        inner.blocked.store(false, Ordering::Relaxed);
        inner.state.send_replace(Some(session.clone()));
        let mut liveness = tokio::time::interval(Duration::from_secs(1));
        let stop = loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => break true,
                _ = inner.reset.notified() => {
                    warn!(role, "Reconnecting to RabbitMQ after a channel failure.");
                    break false;
                }
                _ = liveness.tick() => if !session.is_alive() {
                    warn!(role, "RabbitMQ connection closed; reconnecting.");
                    break false;
                },
                event = events.next() => match event {
                    Some(Event::Error(error)) => {
                        warn!(role, %error, "RabbitMQ connection lost; reconnecting.");
                        break false;
                    }
                    Some(Event::ConnectionBlocked(reason)) => {
                        inner.blocked.store(true, Ordering::Relaxed);
                        warn!(role, %reason, "RabbitMQ blocked publishing (resource alarm).");
                    }
                    Some(Event::ConnectionUnblocked) => {
                        inner.blocked.store(false, Ordering::Relaxed);
                        info!(role, "RabbitMQ unblocked publishing.");
                    }
                    Some(_) => {}
                    None => break false,
                },
            }
        };
        inner.state.send_replace(None);
        inner.blocked.store(false, Ordering::Relaxed);
        metrics::gauge!("hookline_amqp_connected", "role" => role).set(0.0);
        session.close().await;
        if stop {
            break;
        }
        // A node that dropped us is the last one to try again.
        next = next.wrapping_add(1);
        metrics::counter!("hookline_amqp_reconnects_total", "role" => role).increment(1);
    }
    inner.state.send_replace(None);
    debug!(role, "RabbitMQ supervisor stopped.");
}
