//! The markdown report: machine info, one table with every figure and its target, CPU use
//! per phase, and notes (server-side timings, shutdowns, measurement caveats).

use crate::attack::{self, AttackResult};
use crate::burst::{self, BurstResult};
use crate::ceiling::CeilingResult;
use crate::e2e::E2eResult;
use crate::ingress::IngressResult;
use crate::machine::MachineInfo;
use crate::naive::NaiveResult;
use crate::outage::OutageResult;
use crate::process::Stopped;
use crate::rate::RateResult;
use crate::server_metrics::ServerMetrics;
use crate::worker::WorkerResult;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::time::Duration;

/// Target: ingress throughput as a share of the broker ceiling.
const INGRESS_VS_CEILING: f64 = 1.0;
/// Target: ingress throughput as a share of the naive ingress.
const INGRESS_VS_NAIVE: f64 = 1.5;
/// Target: ingress p99 in the closed loop.
const INGRESS_P99: Duration = Duration::from_millis(25);
/// Target: p99 at the open-loop rate.
const RATE_P99: Duration = Duration::from_millis(5);
/// Target: end-to-end events per second as a share of the broker ceiling.
const E2E_VS_CEILING: f64 = 0.50;
/// Target: p99 while spooling.
const OUTAGE_P99: Duration = Duration::from_millis(100);
/// Target: spooling throughput as a share of normal ingress throughput.
const SPOOL_VS_INGRESS: f64 = 0.50;
/// Target: drain rate as a share of the broker ceiling.
const DRAIN_VS_CEILING: f64 = 0.80;
/// Target: signed deliveries answered 200 within 1 s during the attack.
const ATTACK_ON_TIME: f64 = 0.99;
/// Target: the attack's second round peaks at most this much above the first.
const ATTACK_SECOND_PEAK: f64 = 1.10;
/// Target: the attack's load generator, % of one core.
const ATTACK_BENCH_CPU: f64 = 25.0;
/// Target: log bytes per minute during the attack.
const ATTACK_LOG_PER_MIN: f64 = 1_000_000.0;

/// Everything one bench run found.
pub(crate) struct Report {
    /// Where it ran.
    pub(crate) machine: MachineInfo,
    /// The command line, for the header.
    pub(crate) command: String,
    /// The hookline binary under test.
    pub(crate) binary: String,
    /// Measured seconds per mode.
    pub(crate) seconds: u64,
    /// Client connections.
    pub(crate) connections: usize,
    /// `ceiling` results.
    pub(crate) ceiling: Option<CeilingResult>,
    /// `naive` results.
    pub(crate) naive: Option<NaiveResult>,
    /// `ingress` results.
    pub(crate) ingress: Option<IngressResult>,
    /// `rate` results.
    pub(crate) rate: Option<RateResult>,
    /// `e2e` results.
    pub(crate) e2e: Option<E2eResult>,
    /// `burst` results.
    pub(crate) burst: Option<BurstResult>,
    /// `worker` results.
    pub(crate) worker: Option<WorkerResult>,
    /// `outage` results.
    pub(crate) outage: Option<OutageResult>,
    /// `attack` results.
    pub(crate) attack: Option<AttackResult>,
    /// Modes that failed, with their error.
    pub(crate) failures: Vec<(&'static str, String)>,
}

impl Report {
    /// An empty report for a run.
    pub(crate) fn new(
        machine: MachineInfo,
        command: String,
        binary: String,
        seconds: u64,
        connections: usize,
    ) -> Report {
        Report {
            machine,
            command,
            binary,
            seconds,
            connections,
            ceiling: None,
            naive: None,
            ingress: None,
            rate: None,
            e2e: None,
            burst: None,
            worker: None,
            outage: None,
            attack: None,
            failures: Vec::new(),
        }
    }

    /// The whole report as markdown.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        let mut table = Table::default();
        self.ceiling_rows(&mut table);
        self.naive_rows(&mut table);
        self.ingress_rows(&mut table);
        self.rate_rows(&mut table);
        self.e2e_rows(&mut table);
        self.burst_rows(&mut table);
        self.worker_rows(&mut table);
        self.outage_rows(&mut table);
        self.attack_rows(&mut table);
        out.push_str(&table.render());
        self.cpu_section(&mut out);
        self.notes(&mut out);
        out
    }

    fn header(&self, out: &mut String) {
        let m = &self.machine;
        let _ = writeln!(out, "## hookline benchmark\n");
        let _ = writeln!(out, "`{}`\n", self.command);
        let _ = writeln!(out, "hookline under test: `{}`\n", self.binary);
        let _ = writeln!(
            out,
            "Machine: {} cores (nproc), {}, {} MiB RAM, Linux {}; RabbitMQ {} on 127.0.0.1 \
             (shares the cores). {} s measured per mode, {} client connections.\n",
            m.nproc, m.cpu, m.memory_mib, m.kernel, m.rabbitmq, self.seconds, self.connections
        );
    }

