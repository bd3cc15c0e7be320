//! Durable local spool for verified deliveries while the broker is down, blocked or slow.
//!
//! The ingress may answer 200 for a spooled delivery only once it survives a crash or power
//! loss, so every append resolves only after the redb commit holding it has been fsynced
//! (`Durability::Immediate`). One fsync per delivery would cap throughput at the disk's sync
//! rate, so a single writer thread group-commits: it takes the first queued request, drains
//! whatever else is already queued, applies all of it in one write transaction and one fsync,
//! then answers every waiter. Removals by the drainer share that thread because redb allows
//! one writer at a time and they ride along in the same fsync.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageError,
    TableDefinition,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// File name of the spool inside its directory.
const FILE_NAME: &str = "spool.redb";

/// Records by sequence number. The value is our own versioned encoding (see [`encode`]) rather
/// than a redb tuple of `&str`: redb decodes `&str` with `from_utf8(..).unwrap()`, so one bad
/// byte on disk would panic the process, and a version byte lets later releases add fields
/// without migrating the table.
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

/// Small bookkeeping values that must survive restarts.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Persisted high-water mark, so sequence numbers keep increasing even after the spool was
/// drained empty and reopened (then the records table alone would restart at 1).
const NEXT_SEQ: &str = "next_seq";

/// Upper bound on requests per transaction: keeps one commit's latency bounded under a flood.
const MAX_BATCH: usize = 1024;

/// Room for a few full batches; beyond that `append` waits, which is the backpressure we want.
const QUEUE_DEPTH: usize = 4 * MAX_BATCH;

/// Version byte of the record encoding below.
const FORMAT_V1: u8 = 1;

/// One verified delivery waiting in the spool for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    /// Delivery id (UUID text).
    pub delivery_id: String,
    /// Configured source name the delivery arrived on.
    pub source: String,
    /// Provider name of that source.
    pub provider: String,
    /// When the ingress received it (RFC 3339 text).
    pub received_at: String,
    /// Raw body exactly as received.
    pub body: Vec<u8>,
}

/// Spool errors; each message names the spool file and what failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool file or its directory could not be created or opened.
    #[error("spool {}: open failed: {cause}", .path.display())]
    Open {
        /// Path of the spool file.
        path: PathBuf,
        /// What redb or the OS reported (redb errors expose no `source()`, so it is in the text).
        cause: Arc<redb::Error>,
    },
    /// Starting or filling a write transaction failed.
    #[error("spool {}: write failed: {cause}", .path.display())]
    Write {
        /// Path of the spool file.
        path: PathBuf,
        /// What redb or the OS reported.
        cause: Arc<redb::Error>,
    },
    /// Committing (writing out and fsyncing) a transaction failed; nothing in it is acknowledged.
    #[error("spool {}: commit/fsync failed: {cause}", .path.display())]
    Commit {
        /// Path of the spool file.
        path: PathBuf,
        /// What redb or the OS reported.
        cause: Arc<redb::Error>,
    },
    /// A read transaction failed.
    #[error("spool {}: read failed: {cause}", .path.display())]
    Read {
        /// Path of the spool file.
        path: PathBuf,
        /// What redb or the OS reported.
        cause: Arc<redb::Error>,
    },
    /// A stored record does not decode; remove it by `seq` to let draining continue.
    #[error("spool {}: record {seq} is corrupt: {reason}", .path.display())]
    Corrupt {
        /// Path of the spool file.
        path: PathBuf,
        /// Sequence number of the bad record.
        seq: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The database is not open right now: reopening it after a failed write has not succeeded
    /// yet (the next write retries).
    #[error("spool {}: not open (reopening after a failed write)", .path.display())]
    Unavailable {
        /// Path of the spool file.
        path: PathBuf,
    },
    /// The spool was closed or its writer thread has stopped.
    #[error("spool {}: closed", .path.display())]
    Closed {
        /// Path of the spool file.
        path: PathBuf,
    },
}

impl SpoolError {
    /// True when the OS reported the disk (or quota) full, so callers can tell it from a bug.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Open { cause, .. }
            | Self::Write { cause, .. }
            | Self::Commit { cause, .. }
            | Self::Read { cause, .. } => match cause.as_ref() {
                redb::Error::Io(e) => io_is_full(e),
                _ => false,
            },
            _ => false,
        }
    }
}

