//! Group commit for the processed-id store ([`hookline_core::group_commit`]): deliveries hand
//! over the ids they published; one thread records every waiting delivery's ids in one batch
//! and flushes once, then answers them all. Per-delivery flushes made sled's write path the
//! worker's bottleneck, and sled 0.34's `flush_async` stalled the runtime when many tasks
//! awaited it.

use crate::processed::ProcessedStore;
use hookline_core::group_commit::GroupCommit;
use hookline_core::storage::{Failure, StorageError, Store};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::oneshot;

/// Most deliveries whose ids go into one batch.
const MAX_BATCH: usize = 1024;

struct Job {
    ids: Vec<String>,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

/// Handle to the recording thread (cheap to clone).
#[derive(Clone)]
pub(crate) struct Recorder {
    store: ProcessedStore,
    commits: Arc<GroupCommit<Job>>,
}

impl Recorder {
    /// Starts the recording thread for `store`.
    pub(crate) fn start(store: ProcessedStore) -> std::io::Result<Self> {
        let writer = store.clone();
        let commits = GroupCommit::spawn(
            "hookline-recorder",
            4 * MAX_BATCH,
            MAX_BATCH,
            move |jobs: Vec<Job>| {
                let deliveries = jobs.len();
                let ids: Vec<&str> = jobs
                    .iter()
                    .flat_map(|job| job.ids.iter().map(String::as_str))
                    .collect();
                let result = writer
                    .record(&ids, SystemTime::now())
                    .and_then(|()| writer.flush_blocking());
                metrics::histogram!("hookline_processed_batch_deliveries")
                    .record(deliveries as f64);
                for job in jobs {
                    let _ = job.reply.send(result.clone());
                }
            },
            || {},
        )?;
        Ok(Self {
            store,
            commits: Arc::new(commits),
        })
    }

    /// Records `ids` as published; returns once they are flushed to the store's file.
    pub(crate) async fn record(&self, ids: Vec<String>) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        self.commits
            .submit(Job { ids, reply })
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// Finishes what is queued and stops the thread.
    pub(crate) async fn close(&self) {
        self.commits.close().await;
    }

    fn stopped(&self) -> StorageError {
        StorageError::new(
            Store::Processed,
            self.store.dir(),
            "record ids",
            Failure::Closed,
            "the recorder has stopped",
        )
    }
}
