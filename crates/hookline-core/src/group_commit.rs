//! Group commit on a dedicated thread: callers queue jobs; the thread takes the first one,
//! drains whatever else is already queued (up to a cap), and hands the whole batch to one
//! commit, so many writers share one fsync or flush. Both stores use it: the spool (redb,
//! fsync before a 200) and the worker's processed-id store (sled flush before an ack).
//!
//! A thread rather than a task, because the commits are blocking disk calls: on the async
//! runtime they would stall every task behind them.

use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// The queue was closed or the committing thread has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the commit thread has stopped")]
pub struct Stopped;

enum Message<J> {
    Job(J),
    Close(oneshot::Sender<()>),
}

/// Handle to a group-commit thread; dropping it finishes the queued jobs and joins the
/// thread, so that whatever the commits hold (a file lock) is released when drop returns.
pub struct GroupCommit<J> {
    // Taken on drop, so the thread sees its queue end before it is joined.
    tx: Option<mpsc::Sender<Message<J>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<J: Send + 'static> GroupCommit<J> {
    /// Starts thread `name`: `commit` gets each batch (at most `max_batch` jobs, in queue
    /// order); `finish` runs once after the last batch, before [`GroupCommit::close`]
    /// returns. At most `capacity` jobs wait; beyond that `submit` waits (backpressure).
    pub fn spawn(
        name: &str,
        capacity: usize,
        max_batch: usize,
        mut commit: impl FnMut(Vec<J>) + Send + 'static,
        finish: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Message<J>>(capacity.max(1));
        let max_batch = max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut closers = Vec::new();
                let mut batch = Vec::with_capacity(max_batch);
                while let Some(first) = rx.blocking_recv() {
                    let mut next = Some(first);
                    while let Some(message) = next.take() {
                        match message {
                            Message::Close(done) => {
                                // Refuses new jobs but keeps what is queued, so it gets done.
                                rx.close();
                                closers.push(done);
                            }
                            Message::Job(job) => batch.push(job),
                        }
                        if batch.len() < max_batch {
                            next = rx.try_recv().ok();
                        }
                    }
                    if !batch.is_empty() {
                        commit(std::mem::replace(&mut batch, Vec::with_capacity(max_batch)));
                    }
                }
                finish();
                for done in closers {
                    let _ = done.send(());
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `job`; fails once the thread is closing or gone (the job is then dropped
    /// unprocessed, which callers see as their reply channel closing).
    pub async fn submit(&self, job: J) -> Result<(), Stopped> {
        self.sender()?
            .send(Message::Job(job))
            .await
            .map_err(|_| Stopped)
    }

    /// Whether [`GroupCommit::close`] has started or the thread is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(mpsc::Sender::is_closed)
    }

    /// Finishes every queued job, runs `finish`, and waits for the thread.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        let Ok(tx) = self.sender() else { return };
        if tx.send(Message::Close(done)).await.is_ok() {
            // An error only means the thread already exited, which is what we wait for.
            let _ = finished.await;
        }
        let thread = self.take_thread();
        if let Some(thread) = thread {
            // `finish` ran and the closers were answered as the thread's last acts.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn sender(&self) -> Result<&mpsc::Sender<Message<J>>, Stopped> {
        self.tx.as_ref().ok_or(Stopped)
    }

    fn take_thread(&self) -> Option<JoinHandle<()>> {
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl<J> Drop for GroupCommit<J> {
    fn drop(&mut self) {
        drop(self.tx.take());
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // A panic in a commit has already failed its waiters; nothing left to report.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Job(usize, oneshot::Sender<usize>);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn queued_jobs_share_batches_and_close_finishes_them() {
        let batches = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let (b, f) = (batches.clone(), finished.clone());
        let group = Arc::new(
            GroupCommit::spawn(
                "test-commit",
                1024,
                64,
                move |jobs: Vec<Job>| {
                    assert!(jobs.len() <= 64);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    b.fetch_add(1, Ordering::Relaxed);
                    for Job(n, reply) in jobs {
                        let _ = reply.send(n * 2);
                    }
                },
                move || {
                    f.fetch_add(1, Ordering::Relaxed);
                },
            )
            .unwrap(),
        );
        let tasks: Vec<_> = (0..500)
            .map(|n| {
                let group = group.clone();
                tokio::spawn(async move {
                    let (tx, rx) = oneshot::channel();
                    group.submit(Job(n, tx)).await.unwrap();
                    rx.await.unwrap()
                })
            })
            .collect();
        for (n, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), n * 2);
        }
        let commits = batches.load(Ordering::Relaxed);
        assert!(commits < 250, "500 jobs took {commits} commits");
        group.close().await;
        assert_eq!(finished.load(Ordering::Relaxed), 1);
        let (tx, _rx) = oneshot::channel();
        assert_eq!(group.submit(Job(1, tx)).await, Err(Stopped));
        assert!(group.is_closed());
    }
}
