//! `attack`: the ingress's memory and time bounds under hostile clients. One `hookline
//! ingress` (aisle, inline and asello sources, default limits) gets, all at once for
//! `--seconds`: slow-body clients trickling a 256 KiB body 1 byte per 5 ms, idle
//! connections that send nothing, keep-alive clients flooding forged-signature requests,
//! and a well-behaved client sending correctly signed deliveries at 10/s. Measured: the
//! ingress's RSS (sampled every 100 ms) and open fds, the signed client's answers and
//! whether every `200` reached `<prefix>.ingress` (or the spool), how long the server held
//! slow and idle connections, and how much it logged. Then the same mix again against
//! the same process, to see whether memory comes back.

use crate::broker;
use crate::load::{self, Tally};
use crate::machine::{self, CpuMeter, CpuUse};
use crate::names;
use crate::payload::{self, Payload, Payloads, SIGNATURE_HEADER};
use crate::process::{Bench, Role, Stopped};
use crate::server_metrics;
use anyhow::{Context as _, Result, anyhow, bail};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Default measured seconds per round.
pub(crate) const DEFAULT_SECONDS: u64 = 60;
/// Default slow-body connections.
pub(crate) const TRICKLE_CONNECTIONS: usize = 500;
/// Default pause between two body bytes of a slow-body connection, ms.
pub(crate) const TRICKLE_INTERVAL_MS: u64 = 5;
/// Default `Content-Length` the slow bodies announce (the ingress's default body limit).
pub(crate) const TRICKLE_CONTENT_LENGTH: u64 = 262_144;
/// Default idle connections.
pub(crate) const IDLE_CONNECTIONS: usize = 2000;
/// Default forged-signature keep-alive connections.
pub(crate) const FORGED_CONNECTIONS: usize = 64;
/// Default rate of the well-behaved client, deliveries per second.
pub(crate) const SIGNED_RATE: f64 = 10.0;
/// Default time limit of one signed request, ms.
pub(crate) const SIGNED_TIMEOUT_MS: u64 = 5000;
/// Default pause between the two rounds (and before the counts after each), s.
pub(crate) const PAUSE_SECONDS: u64 = 5;
/// Default RSS at which a round stops early, to keep the shared box alive, MiB.
pub(crate) const RSS_LIMIT_MIB: u64 = 4096;

/// A signed delivery answered 200 within this is on time.
pub(crate) const ON_TIME: Duration = Duration::from_millis(1000);
/// RSS sampling interval.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// Open fds are counted every this many RSS samples.
const FDS_EVERY_SAMPLES: u32 = 5;
/// Time limit for one connect (and a slow body's header block).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection closed sooner than this is reopened only after [`RECONNECT_PAUSE`], so
/// a server that refuses at once does not make the bench spin.
const QUICK_CLOSE: Duration = Duration::from_secs(1);
/// See [`QUICK_CLOSE`]; also the pause after a failed connect.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Distinct forged requests, cycled.
const FORGED_BODIES: usize = 256;
/// Longest wait for the spool to drain into the queue before counting.
const SPOOL_LIMIT: Duration = Duration::from_secs(15);
/// A well-formed but wrong signature for the slow bodies.
const BOGUS_SIGNATURE: &str = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef";

/// The attack's shape (every figure a flag).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttackPlan {
    /// Measured time per round.
    pub(crate) seconds: Duration,
    /// Slow-body connections.
    pub(crate) trickle_connections: usize,
    /// Pause between two body bytes on each.
    pub(crate) trickle_interval: Duration,
    /// `Content-Length` they announce.
    pub(crate) trickle_content_length: u64,
    /// Connections that send nothing.
    pub(crate) idle_connections: usize,
    /// Keep-alive connections sending forged requests back to back.
    pub(crate) forged_connections: usize,
    /// Correctly signed deliveries per second.
    pub(crate) signed_rate: f64,
    /// Time limit of one signed request.
    pub(crate) signed_timeout: Duration,
    /// Pause after each round before counting (and before the next round).
    pub(crate) pause: Duration,
    /// A round stops early when the ingress's RSS passes this, KiB.
    pub(crate) rss_limit_kib: u64,
}