fn io_is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

/// Durable local queue of deliveries (cheap to clone; Arc inside).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    // Declared before `writer` on purpose: fields drop in order, so the channel closes first
    // and the writer thread can finish and release the file before `WriterThread` joins it.
    tx: mpsc::Sender<Request>,
    writer: WriterThread,
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
    #[cfg(test)]
    fail_next_commit: AtomicBool,
}

impl Shared {
    fn closed(&self) -> SpoolError {
        SpoolError::Closed {
            path: self.path.clone(),
        }
    }
}

/// Joins the writer thread when the last handle goes away, so that a process that drops the
/// spool and opens it again does not race the old writer for redb's file lock.
struct WriterThread(Mutex<Option<JoinHandle<()>>>);

impl WriterThread {
    fn take(&self) -> Option<JoinHandle<()>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(handle) = self.take() {
            // A panic in the writer has already failed every waiter; nothing left to report.
            let _ = handle.join();
        }
    }
}

enum Request {
    Job(Job),
    Close { done: oneshot::Sender<()> },
}

/// The requests that go into a write transaction.
enum Job {
    Append {
        value: Vec<u8>,
        reply: oneshot::Sender<Result<u64, SpoolError>>,
    },
    Remove {
        seqs: Vec<u64>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// Rewrites the sequence high-water mark: a real fsynced commit that changes nothing.
    Probe {
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
}

impl Spool {
    /// Opens (creating `dir` and `dir/spool.redb` if needed) and starts the writer thread; a file left by a killed process (kill -9) must reopen cleanly with every committed record.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let path = dir.join(FILE_NAME);
        let open_err = |e: io::Error| SpoolError::Open {
            path: path.clone(),
            cause: Arc::new(redb::Error::Io(e)),
        };
        let dir_existed = dir.is_dir();
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let file_existed = path.exists();
        let (db, state) = open_db(&path)?;
        // A file that fsyncs its data but whose directory entry is lost at power failure is
        // gone all the same, so new entries are made durable too.
        if !file_existed {
            sync_dir(dir).map_err(open_err)?;
        }
        if !dir_existed && let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(open_err)?;
        }

        let shared = Arc::new(Shared {
            path: path.clone(),
            db: RwLock::new(Some(db)),
            depth: AtomicU64::new(state.depth),
            healthy: AtomicBool::new(true),
            commits: AtomicU64::new(0),
            #[cfg(test)]
            fail_next_commit: AtomicBool::new(false),
        });
        metrics::gauge!("hookline_spool_depth").set(state.depth as f64);
        info!(path = %path.display(), depth = state.depth, next_seq = state.next_seq, "Spool opened.");

        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer {
            shared: shared.clone(),
            rx,
            next_seq: state.next_seq,
            needs_reopen: false,
        };
        let handle = std::thread::Builder::new()
            .name("hookline-spool".to_owned())
            .spawn(move || writer.run())
            .map_err(open_err)?;
        Ok(Spool {
            inner: Arc::new(Inner {
                shared,
                tx,
                writer: WriterThread(Mutex::new(Some(handle))),
            }),
        })
    }

    /// Appends one record; resolves only after the commit that holds it is fsynced; returns its sequence number (strictly increasing, continues after reopen).
    pub async fn append(&self, record: SpoolRecord) -> Result<u64, SpoolError> {
        // Encoding here keeps that CPU work off the single writer thread.
        let value = encode(&record);
        let (reply, answer) = oneshot::channel();
        self.send(Request::Job(Job::Append { value, reply }))
            .await?;
        answer
            .await
            .unwrap_or_else(|_| Err(self.inner.shared.closed()))
    }