    fn ceiling_rows(&self, t: &mut Table) {
        let Some(c) = &self.ceiling else { return };
        t.row(
            &format!(
                "Broker ceiling: {}, persistent {} B msgs, confirms, {} in flight",
                if c.plan.ingress_like {
                    "lapin publishing like the ingress (headers, mandatory, 4 channels)"
                } else {
                    "bare lapin publisher"
                },
                c.body_bytes,
                c.plan.window
            ),
            &format!(
                "{} msg/s ({} confirmed, {} nacked)",
                rate(c.msgs_per_sec),
                c.confirmed,
                c.nacked
            ),
            "reference",
            "",
        );
        t.row(
            "Broker ceiling: publish → confirm p50 / p99 / p99.9",
            &percentiles(&c.confirm_latency, false),
            "",
            "",
        );
    }

    /// ` = 64% of ceiling`, or nothing without a ceiling.
    fn of_ceiling(&self, value: f64) -> String {
        match &self.ceiling {
            Some(c) if c.msgs_per_sec > 0.0 => {
                format!(" = {:.0}% of ceiling", value / c.msgs_per_sec * 100.0)
            }
            _ => String::new(),
        }
    }

    fn naive_rows(&self, t: &mut Table) {
        let Some(n) = &self.naive else { return };
        let rps = n.load.ok_per_sec();
        t.row(
            &format!(
                "Naive server (axum + lapin inside the bench, 1 confirm channel, confirm awaited \
                 per request), same closed loop as ingress, {} conns: 200s/s",
                self.connections
            ),
            &format!("{} req/s{}", rate(rps), self.of_ceiling(rps)),
            "reference (the floor)",
            "",
        );
        t.row(
            "Naive latency p50 / p99 / p99.9",
            &percentiles(&n.load.latency, false),
            "",
            "",
        );
        t.row(
            "Naive non-200 answers",
            &n.load.tally.describe_failures(),
            "none",
            &verdict(n.load.tally.failed() == 0),
        );
    }

    fn ingress_rows(&self, t: &mut Table) {
        let Some(i) = &self.ingress else { return };
        let rps = i.load.ok_per_sec();
        let vs_ceiling = self
            .ceiling
            .as_ref()
            .filter(|c| c.msgs_per_sec > 0.0)
            .map(|c| rps / c.msgs_per_sec);
        let vs_naive = self
            .naive
            .as_ref()
            .map(|n| n.load.ok_per_sec())
            .filter(|n| *n > 0.0)
            .map(|n| rps / n);
        let ratios: Vec<String> = [(vs_ceiling, "ceiling"), (vs_naive, "naive")]
            .into_iter()
            .filter_map(|(r, of)| r.map(|r| format!("{r:.2}× {of}")))
            .collect();
        let v = match (vs_ceiling, vs_naive) {
            (Some(c), Some(n)) => verdict(c >= INGRESS_VS_CEILING && n >= INGRESS_VS_NAIVE),
            _ => "n/a (needs ceiling and naive)".to_owned(),
        };
        t.row(
            &format!(
                "Ingress only, closed loop, {} conns: 200s/s",
                self.connections
            ),
            &format!("{} req/s = {}", rate(rps), ratios.join(", ")),
            &format!("≥ {INGRESS_VS_CEILING:.1}× ceiling and ≥ {INGRESS_VS_NAIVE:.1}× naive"),
            &v,
        );
        let p99 = quantile(&i.load.latency, 0.99);
        t.row(
            "Ingress latency p50 / p99 / p99.9",
            &percentiles(&i.load.latency, false),
            &format!("p99 ≤ {} ms", INGRESS_P99.as_millis()),
            &verdict(!i.load.latency.is_empty() && p99 <= INGRESS_P99),
        );
        t.row(
            "Ingress non-200 answers",
            &i.load.tally.describe_failures(),
            "none",
            &verdict(i.load.tally.failed() == 0),
        );
        t.row(
            "Ingress peak RSS (VmHWM)",
            &format!("{:.1} MiB", i.peak_rss_kib as f64 / 1024.0),
            "",
            "",
        );
        t.row(
            "Ingress: how deliveries were made durable",
            &durability(&i.server),
            "",
            "",
        );
    }

    fn rate_rows(&self, t: &mut Table) {
        let Some(r) = &self.rate else { return };
        t.row(
            "Open loop: how deliveries were made durable",
            &durability(&r.server),
            "",
            "",
        );
        let p99 = quantile(&r.load.latency, 0.99);
        t.row(
            &format!("Open loop {} req/s: p50 / p99 / p99.9 / max", rate(r.rate)),
            &percentiles(&r.load.latency, true),
            &format!("p99 ≤ {} ms", RATE_P99.as_millis()),
            &verdict(!r.load.latency.is_empty() && p99 <= RATE_P99),
        );
        t.row(
            "Open loop: achieved rate, non-200",
            &format!(
                "{} req/s of {} scheduled; {}",
                rate(r.load.achieved_rate),
                r.load.scheduled,
                r.load.tally.describe_failures()
            ),
            "",
            "",
        );
    }

