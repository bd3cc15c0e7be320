//! Event ids already published, kept in sled so that a restarted worker still drops duplicates.
//!
//! Two trees: `ids` maps an id to the unix millis it was recorded at (8 bytes, big-endian) and
//! answers `contains`; `by_time` holds `millis ++ id` keys with empty values, so that pruning is a
//! range scan over the oldest keys instead of a walk over every id. Big-endian keeps the
//! byte order of `by_time` keys equal to their time order.

use std::convert::Infallible;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hookline_core::storage::{Failure, StorageError, Store};
use sled::IVec;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const IDS_TREE: &str = "ids";
const BY_TIME_TREE: &str = "by_time";
const META_TREE: &str = "meta";
/// The offset of the last `<prefix>.processed` stream message applied (failover).
const STREAM_OFFSET: &[u8] = b"stream_offset";
const STAMP_LEN: usize = 8;

// sled asserts on a cache below 256 bytes; a floor of 1 MiB also keeps a misconfigured
// tiny cache from turning every lookup into a disk read.
const MIN_CACHE_BYTES: u64 = 1 << 20;

// Each chunk is one transaction, and a multi-tree transaction holds sled's global write lock
// while it commits: small chunks keep `record` and `contains` from stalling behind a big prune.
const PRUNE_CHUNK: usize = 512;

// sled releases its directory lock on a background thread after the last handle drops, so an
// open right after a close (a restart in the same process, or a test) can find it still held.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_POLL: Duration = Duration::from_millis(20);

// tokio's interval panics on a zero period, and pruning more often than this only burns CPU.
const MIN_PRUNE_EVERY: Duration = Duration::from_secs(1);

const IDS_GAUGE: &str = "hookline_processed_ids";
const PRUNED_COUNTER: &str = "hookline_processed_pruned_total";

/// Event ids already published (cheap to clone).
#[derive(Clone)]
pub struct ProcessedStore {
    inner: Arc<Inner>,
}

// Lets holders of a store derive `Debug`; sled's handles would only print internals.
impl fmt::Debug for ProcessedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessedStore")
            .field("dir", &self.inner.dir)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    ids: sled::Tree,
    by_time: sled::Tree,
    meta: sled::Tree,
    // sled's `Tree::len` walks the whole tree; a counter keeps `len` and the gauge O(1).
    len: AtomicUsize,
}

