//! Serves a router on an already-bound listener under the connection-level limits: at most
//! `max_connections` open (more wait in the listen backlog), a header-read timeout (also for
//! idle keep-alive connections), `max_headers`, a cap on the header block's size, half-closed
//! clients still answered, and a graceful shutdown that answers every request already read.

use crate::telemetry;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// A client that has not sent a complete header block by then is disconnected; this also
/// closes keep-alive connections idle for that long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request line plus headers: far above any provider's, far below hyper's 400 KB.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long in-flight requests get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// Pause after a failed accept (usually out of file descriptors) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Request headers allowed.
    pub max_headers: usize,
}

/// Serves until `shutdown` resolves, then stops accepting and waits for open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(limits.max_headers)
        .max_header_size(MAX_HEADER_BYTES)
        // A client that shuts down its sending side after the request still gets the answer.
        .half_close(true)
        .keep_alive(true);
    let open = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    tokio::pin!(shutdown);
    loop {
        // Past the limit, connections wait in the kernel's backlog, costing us nothing.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    telemetry::accept_failed(&error);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (router, builder, watcher) = (router.clone(), builder.clone(), graceful.watcher());
        metrics::gauge!("hookline_ingress_connections").increment(1.0);
        tokio::spawn(async move {
            // Until its first byte an idle connection costs a socket, not hyper's buffers
            // (~30 KB each): thousands of idle connections stay cheap.
            if let Ok(Ok(())) = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.readable()).await {
                let service = TowerToHyperService::new(router);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                if let Err(error) = watcher.watch(connection).await {
                    debug!(%peer, %error, "HTTP connection ended with an error.");
                }
            }
            metrics::gauge!("hookline_ingress_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            warn!("Some HTTP connections were still open after the shutdown grace period.");
        }
    }
}