    fn e2e_rows(&self, t: &mut Table) {
        let Some(e) = &self.e2e else { return };
        t.row(
            &format!(
                "E2E (ingress + worker) at {} req/s scheduled: accepted",
                rate(e.rate)
            ),
            &format!(
                "{} req/s ({:.0}% of scheduled)",
                rate(e.load.achieved_rate),
                e.load.achieved_rate / e.rate * 100.0
            ),
            "≥ 90% of scheduled",
            &verdict(e.rate_sustained()),
        );
        let ceiling = self.ceiling.as_ref().map(|c| c.msgs_per_sec);
        let share = e.of_ceiling(ceiling);
        t.row(
            "E2E: events reached `<prefix>.events` (first send → last event)",
            &format!(
                "{} ev/s{} ({} events)",
                rate(e.events_rate),
                share.map_or(String::new(), |r| format!(" = {r:.2}× ceiling")),
                e.events
            ),
            &format!("≥ {E2E_VS_CEILING:.2}× ceiling"),
            &share.map_or("n/a (needs ceiling)".to_owned(), |r| {
                verdict(r >= E2E_VS_CEILING)
            }),
        );
        t.row(
            "E2E: `<prefix>.ingress` backlog at stop → 5 s later → at the end",
            &format!(
                "{} → {} → {}",
                e.backlog_at_stop, e.backlog_later, e.backlog_final
            ),
            "0 at the end",
            &verdict(e.backlog_final == 0),
        );
        t.row(
            "E2E: every accepted id arrived exactly once",
            &format!(
                "{} accepted: missing {}, duplicates {}, unexpected {}; non-200: {}",
                e.load.accepted_ids.len(),
                e.missing,
                e.duplicates,
                e.unexpected,
                e.load.tally.describe_failures()
            ),
            "0 missing, 0 dup",
            &verdict(e.exactly_once()),
        );
        t.row(
            "E2E: webhook → event latency p50 / p99 / p99.9 / max",
            &percentiles(&e.latency, true),
            "",
            "",
        );
    }

    fn burst_rows(&self, t: &mut Table) {
        let Some(b) = &self.burst else { return };
        t.row(
            &format!(
                "Burst (ingress + worker), open loop {} req/s offered for {} s: answered 200",
                rate(b.rate),
                self.seconds
            ),
            &format!(
                "{} of {} offered ({} req/s{}); non-200: {}",
                count(b.accepted()),
                count(b.load.scheduled),
                rate(b.load.achieved_rate),
                self.of_ceiling(b.load.achieved_rate),
                b.load.tally.describe_failures()
            ),
            "",
            "",
        );
        let answered = b.load.latency.len();
        t.row(
            "Burst latency from the intended send time p50 / p99 / max; answers over 1 s",
            &format!(
                "{} / {} / {}; {} of {} over 1 s ({:.1}%)",
                fmt_us(b.load.latency.value_at_quantile(0.5)),
                fmt_us(b.load.latency.value_at_quantile(0.99)),
                fmt_us(b.load.latency.max()),
                count(b.slow_answers),
                count(answered),
                b.slow_answers as f64 / answered.max(1) as f64 * 100.0
            ),
            "every answer 200 within 1 s",
            &verdict(answered > 0 && b.slow_answers == 0 && b.load.tally.failed() == 0),
        );
        t.row(
            "Burst: last answer → every 200 an event, `<prefix>.ingress` empty",
            &format!(
                "{} (at the last answer: backlog {}, {} of {} events; last answer {} after the schedule's end)",
                b.tail
                    .took()
                    .map_or(format!("not within the limit ({} events)", b.tail.events), secs),
                count(b.backlog_at_end.into()),
                count(b.events_at_end.into()),
                count(b.accepted()),
                secs(b.answers_lag)
            ),
            "",
            "",
        );
        let e2e_rate = self.e2e.as_ref().map(|e| e.events_rate);
        t.row(
            "Burst: drain rate during the tail",
            &b.drain_rate()
                .map_or("n/a (nothing left to drain)".to_owned(), |d| {
                    format!(
                        "{} ev/s{}{} ({} events in {})",
                        rate(d),
                        self.of_ceiling(d),
                        e2e_rate
                            .filter(|e| *e > 0.0)
                            .map_or(String::new(), |e| format!(", {:.2}× e2e", d / e)),
                        count(b.tail.events.saturating_sub(b.events_at_end).into()),
                        b.tail.took().map_or("?".to_owned(), secs)
                    )
                }),
            "≥ the e2e rate",
            &match (b.drain_rate(), e2e_rate) {
                (Some(d), Some(e)) => verdict(d >= e),
                (None, _) => "n/a".to_owned(),
                (_, None) => "n/a (needs e2e)".to_owned(),
            },
        );
        t.row(
            "Burst: lost (200s without an event) / extra events (duplicates)",
            &format!(
                "lost {}, extra {} ({} answered 200, {} events)",
                count(b.lost()),
                count(b.extra()),
                count(b.accepted()),
                count(b.events_final.into())
            ),
            "0 lost, 0 dup",
            &verdict(b.tail.done.is_some() && b.lost() == 0 && b.extra() == 0),
        );
    }