impl ProcessedStore {
    /// Opens or creates the store in `dir` with a page cache of at most `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        Self::open_waiting(dir, cache_bytes, LOCK_WAIT)
    }

    fn open_waiting(
        dir: &Path,
        cache_bytes: u64,
        lock_wait: Duration,
    ) -> Result<Self, StorageError> {
        let sled_err = |op| move |source| sled_error(dir, op, source);
        let db = open_db(dir, cache_bytes, lock_wait)?;
        let ids = db.open_tree(IDS_TREE).map_err(sled_err("open ids tree"))?;
        let by_time = db
            .open_tree(BY_TIME_TREE)
            .map_err(sled_err("open by_time tree"))?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(sled_err("open meta tree"))?;
        // One walk at startup buys an exact count for the life of the process.
        let mut len = 0;
        for key in ids.iter().keys() {
            key.map_err(sled_err("count ids"))?;
            len += 1;
        }
        metrics::gauge!(IDS_GAUGE).set(len as f64);
        metrics::counter!(PRUNED_COUNTER).increment(0);
        info!(dir = %dir.display(), ids = len, cache_bytes, "Opened the processed-id store.");
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db,
                ids,
                by_time,
                meta,
                len: AtomicUsize::new(len),
            }),
        })
    }

    /// Whether `id` was already published.
    pub fn contains(&self, id: &str) -> Result<bool, StorageError> {
        self.inner
            .ids
            .contains_key(id.as_bytes())
            .map_err(|source| self.error("look up id", source))
    }

    /// Records ids published at `at`.
    pub fn record(&self, ids: &[&str], at: SystemTime) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        let millis = unix_millis(at);
        let stamp = millis.to_be_bytes();
        // A multi-tree transaction is sealed in sled's log as one batch, and recovery replays a
        // batch whole or not at all, so a crash cannot leave an id in `ids` without its
        // `by_time` key (which would make it unprunable). Writing `by_time` first would also
        // work, but would rest on sled recovering a prefix of unrelated writes, and it would
        // not protect the read-modify-write below from a concurrent prune.
        let added = (&self.inner.ids, &self.inner.by_time)
            .transaction(|(ids_tx, by_time_tx)| {
                let mut added = 0usize;
                for id in ids {
                    let key = id.as_bytes();
                    match ids_tx.get(key)?.as_deref().map(decode_stamp) {
                        None => added += 1,
                        // Keeping the later time means a clock step backwards can only make
                        // an id live longer, never drop it early.
                        Some(Some(old)) if old >= millis => continue,
                        // The old `by_time` key goes, so that an id has exactly one.
                        Some(Some(old)) => {
                            by_time_tx.remove(time_key(old, key))?;
                        }
                        // A malformed stamp is overwritten; `prune` drops whatever key led to it.
                        Some(None) => {}
                    }
                    ids_tx.insert(key, &stamp[..])?;
                    by_time_tx.insert(time_key(millis, key), &[][..])?;
                }
                Ok::<_, ConflictableTransactionError<Infallible>>(added)
            })
            .map_err(|e| self.transaction_error("record ids", e))?;
        let len = self.inner.len.fetch_add(added, Ordering::Relaxed) + added;
        metrics::gauge!(IDS_GAUGE).set(len as f64);
        Ok(())
    }

    /// Records ids read from the shared history at stream offset `offset`, then remembers
    /// the offset. A crash between the two re-reads from an earlier offset on restart,
    /// which records the same ids again: harmless.
    pub fn record_from_stream(
        &self,
        ids: &[&str],
        at: SystemTime,
        offset: i64,
    ) -> Result<(), StorageError> {
        self.record(ids, at)?;
        self.inner
            .meta
            .insert(STREAM_OFFSET, &offset.to_be_bytes()[..])
            .map_err(|source| self.error("remember the stream offset", source))?;
        Ok(())
    }

    /// The offset of the last shared-history message applied, if any.
    pub fn stream_offset(&self) -> Result<Option<i64>, StorageError> {
        let value = self
            .inner
            .meta
            .get(STREAM_OFFSET)
            .map_err(|source| self.error("read the stream offset", source))?;
        Ok(value.and_then(|v| Some(i64::from_be_bytes(v.as_ref().try_into().ok()?))))
    }

    /// Writes recorded ids to the file; once this returns they survive a kill -9.
    ///
    /// Runs sled's blocking `flush` on the blocking pool: sled 0.34's `flush_async` was seen
    /// to stall every runtime thread when many tasks awaited it at once.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush_blocking())
            .await
            .map_err(|join| self.error("flush", sled::Error::ReportableBug(join.to_string())))?
    }

    /// [`ProcessedStore::flush`] for callers already on a blocking thread.
    pub fn flush_blocking(&self) -> Result<(), StorageError> {
        self.inner
            .db
            .flush()
            .map(drop)
            .map_err(|source| self.error("flush", source))
    }

    /// Removes ids recorded before `cutoff`; returns how many.
    pub fn prune(&self, cutoff: SystemTime) -> Result<usize, StorageError> {
        self.prune_until(cutoff, None)
    }

    /// Which of `ids` were already published, looked up on the blocking pool (sled may read
    /// from disk).
    pub async fn known(&self, ids: Vec<String>) -> Result<Vec<bool>, StorageError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || ids.iter().map(|id| store.contains(id)).collect())
            .await
            .map_err(|join| {
                self.error("look up ids", sled::Error::ReportableBug(join.to_string()))
            })?
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether the store holds no id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the store's files take on disk.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        // sled's own `size_on_disk` leaves out its snapshot files, which grow with the id count.
        dir_size(&self.inner.dir).map_err(|cause| {
            StorageError::io(
                Store::Processed,
                &self.inner.dir,
                "measure size on disk",
                cause,
            )
        })
    }

    /// Prunes ids older than `retention` every `every` until `shutdown` is cancelled (tokio task; logs how many were pruned at INFO only when > 0, errors at WARN).
    pub fn spawn_pruner(
        &self,
        retention: Duration,
        every: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(MIN_PRUNE_EVERY));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let cutoff = SystemTime::now()
                    .checked_sub(retention)
                    .unwrap_or(UNIX_EPOCH);
                let (job, stop) = (store.clone(), shutdown.clone());
                // A prune of many ids takes long enough to stall a runtime worker thread.
                let pruned =
                    tokio::task::spawn_blocking(move || job.prune_until(cutoff, Some(&stop))).await;
                match pruned {
                    Ok(Ok(0)) => {}
                    Ok(Ok(pruned)) => info!(
                        pruned,
                        remaining = store.len(),
                        retention_secs = retention.as_secs(),
                        "Pruned processed ids past retention."
                    ),
                    Ok(Err(error)) => warn!(
                        %error,
                        "Cannot prune processed ids; retrying next interval."
                    ),
                    Err(error) => warn!(
                        %error,
                        "Processed-id prune task failed; retrying next interval."
                    ),
                }
            }
        })
    }

    fn prune_until(
        &self,
        cutoff: SystemTime,
        stop: Option<&CancellationToken>,
    ) -> Result<usize, StorageError> {
        let end = unix_millis(cutoff).to_be_bytes().to_vec();
        let mut start = Bound::Unbounded;
        let mut removed = 0;
        while !stop.is_some_and(CancellationToken::is_cancelled) {
            // A key stamped exactly at the cutoff has `end` as a proper prefix and so sorts after
            // it: `..end` is exactly "recorded before cutoff".
            let chunk = self
                .inner
                .by_time
                .range::<Vec<u8>, _>((start.clone(), Bound::Excluded(end.clone())))
                .keys()
                .take(PRUNE_CHUNK)
                .collect::<Result<Vec<IVec>, _>>()
                .map_err(|source| self.error("scan ids to prune", source))?;
            let Some(last) = chunk.last() else { break };
            start = Bound::Excluded(last.to_vec());
            let pruned = (&self.inner.ids, &self.inner.by_time)
                .transaction(|(ids_tx, by_time_tx)| {
                    let mut pruned = 0usize;
                    for key in &chunk {
                        by_time_tx.remove(key.clone())?;
                        let Some((stamp, id)) = key.split_at_checked(STAMP_LEN) else {
                            continue;
                        };
                        // An id re-recorded since the scan has a newer stamp and stays; its
                        // old key was already removed by `record`, so this one is a leftover.
                        let current = ids_tx.get(id)?;
                        if current.is_some_and(|v| *v == *stamp || decode_stamp(&v).is_none()) {
                            ids_tx.remove(id)?;
                            pruned += 1;
                        }
                    }
                    Ok::<_, ConflictableTransactionError<Infallible>>(pruned)
                })
                .map_err(|e| self.transaction_error("prune ids", e))?;
            removed += pruned;
            // Counted per chunk so that the gauge and counter stay right if a later chunk fails.
            let len = self.inner.len.fetch_sub(pruned, Ordering::Relaxed) - pruned;
            metrics::gauge!(IDS_GAUGE).set(len as f64);
            metrics::counter!(PRUNED_COUNTER).increment(pruned as u64);
        }
        Ok(removed)
    }

    fn error(&self, op: &'static str, source: sled::Error) -> StorageError {
        sled_error(&self.inner.dir, op, source)
    }

    fn transaction_error(
        &self,
        op: &'static str,
        error: TransactionError<Infallible>,
    ) -> StorageError {
        match error {
            TransactionError::Storage(source) => self.error(op, source),
            TransactionError::Abort(never) => match never {},
        }
    }
}

