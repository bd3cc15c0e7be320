//! The one shape in which both local stores (the ingress spool and the worker's
//! processed-id store) report errors: which store, which file, which operation, what kind
//! of failure, and what the storage engine said.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Which local store failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The ingress spool (redb).
    Spool,
    /// The worker's processed-id store (sled).
    Processed,
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Store::Spool => "spool",
            Store::Processed => "processed-id store",
        })
    }
}

/// What kind of failure, for callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The disk (or quota) is full.
    DiskFull,
    /// Any other I/O or engine error.
    Io,
    /// Another process holds the store.
    Locked,
    /// A stored record does not decode; `seq` names it so it can be removed.
    Corrupt {
        /// The record's sequence number.
        seq: u64,
    },
    /// The store is reopening after a failed write; the next attempt retries.
    Unavailable,
    /// The store was closed.
    Closed,
}

/// A local store error; the message names the store, its path and the operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{store} {}: {op}: {cause}", path.display())]
pub struct StorageError {
    /// Which store.
    pub store: Store,
    /// Its file or directory.
    pub path: PathBuf,
    /// What was being done, e.g. `commit (fsync)`.
    pub op: &'static str,
    /// The kind of failure.
    pub failure: Failure,
    /// What the engine or the OS reported (kept in the message: redb and sled errors often
    /// have no `source()`).
    pub cause: Arc<dyn std::error::Error + Send + Sync>,
}

impl StorageError {
    /// An error of `failure` kind with `cause`.
    pub fn new(
        store: Store,
        path: impl Into<PathBuf>,
        op: &'static str,
        failure: Failure,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            store,
            path: path.into(),
            op,
            failure,
            cause: Arc::from(cause.into()),
        }
    }

    /// An I/O-kind error, classified as disk-full when `io` says so.
    pub fn io(
        store: Store,
        path: impl Into<PathBuf>,
        op: &'static str,
        io: std::io::Error,
    ) -> Self {
        let failure = if is_disk_full(&io) {
            Failure::DiskFull
        } else {
            Failure::Io
        };
        Self::new(store, path, op, failure, io)
    }

    /// Whether the disk or quota is full.
    pub fn is_disk_full(&self) -> bool {
        self.failure == Failure::DiskFull
    }
}

/// Whether an OS error means "no space left".
pub fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull
            | std::io::ErrorKind::QuotaExceeded
            | std::io::ErrorKind::FileTooLarge
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_store_path_and_operation() {
        let full = StorageError::io(
            Store::Spool,
            "/data/spool/spool.redb",
            "commit (fsync)",
            std::io::ErrorKind::StorageFull.into(),
        );
        assert!(full.is_disk_full());
        let text = full.to_string();
        assert!(
            text.starts_with("spool /data/spool/spool.redb: commit (fsync): "),
            "{text}"
        );
        let locked = StorageError::new(
            Store::Processed,
            "/data/processed",
            "open",
            Failure::Locked,
            "held by another process",
        );
        assert_eq!(
            locked.to_string(),
            "processed-id store /data/processed: open: held by another process"
        );
    }
}