    fn worker_rows(&self, t: &mut Table) {
        let Some(w) = &self.worker else { return };
        t.row(
            &format!(
                "Worker alone: {} pre-filled deliveries, worker start → `<prefix>.ingress` empty and all events",
                count(w.deliveries)
            ),
            &format!(
                "{} (ready after {}, first event after {})",
                w.drain_time()
                    .map_or(format!("not within the limit ({} events)", w.drained.events), secs),
                secs(w.ready_after),
                w.drained
                    .first_event
                    .map_or("?".to_owned(), |at| secs(at.saturating_duration_since(w.drained.since)))
            ),
            "",
            "",
        );
        t.row(
            "Worker: events/s (whole drain; after the first event)",
            &match (w.events_per_sec(), w.steady_events_per_sec()) {
                (Some(all), steady) => format!(
                    "{} ev/s{}; {} ev/s",
                    rate(all),
                    self.of_ceiling(all),
                    steady.map_or("?".to_owned(), rate)
                ),
                (None, _) => "n/a (did not finish)".to_owned(),
            },
            "",
            "",
        );
        t.row(
            "Worker: every delivery became exactly one event",
            &format!(
                "{} events for {} deliveries; {} left in `<prefix>.ingress`",
                count(w.events_final.into()),
                count(w.deliveries),
                count(w.drained.ingress_left.into())
            ),
            "all, no dup",
            &verdict(w.complete()),
        );
        t.row(
            "Worker CPU (start → drained) and peak RSS",
            &format!(
                "{} of one core; {:.1} MiB",
                w.cpu
                    .processes
                    .iter()
                    .find(|(label, _, _)| label == "worker")
                    .map_or("?".to_owned(), |(_, pct, _)| format!("{pct:.0}%")),
                w.peak_rss_kib as f64 / 1024.0
            ),
            "",
            "",
        );
    }

    fn outage_rows(&self, t: &mut Table) {
        let Some(o) = &self.outage else { return };
        let rps = o.load.ok_per_sec();
        let (ratio, v) = match &self.ingress {
            Some(i) if i.load.ok_per_sec() > 0.0 => {
                let r = rps / i.load.ok_per_sec();
                (
                    format!(" = {:.0}% of ingress", r * 100.0),
                    verdict(r >= SPOOL_VS_INGRESS),
                )
            }
            _ => (String::new(), "n/a (needs ingress)".to_owned()),
        };
        t.row(
            &format!(
                "Outage (stop_app), closed loop {} conns: 200s/s while spooling",
                self.connections
            ),
            &format!("{} req/s{ratio}", rate(rps)),
            "≥ 50% of ingress",
            &v,
        );
        let p99 = quantile(&o.load.latency, 0.99);
        t.row(
            "Outage latency p50 / p99 / p99.9",
            &percentiles(&o.load.latency, false),
            "p99 ≤ 100 ms",
            &verdict(!o.load.latency.is_empty() && p99 <= OUTAGE_P99),
        );
        t.row(
            "Outage non-200 answers",
            &o.load.tally.describe_failures(),
            "none",
            &verdict(o.load.tally.failed() == 0),
        );
        t.row(
            "Outage: reconnect delay (start_app done → first drained msg)",
            &o.reconnect_delay.map_or("never".to_owned(), secs),
            "backoff ≤ 10 s",
            "",
        );
        let (value, v) = match (o.drain_rate, &self.ceiling) {
            (Some(d), Some(c)) if c.msgs_per_sec > 0.0 => (
                format!(
                    "{} msg/s = {:.0}% of ceiling ({} in {})",
                    rate(d),
                    d / c.msgs_per_sec * 100.0,
                    o.accepted,
                    o.drain_time.map_or("?".to_owned(), secs)
                ),
                verdict(d / c.msgs_per_sec >= DRAIN_VS_CEILING),
            ),
            (Some(d), _) => (
                format!("{} msg/s", rate(d)),
                "n/a (needs ceiling)".to_owned(),
            ),
            (None, _) => (
                format!("not measurable ({} queued of {})", o.queued, o.accepted),
                verdict(false),
            ),
        };
        t.row(
            "Outage: drain rate (first → all deliveries in queue)",
            &value,
            "≥ 80% of ceiling",
            &v,
        );
        t.row(
            "Outage: queue holds all accepted; spool depth at end",
            &format!(
                "{} of {}; spool_depth {}; direct {}",
                o.queued,
                o.accepted,
                o.spool_depth_end.map_or("?".to_owned(), |d| format!("{d}")),
                o.direct_end.map_or("?".to_owned(), |d| format!("{d}"))
            ),
            "all; 0",
            &verdict(o.complete()),
        );
    }