    /// Up to `limit` oldest records, oldest first (runs a read transaction; callable from async code, it is fast).
    pub fn oldest(&self, limit: usize) -> Result<Vec<(u64, SpoolRecord)>, SpoolError> {
        let shared = &self.inner.shared;
        let read_err = |e: redb::Error| SpoolError::Read {
            path: shared.path.clone(),
            cause: Arc::new(e),
        };
        let guard = shared.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = match guard.as_ref() {
            Some(db) => db,
            None if self.inner.tx.is_closed() => return Err(shared.closed()),
            None => {
                return Err(SpoolError::Unavailable {
                    path: shared.path.clone(),
                });
            }
        };
        let txn = db.begin_read().map_err(|e| read_err(e.into()))?;
        let table = txn.open_table(RECORDS).map_err(|e| read_err(e.into()))?;
        let mut out = Vec::with_capacity(limit.min(MAX_BATCH));
        for entry in table.iter().map_err(|e| read_err(e.into()))?.take(limit) {
            let (key, value) = entry.map_err(|e| read_err(e.into()))?;
            let seq = key.value();
            let record = decode(value.value()).map_err(|reason| SpoolError::Corrupt {
                path: shared.path.clone(),
                seq,
                reason,
            })?;
            out.push((seq, record));
        }
        Ok(out)
    }

    /// Removes records by sequence number (after their broker confirm), durably.
    pub async fn remove(&self, seqs: Vec<u64>) -> Result<(), SpoolError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Job(Job::Remove { seqs, reply })).await?;
        answer
            .await
            .unwrap_or_else(|_| Err(self.inner.shared.closed()))
    }

    /// Commits and fsyncs one unchanged bookkeeping value: whether the disk takes writes.
    pub async fn probe(&self) -> Result<(), SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Job(Job::Probe { reply })).await?;
        answer
            .await
            .unwrap_or_else(|_| Err(self.inner.shared.closed()))
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

    /// Stops the writer after finishing queued requests, and waits for it (graceful shutdown).
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.inner.tx.send(Request::Close { done }).await.is_ok() {
            // An error only means the writer already exited, which is what we wait for.
            let _ = finished.await;
        }
        if let Some(handle) = self.inner.writer.take() {
            // The writer has answered `done` as its last act, so this join does not block long.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    async fn send(&self, request: Request) -> Result<(), SpoolError> {
        self.inner
            .tx
            .send(request)
            .await
            .map_err(|_| self.inner.shared.closed())
    }

    #[cfg(test)]
    fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }
}

/// What a freshly opened file says about where to continue.
struct Recovered {
    next_seq: u64,
    depth: u64,
}

fn open_db(path: &Path) -> Result<(Database, Recovered), SpoolError> {
    let err = |e: redb::Error| SpoolError::Open {
        path: path.to_owned(),
        cause: Arc::new(e),
    };
    // A plain open trusts the file and may panic on a page damaged outside redb; the check
    // turns that into an error. The spool is small when healthy, so the full read is cheap.
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| err(e.into()))?;
    // Creating both tables up front means readers never meet a missing table.
    let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| err(e.into()))?;
    let recovered = {
        let records = txn.open_table(RECORDS).map_err(|e| err(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let depth = records.len().map_err(|e| err(e.into()))?;
        let after_last = records
            .last()
            .map_err(|e| err(e.into()))?
            .map_or(1, |(k, _)| k.value().saturating_add(1));
        let stored = meta
            .get(NEXT_SEQ)
            .map_err(|e| err(e.into()))?
            .map_or(1, |v| v.value());
        Recovered {
            next_seq: after_last.max(stored),
            depth,
        }
    };
    txn.commit().map_err(|e| err(e.into()))?;
    Ok((db, recovered))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing here; NTFS journals the entry itself.
    Ok(())
}

/// The writer thread's state; only it ever opens write transactions.
struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Request>,
    // Never moves backwards, not even after a failed commit: the failed transaction may still
    // have reached the disk, and reusing its numbers would overwrite those records.
    next_seq: u64,
    needs_reopen: bool,
}

