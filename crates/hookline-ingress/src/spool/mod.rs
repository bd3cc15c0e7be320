//! Durable local spool for verified deliveries while the broker is down, blocked or slow.
//!
//! The ingress may answer 200 for a spooled delivery only once it survives a crash or power
//! loss, so every append resolves only after the redb commit holding it has been fsynced
//! (`Durability::Immediate`). One fsync per delivery would cap throughput at the disk's sync
//! rate, so the writer group-commits ([`hookline_core::group_commit`]): it takes the first
//! queued request, drains whatever else is already queued, applies all of it in one write
//! transaction and one fsync, then answers every waiter. Removals by the drainer share that
//! thread because redb allows one writer at a time and they ride along in the same fsync.
//!
//! Records are [`hookline_core::wire`] records; `drain` publishes them.

pub(crate) mod drain;
mod file;
pub mod orphans;
mod writer;

use hookline_core::VerifiedDelivery;
use hookline_core::group_commit::GroupCommit;
use hookline_core::storage::{Failure, StorageError, Store};
use hookline_core::wire;
use redb::{Database, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::info;
use writer::{Job, Writer};

/// Upper bound on requests per transaction: keeps one commit's latency bounded under a flood.
const MAX_BATCH: usize = 1024;

/// Room for a few full batches; beyond that `append` waits, which is the backpressure we want.
const QUEUE_DEPTH: usize = 4 * MAX_BATCH;

/// Durable local queue of deliveries (cheap to clone; Arc inside).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    writer: GroupCommit<Job>,
}

/// State both the writer thread and the handles read.
struct Shared {
    path: PathBuf,
    // Readers hold the read lock for the whole read transaction so that the writer, when it
    // must reopen the file after an I/O error, can take it out and close it (redb keeps
    // failing with `PreviousIo` until the database is closed and reopened).
    db: RwLock<Option<Database>>,
    depth: AtomicU64,
    healthy: AtomicBool,
    commits: AtomicU64,
    /// Whether this spool's depth and commits are the process's metrics (not for a spool
    /// opened only to drain it).
    reported: bool,
    #[cfg(test)]
    fail_next_commit: AtomicBool,
}

impl Shared {
    /// Sets `hookline_spool_depth` if this spool reports.
    fn report_depth(&self, depth: u64) {
        if self.reported {
            metrics::gauge!("hookline_spool_depth").set(depth as f64);
        }
    }
}

impl Shared {
    fn unavailable(&self) -> StorageError {
        StorageError::new(
            Store::Spool,
            &self.path,
            "read",
            Failure::Unavailable,
            "not open (reopening after a failed write)",
        )
    }
}

impl Spool {
    /// Opens (creating `dir` and `dir/spool.redb` if needed) and starts the writer thread; a
    /// file left by a killed process (kill -9) reopens with every committed record. Fails
    /// with [`Failure::Locked`] while another process has it open.
    ///
    /// Blocking (it reads and checks the whole file): call it off the async runtime.
    pub fn open(dir: &Path) -> Result<Spool, StorageError> {
        Self::open_as(dir, true)
    }

    /// Opens a spool to drain it: its depth and commits are not the process's metrics.
    pub fn open_to_drain(dir: &Path) -> Result<Spool, StorageError> {
        Self::open_as(dir, false)
    }

    fn open_as(dir: &Path, reported: bool) -> Result<Spool, StorageError> {
        let path = dir.join(file::FILE_NAME);
        let io_err = |e| StorageError::io(Store::Spool, &path, "open", e);
        let dir_existed = dir.is_dir();
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let file_existed = path.exists();
        let (db, state) = file::open(&path)?;
        if !file_existed {
            file::sync_dir(dir).map_err(io_err)?;
        }
        if !dir_existed && let Some(parent) = dir.parent() {
            file::sync_dir(parent).map_err(io_err)?;
        }

        let shared = Arc::new(Shared {
            path: path.clone(),
            db: RwLock::new(Some(db)),
            depth: AtomicU64::new(state.depth),
            healthy: AtomicBool::new(true),
            commits: AtomicU64::new(0),
            reported,
            #[cfg(test)]
            fail_next_commit: AtomicBool::new(false),
        });
        shared.report_depth(state.depth);
        info!(path = %path.display(), depth = state.depth, next_seq = state.next_seq, "Spool opened.");

        let mut writer = Writer {
            shared: shared.clone(),
            next_seq: state.next_seq,
            needs_reopen: false,
        };
        let last = shared.clone();
        let writer = GroupCommit::spawn(
            "hookline-spool",
            QUEUE_DEPTH,
            MAX_BATCH,
            move |batch| writer.commit(batch),
            move || writer::finish(&last),
        )
        .map_err(io_err)?;
        Ok(Spool {
            inner: Arc::new(Inner { shared, writer }),
        })
    }