    fn attack_rows(&self, t: &mut Table) {
        let Some(a) = &self.attack else { return };
        let p = &a.plan;
        let each = |f: &dyn Fn(&attack::Round) -> String| {
            a.rounds.iter().map(f).collect::<Vec<_>>().join(" / ")
        };
        t.row(
            &format!(
                "Attack, {} s per round, 2 rounds against one ingress: {} slow bodies (headers, then 1 B per {} ms of {} B), \
                 {} idle, {} forged-signature keep-alive conns, signed client {}/s",
                p.seconds.as_secs(),
                p.trickle_connections,
                p.trickle_interval.as_millis(),
                p.trickle_content_length,
                rate(p.idle_connections as f64),
                p.forged_connections,
                p.signed_rate
            ),
            &format!(
                "ran {}{}",
                each(&|r| secs(r.ran_for)),
                a.rounds
                    .iter()
                    .filter_map(|r| r.stopped_early.as_deref())
                    .map(|why| format!("; {why}"))
                    .collect::<String>()
            ),
            "full time",
            &verdict(a.rounds.iter().all(|r| r.stopped_early.is_none())),
        );
        let (second, v) = match a.rounds.as_slice() {
            // A round cut short at the RSS limit says memory is not bounded.
            rounds if rounds.iter().any(|r| r.stopped_early.is_some()) => (
                " (a round stopped at the RSS limit)".to_owned(),
                verdict(false),
            ),
            [one, two, ..] if one.peak_rss_kib > 0 => {
                let growth = two.peak_rss_kib as f64 / one.peak_rss_kib as f64;
                (
                    format!(" (round 2 = {:+.0}%)", (growth - 1.0) * 100.0),
                    verdict(growth <= ATTACK_SECOND_PEAK),
                )
            }
            _ => (String::new(), "n/a".to_owned()),
        };
        t.row(
            "Attack: ingress peak RSS (VmRSS sampled every 100 ms), round 1 / round 2",
            &format!("{}{second}", each(&|r| mib(r.peak_rss_kib))),
            "round 2 ≤ round 1 + 10%",
            &v,
        );
        t.row(
            "Attack: ingress RSS at the round's end → after the pause",
            &each(&|r| format!("{} → {}", mib(r.end_rss_kib), mib(r.settled_rss_kib))),
            "",
            "",
        );
        t.row(
            "Attack: signed deliveries answered 200 within 1 s (from the intended send time)",
            &each(&|r| {
                format!(
                    "{:.1}% ({} of {})",
                    r.signed.on_time_share() * 100.0,
                    count(r.signed.on_time),
                    count(r.signed.sent)
                )
            }),
            "≥ 99%",
            &verdict(
                !a.rounds.is_empty()
                    && a.rounds
                        .iter()
                        .all(|r| r.signed.on_time_share() >= ATTACK_ON_TIME),
            ),
        );
        t.row(
            "Attack: signed client 200 late / non-200 / no answer within the time limit; latency p50 / p99 / max",
            &each(&|r| {
                format!(
                    "late {}, failed: {}; {}",
                    r.signed.late,
                    r.signed.describe_failures(),
                    percentiles_max(&r.signed.latency)
                )
            }),
            "",
            "",
        );
        t.row(
            "Attack: signed 200s (cumulative) vs `<prefix>.ingress` depth + spool (no worker runs)",
            &each(&|r| {
                format!(
                    "{} → {} queued + {} spooled, lost {}",
                    count(r.accepted_so_far),
                    count(r.queued),
                    r.spool_depth.map_or("?".to_owned(), |d| format!("{d}")),
                    r.lost()
                )
            }),
            "0 lost",
            &verdict(!a.rounds.is_empty() && a.rounds.iter().all(|r| r.lost() == 0)),
        );
        t.row(
            "Attack: forged requests answered (per s): status codes",
            &each(&|r| {
                let answered = r.forged.ok + r.forged.other.values().sum::<u64>();
                format!(
                    "{} ({}/s): {}{}",
                    count(answered),
                    rate(r.forged_per_sec()),
                    if r.forged.ok > 0 {
                        format!("200×{}, ", r.forged.ok)
                    } else {
                        String::new()
                    },
                    r.forged.describe_failures()
                )
            }),
            "no 200",
            &verdict(a.rounds.iter().all(|r| r.forged.ok == 0)),
        );
        t.row(
            "Attack: slow bodies: longest hold (connect → server close), connects, what the server answered",
            &each(&|r| holds_text(&r.trickle, Some(r.trickle_bytes))),
            "",
            "",
        );
        t.row(
            "Attack: idle connections: longest hold (connect → server close), connects, answers",
            &each(&|r| holds_text(&r.idle, None)),
            "",
            "",
        );
        t.row(
            "Attack: ingress log written from the round's start to the end of the pause after it (per minute of that span)",
            &each(&|r| {
                format!(
                    "{} ({}/min)",
                    bytes_text(r.log_bytes as f64),
                    bytes_text(r.log_bytes_per_min())
                )
            }),
            "≤ 1 MB/min",
            &verdict(
                a.rounds
                    .iter()
                    .all(|r| r.log_bytes_per_min() <= ATTACK_LOG_PER_MIN),
            ),
        );
        t.row(
            "Attack: ingress open fds at peak (sampled every 500 ms)",
            &each(&|r| r.peak_fds.to_string()),
            "",
            "",
        );
        let planned = 1.0 / p.trickle_interval.as_secs_f64();
        t.row(
            &format!(
                "Attack: load generator: slow-body bytes per connection per second (planned {planned:.0}); bench process CPU"
            ),
            &each(&|r| {
                format!(
                    "{:.0} B/s; {}",
                    r.trickle_bytes_per_conn_sec(p.trickle_connections),
                    r.cpu
                        .processes
                        .iter()
                        .find(|(label, _, _)| label == "bench")
                        .map_or("?".to_owned(), |(_, pct, _)| format!("{pct:.0}% of one core"))
                )
            }),
            "≥ 90% of planned; ≤ 25% of one core",
            &verdict(a.rounds.iter().all(|r| {
                let cpu = r
                    .cpu
                    .processes
                    .iter()
                    .find(|(label, _, _)| label == "bench")
                    .map_or(f64::INFINITY, |(_, pct, _)| *pct);
                r.trickle_bytes_per_conn_sec(p.trickle_connections) >= 0.9 * planned
                    && cpu <= ATTACK_BENCH_CPU
            })),
        );
    }

