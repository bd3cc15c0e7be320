//! The HTTP load generator: hyper 1 client connections (one `TcpStream` each, keep-alive),
//! a closed loop (each connection sends its next request when the last one is answered)
//! and an open loop (requests scheduled at a fixed rate; latency counted from the intended
//! send time, so a stall is not hidden by coordinated omission).

use crate::payload::{Payload, Payloads, SIGNATURE_HEADER};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The endpoint every webhook goes to (the bench config has one Aisle source of that name).
const WEBHOOK_PATH: &str = "/webhooks/aisle";
/// A request not answered by then counts as an error (keeps every run bounded).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed request so a refused connection does not spin the loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// A latency histogram in microseconds (1 µs .. 10 min, 3 significant digits).
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What one request ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// No answer: connect, I/O or protocol error, or the request timed out.
    Error,
}

/// Answer counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// `200` answers.
    pub(crate) ok: u64,
    /// Every other status, by code.
    pub(crate) other: BTreeMap<u16, u64>,
    /// Requests without an answer.
    pub(crate) errors: u64,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Status(200) => self.ok += 1,
            Outcome::Status(code) => *self.other.entry(code).or_default() += 1,
            Outcome::Error => self.errors += 1,
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        for (code, count) in &other.other {
            *self.other.entry(*code).or_default() += count;
        }
    }

    /// Requests that did not get a 200.
    pub(crate) fn failed(&self) -> u64 {
        self.errors + self.other.values().sum::<u64>()
    }

    /// `none`, or e.g. `503×12, errors×3`.
    pub(crate) fn describe_failures(&self) -> String {
        let mut parts: Vec<String> = self
            .other
            .iter()
            .map(|(code, count)| format!("{code}×{count}"))
            .collect();
        if self.errors > 0 {
            parts.push(format!("no answer×{}", self.errors));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// One keep-alive client connection that reconnects after an error.
struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let mut conn = Conn::lazy(addr);
        conn.sender = Some(handshake(addr).await?);
        Ok(conn)
    }

    /// A connection that connects on its first request.
    fn lazy(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            host: HeaderValue::from_str(&addr.to_string())
                .expect("a socket address is a valid header value"),
            sender: None,
        }
    }

    /// POSTs `payload` to the webhook endpoint and reads the whole answer.
    async fn post(&mut self, payload: &Payload) -> Outcome {
        self.post_within(payload, REQUEST_TIMEOUT).await
    }

    /// [`Conn::post`] with its own time limit (connecting included).
    async fn post_within(&mut self, payload: &Payload, limit: Duration) -> Outcome {
        let mut request = Request::new(Full::new(payload.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_static(WEBHOOK_PATH);
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(SIGNATURE_HEADER, payload.signature.clone());
        match tokio::time::timeout(limit, self.send(request)).await {
            Ok(Ok(status)) => Outcome::Status(status),
            Ok(Err(_)) | Err(_) => {
                self.sender = None;
                Outcome::Error
            }
        }
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<u16> {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => self.sender.insert(handshake(self.addr).await?),
        };
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

async fn handshake(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; errors surface on send.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn open_all(addr: SocketAddr, connections: usize) -> Result<Vec<Conn>> {
    if connections == 0 {
        bail!("--connections must be at least 1");
    }
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(addr).await?);
    }
    Ok(conns)
}

/// POSTs `payload` once on a new connection: its status, or `None` without an answer
/// (connect, I/O or protocol error) within `limit`.
pub(crate) async fn post_fresh(
    addr: SocketAddr,
    payload: &Payload,
    limit: Duration,
) -> Option<u16> {
    match Conn::lazy(addr).post_within(payload, limit).await {
        Outcome::Status(status) => Some(status),
        Outcome::Error => None,
    }
}

/// `connections` keep-alive connections, each POSTing the next of `payloads` (cycled) as
/// soon as its last answer came, until `stop`; a connection the server closes is
/// reopened. Returns the answers (requests cut short by `stop` are not counted).
pub(crate) async fn flood(
    addr: SocketAddr,
    payloads: Arc<[Payload]>,
    connections: usize,
    stop: CancellationToken,
) -> Result<Tally> {
    if payloads.is_empty() {
        bail!("flood needs at least one payload");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for first in 0..connections {
        let payloads = payloads.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut conn = Conn::lazy(addr);
            let mut tally = Tally::default();
            let mut next = first;
            loop {
                let payload = &payloads[next % payloads.len()];
                next += connections;
                let outcome = tokio::select! {
                    () = stop.cancelled() => break,
                    outcome = conn.post(payload) => outcome,
                };
                tally.add(outcome);
                if outcome == Outcome::Error {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(ERROR_PAUSE) => {}
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = tasks.join_next().await {
        total.merge(&tally.context("a flood connection task failed")?);
    }
    Ok(total)
}

/// Recorded values above `limit_us` (to the histogram's precision).
pub(crate) fn count_above(histogram: &Histogram<u64>, limit_us: u64) -> u64 {
    histogram.len() - histogram.count_between(0, limit_us)
}

/// A one-off `GET path` on a fresh connection: status and body (5 s limit).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Bytes)> {
    let attempt = async {
        let mut sender = handshake(addr).await?;
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = path.parse::<Uri>()?;
        request
            .headers_mut()
            .insert(HOST, HeaderValue::from_str(&addr.to_string())?);
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .with_context(|| format!("GET {path} on {addr}: no answer within 5 s"))?
}

/// What a closed-loop run measured.
pub(crate) struct ClosedLoopResult {
    /// Answers completed inside the measurement window.
    pub(crate) tally: Tally,
    /// Latency of those answers.
    pub(crate) latency: Histogram<u64>,
    /// Length of the measurement window in seconds.
    pub(crate) seconds: f64,
    /// Every `200` of the run, warm-up included (what the broker or spool must hold).
    pub(crate) all_ok: u64,
}

impl ClosedLoopResult {
    /// `200`s per second inside the window.
    pub(crate) fn ok_per_sec(&self) -> f64 {
        self.tally.ok as f64 / self.seconds
    }
}

struct LoopShare {
    tally: Tally,
    latency: Histogram<u64>,
    all_ok: u64,
}

/// `connections` connections, each sending one request after another: `warmup`
/// unmeasured, then `measure` measured (by completion time).
pub(crate) async fn closed_loop(
    addr: SocketAddr,
    payloads: Arc<Payloads>,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<ClosedLoopResult> {
    let conns = open_all(addr, connections).await?;
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let payloads = payloads.clone();
        tasks.spawn(async move {
            let mut share = LoopShare {
                tally: Tally::default(),
                latency: latency_histogram(),
                all_ok: 0,
            };
            while Instant::now() < end {
                let payload = payloads.next();
                let sent = Instant::now();
                let outcome = conn.post(&payload).await;
                let done = Instant::now();
                if outcome == Outcome::Status(200) {
                    share.all_ok += 1;
                }
                if done >= measure_from && done <= end {
                    share.tally.add(outcome);
                    share.latency.saturating_record(micros(done - sent));
                }
                if outcome == Outcome::Error {
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
            share
        });
    }
    let mut result = ClosedLoopResult {
        tally: Tally::default(),
        latency: latency_histogram(),
        seconds: measure.as_secs_f64(),
        all_ok: 0,
    };
    while let Some(share) = tasks.join_next().await {
        let share = share.context("a load connection task failed")?;
        result.tally.merge(&share.tally);
        result.latency.add(&share.latency).ok();
        result.all_ok += share.all_ok;
    }
    Ok(result)
}

/// How an open-loop run is driven.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenLoopPlan {
    /// Requests per second to schedule.
    pub(crate) rate: f64,
    /// Scheduled but not measured, at the start.
    pub(crate) warmup: Duration,
    /// Measured part of the schedule.
    pub(crate) measure: Duration,
    /// Connections in the pool; a request waits for a free one (the wait counts).
    pub(crate) connections: usize,
    /// Keep the Aisle ids of all `200`s (end-to-end checks).
    pub(crate) keep_ids: bool,
}

/// What an open-loop run measured.
pub(crate) struct OpenLoopResult {
    /// Answers to the requests scheduled in the measured part.
    pub(crate) tally: Tally,
    /// Latency from each measured request's intended send time to its answer.
    pub(crate) latency: Histogram<u64>,
    /// How late the client itself started each measured request (timer, pool wait).
    pub(crate) lag: Histogram<u64>,
    /// Requests scheduled in the measured part.
    pub(crate) scheduled: u64,
    /// `200`s of the measured part per second, up to its last answer.
    pub(crate) achieved_rate: f64,
    /// Id and intended send time of every `200` of the run (when `keep_ids`).
    pub(crate) accepted_ids: Vec<(Uuid, Instant)>,
    /// When the first request was due.
    pub(crate) started: Instant,
}

struct OpenShare {
    tally: Tally,
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    ids: Vec<(Uuid, Instant)>,
    last_measured_done: Option<Instant>,
}

/// Sends `plan.rate` requests per second over a pool of connections.
pub(crate) async fn open_loop(
    addr: SocketAddr,
    payloads: Arc<Payloads>,
    plan: OpenLoopPlan,
) -> Result<OpenLoopResult> {
    if !(plan.rate.is_finite() && plan.rate > 0.0) {
        bail!("the rate must be a positive number of requests per second");
    }
    let conns = open_all(addr, plan.connections).await?;
    let (idle_tx, mut idle_rx) = mpsc::channel::<Conn>(plan.connections);
    for conn in conns {
        idle_tx
            .try_send(conn)
            .map_err(|_| anyhow::anyhow!("connection pool channel is full"))?;
    }
    let share = Arc::new(Mutex::new(OpenShare {
        tally: Tally::default(),
        latency: latency_histogram(),
        lag: latency_histogram(),
        ids: Vec::new(),
        last_measured_done: None,
    }));
    let warm = (plan.warmup.as_secs_f64() * plan.rate).round() as u64;
    let total = warm + (plan.measure.as_secs_f64() * plan.rate).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + Duration::from_secs_f64(warm as f64 / plan.rate);
    let due = move |i: u64| start + Duration::from_secs_f64(i as f64 / plan.rate);
    let mut ticks = pace(total, due);

    while let Some(i) = ticks.recv().await {
        let due = due(i);
        let mut conn = idle_rx
            .recv()
            .await
            .context("connection pool closed unexpectedly")?;
        let payload = payloads.next();
        let idle_tx = idle_tx.clone();
        let share = share.clone();
        let keep_ids = plan.keep_ids;
        let measured = i >= warm;
        tokio::spawn(async move {
            let began = Instant::now();
            let outcome = conn.post(&payload).await;
            let done = Instant::now();
            {
                let mut share = share.lock().unwrap_or_else(PoisonError::into_inner);
                if keep_ids && outcome == Outcome::Status(200) {
                    share.ids.push((payload.id, due));
                }
                if measured {
                    share.tally.add(outcome);
                    share.latency.saturating_record(micros(done - due));
                    share
                        .lag
                        .saturating_record(micros(began.saturating_duration_since(due)));
                    share.last_measured_done = Some(done);
                }
            }
            if outcome == Outcome::Error {
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            let _ = idle_tx.send(conn).await;
        });
    }
    // Every connection back in the pool means every request has its answer.
    for _ in 0..plan.connections {
        tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), idle_rx.recv())
            .await
            .context("requests still unanswered long after the schedule ended")?;
    }
    let mut share = share.lock().unwrap_or_else(PoisonError::into_inner);
    let window = share
        .last_measured_done
        .map_or(plan.measure, |done| {
            done.saturating_duration_since(measure_from)
        })
        .as_secs_f64();
    let achieved_rate = if window > 0.0 {
        share.tally.ok as f64 / window
    } else {
        0.0
    };
    Ok(OpenLoopResult {
        tally: std::mem::take(&mut share.tally),
        achieved_rate,
        latency: std::mem::replace(&mut share.latency, latency_histogram()),
        lag: std::mem::replace(&mut share.lag, latency_histogram()),
        scheduled: total - warm,
        accepted_ids: std::mem::take(&mut share.ids),
        started: start,
    })
}

/// Emits `0..total` at the instants `due(i)` from a plain thread: `thread::sleep` wakes
/// within tens of microseconds, where tokio's timer rounds up to the next millisecond and
/// would add up to 1 ms of client lag to every latency. A late tick is sent at once; the
/// receiver measures from `due(i)` anyway.
fn pace(total: u64, due: impl Fn(u64) -> Instant + Send + 'static) -> mpsc::UnboundedReceiver<u64> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for i in 0..total {
            let at = due(i);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(i).is_err() {
                break;
            }
        }
    });
    rx
}