/// Opens sled in `dir`, waiting up to `lock_wait` for a lock that a closing handle still holds.
fn open_db(dir: &Path, cache_bytes: u64, lock_wait: Duration) -> Result<sled::Db, StorageError> {
    // sled counts cache entries by its own size estimate; measured RSS with 1M ids came to
    // about 3x `cache_bytes`, plus roughly 55 bytes per held id and a fixed base, so this
    // bounds memory without pinning it to exactly `cache_bytes`.
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes.max(MIN_CACHE_BYTES));
    let started = Instant::now();
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(cause) if is_lock_held(&cause) => {
                let waited = started.elapsed();
                if waited >= lock_wait {
                    return Err(StorageError::new(
                        Store::Processed,
                        dir,
                        "open",
                        Failure::Locked,
                        format!(
                            "held by another process for {:.1}s; is a second worker using the same storage.dir?",
                            waited.as_secs_f32()
                        ),
                    ));
                }
                std::thread::sleep(LOCK_POLL);
            }
            Err(cause) => return Err(sled_error(dir, "open", cause)),
        }
    }
}

// sled 0.34 reports a held lock as an `Other` I/O error with this text rather than `WouldBlock`.
fn is_lock_held(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().starts_with("could not acquire lock"))
}

fn sled_error(dir: &Path, op: &'static str, cause: sled::Error) -> StorageError {
    match cause {
        sled::Error::Io(io) => StorageError::io(Store::Processed, dir, op, io),
        other => StorageError::new(Store::Processed, dir, op, Failure::Io, other),
    }
}