    fn cpu_section(&self, out: &mut String) {
        let mut lines = Vec::new();
        if let Some(c) = &self.ceiling {
            lines.push(format!("- ceiling: {}", c.cpu.describe()));
        }
        if let Some(n) = &self.naive {
            lines.push(format!("- naive: {}", n.cpu.describe()));
        }
        if let Some(i) = &self.ingress {
            lines.push(format!("- ingress: {}", i.cpu.describe()));
        }
        if let Some(r) = &self.rate {
            lines.push(format!("- rate {}: {}", rate(r.rate), r.cpu.describe()));
        }
        if let Some(e) = &self.e2e {
            lines.push(format!("- e2e: {}", e.cpu.describe()));
        }
        if let Some(b) = &self.burst {
            lines.push(format!("- burst (burst and tail): {}", b.cpu.describe()));
        }
        if let Some(w) = &self.worker {
            lines.push(format!("- worker (start → drained): {}", w.cpu.describe()));
        }
        if let Some(o) = &self.outage {
            lines.push(format!("- outage (spooling): {}", o.cpu.describe()));
        }
        if let Some(a) = &self.attack {
            for (i, round) in a.rounds.iter().enumerate() {
                lines.push(format!(
                    "- attack round {}: {}",
                    i + 1,
                    round.cpu.describe()
                ));
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(
                out,
                "\nCPU during the timed phases (% of one core; {} cores = {}%):\n",
                self.machine.nproc,
                self.machine.nproc * 100
            );
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
    }

    fn notes(&self, out: &mut String) {
        let mut notes = Vec::new();
        if let Some(i) = &self.ingress {
            if let Some(line) = ack_note(&i.server, &i.load.latency) {
                notes.push(format!("ingress: {line}"));
            }
            if let Some(spooled) = i
                .server
                .sum("hookline_ingress_requests_total", &["stored=\"spool\""])
                && spooled > 0.0
            {
                notes.push(format!(
                    "ingress: {spooled} deliveries went to the spool during the normal-ingress run (a missed {} ms confirm deadline switches to spooling)",
                    800
                ));
            }
            if i.made_late > 0 {
                notes.push(format!(
                    "ingress: the body pool ran out; {} bodies were signed during timing",
                    i.made_late
                ));
            }
        }
        if let Some(r) = &self.rate
            && let Some(line) = ack_note(&r.server, &r.load.latency)
        {
            notes.push(format!("rate {}: {line}", rate(r.rate)));
        }
        if let Some(r) = &self.rate {
            notes.push(format!(
                "rate: client start lag behind schedule (pacing thread, waiting for a free connection) p50 {} / p99 {}; included in the latencies",
                fmt_us(r.load.lag.value_at_quantile(0.5)),
                fmt_us(r.load.lag.value_at_quantile(0.99)),
            ));
        }
        if let Some(e) = &self.e2e {
            notes.push(format!(
                "e2e: worker peak RSS {:.1} MiB; the bench queue is durable (like a subscription)",
                e.worker_rss_kib as f64 / 1024.0
            ));
        }
        if let Some(e) = &self.e2e
            && let Some(batch) = e
                .worker
                .histogram_mean("hookline_processed_flush_batch", &[])
        {
            notes.push(format!(
                "e2e: worker processed-id store: {batch:.1} deliveries per flush on average"
            ));
        }
        if let Some(o) = &self.outage {
            notes.push(format!(
                "outage: spool depth before start_app {}; start_app took {}; spool commits {} for {} appends",
                o.spool_depth_before.map_or("?".to_owned(), |d| format!("{d}")),
                secs(o.start_app_took),
                o.server.sum("hookline_spool_commits_total", &[]).map_or("?".to_owned(), |v| format!("{v}")),
                o.server.sum("hookline_spool_appends_total", &[]).map_or("?".to_owned(), |v| format!("{v}")),
            ));
            if let Some(mean) = o
                .server
                .histogram_mean("hookline_spool_commit_seconds", &[])
            {
                notes.push(format!(
                    "outage: mean spool commit (write + fsync) {:.2} ms",
                    mean * 1000.0
                ));
            }
        }
        if let Some(n) = &self.naive {
            if n.publish_failures > 0 {
                notes.push(format!(
                    "naive: {} publishes failed or were nacked (answered 503)",
                    n.publish_failures
                ));
            }
            if n.made_late > 0 {
                notes.push(format!(
                    "naive: the body pool ran out; {} bodies were signed during timing",
                    n.made_late
                ));
            }
            notes.push(
                "naive: the server runs inside the bench process on its own 2-thread runtime; \
                 its CPU is the `naive server` part of the bench's"
                    .to_owned(),
            );
        }
        if let Some(b) = &self.burst {
            notes.push(format!(
                "burst: peak RSS ingress {}, worker {}; observer queue bound with `#` by the worker (durable, counted, not consumed); \
                 client start lag behind schedule p50 {} / p99 {}",
                mib(b.peak_rss_kib.0),
                mib(b.peak_rss_kib.1),
                fmt_us(b.load.lag.value_at_quantile(0.5)),
                fmt_us(b.load.lag.value_at_quantile(0.99)),
            ));
            if b.slow_answers > 0 {
                notes.push(format!(
                    "burst: {} answers took over {} from their intended send time (queueing in the client's {}-connection pool counts)",
                    b.slow_answers,
                    secs(burst::SLOW_ANSWER),
                    self.connections
                ));
            }
        }
        if let Some(w) = &self.worker {
            notes.push(format!(
                "worker: pre-fill of {} deliveries took {} ({} msg/s, 1024 confirms in flight); \
                 the observer queue is bound with `#` by the worker before it consumes (durable, counted, not consumed)",
                count(w.deliveries),
                secs(w.prefill_took),
                rate(w.deliveries as f64 / w.prefill_took.as_secs_f64().max(1e-3))
            ));
            if let Some(batch) = w
                .server
                .histogram_mean("hookline_processed_flush_batch", &[])
            {
                notes.push(format!(
                    "worker: processed-id store: {batch:.1} deliveries per flush on average"
                ));
            }
        }
        if let Some(a) = &self.attack {
            notes.push(format!(
                "attack: the ingress's open-file limit (soft / hard) {}; the bench's soft limit {} → {} (raised after the ingress started)",
                a.ingress_nofile.as_deref().unwrap_or("?"),
                limit_text(a.bench_nofile.0),
                limit_text(a.bench_nofile.1)
            ));
            notes.push(
                "attack: slow bodies are written by one timer loop with non-blocking 1-byte writes; \
                 the signed client runs on its own thread and runtime (a new connection per delivery); \
                 a connection the server closes within 1 s is reopened after 100 ms"
                    .to_owned(),
            );
        }
        let stops = self
            .ingress
            .iter()
            .flat_map(|i| &i.stopped)
            .chain(self.rate.iter().flat_map(|r| &r.stopped))
            .chain(self.e2e.iter().flat_map(|e| &e.stopped))
            .chain(self.burst.iter().flat_map(|b| &b.stopped))
            .chain(self.worker.iter().flat_map(|w| &w.stopped))
            .chain(self.outage.iter().flat_map(|o| &o.stopped))
            .chain(self.attack.iter().flat_map(|a| &a.stopped));
        let bad: Vec<&Stopped> = stops.filter(|s| !s.graceful()).collect();
        if !bad.is_empty() {
            for s in bad {
                notes.push(format!(
                    "{} did not stop gracefully: {} after {}",
                    s.role.as_str(),
                    s.status.map_or("killed".to_owned(), |st| st.to_string()),
                    secs(s.took)
                ));
            }
        } else if self.ingress.is_some()
            || self.rate.is_some()
            || self.e2e.is_some()
            || self.burst.is_some()
            || self.worker.is_some()
            || self.outage.is_some()
            || self.attack.is_some()
        {
            notes.push("every hookline process exited 0 within 10 s of SIGTERM".to_owned());
        }
        for (mode, error) in &self.failures {
            notes.push(format!("**{mode} failed**: {error}"));
        }
        if !notes.is_empty() {
            let _ = writeln!(out, "\nNotes:\n");
            for note in notes {
                let _ = writeln!(out, "- {note}");
            }
        }
    }
}

/// Server-side ack time (handler start → confirm) next to the client's view.
fn ack_note(server: &ServerMetrics, client: &Histogram<u64>) -> Option<String> {
    let ack = "hookline_ingress_ack_seconds";
    let broker = ["stored=\"broker\""];
    let mean = server.histogram_mean(ack, &broker)?;
    let bound = |q| {
        server
            .histogram_quantile_bound(ack, &broker, q)
            .map_or("?".to_owned(), |b| format!("≤ {:.1} ms", b * 1000.0))
    };
    Some(format!(
        "server-side ack time (handler → broker confirm): mean {:.2} ms, p50 bucket {}, p99 bucket {} \
         (client: mean {}, p50 {}, p99 {})",
        mean * 1000.0,
        bound(0.5),
        bound(0.99),
        fmt_us(client.mean().round() as u64),
        fmt_us(client.value_at_quantile(0.5)),
        fmt_us(client.value_at_quantile(0.99)),
    ))
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, figure: &str, value: &str, target: &str, verdict: &str) {
        self.rows
            .push([figure.into(), value.into(), target.into(), verdict.into()]);
    }

    fn render(&self) -> String {
        let mut out =
            String::from("| Figure | Value | Target | Verdict |\n| --- | --- | --- | --- |\n");
        for [a, b, c, d] in &self.rows {
            let _ = writeln!(out, "| {a} | {b} | {c} | {d} |");
        }
        out
    }
}

fn verdict(pass: bool) -> String {
    if pass {
        "pass".into()
    } else {
        "**FAIL**".into()
    }
}

fn quantile(h: &Histogram<u64>, q: f64) -> Duration {
    Duration::from_micros(h.value_at_quantile(q))
}

/// `1.23 ms` from microseconds.
pub(crate) fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else {
        format!("{:.2} ms", us as f64 / 1e3)
    }
}