    /// Appends one delivery; resolves only after the commit that holds it is fsynced; returns
    /// its sequence number (strictly increasing, continues after reopen).
    pub async fn append(&self, delivery: &VerifiedDelivery) -> Result<u64, StorageError> {
        // Encoding here keeps that CPU work off the single writer thread.
        let value = wire::encode_record(delivery);
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Append { value, reply }).await?;
        answer.await.unwrap_or_else(|_| Err(self.closed()))
    }

    /// Removes records by sequence number (after their broker confirm), durably.
    pub async fn remove(&self, seqs: Vec<u64>) -> Result<(), StorageError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Remove { seqs, reply }).await?;
        answer.await.unwrap_or_else(|_| Err(self.closed()))
    }

    /// Up to `limit` oldest records, oldest first; the read runs on the blocking pool.
    pub async fn oldest(&self, limit: usize) -> Result<Vec<(u64, VerifiedDelivery)>, StorageError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || spool.oldest_blocking(limit))
            .await
            .unwrap_or_else(|_| Err(self.closed()))
    }

    /// [`Spool::oldest`] for callers already off the async runtime.
    pub fn oldest_blocking(
        &self,
        limit: usize,
    ) -> Result<Vec<(u64, VerifiedDelivery)>, StorageError> {
        let shared = &self.inner.shared;
        let read_err = |e: redb::Error| file::error(&shared.path, "read", e);
        let guard = shared.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = match guard.as_ref() {
            Some(db) => db,
            None if self.inner.writer.is_closed() => return Err(self.closed()),
            None => return Err(shared.unavailable()),
        };
        let txn = db.begin_read().map_err(|e| read_err(e.into()))?;
        let table = txn
            .open_table(file::RECORDS)
            .map_err(|e| read_err(e.into()))?;
        let mut out = Vec::with_capacity(limit.min(MAX_BATCH));
        for entry in table.iter().map_err(|e| read_err(e.into()))?.take(limit) {
            let (key, value) = entry.map_err(|e| read_err(e.into()))?;
            let seq = key.value();
            let delivery = wire::decode_record(value.value()).map_err(|reason| {
                StorageError::new(
                    Store::Spool,
                    &shared.path,
                    "decode",
                    Failure::Corrupt { seq },
                    reason,
                )
            })?;
            out.push((seq, delivery));
        }
        Ok(out)
    }

    /// Commits and fsyncs one unchanged bookkeeping value: whether the disk takes writes.
    pub async fn probe(&self) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Probe { reply }).await?;
        answer.await.unwrap_or_else(|_| Err(self.closed()))
    }

    /// Probes every `every` while the spool is unhealthy, until `stop`.
    ///
    /// Without it a spool that failed (disk full) would stay unready after space is freed
    /// until some delivery happened to be spooled, and an unready ingress gets no traffic
    /// from a load balancer, so that could be never.
    pub fn spawn_prober(
        &self,
        every: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let spool = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                if !spool.healthy() {
                    // The writer logs the outcome once per change of health.
                    let _ = spool.probe().await;
                }
            }
        })
    }

    /// How many records are waiting.
    pub fn depth(&self) -> u64 {
        self.inner.shared.depth.load(Ordering::Relaxed)
    }

    /// False after a failed write (e.g. disk full) until a write succeeds again.
    pub fn healthy(&self) -> bool {
        self.inner.shared.healthy.load(Ordering::Relaxed)
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// Stops the writer after finishing queued requests, and waits for it (graceful shutdown).
    pub async fn close(&self) {
        self.inner.writer.close().await;
    }

    async fn submit(&self, job: Job) -> Result<(), StorageError> {
        self.inner
            .writer
            .submit(job)
            .await
            .map_err(|_| self.closed())
    }

    fn closed(&self) -> StorageError {
        writer::closed(&self.inner.shared.path)
    }

    #[cfg(test)]
    fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
