//! hookline's worker: consumes raw deliveries, splits batches, normalizes each event,
//! drops duplicates with a sled-backed processed-id store and publishes the rest on the
//! topic exchange with confirms.

mod claims;
mod consume;
mod failures;
mod history;
mod metrics_server;
mod observers;
mod process;
pub mod processed;
mod recorder;
mod telemetry;

use claims::Claims;
use consume::{Stopped, consume};
use failures::Failures;
use history::History;
use hookline_amqp::{Broker, BrokerOptions, Topology};
use hookline_core::Config;
use hookline_core::storage::StorageError;
use metrics_exporter_prometheus::PrometheusHandle;
use observers::Observers;
use process::Context;
use processed::ProcessedStore;
use recorder::Recorder;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use metrics_server::metrics_router;

/// Page cache of the processed-id store: bounds the worker's memory (sled's default is
/// 1 GiB; sled's real use is about three times this figure).
pub const STORE_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// How often old processed ids are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Confirm channels the worker publishes events on.
const PUBLISH_CHANNELS: usize = 2;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The processed-id store could not be opened.
    #[error("cannot open the processed-id store: {0}")]
    Store(#[from] StorageError),
    /// A worker thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Runs the worker until `shutdown`; serves `/metrics` and `/healthz` on `metrics_listener`
/// when one is given.
pub async fn run(
    config: &Config,
    metrics_listener: Option<TcpListener>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let dir = config
        .storage
        .processed_dir(config.amqp.failover, &config.instance());
    // Opening reads the store and may wait for a closing handle's lock: off the runtime.
    let store = tokio::task::spawn_blocking(move || ProcessedStore::open(&dir, STORE_CACHE_BYTES))
        .await
        .expect("opening the processed-id store does not panic")?;
    let broker_stop = CancellationToken::new();
    let topology = Topology::from_config(config);
    let broker = Broker::start(
        BrokerOptions {
            uris: config.amqp_uris.iter().map(|u| u.0.clone()).collect(),
            role: "worker",
            channels: PUBLISH_CHANNELS,
            topology: topology.clone(),
        },
        broker_stop.clone(),
    );
    let pruner = store.spawn_pruner(config.worker.retention(), PRUNE_EVERY, broker_stop.clone());
    let metrics_task = match metrics_listener {
        Some(listener) => {
            let router = metrics_router(metrics);
            let stop = broker_stop.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };

    telemetry::register(&config.sources);
    let claims = Claims::default();
    let recorder = Recorder::start(store.clone())?;
    let failures = Failures::default();
    let history = topology
        .failover()
        .then(|| History::new(&topology, broker.clone(), store.clone()));
    while let Some(session) = tokio::select! {
        _ = shutdown.cancelled() => None,
        session = broker.connected() => session,
    } {
        // Every replica, active or standing by, keeps its store up to date from the stream.
        let tail = history.clone().map(|history| {
            let session = session.clone();
            tokio::spawn(async move { history.tail(session).await })
        });
        let observers = Observers::default();
        let probing = CancellationToken::new();
        tokio::spawn(
            observers
                .clone()
                .watch(session.clone(), topology.clone(), probing.clone()),
        );
        let ctx = Arc::new(Context {
            broker: broker.clone(),
            session,
            store: store.clone(),
            recorder: recorder.clone(),
            claims: claims.clone(),
            failures: failures.clone(),
            topology: topology.clone(),
            max_attempts: config.worker.max_attempts,
            history: history.clone(),
            observers,
            prefetch: usize::from(config.worker.prefetch),
        });
        let stopped = consume(ctx, config.worker.prefetch, &shutdown).await;
        probing.cancel();
        telemetry::inactive();
        if let Some(tail) = tail {
            tail.abort();
        }
        match stopped {
            Stopped::Shutdown => break,
            Stopped::Lost(reason) => {
                warn!(%reason, "Worker lost its consumer; resuming after reconnect.");
                broker.reconnect();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    broker_stop.cancel();
    broker.stopped().await;
    let _ = pruner.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    recorder.close().await;
    if let Err(error) = store.flush().await {
        warn!(%error, "Cannot flush the processed-id store at shutdown.");
    }
    info!("Worker stopped.");
    Ok(())
}