impl Writer {
    fn run(mut self) {
        let mut closers = Vec::new();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = self.rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Close { done } => {
                        // Refuses new requests but keeps what is queued, so it still gets done.
                        self.rx.close();
                        closers.push(done);
                    }
                    Request::Job(job) => batch.push(job),
                }
                if batch.len() < MAX_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(std::mem::take(&mut batch));
            }
        }
        let db = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(db) = db
            && let Err(e) = db.close()
        {
            warn!(path = %self.shared.path.display(), error = %e, "Spool close failed.");
        }
        for done in closers {
            let _ = done.send(());
        }
    }

    fn commit(&mut self, batch: Vec<Job>) {
        if self.needs_reopen
            && let Err(e) = self.reopen()
        {
            // Still failing since the write that made it unhealthy, which was logged.
            debug!(path = %self.shared.path.display(), error = %e, "Spool reopen failed.");
            fail_all(batch, &e);
            return;
        }
        let started = Instant::now();
        match self.write(&batch) {
            Ok(Applied {
                outcomes,
                added,
                removed,
            }) => {
                let elapsed = started.elapsed().as_secs_f64();
                let shared = &self.shared;
                let depth = shared
                    .depth
                    .load(Ordering::Relaxed)
                    .saturating_add(added)
                    .saturating_sub(removed);
                shared.depth.store(depth, Ordering::Relaxed);
                shared.commits.fetch_add(1, Ordering::Relaxed);
                metrics::gauge!("hookline_spool_depth").set(depth as f64);
                metrics::counter!("hookline_spool_appends_total").increment(added);
                metrics::counter!("hookline_spool_commits_total").increment(1);
                metrics::histogram!("hookline_spool_commit_seconds").record(elapsed);
                if !shared.healthy.swap(true, Ordering::Relaxed) {
                    info!(path = %shared.path.display(), depth, "Spool writes succeed again.");
                }
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    answer_one(job, outcome);
                }
            }
            Err(e) => {
                // One line per change of health: a full disk fails every batch and probe.
                if self.shared.healthy.swap(false, Ordering::Relaxed) {
                    warn!(
                        path = %self.shared.path.display(),
                        error = %e,
                        requests = batch.len(),
                        disk_full = e.is_disk_full(),
                        "Spool write failed; retrying in the background."
                    );
                } else {
                    debug!(
                        path = %self.shared.path.display(),
                        error = %e,
                        requests = batch.len(),
                        "Spool write still failing."
                    );
                }
                self.needs_reopen = true;
                // redb fails every later read and write with `PreviousIo` until the database
                // is reopened. Reopening now rather than at the next write keeps `oldest`
                // working, so the drainer can still free space while the disk is full. The
                // lock is taken before the waiters hear of the failure, so none of them can
                // read through the failed handle; they hear before the reopen, which reads
                // the whole file, so the ingress can fall back without waiting for it.
                let shared = self.shared.clone();
                let mut slot = shared.db.write().unwrap_or_else(PoisonError::into_inner);
                fail_all(batch, &e);
                if let Err(e) = self.reopen_locked(&mut slot) {
                    warn!(path = %shared.path.display(), error = %e, "Spool reopen failed.");
                }
            }
        }
    }

    /// Applies one batch in one transaction; returns each job's outcome and the depth change.
    fn write(&mut self, batch: &[Job]) -> Result<Applied, SpoolError> {
        let shared = self.shared.clone();
        let path = &shared.path;
        let write_err = |e: redb::Error| SpoolError::Write {
            path: path.clone(),
            cause: Arc::new(e),
        };
        let guard = shared.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            return Err(SpoolError::Unavailable { path: path.clone() });
        };
        let mut txn = db.begin_write().map_err(|e| write_err(e.into()))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| write_err(e.into()))?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let (mut added, mut removed) = (0u64, 0u64);
        let mut probed = false;
        {
            let mut records = txn.open_table(RECORDS).map_err(|e| write_err(e.into()))?;
            for request in batch {
                match request {
                    Job::Append { value, .. } => {
                        let seq = self.next_seq;
                        match records.insert(seq, value.as_slice()) {
                            Ok(_) => {
                                self.next_seq += 1;
                                added += 1;
                                outcomes.push(Ok(seq));
                            }
                            // Checked before anything is changed, so only this record fails.
                            Err(e @ StorageError::ValueTooLarge(_)) => {
                                outcomes.push(Err(write_err(e.into())));
                            }
                            Err(e) => return Err(write_err(e.into())),
                        }
                    }
                    Job::Remove { seqs, .. } => {
                        for seq in seqs {
                            if records
                                .remove(*seq)
                                .map_err(|e| write_err(e.into()))?
                                .is_some()
                            {
                                removed += 1;
                            }
                        }
                        outcomes.push(Ok(0));
                    }
                    Job::Probe { .. } => {
                        probed = true;
                        outcomes.push(Ok(0));
                    }
                }
            }
            if added > 0 || probed {
                let mut meta = txn.open_table(META).map_err(|e| write_err(e.into()))?;
                meta.insert(NEXT_SEQ, self.next_seq)
                    .map_err(|e| write_err(e.into()))?;
            }
        }
        #[cfg(test)]
        if shared.fail_next_commit.swap(false, Ordering::Relaxed) {
            return Err(SpoolError::Commit {
                path: path.clone(),
                cause: Arc::new(redb::Error::Io(io::ErrorKind::StorageFull.into())),
            });
        }
        txn.commit().map_err(|e| SpoolError::Commit {
            path: path.clone(),
            cause: Arc::new(e.into()),
        })?;
        Ok(Applied {
            outcomes,
            added,
            removed,
        })
    }

    fn reopen(&mut self) -> Result<(), SpoolError> {
        let shared = self.shared.clone();
        let mut slot = shared.db.write().unwrap_or_else(PoisonError::into_inner);
        self.reopen_locked(&mut slot)
    }

    /// Closes and reopens the file; the caller holds the write lock, which keeps readers waiting
    /// for the fresh handle instead of reading through the failed one.
    fn reopen_locked(&mut self, slot: &mut Option<Database>) -> Result<(), SpoolError> {
        if let Some(old) = slot.take() {
            // The old handle is failed already; its close error adds nothing.
            let _ = old.close();
        }
        let shared = &self.shared;
        let (db, state) = open_db(&shared.path)?;
        *slot = Some(db);
        self.next_seq = self.next_seq.max(state.next_seq);
        // The failed commit may or may not have reached the disk; the file is the truth.
        shared.depth.store(state.depth, Ordering::Relaxed);
        metrics::gauge!("hookline_spool_depth").set(state.depth as f64);
        self.needs_reopen = false;
        // Follows every failed write, so it is as frequent as they are: not an operator's line.
        debug!(path = %shared.path.display(), depth = state.depth, "Spool reopened after a failed write.");
        Ok(())
    }
}

