//! hookline's HTTP ingress: verify each delivery, make it durable (broker confirm or
//! fsynced spool), answer within the sender's budget.

mod body;
mod durable;
mod error;
mod limits;
mod mode;
mod publisher;
mod routes;
mod sampler;
mod server;
pub mod spool;
mod telemetry;
pub mod tls;

pub use durable::{Durable, StoredIn};
pub use error::ApiError;
pub use routes::{AppState, metrics_router, router};
pub use server::{ConnectionLimits, serve};
pub use tls::{Tls, TlsError};

use hookline_amqp::{Broker, BrokerOptions, Topology};
use hookline_core::Config;
use hookline_core::config::QueueType;
use hookline_core::storage::StorageError;
use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Confirm channels the ingress publishes on.
const PUBLISH_CHANNELS: usize = 2;

/// How soon `/readyz` notices that a failed spool disk takes writes again.
const SPOOL_PROBE_EVERY: Duration = Duration::from_secs(1);

/// How often `hookline_ingress_ready` is brought up to date.
const READY_GAUGE_EVERY: Duration = Duration::from_secs(1);

/// How long a replica waits for its own spool while another process holds it (a peer
/// that took it for a spool left behind finishes draining it first).
const OWN_SPOOL_WAIT: Duration = Duration::from_secs(20);

/// Why the ingress could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The spool could not be opened.
    #[error("cannot open the spool: {0}")]
    Spool(#[from] StorageError),
    /// Another running process holds this instance's spool.
    #[error(
        "spool {} is held by another running process: is a second ingress using the same storage.dir with the same storage.instance (host name)?",
        .0.display()
    )]
    SpoolInUse(std::path::PathBuf),
}

