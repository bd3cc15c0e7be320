//! The spool's only writer: applies one group-commit batch (appends, removals, probes) in one
//! redb write transaction with one fsync, and reopens the file after a failed write.

use super::Shared;
use super::file::{self, META, NEXT_SEQ, RECORDS};
use hookline_core::storage::{Failure, StorageError, Store};
use redb::Durability;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// One request that goes into a write transaction.
pub(super) enum Job {
    Append {
        value: Vec<u8>,
        reply: oneshot::Sender<Result<u64, StorageError>>,
    },
    Remove {
        seqs: Vec<u64>,
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
    /// Rewrites the sequence high-water mark: a real fsynced commit that changes nothing.
    Probe {
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    // Never moves backwards, not even after a failed commit: the failed transaction may still
    // have reached the disk, and reusing its numbers would overwrite those records.
    pub(super) next_seq: u64,
    pub(super) needs_reopen: bool,
}

/// What one committed batch did.
struct Applied {
    /// One per job, in batch order.
    outcomes: Vec<Result<u64, StorageError>>,
    added: u64,
    removed: u64,
}

impl Writer {
    /// Commits one batch and answers every job in it.
    pub(super) fn commit(&mut self, batch: Vec<Job>) {
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
                shared.report_depth(depth);
                if shared.reported {
                    metrics::counter!("hookline_spool_appends_total").increment(added);
                    metrics::counter!("hookline_spool_commits_total").increment(1);
                    metrics::histogram!("hookline_spool_commit_seconds").record(elapsed);
                }
                if !shared.healthy.swap(true, Ordering::Relaxed) {
                    info!(path = %shared.path.display(), depth, "Spool writes succeed again.");
                }
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    answer(job, outcome);
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
    fn write(&mut self, batch: &[Job]) -> Result<Applied, StorageError> {
        let shared = self.shared.clone();
        let path = &shared.path;
        let write_err = |e: redb::Error| file::error(path, "write", e);
        let guard = shared.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            return Err(shared.unavailable());
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
                            Err(e @ redb::StorageError::ValueTooLarge(_)) => {
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
            return Err(StorageError::io(
                Store::Spool,
                path,
                "commit (fsync)",
                std::io::ErrorKind::StorageFull.into(),
            ));
        }
        txn.commit()
            .map_err(|e| file::error(path, "commit (fsync)", e))?;
        Ok(Applied {
            outcomes,
            added,
            removed,
        })
    }

    fn reopen(&mut self) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        let mut slot = shared.db.write().unwrap_or_else(PoisonError::into_inner);
        self.reopen_locked(&mut slot)
    }

    /// Closes and reopens the file; the caller holds the write lock, which keeps readers waiting
    /// for the fresh handle instead of reading through the failed one.
    fn reopen_locked(&mut self, slot: &mut Option<redb::Database>) -> Result<(), StorageError> {
        if let Some(old) = slot.take() {
            // The old handle is failed already; its close error adds nothing.
            let _ = old.close();
        }
        let shared = &self.shared;
        let (db, state) = file::open(&shared.path)?;
        *slot = Some(db);
        self.next_seq = self.next_seq.max(state.next_seq);
        // The failed commit may or may not have reached the disk; the file is the truth.
        shared.depth.store(state.depth, Ordering::Relaxed);
        shared.report_depth(state.depth);
        self.needs_reopen = false;
        // Follows every failed write, so it is as frequent as they are: not an operator's line.
        debug!(path = %shared.path.display(), depth = state.depth, "Spool reopened after a failed write.");
        Ok(())
    }
}

/// Closes the file after the last batch.
pub(super) fn finish(shared: &Shared) {
    let db = shared
        .db
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(db) = db
        && let Err(e) = db.close()
    {
        warn!(path = %shared.path.display(), error = %e, "Spool close failed.");
    }
}

/// Sends one job its outcome; a remove's `Ok` carries no number.
fn answer(job: Job, outcome: Result<u64, StorageError>) {
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

fn fail_all(batch: Vec<Job>, error: &StorageError) {
    for job in batch {
        answer(job, Err(error.clone()));
    }
}

/// The failure kind a caller sees when the writer is gone.
pub(super) fn closed(path: &std::path::Path) -> StorageError {
    StorageError::new(
        Store::Spool,
        path,
        "write",
        Failure::Closed,
        "the spool is closed",
    )
}