/// What one committed batch did.
struct Applied {
    /// One per job, in batch order.
    outcomes: Vec<Result<u64, SpoolError>>,
    added: u64,
    removed: u64,
}

/// Sends one job its outcome; a remove's `Ok` carries no number.
fn answer_one(job: Job, outcome: Result<u64, SpoolError>) {
    // A dropped receiver means the caller gave up waiting; a committed record stays durable.
    match job {
        Job::Append { reply, .. } => {
            let _ = reply.send(outcome);
        }
        Job::Remove { reply, .. } | Job::Probe { reply } => {
            let _ = reply.send(outcome.map(|_| ()));
        }
    }
}

fn fail_all(batch: Vec<Job>, error: &SpoolError) {
    for job in batch {
        answer_one(job, Err(error.clone()));
    }
}

/// Encoding v1: one version byte; then `delivery_id`, `source`, `provider` and `received_at`,
/// each as a little-endian u32 length and UTF-8 bytes; then the body as the rest of the value
/// (its length is implied, so the body is stored once and never copied into a length field).
fn encode(record: &SpoolRecord) -> Vec<u8> {
    let fields = [
        &record.delivery_id,
        &record.source,
        &record.provider,
        &record.received_at,
    ];
    let len = 1 + fields.iter().map(|f| 4 + f.len()).sum::<usize>() + record.body.len();
    let mut out = Vec::with_capacity(len);
    out.push(FORMAT_V1);
    for field in fields {
        // Header fields come from our own config and uuid/time formatting, far below 4 GiB.
        let n = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&field.as_bytes()[..n as usize]);
    }
    out.extend_from_slice(&record.body);
    out
}

