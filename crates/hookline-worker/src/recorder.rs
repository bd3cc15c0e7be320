//! Group commit for the processed-id store: deliveries hand over the ids they published,
//! one blocking task records every waiting delivery's ids in one batch and flushes once,
//! then answers them all. Per-delivery flushes made sled's write path the worker's
//! bottleneck; and sled 0.34's `flush_async` stalled the runtime when many tasks awaited it.

use crate::processed::ProcessedStore;
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), String>>;

/// Most ids recorded in one batch.
const MAX_BATCH_IDS: usize = 4096;

/// Handle to the recording task (cheap to clone).
#[derive(Clone)]
pub(crate) struct Recorder {
    requests: mpsc::UnboundedSender<(Vec<String>, Waiter)>,
}

impl Recorder {
    /// Starts the recording task for `store`; it ends when every handle is dropped.
    pub(crate) fn start(store: ProcessedStore) -> Self {
        let (requests, mut rx) = mpsc::unbounded_channel::<(Vec<String>, Waiter)>();
        tokio::spawn(async move {
            while let Some((mut ids, first)) = rx.recv().await {
                let mut waiters = vec![first];
                while ids.len() < MAX_BATCH_IDS {
                    let Ok((more, waiter)) = rx.try_recv() else {
                        break;
                    };
                    ids.extend(more);
                    waiters.push(waiter);
                }
                let store = store.clone();
                let deliveries = waiters.len();
                let result = tokio::task::spawn_blocking(move || {
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    store.record(&refs, SystemTime::now())?;
                    store.flush_blocking()
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
                metrics::histogram!("hookline_processed_batch_deliveries")
                    .record(deliveries as f64);
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
            }
        });
        Self { requests }
    }

    /// Records `ids` as published; returns once they are flushed to the store's file.
    pub(crate) async fn record(&self, ids: Vec<String>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((ids, tx))
            .map_err(|_| "the processed-id recorder has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the processed-id recorder has stopped".to_owned())?
    }
}
