//! Measures the processed-id store at scale: disk bytes per id, peak RSS, record and prune time.
//!
//! `cargo run --release -p hookline-worker --example processed_store_size -- --ids 1000000
//! --cache-mb 64 [--dir PATH]`; without `--dir` the store lives in a temporary directory that is
//! removed afterwards. Ids are recorded like the worker does: 100 per `record`, a `flush` every
//! 1,000.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hookline_worker::processed::ProcessedStore;

const BATCH: usize = 100;
const FLUSH_EVERY: usize = 1_000;
const LOOKUPS: usize = 100_000;
const SEED: u64 = 0x05ee_d1d5;

struct Args {
    ids: usize,
    cache_mb: u64,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        ids: 1_000_000,
        cache_mb: 64,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--ids" => args.ids = value()?.parse().map_err(|e| format!("--ids: {e}"))?,
            "--cache-mb" => {
                args.cache_mb = value()?.parse().map_err(|e| format!("--cache-mb: {e}"))?;
            }
            "--dir" => args.dir = Some(value()?.into()),
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: --ids N --cache-mb M --dir PATH"
                ));
            }
        }
    }
    Ok(args)
}

// splitmix64: deterministic, so the lookup pass can regenerate ids instead of holding a
// million strings that would inflate the RSS being measured.
struct Ids(u64);

impl Ids {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_id(&mut self) -> String {
        let (hi, lo) = (self.next_u64(), self.next_u64());
        let hi = (hi & !0xf000) | 0x4000;
        let lo = (lo & !(0b11 << 62)) | (0b10 << 62);
        format!(
            "aisle:{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_rss(when: &str) {
    let peak = proc_status_kib("VmHWM").unwrap_or(0);
    let now = proc_status_kib("VmRSS").unwrap_or(0);
    println!(
        "rss {when}: peak {:.1} MiB, current {:.1} MiB",
        peak as f64 / 1024.0,
        now as f64 / 1024.0
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().join("processed"));
    let cache_bytes = args.cache_mb * 1024 * 1024;
    println!(
        "dir {}, cache {} MiB, {} ids, {BATCH} per record, flush every {FLUSH_EVERY}",
        dir.display(),
        args.cache_mb,
        args.ids
    );

    let store = ProcessedStore::open(&dir, cache_bytes)?;
    let held_before = store.len();
    // One millisecond per batch keeps recording times distinct, so "prune half" has a cutoff.
    let base_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_millis()
        .saturating_sub(args.ids as u128) as u64;
    let stamp = |batch: usize| UNIX_EPOCH + Duration::from_millis(base_ms + batch as u64);

    let mut ids = Ids(SEED);
    let started = Instant::now();
    let mut slowest_flush = Duration::ZERO;
    let mut recorded = 0;
    let mut batch_no = 0;
    while recorded < args.ids {
        let batch: Vec<String> = (0..BATCH.min(args.ids - recorded))
            .map(|_| ids.next_id())
            .collect();
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        store.record(&refs, stamp(batch_no))?;
        recorded += batch.len();
        batch_no += 1;
        if recorded % FLUSH_EVERY == 0 || recorded == args.ids {
            let flush_started = Instant::now();
            store.flush().await?;
            slowest_flush = slowest_flush.max(flush_started.elapsed());
        }
    }
    let took = started.elapsed();
    let size = store.size_on_disk()?;
    println!(
        "recorded {recorded} ids in {:.2} s ({:.0} ids/s), slowest flush {:.1} ms",
        took.as_secs_f64(),
        recorded as f64 / took.as_secs_f64(),
        slowest_flush.as_secs_f64() * 1e3
    );
    println!("ids held: {}", store.len());
    println!(
        "bytes on disk: {size} ({:.1} MiB), {:.1} bytes per id",
        mib(size),
        size as f64 / (store.len() - held_before).max(1) as f64
    );
    print_rss("after recording");

    let mut lookup = Ids(SEED);
    let lookups = LOOKUPS.min(recorded);
    let started = Instant::now();
    for _ in 0..lookups {
        let id = lookup.next_id();
        if !store.contains(&id)? {
            return Err(format!("{id} missing right after recording").into());
        }
    }
    println!(
        "contains: {lookups} hits in {:.2} s ({:.1} us each)",
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1e6 / lookups.max(1) as f64
    );

    let started = Instant::now();
    let pruned = store.prune(stamp(batch_no / 2))?;
    let prune_took = started.elapsed();
    store.flush().await?;
    println!(
        "prune of half: {pruned} ids in {:.2} s ({:.0} ids/s), {} held",
        prune_took.as_secs_f64(),
        pruned as f64 / prune_took.as_secs_f64(),
        store.len()
    );
    let size_after = store.size_on_disk()?;
    println!(
        "bytes on disk after prune: {size_after} ({:.1} MiB)",
        mib(size_after)
    );
    print_rss("after prune");

    drop(store);
    let started = Instant::now();
    let store = ProcessedStore::open(&dir, cache_bytes)?;
    println!(
        "reopen with {} ids took {:.2} s",
        store.len(),
        started.elapsed().as_secs_f64()
    );
    print_rss("at end");
    Ok(())
}