/// Connections the server closed or held, with what it answered on them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Holds {
    /// Connections made.
    pub(crate) connects: u64,
    /// Connects that failed or timed out.
    pub(crate) connect_errors: u64,
    /// Connections the server closed (EOF or reset).
    pub(crate) closed: u64,
    /// The longest connect → server close among those.
    pub(crate) longest_closed: Duration,
    /// Connections still open when the round ended.
    pub(crate) still_open: u64,
    /// The longest-open of those, at the round's end.
    pub(crate) longest_open: Duration,
    /// What the server answered per connection: a status code, or no answer.
    pub(crate) answers: BTreeMap<String, u64>,
}

impl Holds {
    /// The longest time the server held any connection open (closed or not).
    pub(crate) fn longest(&self) -> Duration {
        self.longest_closed.max(self.longest_open)
    }

    /// e.g. `408×500, closed without an answer×20`.
    pub(crate) fn describe_answers(&self) -> String {
        if self.answers.is_empty() {
            return "none".to_owned();
        }
        self.answers
            .iter()
            .map(|(answer, n)| format!("{answer}×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn closed_after(&mut self, held: Duration, answer: Option<String>, reset: bool) {
        self.closed += 1;
        self.longest_closed = self.longest_closed.max(held);
        let answer = answer.unwrap_or_else(|| {
            if reset {
                "reset without an answer".to_owned()
            } else {
                "closed without an answer".to_owned()
            }
        });
        *self.answers.entry(answer).or_default() += 1;
    }

    fn open_at_end(&mut self, held: Duration, answer: Option<String>) {
        self.still_open += 1;
        self.longest_open = self.longest_open.max(held);
        if let Some(answer) = answer {
            *self
                .answers
                .entry(format!("{answer} (left open)"))
                .or_default() += 1;
        }
    }
}

/// What the well-behaved client got.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    /// Requests sent.
    pub(crate) sent: u64,
    /// `200` within [`ON_TIME`] of the intended send time.
    pub(crate) on_time: u64,
    /// `200`, but later.
    pub(crate) late: u64,
    /// Other answers by status.
    pub(crate) other: BTreeMap<u16, u64>,
    /// No answer within the time limit (or a connection error).
    pub(crate) no_answer: u64,
    /// From the intended send time to the answer (answered requests).
    pub(crate) latency: Histogram<u64>,
}

impl Signed {
    /// All `200`s.
    pub(crate) fn ok(&self) -> u64 {
        self.on_time + self.late
    }

    /// Share of the requests answered 200 on time.
    pub(crate) fn on_time_share(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.on_time as f64 / self.sent as f64
        }
    }