fn unix_millis(at: SystemTime) -> u64 {
    // Times before 1970 sort first, so they are pruned first rather than rejected.
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn decode_stamp(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

fn time_key(millis: u64, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(STAMP_LEN + id.len());
    key.extend_from_slice(&millis.to_be_bytes());
    key.extend_from_slice(id);
    key
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // sled deletes old snapshots and blobs in the background.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    const CACHE: u64 = 8 << 20;
    const CRASH_DIR_ENV: &str = "HOOKLINE_PROCESSED_CRASH_CHILD_DIR";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn by_time_len(store: &ProcessedStore) -> usize {
        store.inner.by_time.iter().count()
    }

    #[test]
    fn records_and_contains() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        assert!(store.is_empty());
        store
            .record(&["aisle:a", "inline:b", "aisle:a"], at(1_000))
            .unwrap();
        assert!(store.contains("aisle:a").unwrap());
        assert!(store.contains("inline:b").unwrap());
        assert!(!store.contains("aisle:c").unwrap());
        assert_eq!(store.len(), 2);
        assert_eq!(by_time_len(&store), 2);
        store.record(&[], at(2_000)).unwrap();
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn reopen_keeps_ids() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
            store.record(&["aisle:1", "aisle:2"], at(10)).unwrap();
            store.record(&["aisle:3"], at(20)).unwrap();
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(store.flush())
                .unwrap();
        }
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        assert_eq!(store.len(), 3);
        for id in ["aisle:1", "aisle:2", "aisle:3"] {
            assert!(store.contains(id).unwrap(), "{id} lost across reopen");
        }
        assert_eq!(store.prune(at(15)).unwrap(), 2);
    }

    #[test]
    fn open_waits_for_a_closing_handle_to_release_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let holder = ProcessedStore::open(dir.path(), CACHE).unwrap();
        holder.record(&["aisle:1"], at(10)).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            holder.flush_blocking().unwrap();
            drop(holder);
        });
        let store =
            ProcessedStore::open_waiting(dir.path(), CACHE, Duration::from_secs(5)).unwrap();
        releaser.join().unwrap();
        assert!(store.contains("aisle:1").unwrap());
    }

    #[test]
    fn open_names_a_store_held_by_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let _holder = ProcessedStore::open(dir.path(), CACHE).unwrap();
        let started = Instant::now();
        let Err(error) =
            ProcessedStore::open_waiting(dir.path(), CACHE, Duration::from_millis(100))
        else {
            panic!("a held store opened twice");
        };
        assert!(started.elapsed() >= Duration::from_millis(100));
        let message = error.to_string();
        assert_eq!(error.failure, Failure::Locked, "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("storage.dir"), "{message}");
    }

    #[test]
    fn prune_removes_only_old_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        store.record(&["old:1", "old:2"], at(100)).unwrap();
        store.record(&["edge"], at(200)).unwrap();
        store.record(&["new:1"], at(300)).unwrap();
        assert_eq!(store.prune(at(50)).unwrap(), 0);
        // "Before cutoff" is strict: an id recorded exactly at the cutoff stays.
        assert_eq!(store.prune(at(200)).unwrap(), 2);
        assert!(!store.contains("old:1").unwrap());
        assert!(!store.contains("old:2").unwrap());
        assert!(store.contains("edge").unwrap());
        assert!(store.contains("new:1").unwrap());
        assert_eq!(store.len(), 2);
        assert_eq!(by_time_len(&store), 2);
        assert_eq!(store.prune(at(1_000)).unwrap(), 2);
        assert!(store.is_empty());
        assert_eq!(by_time_len(&store), 0);
    }

    #[test]
    fn prune_spans_many_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        let ids: Vec<String> = (0..PRUNE_CHUNK * 3 + 7)
            .map(|i| format!("aisle:{i:06}"))
            .collect();
        for (i, batch) in ids.chunks(100).enumerate() {
            let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
            store.record(&batch, at(i as u64)).unwrap();
        }
        let old = ids.len() / 100 / 2 * 100;
        assert_eq!(store.prune(at((ids.len() / 100 / 2) as u64)).unwrap(), old);
        assert_eq!(store.len(), ids.len() - old);
        assert_eq!(by_time_len(&store), ids.len() - old);
        assert!(!store.contains(&ids[old - 1]).unwrap());
        assert!(store.contains(&ids[old]).unwrap());
    }

    #[test]
    fn rerecording_moves_the_id_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        store.record(&["aisle:x", "aisle:y"], at(100)).unwrap();
        store.record(&["aisle:x"], at(200)).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(by_time_len(&store), 2, "re-recording left a stale key");
        assert_eq!(store.prune(at(150)).unwrap(), 1);
        assert!(store.contains("aisle:x").unwrap());
        assert!(!store.contains("aisle:y").unwrap());
        assert_eq!(store.prune(at(250)).unwrap(), 1);
        assert!(!store.contains("aisle:x").unwrap());
        assert!(store.is_empty());
        assert_eq!(by_time_len(&store), 0);
    }

    #[test]
    fn rerecording_at_an_earlier_time_keeps_the_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        store.record(&["aisle:x"], at(200)).unwrap();
        store.record(&["aisle:x"], at(100)).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(by_time_len(&store), 1);
        assert_eq!(store.prune(at(150)).unwrap(), 0);
        assert!(store.contains("aisle:x").unwrap());
    }

    #[test]
    fn prune_tolerates_stale_and_malformed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        store.record(&["aisle:live"], at(300)).unwrap();
        let by_time = &store.inner.by_time;
        // A key for an id that is not held, one for an id held at a later time, a key too
        // short to hold a time: none of them may remove a live id or count as pruned.
        by_time
            .insert(time_key(10_000, b"aisle:gone"), &[])
            .unwrap();
        by_time
            .insert(time_key(20_000, b"aisle:live"), &[])
            .unwrap();
        by_time.insert(&[0u8, 0][..], &[]).unwrap();
        assert_eq!(store.prune(at(100)).unwrap(), 0);
        assert!(store.contains("aisle:live").unwrap());
        assert_eq!(by_time_len(&store), 1);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn errors_name_the_directory_and_operation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let Err(error) = ProcessedStore::open(&file, CACHE) else {
            panic!("opened a store inside a file");
        };
        let message = error.to_string();
        let prefix = format!("processed-id store {}: open: ", file.display());
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.len() > prefix.len(), "{message} lacks sled's cause");
    }

    #[test]
    fn size_on_disk_counts_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        store.record(&["aisle:1"], at(1)).unwrap();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(store.flush())
            .unwrap();
        assert!(store.size_on_disk().unwrap() > 0);
    }

    #[test]
    fn store_and_flush_can_cross_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>(_: &T) {}
        fn assert_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        assert_send_sync(&store);
        let flush = store.flush();
        assert_send(&flush);
        drop(flush);
    }

    #[tokio::test]
    async fn pruner_prunes_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
        let now = SystemTime::now();
        store
            .record(&["aisle:old"], now - Duration::from_secs(7_200))
            .unwrap();
        store.record(&["aisle:new"], now).unwrap();
        let shutdown = CancellationToken::new();
        let pruner = store.spawn_pruner(
            Duration::from_secs(3_600),
            Duration::from_secs(3_600),
            shutdown.clone(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.contains("aisle:old").unwrap() {
            assert!(Instant::now() < deadline, "pruner never pruned");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(store.contains("aisle:new").unwrap());
        assert_eq!(store.len(), 1);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), pruner)
            .await
            .expect("pruner ignored shutdown")
            .unwrap();
    }

    #[derive(Default)]
    struct Captured(std::sync::Mutex<std::collections::HashMap<String, Arc<AtomicU64>>>);

    impl Captured {
        fn handle(&self, key: &metrics::Key) -> Arc<AtomicU64> {
            let mut map = self.0.lock().unwrap();
            map.entry(key.name().to_owned()).or_default().clone()
        }

        fn gauge(&self, name: &str) -> f64 {
            f64::from_bits(
                self.handle(&metrics::Key::from_name(name.to_owned()))
                    .load(Ordering::Relaxed),
            )
        }

        fn counter(&self, name: &str) -> u64 {
            self.handle(&metrics::Key::from_name(name.to_owned()))
                .load(Ordering::Relaxed)
        }
    }

    impl metrics::Recorder for Captured {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::from_arc(self.handle(key))
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::from_arc(self.handle(key))
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn metrics_follow_record_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let captured = Captured::default();
        metrics::with_local_recorder(&captured, || {
            let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
            store.record(&["a", "b", "c"], at(10)).unwrap();
            assert_eq!(captured.gauge(IDS_GAUGE), 3.0);
            assert_eq!(store.prune(at(20)).unwrap(), 3);
            assert_eq!(captured.gauge(IDS_GAUGE), 0.0);
            assert_eq!(captured.counter(PRUNED_COUNTER), 3);
        });
    }

    /// Child half of `killed_writer_keeps_every_flushed_id`, which runs it.
    #[test]
    #[ignore = "the child process of killed_writer_keeps_every_flushed_id, which runs it"]
    fn crash_child() {
        let dir = std::env::var_os(CRASH_DIR_ENV)
            .expect("run only by killed_writer_keeps_every_flushed_id, which sets the directory");
        let store = ProcessedStore::open(Path::new(&dir), CACHE).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pid = std::process::id();
        let mut stdout = std::io::stdout().lock();
        // Bounded so that an orphaned child stops by itself.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut next = 0u64;
        while Instant::now() < deadline {
            let batch: Vec<String> = (0..50)
                .map(|_| {
                    next += 1;
                    format!("aisle:{pid}-{next:09}")
                })
                .collect();
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            store.record(&refs, SystemTime::now()).unwrap();
            runtime.block_on(store.flush()).unwrap();
            for id in &batch {
                writeln!(stdout, "flushed {id}").unwrap();
            }
            stdout.flush().unwrap();
        }
    }

    #[test]
    fn killed_writer_keeps_every_flushed_id() {
        let dir = tempfile::tempdir().unwrap();
        let module = module_path!();
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        let child_test = format!("{module}::crash_child");
        let mut flushed = Vec::new();
        for (round, kill_after) in [300usize, 1_000, 2_500].into_iter().enumerate() {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    &child_test,
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CRASH_DIR_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut seen = 0;
            for line in lines.by_ref() {
                if let Some(id) = line.unwrap().strip_prefix("flushed ") {
                    flushed.push(id.to_owned());
                    seen += 1;
                    if seen == kill_after {
                        break;
                    }
                }
            }
            assert_eq!(seen, kill_after, "round {round}: child stopped early");
            child.kill().unwrap();
            // Lines already in the pipe were printed after their flush returned, so they count.
            for line in lines {
                if let Some(id) = line.unwrap().strip_prefix("flushed ") {
                    flushed.push(id.to_owned());
                }
            }
            child.wait().unwrap();

            let store = ProcessedStore::open(dir.path(), CACHE).unwrap();
            let lost: Vec<&String> = flushed
                .iter()
                .filter(|id| !store.contains(id).unwrap())
                .collect();
            assert!(
                lost.is_empty(),
                "round {round}: {} of {} flushed ids lost, first {:?}",
                lost.len(),
                flushed.len(),
                lost.first()
            );
            assert!(store.len() >= flushed.len());
            assert_eq!(by_time_len(&store), store.len());
        }
    }
}