fn percentiles(h: &Histogram<u64>, with_max: bool) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let mut text = format!(
        "{} / {} / {}",
        fmt_us(h.value_at_quantile(0.5)),
        fmt_us(h.value_at_quantile(0.99)),
        fmt_us(h.value_at_quantile(0.999))
    );
    if with_max {
        let _ = write!(text, " / {}", fmt_us(h.max()));
    }
    text
}

/// `p50 / p99 / max`.
fn percentiles_max(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    format!(
        "{} / {} / {}",
        fmt_us(h.value_at_quantile(0.5)),
        fmt_us(h.value_at_quantile(0.99)),
        fmt_us(h.max())
    )
}

/// `21.3 MiB` from KiB.
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `512 B`, `12.3 kB`, `4.56 MB` (decimal units, as the log target is stated).
fn bytes_text(bytes: f64) -> String {
    if bytes >= 1e6 {
        format!("{:.2} MB", bytes / 1e6)
    } else if bytes >= 1e3 {
        format!("{:.1} kB", bytes / 1e3)
    } else {
        format!("{bytes:.0} B")
    }
}

/// A resource limit, `unlimited` for `None`.
fn limit_text(limit: Option<u64>) -> String {
    limit.map_or("unlimited".to_owned(), |l| l.to_string())
}