    /// e.g. `503×2, no answer×1`, or `none`.
    pub(crate) fn describe_failures(&self) -> String {
        let mut parts: Vec<String> = self
            .other
            .iter()
            .map(|(code, n)| format!("{code}×{n}"))
            .collect();
        if self.no_answer > 0 {
            parts.push(format!("no answer×{}", self.no_answer));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// One round of the mix.
pub(crate) struct Round {
    /// How long the mix ran.
    pub(crate) ran_for: Duration,
    /// Why it stopped before `--seconds`, if it did.
    pub(crate) stopped_early: Option<String>,
    /// Highest sampled `VmRSS`, KiB.
    pub(crate) peak_rss_kib: u64,
    /// `VmRSS` at the end of the round, KiB.
    pub(crate) end_rss_kib: u64,
    /// `VmRSS` after the pause that follows (connections closed), KiB.
    pub(crate) settled_rss_kib: u64,
    /// Highest sampled count of open fds.
    pub(crate) peak_fds: usize,
    /// The well-behaved client.
    pub(crate) signed: Signed,
    /// Answers to the forged requests.
    pub(crate) forged: Tally,
    /// Slow-body connections.
    pub(crate) trickle: Holds,
    /// Body bytes the slow-body connections got out.
    pub(crate) trickle_bytes: u64,
    /// Idle connections.
    pub(crate) idle: Holds,
    /// Log bytes written from the round's start to the end of the pause after it.
    pub(crate) log_bytes: u64,
    /// The time those log bytes were written in.
    pub(crate) log_span: Duration,
    /// `200`s of the signed client in this and the earlier rounds.
    pub(crate) accepted_so_far: u64,
    /// Messages in `<prefix>.ingress` after the pause.
    pub(crate) queued: u64,
    /// `hookline_spool_depth` when they were counted.
    pub(crate) spool_depth: Option<f64>,
    /// CPU use during the round.
    pub(crate) cpu: CpuUse,
}

impl Round {
    /// Log bytes per minute (over the round and the pause after it).
    pub(crate) fn log_bytes_per_min(&self) -> f64 {
        let minutes = self.log_span.as_secs_f64() / 60.0;
        if minutes > 0.0 {
            self.log_bytes as f64 / minutes
        } else {
            0.0
        }
    }

    /// `200`s that reached neither the queue nor the spool.
    pub(crate) fn lost(&self) -> u64 {
        let stored = self.queued + self.spool_depth.unwrap_or(0.0).max(0.0) as u64;
        self.accepted_so_far.saturating_sub(stored)
    }

    /// Body bytes each slow-body connection got out per second, on average.
    pub(crate) fn trickle_bytes_per_conn_sec(&self, connections: usize) -> f64 {
        let per_sec = self.trickle_bytes as f64 / self.ran_for.as_secs_f64().max(1e-3);
        per_sec / connections.max(1) as f64
    }

    /// Forged requests answered per second.
    pub(crate) fn forged_per_sec(&self) -> f64 {
        let answered = self.forged.ok + self.forged.other.values().sum::<u64>();
        answered as f64 / self.ran_for.as_secs_f64().max(1e-3)
    }
}

/// What the attack run measured.
pub(crate) struct AttackResult {
    /// Its shape.
    pub(crate) plan: AttackPlan,
    /// The two rounds.
    pub(crate) rounds: Vec<Round>,
    /// The ingress's `Max open files` (soft / hard).
    pub(crate) ingress_nofile: Option<String>,
    /// The bench's soft fd limit before and after raising it.
    pub(crate) bench_nofile: (Option<u64>, Option<u64>),
    /// How the ingress stopped.
    pub(crate) stopped: Vec<Stopped>,
}

/// Starts an ingress, runs the mix twice, stops it and purges `<prefix>.ingress`.
pub(crate) async fn run(bench: &Bench, plan: AttackPlan) -> Result<AttackResult> {
    if plan.trickle_interval.is_zero() {
        bail!("--trickle-interval-ms must be at least 1");
    }
    if !(plan.signed_rate.is_finite() && plan.signed_rate > 0.0) {
        bail!("--signed-rate must be a positive number");
    }
    let mut hookline = bench
        .start_with(&[Role::Ingress], &bench.more_sources_toml())
        .await?;
    // Raised after the start: the ingress keeps the limit it would get from this shell.
    let sockets = plan.trickle_connections + plan.idle_connections + plan.forged_connections;
    let bench_nofile = raise_fd_limit(sockets as u64 + 256)?;
    let addr = hookline.ingress_addr;
    let pid = hookline.proc(Role::Ingress)?.pid();
    let log = hookline.proc(Role::Ingress)?.log_path().to_owned();
    let ingress_nofile = machine::nofile_limits(pid);
    let queue = names::under(&bench.prefix, names::INGRESS_QUEUE);
    let connection = broker::connect(&bench.amqp_url).await?;
    broker::purge(&connection, &queue).await?;

    let payloads = Payloads::generate(
        &bench.secret,
        (plan.signed_rate * plan.seconds.as_secs_f64() * 2.0).ceil() as usize + 20,
    );
    let forged: Arc<[Payload]> = payload::forged(FORGED_BODIES).into();
    let mut rounds = Vec::new();
    let mut accepted = 0;
    for round in 1..=2 {
        eprintln!("hookline-bench: attack: round {round} of 2");
        let log_before = std::fs::metadata(&log).map_or(0, |m| m.len());
        let round_started = Instant::now();
        let signed: Vec<Payload> = (0..signed_count(&plan)).map(|_| payloads.next()).collect();
        let mut result = run_round(addr, pid, plan, signed, forged.clone()).await?;
        hookline.ensure_running()?;
        tokio::time::sleep(plan.pause).await;
        accepted += result.signed.ok();
        result.accepted_so_far = accepted;
        result.settled_rss_kib = machine::status_kib(pid, "VmRSS").unwrap_or(0);
        result.spool_depth = wait_spool_empty(addr).await;
        result.queued = broker::count_deliveries(&connection, &queue).await?;
        result.log_bytes = std::fs::metadata(&log)
            .map_or(0, |m| m.len())
            .saturating_sub(log_before);
        result.log_span = round_started.elapsed();
        hookline.ensure_running()?;
        rounds.push(result);
    }
    let stopped = hookline.stop().await;
    broker::purge(&connection, &queue).await?;
    let _ = connection.close(200, "attack done".into()).await;
    Ok(AttackResult {
        plan,
        rounds,
        ingress_nofile,
        bench_nofile,
        stopped,
    })
}

/// Signed deliveries one round sends (the last one due before the round ends).
fn signed_count(plan: &AttackPlan) -> usize {
    ((plan.signed_rate * plan.seconds.as_secs_f64()).ceil() as usize).max(1)
}

/// Raises this process's soft fd limit to the hard one when `needed` is above it;
/// returns the soft limit before and after (`None`: unlimited).
fn raise_fd_limit(needed: u64) -> Result<(Option<u64>, Option<u64>)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|soft| soft >= needed) {
        return Ok((limit.current, limit.current));
    }
    if limit.maximum.is_some_and(|hard| hard < needed) {
        bail!(
            "the attack needs about {needed} file descriptors but the hard limit is {} \
             (raise it, or pass fewer connections)",
            limit.maximum.unwrap_or_default()
        );
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .context("cannot raise the soft limit of open files")?;
    Ok((limit.current, getrlimit(Resource::Nofile).current))
}

/// Runs the whole mix once.
async fn run_round(
    addr: SocketAddr,
    pid: u32,
    plan: AttackPlan,
    signed: Vec<Payload>,
    forged: Arc<[Payload]>,
) -> Result<Round> {
    let stop = CancellationToken::new();
    let signed = spawn_signed_client(addr, signed, plan, stop.clone())?;
    let sampler = RssSampler::start(pid, plan.rss_limit_kib)?;
    let meter = CpuMeter::start(&[("ingress", pid)]);
    let started = Instant::now();

    let trickle = tokio::spawn(trickle(addr, plan, stop.clone()));
    let idle_holds = Arc::new(Mutex::new(Holds::default()));
    let mut idle = tokio::task::JoinSet::new();
    for _ in 0..plan.idle_connections {
        idle.spawn(idle_connection(addr, idle_holds.clone(), stop.clone()));
    }
    let flood = tokio::spawn(load::flood(
        addr,
        forged,
        plan.forged_connections,
        stop.clone(),
    ));

    let deadline = started + plan.seconds;
    let mut stopped_early = None;
    while Instant::now() < deadline {
        tokio::time::sleep(RSS_EVERY.min(deadline.saturating_duration_since(Instant::now()))).await;
        if sampler.over_limit() {
            stopped_early = Some(format!(
                "stopped after {:.1} s: the ingress's RSS passed the {} MiB limit (--rss-limit-mib)",
                started.elapsed().as_secs_f64(),
                plan.rss_limit_kib / 1024
            ));
            break;
        }
    }
    let ran_for = started.elapsed();
    stop.cancel();
    let cpu = meter.finish();
    let samples = sampler.finish();

    let (trickle, trickle_bytes) = trickle.await.context("the slow-body driver failed")?;
    while let Some(done) = idle.join_next().await {
        done.context("an idle connection task failed")?;
    }
    let idle = std::mem::take(&mut *idle_holds.lock().unwrap_or_else(PoisonError::into_inner));
    let forged = flood.await.context("the forged-request flood failed")??;
    let signed = tokio::task::spawn_blocking(move || signed.join())
        .await
        .context("cannot wait for the signed client")?
        .map_err(|_| anyhow!("the signed client panicked"))?;
    Ok(Round {
        ran_for,
        stopped_early,
        peak_rss_kib: samples.peak_rss_kib,
        end_rss_kib: samples.last_rss_kib,
        settled_rss_kib: 0,
        peak_fds: samples.peak_fds,
        signed,
        forged,
        trickle,
        trickle_bytes,
        idle,
        log_bytes: 0,
        log_span: Duration::ZERO,
        accepted_so_far: 0,
        queued: 0,
        spool_depth: None,
        cpu,
    })
}

/// Polls `/metrics` until `hookline_spool_depth` is 0 (or the limit passes); returns it.
async fn wait_spool_empty(addr: SocketAddr) -> Option<f64> {
    let deadline = Instant::now() + SPOOL_LIMIT;
    loop {
        let depth = server_metrics::read(addr)
            .await
            .ok()
            .and_then(|m| m.sum("hookline_spool_depth", &[]));
        if depth == Some(0.0) || Instant::now() >= deadline {
            return depth;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Samples the ingress's `VmRSS` every 100 ms and its open fds every 500 ms on a plain
/// thread, so a busy bench runtime cannot skip samples.
struct RssSampler {
    stop: Arc<AtomicBool>,
    over: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Samples>,
}

/// What the sampler saw.
#[derive(Debug, Clone, Copy, Default)]
struct Samples {
    peak_rss_kib: u64,
    last_rss_kib: u64,
    peak_fds: usize,
}

impl RssSampler {
    fn start(pid: u32, limit_kib: u64) -> Result<RssSampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let over = Arc::new(AtomicBool::new(false));
        let (stop_flag, over_flag) = (stop.clone(), over.clone());
        let sample = move || {
            let mut samples = Samples::default();
            let mut n = 0u32;
            while !stop_flag.load(Ordering::Relaxed) {
                if let Some(rss) = machine::status_kib(pid, "VmRSS") {
                    samples.peak_rss_kib = samples.peak_rss_kib.max(rss);
                    samples.last_rss_kib = rss;
                    if rss > limit_kib {
                        over_flag.store(true, Ordering::Relaxed);
                    }
                }
                if n.is_multiple_of(FDS_EVERY_SAMPLES)
                    && let Some(fds) = machine::open_fds(pid)
                {
                    samples.peak_fds = samples.peak_fds.max(fds);
                }
                n += 1;
                std::thread::sleep(RSS_EVERY);
            }
            samples
        };
        let thread = std::thread::Builder::new()
            .name("attack-sampler".into())
            .spawn(sample)
            .context("cannot start the RSS sampler's thread")?;
        Ok(RssSampler { stop, over, thread })
    }

    fn over_limit(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The status code at the start of an HTTP/1 answer, as text.
fn status_of(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    let code = text.strip_prefix("HTTP/1.")?.get(2..5)?;
    code.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| code.to_owned())
}

/// How a watched connection ended.
enum Ended {
    /// The server closed it (EOF, or reset when `reset`) after `held`.
    Closed {
        held: Duration,
        answer: Option<String>,
        reset: bool,
    },
    /// The round ended first.
    StillOpen {
        held: Duration,
        answer: Option<String>,
    },
}

/// Reads what the server sends until it closes the connection or `stop`.
async fn watch_close(
    mut read: impl AsyncRead + Unpin,
    connected: Instant,
    stop: &CancellationToken,
) -> Ended {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let got = tokio::select! {
            () = stop.cancelled() => {
                return Ended::StillOpen { held: connected.elapsed(), answer: status_of(&head) };
            }
            got = read.read(&mut buf) => got,
        };
        match got {
            Ok(0) | Err(_) => {
                return Ended::Closed {
                    held: connected.elapsed(),
                    answer: status_of(&head),
                    reset: got.is_err(),
                };
            }
            Ok(n) => {
                if head.len() < 12 {
                    head.extend_from_slice(&buf[..n.min(12)]);
                }
            }
        }
    }
}

/// Records how a connection ended; returns whether it should be reopened (and after
/// what pause).
fn record(holds: &Mutex<Holds>, ended: Ended) -> Option<Duration> {
    let mut holds = holds.lock().unwrap_or_else(PoisonError::into_inner);
    match ended {
        Ended::Closed {
            held,
            answer,
            reset,
        } => {
            holds.closed_after(held, answer, reset);
            Some(if held < QUICK_CLOSE {
                RECONNECT_PAUSE
            } else {
                Duration::ZERO
            })
        }
        Ended::StillOpen { held, answer } => {
            holds.open_at_end(held, answer);
            None
        }
    }
}

/// Sleeps `pause`; false when `stop` came first.
async fn pause_unless_stopped(pause: Duration, stop: &CancellationToken) -> bool {
    if pause.is_zero() {
        return !stop.is_cancelled();
    }
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(pause) => true,
    }
}

/// Connects (with a time limit); counts the attempt. `None` on failure or `stop`.
async fn connect(
    addr: SocketAddr,
    holds: &Mutex<Holds>,
    stop: &CancellationToken,
) -> Option<TcpStream> {
    let attempt = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr));
    let connected = tokio::select! {
        () = stop.cancelled() => return None,
        connected = attempt => connected,
    };
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        _ => {
            holds
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .connect_errors += 1;
            return None;
        }
    };
    let _ = stream.set_nodelay(true);
    holds
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .connects += 1;
    Some(stream)
}

