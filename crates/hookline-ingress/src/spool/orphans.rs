//! Spools nobody drains any more. Each ingress replica spools to `spool/<instance>/`, so
//! replicas can share one volume; a replica that is gone (its container replaced, its host
//! renamed) leaves its spool behind, and so did hookline before per-instance spools
//! (`spool/spool.redb`). A spool whose lock can be taken has no running owner: any replica
//! on the same volume, or `hookline spool drain`, publishes its records and removes it, so a
//! spooled delivery is never forgotten.

use super::Spool;
use super::drain::{DrainError, Target, drain_round};
use hookline_amqp::Broker;
use hookline_core::storage::Failure;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often a replica looks for spools left behind (and at every connect to the broker).
const SCAN_EVERY: Duration = Duration::from_secs(10);

/// The file that makes a directory a spool.
const FILE: &str = "spool.redb";

/// What became of one spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drained {
    /// Every record published; the spool was removed.
    Emptied {
        /// Records published.
        records: u64,
    },
    /// A running process holds it (it drains itself).
    InUse,
}

/// Every spool under `root` (the per-instance directories, and `root` itself for a spool
/// from before them), except `own`.
pub(crate) fn find(root: &Path, own: Option<&Path>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if root.join(FILE).is_file() {
        found.push(root.to_path_buf());
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join(FILE).is_file() && own.is_none_or(|own| own != path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Drains the spool in `dir` to `queue` if no running process holds it, then removes it.
pub(crate) async fn drain_one(
    dir: &Path,
    broker: &Broker,
    queue: &str,
) -> Result<Drained, DrainError> {
    let path = dir.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || Spool::open_to_drain(&path))
        .await
        .expect("opening a spool does not panic");
    let spool = match opened {
        Ok(spool) => spool,
        Err(error) if error.failure == Failure::Locked => return Ok(Drained::InUse),
        Err(error) => return Err(error.into()),
    };
    let before = spool.depth();
    let outcome = async {
        let target = Target {
            spool: &spool,
            broker,
            queue,
            skip: &|_| false,
        };
        while spool.depth() > 0 {
            if drain_round(&target).await?.drained == 0 && spool.depth() > 0 {
                // Depth says records remain but none can be read: leave the file for a look.
                break;
            }
        }
        Ok::<_, DrainError>(())
    }
    .await;
    let left = spool.depth();
    spool.close().await;
    outcome?;
    if left > 0 {
        warn!(spool = %dir.display(), left, "A spool left behind could not be emptied; kept for inspection.");
        return Ok(Drained::Emptied {
            records: before - left,
        });
    }
    remove(dir);
    Ok(Drained::Emptied { records: before })
}

/// Removes an emptied spool: its file, and its directory when that held nothing else.
fn remove(dir: &Path) {
    if let Err(error) = std::fs::remove_file(dir.join(FILE)) {
        warn!(spool = %dir.display(), %error, "Cannot remove an emptied spool.");
        return;
    }
    // Only an instance directory goes; the root (a spool from before instances) stays.
    let _ = std::fs::remove_dir(dir);
}

/// Until `shutdown`, every [`SCAN_EVERY`] while the broker is connected, drains the spools
/// under `root` that no running process holds, except `own`.
pub(crate) async fn run(
    root: PathBuf,
    own: PathBuf,
    broker: Broker,
    queue: String,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(SCAN_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sessions = broker.watch();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
            changed = sessions.changed() => if changed.is_err() { return },
        }
        if !broker.is_ready() {
            continue;
        }
        for dir in find(&root, Some(&own)) {
            if shutdown.is_cancelled() {
                return;
            }
            match drain_one(&dir, &broker, &queue).await {
                Ok(Drained::Emptied { records }) => {
                    metrics::counter!("hookline_spool_orphans_drained_total").increment(records);
                    info!(spool = %dir.display(), records, "Drained a spool left by another instance.");
                }
                Ok(Drained::InUse) => {}
                Err(error) => {
                    warn!(spool = %dir.display(), %error, "Cannot drain a spool left by another instance; retrying later.");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_instance_spools_and_the_old_one_but_not_its_own() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        for dir in ["a", "b", "own"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join(FILE), b"").unwrap();
        }
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join(FILE), b"").unwrap();
        let found = find(root, Some(&root.join("own")));
        assert_eq!(found, [root.to_path_buf(), root.join("a"), root.join("b")]);
        assert_eq!(find(&root.join("missing"), None), Vec::<PathBuf>::new());
    }
}
