//! The spool against a real file: round trips, reopen, group commit, failed commits,
//! the prober, corrupt records, and kill -9 of a process in the middle of appends.

use super::*;
use bytes::Bytes;
use hookline_core::signature::{Algorithm, sign_hex};
use hookline_core::{SourceSpec, delivery, provider};
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
    spool
        .oldest_blocking(100)
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect()
}

/// A verified Aisle delivery whose event id is `id` (made the only way there is: signed).
fn record(id: &str) -> VerifiedDelivery {
    let source = SourceSpec::new(
        "shop",
        provider::find("aisle").unwrap(),
        vec![hookline_core::Secret::new("k")],
    )
    .unwrap();
    let body = format!(
        r#"{{"id":"{id}","event":"ticket_created","data":{{"pad":"{}"}}}}"#,
        "é\\u0000".repeat(40)
    );
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "x-aisle-webhook-signature",
        sign_hex(Algorithm::Sha256, b"k", body.as_bytes())
            .parse()
            .unwrap(),
    );
    delivery::verify(
        &source,
        &headers,
        Bytes::from(body),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
}

/// The event id inside a stored delivery's body.
fn id_of(delivery: &VerifiedDelivery) -> String {
    let body: serde_json::Value = serde_json::from_slice(delivery.body()).unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// `(seq, event id)` of each record.
fn ids(records: &[(u64, VerifiedDelivery)]) -> Vec<(u64, String)> {
    records.iter().map(|(s, d)| (*s, id_of(d))).collect()
}

#[tokio::test]
async fn append_oldest_remove_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    assert_eq!(spool.depth(), 0);
    assert!(spool.oldest_blocking(10).unwrap().is_empty());

    let mut seqs = Vec::new();
    for id in ["a", "b", "c"] {
        seqs.push(spool.append(&record(id)).await.unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(spool.depth(), 3);

    let all = spool.oldest_blocking(10).unwrap();
    let expected: Vec<_> = seqs
        .iter()
        .copied()
        .zip(["a", "b", "c"].map(str::to_owned))
        .collect();
    assert_eq!(ids(&all), expected);
    assert_eq!(ids(&spool.oldest(2).await.unwrap()), expected[..2]);

    spool.remove(vec![seqs[0], seqs[1]]).await.unwrap();
    assert_eq!(spool.depth(), 1);
    assert_eq!(ids(&spool.oldest_blocking(10).unwrap()), expected[2..]);

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
        seqs.push(spool.append(&record(&format!("r{i}"))).await.unwrap());
    }
    spool.remove(vec![seqs[0], seqs[3]]).await.unwrap();
    let before = ids(&spool.oldest_blocking(100).unwrap());
    drop(spool);

    let spool = Spool::open(dir.path()).unwrap();
    assert_eq!(spool.depth(), 3);
    assert_eq!(ids(&spool.oldest_blocking(100).unwrap()), before);
    let next = spool.append(&record("after")).await.unwrap();
    assert!(next > seqs[4], "{next} after {seqs:?}");

    // Even a spool drained empty must not hand out old numbers again.
    let all = stored_seqs(&spool);
    spool.remove(all).await.unwrap();
    assert_eq!(spool.depth(), 0);
    drop(spool);
    let spool = Spool::open(dir.path()).unwrap();
    assert_eq!(spool.depth(), 0);
    assert!(spool.append(&record("again")).await.unwrap() > next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(&record(&format!("g{i}"))).await })
        })
        .collect();
    let mut seqs = HashSet::new();
    for task in tasks {
        assert!(seqs.insert(task.await.unwrap().unwrap()));
    }
    let commits = spool.commit_count();
    assert_eq!(spool.depth(), 500);
    assert!(commits <= 50, "500 appends took {commits} commits");
    assert_eq!(spool.oldest_blocking(1000).unwrap().len(), 500);
}