/// How the server treated one kind of attack connection.
fn holds_text(holds: &attack::Holds, bytes: Option<u64>) -> String {
    let longest = if holds.longest_open >= holds.longest_closed && holds.still_open > 0 {
        format!("≥ {} (still open at the end)", secs(holds.longest()))
    } else {
        secs(holds.longest())
    };
    let mut text = format!(
        "longest {longest}; {} connects ({} failed), {} closed by the server, {} open at the end; answers: {}",
        count(holds.connects),
        count(holds.connect_errors),
        count(holds.closed),
        count(holds.still_open),
        holds.describe_answers()
    );
    if let Some(bytes) = bytes {
        let _ = write!(text, "; {} body bytes sent", bytes_text(bytes as f64));
    }
    text
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `12,345`.
fn count(n: u64) -> String {
    rate(n as f64)
}

/// `12,345` (rounded).
pub(crate) fn rate(value: f64) -> String {
    let n = value.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Where the ingress's 200s were made durable, and how its adaptive mode behaved: the
/// stored share (broker confirm or spool fsync), hedges and who won them, mode changes,
/// the mean batch size and the mean confirm latency.
fn durability(server: &ServerMetrics) -> String {
    let stored = |label: &str| {
        server
            .sum(
                "hookline_ingress_requests_total",
                &[&format!("stored=\"{label}\"")],
            )
            .unwrap_or(0.0)
    };
    let (broker, spool) = (stored("broker"), stored("spool"));
    let total = (broker + spool).max(1.0);
    let metric = |name: &str, label: &str| server.sum(name, &[label]).unwrap_or(0.0);
    format!(
        "broker {} ({:.0}%) / spool {} ({:.0}%); hedges won by broker {} / spool {}; mode changes to spool {} / to direct {}; mean batch {:.1} deliveries; mean confirm {:.2} ms",
        broker,
        broker / total * 100.0,
        spool,
        spool / total * 100.0,
        metric("hookline_ingress_hedges_total", "winner=\"broker\""),
        metric("hookline_ingress_hedges_total", "winner=\"spool\""),
        metric("hookline_ingress_mode_changes_total", "to=\"spool\""),
        metric("hookline_ingress_mode_changes_total", "to=\"direct\""),
        server
            .histogram_mean("hookline_ingress_batch_deliveries", &[])
            .unwrap_or(0.0),
        server
            .histogram_mean("hookline_ingress_confirm_seconds", &[])
            .unwrap_or(0.0)
            * 1000.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rates_and_latencies() {
        assert_eq!(rate(0.4), "0");
        assert_eq!(rate(999.6), "1,000");
        assert_eq!(rate(1_234_567.0), "1,234,567");
        assert_eq!(fmt_us(1500), "1.50 ms");
        assert_eq!(fmt_us(2_500_000), "2.50 s");
        assert_eq!(bytes_text(512.0), "512 B");
        assert_eq!(bytes_text(12_345.0), "12.3 kB");
        assert_eq!(bytes_text(4_560_000.0), "4.56 MB");
        assert_eq!(mib(2048), "2.0 MiB");
    }
}
