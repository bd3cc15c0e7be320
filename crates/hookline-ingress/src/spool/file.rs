//! The spool's redb file: opening it (checked, tables created) and what it says about where
//! to continue after a restart or a crash.

use hookline_core::storage::{Failure, StorageError, Store};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::io;
use std::path::Path;

/// File name of the spool inside its directory.
pub(super) const FILE_NAME: &str = "spool.redb";

/// Records by sequence number. The value is [`hookline_core::wire`]'s versioned record rather
/// than a redb tuple of `&str`: redb decodes `&str` with `from_utf8(..).unwrap()`, so one bad
/// byte on disk would panic the process.
pub(super) const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

/// Small bookkeeping values that must survive restarts.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Persisted high-water mark, so sequence numbers keep increasing even after the spool was
/// drained empty and reopened (then the records table alone would restart at 1).
pub(super) const NEXT_SEQ: &str = "next_seq";

/// What a freshly opened file says about where to continue.
pub(super) struct Recovered {
    pub(super) next_seq: u64,
    pub(super) depth: u64,
}

/// A redb error on `path` during `op`, classified (disk full, held by another process, other).
pub(super) fn error(path: &Path, op: &'static str, cause: impl Into<redb::Error>) -> StorageError {
    let cause = cause.into();
    let failure = match &cause {
        redb::Error::Io(io) if hookline_core::storage::is_disk_full(io) => Failure::DiskFull,
        redb::Error::DatabaseAlreadyOpen => Failure::Locked,
        _ => Failure::Io,
    };
    StorageError::new(Store::Spool, path, op, failure, cause)
}

/// Opens (creating if needed) and checks the file.
pub(super) fn open(path: &Path) -> Result<(Database, Recovered), StorageError> {
    let err = |e: redb::Error| error(path, "open", e);
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

/// Makes a new directory entry durable: a file whose data is fsynced but whose entry is lost
/// at power failure is gone all the same.
#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing here; NTFS journals the entry itself.
    Ok(())
}