#[tokio::test]
async fn close_then_append_fails_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    // Queued before close: each is either finished or refused, never lost silently.
    let queued: Vec<_> = (0..50)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(&record(&format!("q{i}"))).await })
        })
        .collect();
    tokio::task::yield_now().await;
    spool.close().await;

    let late = tokio::time::timeout(Duration::from_secs(5), spool.append(&record("late")))
        .await
        .expect("append after close hung");
    assert!(
        matches!(&late, Err(e) if e.failure == Failure::Closed),
        "{late:?}"
    );
    let removal = tokio::time::timeout(Duration::from_secs(5), spool.remove(vec![1]))
        .await
        .expect("remove after close hung");
    assert!(
        matches!(&removal, Err(e) if e.failure == Failure::Closed),
        "{removal:?}"
    );
    assert!(matches!(spool.oldest_blocking(1), Err(e) if e.failure == Failure::Closed));
    spool.close().await;

    let mut acked = Vec::new();
    for task in queued {
        match task.await.unwrap() {
            Ok(seq) => acked.push(seq),
            Err(e) if e.failure == Failure::Closed => {}
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
    let kept = spool.append(&record("kept")).await.unwrap();

    fail_next_commit(&spool);
    let waiters: Vec<_> = (0..20)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(&record(&format!("f{i}"))).await })
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
    let alone = spool.append(&record("alone")).await;
    assert!(
        matches!(&alone, Err(e) if e.op == "commit (fsync)"),
        "{alone:?}"
    );
    failed += 1;
    assert!(!spool.healthy());

    let next = spool.append(&record("next")).await.unwrap();
    assert!(next > kept);
    assert!(spool.healthy());
    let stored = spool.oldest_blocking(100).unwrap();
    assert_eq!(stored.len() as u64, spool.depth());
    assert_eq!(stored.len(), 21 + 2 - failed);
    let stored = ids(&stored);
    assert_eq!(stored[0], (kept, "kept".to_owned()));
    assert_eq!(stored.last().unwrap(), &(next, "next".to_owned()));
}

#[tokio::test]
async fn prober_restores_health_without_any_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let kept = spool.append(&record("kept")).await.unwrap();
    fail_next_commit(&spool);
    assert!(spool.append(&record("lost")).await.is_err());
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
    let next = spool.append(&record("next")).await.unwrap();
    assert!(next > kept + 1, "the failed append's number is not reused");
    drop(spool);
    let reopened = Spool::open(dir.path()).unwrap();
    assert_eq!(stored_seqs(&reopened), vec![kept, next]);
}

#[tokio::test]
async fn corrupt_record_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let good = spool.append(&record("good")).await.unwrap();
    {
        // The writer thread is idle, so this transaction does not wait for it.
        let guard = spool.inner.shared.db.read().unwrap();
        let txn = guard.as_ref().unwrap().begin_write().unwrap();
        txn.open_table(file::RECORDS)
            .unwrap()
            .insert(0, [1, 9, 0, 0, 0, 0xff].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    match spool.oldest_blocking(10) {
        Err(e) if e.failure == (Failure::Corrupt { seq: 0 }) => {}
        other => panic!("expected a corrupt record error, got {other:?}"),
    }
    spool.remove(vec![0]).await.unwrap();
    assert_eq!(
        ids(&spool.oldest_blocking(10).unwrap()),
        [(good, "good".to_owned())]
    );
}

/// Not a test on its own: the child side of `kill_9_keeps_every_acknowledged_record`,
/// which runs this binary again with only this test and the directory in the environment.
#[test]
#[ignore = "the child process of kill_9_keeps_every_acknowledged_record, which runs it"]
fn crash_child_appends_until_killed() {
    let dir = std::env::var_os(CRASH_DIR_ENV)
        .expect("run only by kill_9_keeps_every_acknowledged_record, which sets the directory");
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
                        let seq = spool.append(&record(&id)).await.unwrap();
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
            "--ignored",
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
    let stored: BTreeMap<u64, String> = ids(&spool.oldest_blocking(usize::MAX).unwrap())
        .into_iter()
        .collect();
    for (seq, id) in &acked {
        assert_eq!(stored.get(seq), Some(id), "acknowledged seq {seq} lost");
    }
    assert_eq!(spool.depth(), stored.len() as u64);
    let last = *acked.keys().next_back().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let next = runtime
        .block_on(spool.append(&record("after-crash")))
        .unwrap();
    assert!(next > last);
}
