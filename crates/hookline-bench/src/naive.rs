//! `naive`: the floor a user could write in 40 lines, run inside the bench. An axum + lapin
//! server on 127.0.0.1:0 that verifies the Aisle HMAC, publishes the body persistent to a
//! durable queue `<prefix>.naive` on ONE confirm channel, awaits that confirm and answers
//! 200. It runs on its own 2-thread runtime in its own thread (the load generator's
//! runtime is current-thread), and gets exactly the `ingress` mode's closed loop.

use crate::broker;
use crate::ingress::{WARMUP, pool_size};
use crate::load::{self, ClosedLoopResult};
use crate::machine::{CpuMeter, CpuUse};
use crate::names;
use crate::payload::{Payloads, SIGNATURE_HEADER};
use crate::process::Bench;
use anyhow::{Context as _, Result, anyhow};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// Name of the server's threads (its runtime's workers and the thread that runs it).
const THREAD_NAME: &str = "naive-server";
/// Worker threads of the server's runtime.
const SERVER_THREADS: usize = 2;
/// Longest wait for the server to stop once asked.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// What the naive run measured.
pub(crate) struct NaiveResult {
    /// The closed loop's figures (the same load as `ingress`).
    pub(crate) load: ClosedLoopResult,
    /// CPU use during the measured window (the server is a part of the bench process).
    pub(crate) cpu: CpuUse,
    /// Publishes the broker nacked or that failed (answered 503).
    pub(crate) publish_failures: u64,
    /// Bodies generated during timing because the pool was too small.
    pub(crate) made_late: u64,
}

/// Starts the naive server, loads it like `ingress`, stops it and deletes its queue.
pub(crate) async fn run(
    bench: &Bench,
    seconds: Duration,
    connections: usize,
    expected_rate: f64,
) -> Result<NaiveResult> {
    let payloads = Arc::new(Payloads::generate(
        &bench.secret,
        pool_size(expected_rate, WARMUP + seconds),
    ));
    let queue = names::under(&bench.prefix, names::NAIVE_QUEUE);
    let server = NaiveServer::start(&bench.amqp_url, &queue, &bench.secret).await?;

    let load = load::closed_loop(server.addr, payloads.clone(), connections, WARMUP, seconds);
    let metered = async {
        tokio::time::sleep(WARMUP).await;
        let mut meter = CpuMeter::start(&[]);
        meter.add_own_threads("naive server", THREAD_NAME);
        tokio::time::sleep(seconds).await;
        meter.finish()
    };
    let (load, cpu) = tokio::join!(load, metered);
    let stopped = server.stop().await;

    let connection = broker::connect(&bench.amqp_url).await?;
    let deleted = broker::delete_queue(&connection, &queue).await;
    let _ = connection.close(200, "naive done".into()).await;
    let load = load?;
    let publish_failures = stopped?;
    deleted?;
    Ok(NaiveResult {
        load,
        cpu,
        publish_failures,
        made_late: payloads.made_late(),
    })
}

/// What a request handler needs.
struct NaiveState {
    channel: Channel,
    queue: String,
    secret: Vec<u8>,
    failures: AtomicU64,
}

/// The handler: verify, publish persistent, await the confirm, answer.
async fn receive(
    State(state): State<Arc<NaiveState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(tag) = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| hex::decode(value.as_bytes()).ok())
    else {
        return StatusCode::UNAUTHORIZED;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&state.secret)
        .expect("HMAC takes keys of any length");
    mac.update(&body);
    if mac.verify_slice(&tag).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let published = state
        .channel
        .basic_publish(
            "".into(),
            state.queue.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
    match published {
        Ok(confirm) => match confirm.await {
            Ok(Confirmation::Ack(_)) => StatusCode::OK,
            _ => {
                state.failures.fetch_add(1, Ordering::Relaxed);
                StatusCode::SERVICE_UNAVAILABLE
            }
        },
        Err(_) => {
            state.failures.fetch_add(1, Ordering::Relaxed);
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// The running server: its address, a stop signal and its thread.
struct NaiveServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<Result<u64>>,
    thread: std::thread::JoinHandle<()>,
}

impl NaiveServer {
    /// Starts the server thread and waits until it listens.
    async fn start(url: &str, queue: &str, secret: &str) -> Result<NaiveServer> {
        let (ready_tx, ready_rx) = oneshot::channel::<SocketAddr>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<Result<u64>>();
        let (url, queue, secret) = (url.to_owned(), queue.to_owned(), secret.as_bytes().to_vec());
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let served = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(SERVER_THREADS)
                    .thread_name(THREAD_NAME)
                    .enable_all()
                    .build()
                    .context("cannot start the naive server's runtime")
                    .and_then(|runtime| {
                        runtime.block_on(serve(url, queue, secret, ready_tx, stop_rx))
                    });
                let _ = done_tx.send(served);
            })
            .context("cannot start the naive server's thread")?;
        // `ready_tx` is dropped unsent when the thread fails before listening.
        let Ok(addr) = ready_rx.await else {
            let finished = done_rx
                .await
                .map_err(|_| anyhow!("the naive server's thread died"))?;
            return Err(finished
                .err()
                .unwrap_or_else(|| anyhow!("the naive server stopped before listening")));
        };
        Ok(NaiveServer {
            addr,
            stop: stop_tx,
            done: done_rx,
            thread,
        })
    }

    /// Stops the server; returns how many publishes failed.
    async fn stop(self) -> Result<u64> {
        let _ = self.stop.send(());
        let finished = tokio::time::timeout(STOP_LIMIT, self.done)
            .await
            .context("the naive server did not stop within 15 s")?
            .map_err(|_| anyhow!("the naive server's thread died"))?;
        let _ = self.thread.join();
        finished
    }
}

/// Connects, declares the queue, serves until `stop`; returns the failed publishes.
async fn serve(
    url: String,
    queue: String,
    secret: Vec<u8>,
    ready: oneshot::Sender<SocketAddr>,
    stop: oneshot::Receiver<()>,
) -> Result<u64> {
    let connection = broker::connect(&url).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    broker::declare_durable(&channel, &queue).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("the naive server cannot bind 127.0.0.1:0")?;
    let state = Arc::new(NaiveState {
        channel,
        queue,
        secret,
        failures: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/webhooks/aisle", post(receive))
        .with_state(state.clone());
    let _ = ready.send(listener.local_addr()?);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .await;
    let _ = connection.close(200, "naive done".into()).await;
    served.context("the naive server failed")?;
    Ok(state.failures.load(Ordering::Relaxed))
}