/// Opens this instance's spool, waiting while a peer drains what an earlier process of the
/// same name left there.
async fn open_own_spool(dir: &std::path::Path) -> Result<spool::Spool, IngressError> {
    let started = tokio::time::Instant::now();
    loop {
        let path = dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || spool::Spool::open(&path))
            .await
            .expect("opening the spool does not panic");
        match opened {
            Ok(spool) => return Ok(spool),
            Err(error) if error.failure == hookline_core::storage::Failure::Locked => {
                if started.elapsed() >= OWN_SPOOL_WAIT {
                    return Err(IngressError::SpoolInUse(dir.to_path_buf()));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// `hookline spool drain`: publishes every spool under `storage.dir` that no running
/// process holds (those a running ingress holds, it drains itself), and removes them.
pub async fn drain_spools(
    config: &Config,
) -> Result<Vec<(std::path::PathBuf, spool::orphans::Drained)>, DrainSpoolsError> {
    let stop = CancellationToken::new();
    let topology = Topology::from_config(config);
    let broker = Broker::start(
        BrokerOptions {
            uris: config.amqp_uris.iter().map(|u| u.0.clone()).collect(),
            role: "spool-drain",
            channels: 1,
            topology: topology.clone(),
        },
        stop.clone(),
    );
    let connected = tokio::time::timeout(Duration::from_secs(30), broker.connected()).await;
    let outcome = match connected {
        Ok(Some(_)) => {
            let mut drained = Vec::new();
            for dir in spool::orphans::find(&config.storage.spool_root(), None) {
                let result = spool::orphans::drain_one(&dir, &broker, &topology.ingress_queue())
                    .await
                    .map_err(|e| DrainSpoolsError::Drain {
                        dir: dir.clone(),
                        reason: e.to_string(),
                    })?;
                drained.push((dir, result));
            }
            Ok(drained)
        }
        _ => Err(DrainSpoolsError::NoBroker),
    };
    stop.cancel();
    broker.stopped().await;
    outcome
}

/// Why `hookline spool drain` could not finish.
#[derive(Debug, thiserror::Error)]
pub enum DrainSpoolsError {
    /// The broker did not answer.
    #[error("cannot connect to RabbitMQ within 30 s (amqp.url / amqp.urls)")]
    NoBroker,
    /// A spool could not be drained.
    #[error("spool {}: {reason}", .dir.display())]
    Drain {
        /// The spool's directory.
        dir: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
}

/// The sockets the ingress serves, bound by the caller (which logs the addresses).
#[derive(Debug)]
pub struct Listeners {
    /// `ingress.listen`: webhooks, probes, and `/metrics` unless `ingress.metrics_listen`
    /// is set.
    pub public: TcpListener,
    /// `ingress.metrics_listen`: `/metrics` and `/healthz` in plain HTTP. `None` with the
    /// key set means another listener of the process serves them (the worker's, in `run`).
    pub metrics: Option<TcpListener>,
}

/// Runs the ingress on `listeners` until `shutdown`, then finishes open requests, stops the
/// drainer, closes the spool and the broker connection. With `tls`, `listeners.public`
/// serves HTTPS.
pub async fn run(
    config: &Config,
    listeners: Listeners,
    tls: Option<Tls>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let instance = config.instance();
    let own = config.storage.spool_dir(&instance);
    let spool = open_own_spool(&own).await?;
    // The broker outlives the HTTP server so requests still in flight get their confirms.
    let broker_stop = CancellationToken::new();
    let topology = Topology::from_config(config);
    let broker = Broker::start(
        BrokerOptions {
            uris: config.amqp_uris.iter().map(|u| u.0.clone()).collect(),
            role: "ingress",
            channels: PUBLISH_CHANNELS,
            topology: topology.clone(),
        },
        broker_stop.clone(),
    );
    let durable = Durable::new(
        broker.clone(),
        spool.clone(),
        topology.ingress_queue(),
        config.ingress.ack_deadline(),
        config.ingress.hedge_after(),
        config.amqp.queue_type == QueueType::Quorum,
    );
    let drainer = tokio::spawn(spool::drain::run(durable.clone(), broker_stop.clone()));
    let orphans = tokio::spawn(spool::orphans::run(
        config.storage.spool_root(),
        own.clone(),
        broker.clone(),
        topology.ingress_queue(),
        broker_stop.clone(),
    ));
    let prober = spool.spawn_prober(SPOOL_PROBE_EVERY, broker_stop.clone());
    telemetry::register(&config.sources);
    // Set once before anything can scrape, so the series exists from the first answer.
    telemetry::ready(durable.ready());
    let readiness = {
        let (durable, stop) = (durable.clone(), broker_stop.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(READY_GAUGE_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => telemetry::ready(durable.ready()),
                }
            }
        })
    };
    let state = AppState::new(&config.sources, &config.ingress, durable, metrics);
    let Listeners {
        public,
        metrics: private,
    } = listeners;
    if tls.is_some() {
        telemetry::tls_enabled();
    }
    info!(
        listen = %public.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        https = tls.is_some(),
        tls_cert_sha256 = tls.as_ref().map(Tls::fingerprint),
        metrics_listen = config.ingress.metrics_listen.map(|a| a.to_string()),
        sources = config.sources.len(),
        spool_depth = spool.depth(),
        "Ingress listening."
    );
    let limits = ConnectionLimits {
        max_connections: config.ingress.max_connections,
        max_headers: config.ingress.max_headers,
    };
    let public_router = router(state.clone(), config.ingress.metrics_listen.is_none());
    let public = serve(
        public,
        public_router,
        limits,
        tls,
        shutdown.clone().cancelled_owned(),
    );
    let private = async {
        if let Some(listener) = private {
            let router = metrics_router(state);
            serve(listener, router, limits, None, shutdown.cancelled_owned()).await;
        }
    };
    tokio::join!(public, private);
    broker_stop.cancel();
    let _ = drainer.await;
    let _ = orphans.await;
    let _ = prober.await;
    let _ = readiness.await;
    broker.stopped().await;
    spool.close().await;
    info!("Ingress stopped.");
    Ok(())
}