/// One idle connection: connect, send nothing, wait for the server to close; again.
async fn idle_connection(addr: SocketAddr, holds: Arc<Mutex<Holds>>, stop: CancellationToken) {
    let mut pause = Duration::ZERO;
    while pause_unless_stopped(pause, &stop).await {
        let Some(stream) = connect(addr, &holds, &stop).await else {
            pause = RECONNECT_PAUSE;
            continue;
        };
        let connected = Instant::now();
        match record(&holds, watch_close(stream, connected, &stop).await) {
            Some(next) => pause = next,
            None => return,
        }
    }
}

/// The slow-body connections: one driver writes one byte to every open connection per
/// interval with non-blocking writes (no task wake-ups per connection); a reader task per
/// connection waits for the server to answer or close, and the driver reopens closed ones.
/// Returns the holds and the body bytes written.
async fn trickle(addr: SocketAddr, plan: AttackPlan, stop: CancellationToken) -> (Holds, u64) {
    let holds = Arc::new(Mutex::new(Holds::default()));
    let head: Arc<[u8]> = format!(
        "POST /webhooks/aisle HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n{SIGNATURE_HEADER}: {BOGUS_SIGNATURE}\r\n\r\n",
        plan.trickle_content_length
    )
    .into_bytes()
    .into();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(usize, OwnedWriteHalf)>();
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<(usize, Duration)>();
    let opener = Opener {
        addr,
        head,
        holds: holds.clone(),
        ready: ready_tx,
        closed: closed_tx,
        stop: stop.clone(),
    };
    let mut slots: Vec<(Option<OwnedWriteHalf>, u64)> =
        (0..plan.trickle_connections).map(|_| (None, 0)).collect();
    let mut openers = tokio::task::JoinSet::new();
    for slot in 0..slots.len() {
        openers.spawn(opener.clone().open(slot, Duration::ZERO));
    }
    let mut tick = tokio::time::interval(plan.trickle_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut bytes = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        while let Ok((slot, writer)) = ready_rx.try_recv() {
            slots[slot] = (Some(writer), 0);
        }
        while let Ok((slot, pause)) = closed_rx.try_recv() {
            slots[slot] = (None, 0);
            openers.spawn(opener.clone().open(slot, pause));
        }
        while openers.try_join_next().is_some() {}
        for (writer, sent) in &mut slots {
            if let Some(writer) = writer
                && *sent < plan.trickle_content_length
                && let Ok(n) = writer.try_write(b"x")
            {
                *sent += n as u64;
                bytes += n as u64;
            }
        }
    }
    // Readers record the connections still open as they see `stop`.
    while openers.join_next().await.is_some() {}
    drop(slots);
    let holds = holds.lock().unwrap_or_else(PoisonError::into_inner).clone();
    (holds, bytes)
}

