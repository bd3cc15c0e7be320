//! Serves a router on an already-bound listener under the connection-level limits: at most
//! `max_connections` open (more wait in the listen backlog), a header-read timeout (also for
//! idle keep-alive connections), `max_headers`, a cap on the header block's size, half-closed
//! clients still answered, and a graceful shutdown that answers every request already read.
//! With TLS, the handshake happens under the same limits: it holds its connection's place
//! and must finish within the header-read timeout of the connection's opening.

use crate::telemetry;
use crate::tls::Tls;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A client that has not sent a complete header block by then is disconnected; this also
/// closes keep-alive connections idle for that long. A connection gets as long again for
/// its first byte and, with TLS, its whole handshake.
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
/// With `tls`, every connection is HTTPS (HTTP/1.1 over rustls).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Tls>,
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
    let acceptor = tls.map(|tls| tls.acceptor());
    // Connections not yet handed to hyper have no request to finish: they go at once.
    let closing = CancellationToken::new();
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
        let (acceptor, closing) = (acceptor.clone(), closing.clone());
        metrics::gauge!("hookline_ingress_connections").increment(1.0);
        tokio::spawn(async move {
            // The permit is held from accept to close, handshake included, so clients that
            // stall before their first request count against `max_connections` too.
            let _permit = permit;
            // One deadline for the first byte and the whole handshake: a client trickling
            // its ClientHello gets no more time than one that sends nothing.
            let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
            // Until its first byte an idle connection costs a socket, not hyper's buffers
            // (~30 KB each) or rustls's: thousands of idle connections stay cheap.
            let first_byte = tokio::select! {
                _ = closing.cancelled() => None,
                readable = tokio::time::timeout_at(deadline, stream.readable()) => readable.ok(),
            };
            if let Some(Ok(())) = first_byte {
                match acceptor {
                    None => serve_connection(stream, peer, &builder, router, watcher).await,
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
                        let tls = tokio::select! {
                            _ = closing.cancelled() => None,
                            done = handshake => telemetry::handshake(&peer, done),
                        };
                        if let Some(tls) = tls {
                            serve_connection(tls, peer, &builder, router, watcher).await;
                        }
                    }
                }
            }
            metrics::gauge!("hookline_ingress_connections").decrement(1.0);
        });
    }
    drop(listener);
    closing.cancel();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            warn!("Some HTTP connections were still open after the shutdown grace period.");
        }
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    builder: &http1::Builder,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(connection).await {
        debug!(%peer, %error, "HTTP connection ended with an error.");
    }
}
