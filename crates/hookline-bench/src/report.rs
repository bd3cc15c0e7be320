//! The markdown report: machine info, one table with every figure and its target, CPU use
//! per phase, and notes (server-side timings, shutdowns, measurement caveats).

use crate::ceiling::CeilingResult;
use crate::e2e::E2eResult;
use crate::ingress::IngressResult;
use crate::machine::MachineInfo;
use crate::outage::OutageResult;
use crate::process::Stopped;
use crate::rate::RateResult;
use crate::server_metrics::ServerMetrics;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::time::Duration;

/// Target: ingress throughput as a share of the broker ceiling.
const INGRESS_VS_CEILING: f64 = 0.90;
/// Target: p99 at the open-loop rate.
const RATE_P99: Duration = Duration::from_millis(10);
/// Target: p99 while spooling.
const OUTAGE_P99: Duration = Duration::from_millis(100);
/// Target: spooling throughput as a share of normal ingress throughput.
const SPOOL_VS_INGRESS: f64 = 0.50;
/// Target: drain rate as a share of the broker ceiling.
const DRAIN_VS_CEILING: f64 = 0.80;

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
    /// `ingress` results.
    pub(crate) ingress: Option<IngressResult>,
    /// `rate` results.
    pub(crate) rate: Option<RateResult>,
    /// `e2e` results.
    pub(crate) e2e: Option<E2eResult>,
    /// `outage` results.
    pub(crate) outage: Option<OutageResult>,
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
            ingress: None,
            rate: None,
            e2e: None,
            outage: None,
            failures: Vec::new(),
        }
    }

    /// The whole report as markdown.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        let mut table = Table::default();
        self.ceiling_rows(&mut table);
        self.ingress_rows(&mut table);
        self.rate_rows(&mut table);
        self.e2e_rows(&mut table);
        self.outage_rows(&mut table);
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

    fn ingress_rows(&self, t: &mut Table) {
        let Some(i) = &self.ingress else { return };
        let rps = i.load.ok_per_sec();
        let (ratio, v) = match &self.ceiling {
            Some(c) if c.msgs_per_sec > 0.0 => {
                let r = rps / c.msgs_per_sec;
                (
                    format!(" = {:.0}% of ceiling", r * 100.0),
                    verdict(r >= INGRESS_VS_CEILING),
                )
            }
            _ => (String::new(), "n/a (needs ceiling)".to_owned()),
        };
        t.row(
            &format!(
                "Ingress only, closed loop, {} conns: 200s/s",
                self.connections
            ),
            &format!("{} req/s{ratio}", rate(rps)),
            "≥ 90% of ceiling",
            &v,
        );
        t.row(
            "Ingress latency p50 / p99 / p99.9",
            &percentiles(&i.load.latency, false),
            "",
            "",
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
    }

    fn rate_rows(&self, t: &mut Table) {
        let Some(r) = &self.rate else { return };
        let p99 = quantile(&r.load.latency, 0.99);
        t.row(
            &format!("Open loop {} req/s: p50 / p99 / p99.9 / max", rate(r.rate)),
            &percentiles(&r.load.latency, true),
            "p99 ≤ 10 ms",
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
        t.row(
            "E2E: events reached `<prefix>.events` (first send → last event)",
            &format!("{} ev/s ({} events)", rate(e.events_rate), e.events),
            "≈ accepted rate",
            "",
        );
        t.row(
            "E2E: `<prefix>.ingress` backlog at stop → 5 s later",
            &format!("{} → {}", e.backlog_at_stop, e.backlog_later),
            "worker keeps up with the accepted rate (no growing backlog)",
            &verdict(e.keeps_up()),
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

    fn cpu_section(&self, out: &mut String) {
        let mut lines = Vec::new();
        if let Some(c) = &self.ceiling {
            lines.push(format!("- ceiling: {}", c.cpu.describe()));
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
        if let Some(o) = &self.outage {
            lines.push(format!("- outage (spooling): {}", o.cpu.describe()));
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
        let stops = self
            .ingress
            .iter()
            .flat_map(|i| &i.stopped)
            .chain(self.rate.iter().flat_map(|r| &r.stopped))
            .chain(self.e2e.iter().flat_map(|e| &e.stopped))
            .chain(self.outage.iter().flat_map(|o| &o.stopped));
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
        } else if self.ingress.is_some() || self.e2e.is_some() {
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

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
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
    }
}