/// Opens slow-body connections for the trickle driver.
#[derive(Clone)]
struct Opener {
    addr: SocketAddr,
    head: Arc<[u8]>,
    holds: Arc<Mutex<Holds>>,
    ready: mpsc::UnboundedSender<(usize, OwnedWriteHalf)>,
    closed: mpsc::UnboundedSender<(usize, Duration)>,
    stop: CancellationToken,
}

impl Opener {
    /// After `pause`, connects, sends the header block, hands the write half to the
    /// driver and watches the read half until the server closes.
    async fn open(self, slot: usize, pause: Duration) {
        let mut pause = pause;
        let stream = loop {
            if !pause_unless_stopped(pause, &self.stop).await {
                return;
            }
            pause = RECONNECT_PAUSE;
            let Some(mut stream) = connect(self.addr, &self.holds, &self.stop).await else {
                continue;
            };
            let sent = tokio::select! {
                () = self.stop.cancelled() => return,
                sent = tokio::time::timeout(CONNECT_TIMEOUT, stream.write_all(&self.head)) => sent,
            };
            if matches!(sent, Ok(Ok(()))) {
                break stream;
            }
            self.holds
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .closed_after(Duration::ZERO, None, true);
        };
        let connected = Instant::now();
        let (read, write) = stream.into_split();
        if self.ready.send((slot, write)).is_err() {
            return;
        }
        let ended = watch_close(read, connected, &self.stop).await;
        if let Some(pause) = record(&self.holds, ended) {
            let _ = self.closed.send((slot, pause));
        }
    }
}

