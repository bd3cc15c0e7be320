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

/// Why the ingress could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The spool could not be opened.
    #[error("cannot open the spool: {0}")]
    Spool(#[from] StorageError),
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
    let dir = config.storage.spool_dir();
    let spool = tokio::task::spawn_blocking(move || spool::Spool::open(&dir))
        .await
        .expect("opening the spool does not panic")?;
    // The broker outlives the HTTP server so requests still in flight get their confirms.
    let broker_stop = CancellationToken::new();
    let topology = Topology::new(&config.amqp.prefix, config.subscriptions.clone());
    let broker = Broker::start(
        BrokerOptions {
            uri: config.amqp_uris[0].0.clone(),
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
    );
    let drainer = tokio::spawn(spool::drain::run(durable.clone(), broker_stop.clone()));
    let prober = spool.spawn_prober(SPOOL_PROBE_EVERY, broker_stop.clone());
    telemetry::register(&config.sources);
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
    let _ = prober.await;
    let _ = readiness.await;
    broker.stopped().await;
    spool.close().await;
    info!("Ingress stopped.");
    Ok(())
}
