//! The consumer loop for one broker session: manual acks, one task per message; at most
//! `worker.prefetch` deliveries (not messages: a batch counts as its deliveries) are processed
//! at once, which bounds the duplicate window. On shutdown it stops consuming and lets
//! in-flight deliveries finish.

use crate::process::{Context, process};
use crate::telemetry;
use futures_util::StreamExt;
use hookline_amqp::CLOSE_TIMEOUT;
use hookline_amqp::lapin::options::{BasicConsumeOptions, BasicQosOptions};
use hookline_amqp::lapin::types::FieldTable;
use hookline_amqp::message::received;
use hookline_core::wire;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long in-flight deliveries get to finish after shutdown starts.
const FINISH_TIMEOUT: Duration = Duration::from_secs(7);

/// How often the loop checks that its connection still lives: a consumer stream is not
/// guaranteed to end when the connection dies, and a worker must never wait on a dead one.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// Why consuming stopped.
pub(crate) enum Stopped {
    /// Shutdown was requested and in-flight work is finished or handed back.
    Shutdown,
    /// The channel or connection failed; the caller reconnects.
    Lost(String),
}

/// Consumes `<prefix>.ingress` on `ctx.session` until shutdown or a lost connection.
pub(crate) async fn consume(
    ctx: Arc<Context>,
    prefetch: u16,
    shutdown: &CancellationToken,
) -> Stopped {
    let channel = match ctx.session.create_channel().await {
        Ok(channel) => channel,
        Err(error) => return Stopped::Lost(error.to_string()),
    };
    if let Err(error) = channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
    {
        return Stopped::Lost(error.to_string());
    }
    let queue = ctx.topology.ingress_queue();
    let mut consumer = match channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(consumer) => consumer,
        Err(error) => return Stopped::Lost(error.to_string()),
    };
    info!(queue = %queue, prefetch, "Worker consuming.");
    if ctx.history.is_none() {
        telemetry::consuming();
    }

    // Deliveries being processed; messages beyond it wait, unstarted, in their tasks.
    let permits = Arc::new(Semaphore::new(usize::from(prefetch)));
    // With failover, nothing is processed in this session before the shared history is
    // caught up (RabbitMQ says nothing when a consumer becomes the active one).
    let caught_up = Arc::new(tokio::sync::OnceCell::<()>::new());
    let mut tasks = JoinSet::new();
    let mut liveness = tokio::time::interval(LIVENESS_EVERY);
    let stopped = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Stopped::Shutdown,
            _ = liveness.tick() => if !ctx.session.is_alive() {
                break Stopped::Lost("connection closed".into());
            },
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let entries = wire::decode(&received(&delivery.properties, &delivery.data));
                    let need = entries.as_ref().map_or(1, Vec::len).clamp(1, usize::from(prefetch));
                    let (ctx, permits, caught_up) = (ctx.clone(), permits.clone(), caught_up.clone());
                    tasks.spawn(async move {
                        if let Some(history) = &ctx.history {
                            let synced = caught_up
                                .get_or_try_init(|| async {
                                    let started = std::time::Instant::now();
                                    history.catch_up(&ctx.session).await?;
                                    telemetry::active(started.elapsed());
                                    Ok::<_, crate::history::HistoryError>(())
                                })
                                .await;
                            if let Err(error) = synced {
                                warn!(%error, "Cannot catch up with the processed-id history; reconnecting.");
                                ctx.broker.reconnect();
                                return;
                            }
                        }
                        let Ok(_permits) = permits.acquire_many_owned(need as u32).await else {
                            return;
                        };
                        process(&ctx, delivery, entries).await;
                    });
                }
                Some(Err(error)) => break Stopped::Lost(error.to_string()),
                None => break Stopped::Lost("consumer cancelled by the broker".into()),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    };

    if matches!(stopped, Stopped::Shutdown) {
        // Stop deliveries first, then let in-flight ones finish; what cannot finish in time is
        // handed back to the queue when the channel closes unacked.
        let _ = channel
            .basic_cancel(consumer.tag(), Default::default())
            .await;
        let finished = tokio::time::timeout(FINISH_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            warn!(
                in_flight = tasks.len(),
                "Shutdown: handing unfinished deliveries back to the queue."
            );
            tasks.abort_all();
        }
    } else {
        tasks.abort_all();
    }
    // Closing waits for the broker's answer, which a dead connection never sends.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "worker stopping".into())).await;
    stopped
}