/// The well-behaved client on a thread and runtime of its own, so the rest of the mix
/// cannot delay it: one new connection per delivery, `signed_rate` per second, each
/// answer timed from its intended send time, until `stop` or the payloads run out.
fn spawn_signed_client(
    addr: SocketAddr,
    payloads: Vec<Payload>,
    plan: AttackPlan,
    stop: CancellationToken,
) -> Result<std::thread::JoinHandle<Signed>> {
    std::thread::Builder::new()
        .name("attack-signed".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime starts");
            runtime.block_on(signed_client(addr, payloads, plan, stop))
        })
        .context("cannot start the signed client's thread")
}

async fn signed_client(
    addr: SocketAddr,
    payloads: Vec<Payload>,
    plan: AttackPlan,
    stop: CancellationToken,
) -> Signed {
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / plan.signed_rate);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(due) => {}
        }
        let timeout = plan.signed_timeout;
        tasks.spawn(async move {
            let status = load::post_fresh(addr, &payload, timeout).await;
            (status, due.elapsed())
        });
    }
    let mut signed = Signed {
        sent: 0,
        on_time: 0,
        late: 0,
        other: BTreeMap::new(),
        no_answer: 0,
        latency: load::latency_histogram(),
    };
    while let Some(done) = tasks.join_next().await {
        signed.sent += 1;
        let Ok((status, took)) = done else {
            signed.no_answer += 1;
            continue;
        };
        match status {
            Some(200) if took <= ON_TIME => signed.on_time += 1,
            Some(200) => signed.late += 1,
            Some(code) => *signed.other.entry(code).or_default() += 1,
            None => signed.no_answer += 1,
        }
        if status.is_some() {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            signed.latency.saturating_record(micros.max(1));
        }
    }
    signed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_codes() {
        assert_eq!(
            status_of(b"HTTP/1.1 408 Request Timeout\r\n").as_deref(),
            Some("408")
        );
        assert_eq!(status_of(b"HTTP/1.0 400 Bad").as_deref(), Some("400"));
        assert_eq!(status_of(b"HTTP/1.1 4"), None);
        assert_eq!(status_of(b"garbage garbage"), None);
    }

    #[test]
    fn the_longest_hold_counts_open_connections_too() {
        let mut holds = Holds::default();
        holds.closed_after(Duration::from_secs(10), Some("408".into()), false);
        holds.closed_after(Duration::from_secs(1), None, true);
        holds.open_at_end(Duration::from_secs(30), None);
        assert_eq!(holds.longest(), Duration::from_secs(30));
        assert_eq!(holds.describe_answers(), "408×1, reset without an answer×1");
    }
}