fn decode(bytes: &[u8]) -> Result<SpoolRecord, &'static str> {
    let (&version, mut rest) = bytes.split_first().ok_or("empty value")?;
    if version != FORMAT_V1 {
        return Err("unknown format version");
    }
    let mut text = || -> Result<String, &'static str> {
        let (len, after) = rest.split_first_chunk::<4>().ok_or("truncated length")?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| "length too large")?;
        if after.len() < len {
            return Err("truncated field");
        }
        let (field, after) = after.split_at(len);
        rest = after;
        String::from_utf8(field.to_vec()).map_err(|_| "field is not UTF-8")
    };
    let delivery_id = text()?;
    let source = text()?;
    let provider = text()?;
    let received_at = text()?;
    Ok(SpoolRecord {
        delivery_id,
        source,
        provider,
        received_at,
        body: rest.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    /// Set in the child process of the crash test; names the spool directory.
    const CRASH_DIR_ENV: &str = "HOOKLINE_SPOOL_CRASH_DIR";

    /// Makes the next commit fail as a full disk would.
    fn fail_next_commit(spool: &Spool) {
        spool
            .inner
            .shared
            .fail_next_commit
            .store(true, Ordering::Relaxed);
    }

    /// Sequence numbers of the first 100 records, oldest first.
    fn stored_seqs(spool: &Spool) -> Vec<u64> {
        spool.oldest(100).unwrap().iter().map(|(s, _)| *s).collect()
    }

    fn record(id: &str) -> SpoolRecord {
        SpoolRecord {
            delivery_id: id.to_owned(),
            source: "shop".to_owned(),
            provider: "aisle".to_owned(),
            received_at: "2026-05-01T12:00:00Z".to_owned(),
            // Bytes that are not UTF-8 prove the body is kept as raw bytes.
            body: [id.as_bytes(), &[0xff, 0x00, 0xfe]].concat().repeat(40),
        }
    }

    #[tokio::test]
    async fn append_oldest_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth(), 0);
        assert!(spool.oldest(10).unwrap().is_empty());

        let mut seqs = Vec::new();
        for id in ["a", "b", "c"] {
            seqs.push(spool.append(record(id)).await.unwrap());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(spool.depth(), 3);

        let all = spool.oldest(10).unwrap();
        let expected: Vec<_> = seqs
            .iter()
            .copied()
            .zip(["a", "b", "c"].map(record))
            .collect();
        assert_eq!(all, expected);
        assert_eq!(spool.oldest(2).unwrap(), expected[..2]);

        spool.remove(vec![seqs[0], seqs[1]]).await.unwrap();
        assert_eq!(spool.depth(), 1);
        assert_eq!(spool.oldest(10).unwrap(), expected[2..]);

        // Removing what is gone (a redelivered confirm) is harmless and keeps depth right.
        spool.remove(vec![seqs[0], 999_999]).await.unwrap();
        spool.remove(Vec::new()).await.unwrap();
        assert_eq!(spool.depth(), 1);
        assert!(spool.healthy());
        spool.close().await;
    }

    #[tokio::test]
    async fn reopen_keeps_records_and_sequence_continues() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut seqs = Vec::new();
        for i in 0..5 {
            seqs.push(spool.append(record(&format!("r{i}"))).await.unwrap());
        }
        spool.remove(vec![seqs[0], seqs[3]]).await.unwrap();
        let before = spool.oldest(100).unwrap();
        drop(spool);

        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth(), 3);
        assert_eq!(spool.oldest(100).unwrap(), before);
        let next = spool.append(record("after")).await.unwrap();
        assert!(next > seqs[4], "{next} after {seqs:?}");

        // Even a spool drained empty must not hand out old numbers again.
        let all = stored_seqs(&spool);
        spool.remove(all).await.unwrap();
        assert_eq!(spool.depth(), 0);
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth(), 0);
        assert!(spool.append(record("again")).await.unwrap() > next);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let spool = spool.clone();
                tokio::spawn(async move { spool.append(record(&format!("g{i}"))).await })
            })
            .collect();
        let mut seqs = HashSet::new();
        for task in tasks {
            assert!(seqs.insert(task.await.unwrap().unwrap()));
        }
        let commits = spool.commit_count();
        assert_eq!(spool.depth(), 500);
        assert!(commits <= 50, "500 appends took {commits} commits");
        assert_eq!(spool.oldest(1000).unwrap().len(), 500);
    }

    #[tokio::test]
    async fn close_then_append_fails_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // Queued before close: each is either finished or refused, never lost silently.
        let queued: Vec<_> = (0..50)
            .map(|i| {
                let spool = spool.clone();
                tokio::spawn(async move { spool.append(record(&format!("q{i}"))).await })
            })
            .collect();
        tokio::task::yield_now().await;
        spool.close().await;

        let late = tokio::time::timeout(Duration::from_secs(5), spool.append(record("late")))
            .await
            .expect("append after close hung");
        assert!(matches!(late, Err(SpoolError::Closed { .. })), "{late:?}");
        let removal = tokio::time::timeout(Duration::from_secs(5), spool.remove(vec![1]))
            .await
            .expect("remove after close hung");
        assert!(
            matches!(removal, Err(SpoolError::Closed { .. })),
            "{removal:?}"
        );
        assert!(matches!(spool.oldest(1), Err(SpoolError::Closed { .. })));
        spool.close().await;

        let mut acked = Vec::new();
        for task in queued {
            match task.await.unwrap() {
                Ok(seq) => acked.push(seq),
                Err(SpoolError::Closed { .. }) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        // close released the file, so the same process can open it at once.
        let reopened = Spool::open(dir.path()).unwrap();
        assert_eq!(stored_seqs(&reopened), acked);
    }

    #[tokio::test]
    async fn failed_commit_fails_every_waiter_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let kept = spool.append(record("kept")).await.unwrap();

        fail_next_commit(&spool);
        let waiters: Vec<_> = (0..20)
            .map(|i| {
                let spool = spool.clone();
                tokio::spawn(async move { spool.append(record(&format!("f{i}"))).await })
            })
            .collect();
        let mut failed = 0;
        for waiter in waiters {
            // Everyone in the failed batch hears about it; later batches commit normally.
            if let Err(e) = waiter.await.unwrap() {
                assert!(e.is_disk_full(), "{e}");
                assert!(e.to_string().contains("spool.redb"), "{e}");
                failed += 1;
            }
        }
        assert!(failed >= 1);

        fail_next_commit(&spool);
        let alone = spool.append(record("alone")).await;
        assert!(matches!(alone, Err(SpoolError::Commit { .. })), "{alone:?}");
        failed += 1;
        assert!(!spool.healthy());

        let next = spool.append(record("next")).await.unwrap();
        assert!(next > kept);
        assert!(spool.healthy());
        let stored = spool.oldest(100).unwrap();
        assert_eq!(stored.len() as u64, spool.depth());
        assert_eq!(stored.len(), 21 + 2 - failed);
        assert_eq!(stored[0], (kept, record("kept")));
        assert_eq!(stored.last().unwrap(), &(next, record("next")));
    }

    #[tokio::test]
    async fn prober_restores_health_without_any_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let kept = spool.append(record("kept")).await.unwrap();
        fail_next_commit(&spool);
        assert!(spool.append(record("lost")).await.is_err());
        assert!(!spool.healthy());
        let commits = spool.inner.shared.commits.load(Ordering::Relaxed);

        let stop = CancellationToken::new();
        let prober = spool.spawn_prober(Duration::from_millis(10), stop.clone());
        tokio::time::timeout(Duration::from_secs(5), async {
            while !spool.healthy() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a probe commit made the spool healthy again");
        // Healthy spools are not probed: no commit without work.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            spool.inner.shared.commits.load(Ordering::Relaxed),
            commits + 1
        );
        stop.cancel();
        prober.await.unwrap();

        assert_eq!(spool.depth(), 1);
        let next = spool.append(record("next")).await.unwrap();
        assert!(next > kept + 1, "the failed append's number is not reused");
        drop(spool);
        let reopened = Spool::open(dir.path()).unwrap();
        assert_eq!(stored_seqs(&reopened), vec![kept, next]);
    }

    #[tokio::test]
    async fn corrupt_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let good = spool.append(record("good")).await.unwrap();
        {
            // The writer thread is idle, so this transaction does not wait for it.
            let guard = spool.inner.shared.db.read().unwrap();
            let txn = guard.as_ref().unwrap().begin_write().unwrap();
            txn.open_table(RECORDS)
                .unwrap()
                .insert(0, [FORMAT_V1, 9, 0, 0, 0, 0xff].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        match spool.oldest(10) {
            Err(SpoolError::Corrupt { seq: 0, .. }) => {}
            other => panic!("expected a corrupt record error, got {other:?}"),
        }
        spool.remove(vec![0]).await.unwrap();
        assert_eq!(spool.oldest(10).unwrap(), [(good, record("good"))]);
    }

    #[test]
    fn decode_rejects_bad_bytes() {
        let good = encode(&record("x"));
        assert_eq!(decode(&good), Ok(record("x")));
        assert_eq!(decode(&[]), Err("empty value"));
        assert_eq!(decode(&[2]), Err("unknown format version"));
        assert_eq!(decode(&[FORMAT_V1, 1, 0]), Err("truncated length"));
        assert_eq!(
            decode(&[FORMAT_V1, 5, 0, 0, 0, b'a']),
            Err("truncated field")
        );
        assert_eq!(
            decode(&[FORMAT_V1, 1, 0, 0, 0, 0xc3]),
            Err("field is not UTF-8")
        );
        for cut in 0..good.len() - record("x").body.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// Not a test on its own: the child side of `kill_9_keeps_every_acknowledged_record`,
    /// which runs this binary again with only this test and the directory in the environment.
    #[test]
    fn crash_child_appends_until_killed() {
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let spool = Spool::open(Path::new(&dir)).unwrap();
            let appenders: Vec<_> = (0..16)
                .map(|task| {
                    let spool = spool.clone();
                    tokio::spawn(async move {
                        // Bounded so an orphaned child stops by itself.
                        for i in 0..20_000 {
                            let id = format!("c{}-{task}-{i}", std::process::id());
                            let seq = spool.append(record(&id)).await.unwrap();
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "ACK {seq} {id}").unwrap();
                            out.flush().unwrap();
                        }
                    })
                })
                .collect();
            for appender in appenders {
                appender.await.unwrap();
            }
        });
    }

    /// Runs the crash child on `dir`, SIGKILLs it after `wanted` acknowledgements and adds every
    /// acknowledged `seq -> delivery id` to `acked`.
    fn run_and_kill_child(dir: &Path, wanted: usize, acked: &mut BTreeMap<u64, String>) {
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, m)| m);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("{module}::crash_child_appends_until_killed"),
                "--nocapture",
            ])
            .env(CRASH_DIR_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut note = |line: String| {
            // Only whole lines count: a line cut by the kill was never fully acknowledged.
            if let Some((seq, id)) = line.strip_prefix("ACK ").and_then(|r| r.split_once(' ')) {
                let previous = acked.insert(seq.parse().unwrap(), id.to_owned());
                assert!(previous.is_none(), "seq {seq} acknowledged twice");
            }
        };
        let mut seen = 0;
        while seen < wanted {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("crash child stopped acknowledging");
            seen += usize::from(line.starts_with("ACK "));
            note(line);
        }
        // Mid-stream: sixteen appenders are still waiting on commits when SIGKILL lands.
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        for line in lines.try_iter() {
            note(line);
        }
    }

    #[test]
    fn kill_9_keeps_every_acknowledged_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut acked = BTreeMap::new();
        // Later rounds start from a file that was itself recovered from a kill.
        for _ in 0..3 {
            run_and_kill_child(dir.path(), 300, &mut acked);
        }
        assert!(acked.len() >= 900);

        let spool = Spool::open(dir.path()).unwrap();
        let stored: BTreeMap<u64, SpoolRecord> =
            spool.oldest(usize::MAX).unwrap().into_iter().collect();
        for (seq, id) in &acked {
            assert_eq!(
                stored.get(seq),
                Some(&record(id)),
                "acknowledged seq {seq} lost"
            );
        }
        assert_eq!(spool.depth(), stored.len() as u64);
        let last = *acked.keys().next_back().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let next = runtime
            .block_on(spool.append(record("after-crash")))
            .unwrap();
        assert!(next > last);
    }
}
