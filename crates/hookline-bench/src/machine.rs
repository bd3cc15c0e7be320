//! What the numbers ran on (cores, CPU, RabbitMQ version) and who used the CPU during a
//! timed phase (per process from `/proc/<pid>/stat`, the machine from `/proc/stat`).

use crate::broker;
use std::time::Instant;

/// Facts printed above the results table.
pub(crate) struct MachineInfo {
    /// Cores available to this process.
    pub(crate) nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub(crate) cpu: String,
    /// Total memory in MiB.
    pub(crate) memory_mib: u64,
    /// Kernel release.
    pub(crate) kernel: String,
    /// `rabbitmqctl version`.
    pub(crate) rabbitmq: String,
}

impl MachineInfo {
    /// Reads everything; unreadable items become `unknown`.
    pub(crate) async fn read() -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        MachineInfo {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
                .unwrap_or_else(|| "unknown".into()),
            memory_mib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kib| kib / 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            rabbitmq: broker::rabbitmqctl(&["version"])
                .await
                .unwrap_or_else(|e| format!("unknown ({e:#})")),
        }
    }
}

/// The RabbitMQ server process (`beam.smp`), if one runs on this machine.
pub(crate) fn rabbitmq_pid() -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        (comm.trim() == "beam.smp").then_some(pid)
    })
}

/// CPU time of a process in clock ticks: (user, system).
type Ticks = (u64, u64);

/// CPU time (user, system) of a process, in clock ticks.
fn process_ticks(pid: u32) -> Option<Ticks> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time of this process's threads whose name starts with `name`, in clock ticks.
fn own_threads_ticks(name: &str) -> Option<Ticks> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(name) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if let Some((user, sys)) = stat_ticks(&stat) {
            let sum: &mut Ticks = total.get_or_insert((0, 0));
            sum.0 += user;
            sum.1 += sys;
        }
    }
    total
}

/// (utime, stime) from a `stat` line of `/proc`.
fn stat_ticks(stat: &str) -> Option<Ticks> {
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`).
pub(crate) fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// `Max open files` of a process as `soft / hard`.
pub(crate) fn nofile_limits(pid: u32) -> Option<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(format!("{} / {}", fields.get(3)?, fields.get(4)?))
}

/// Idle (idle + iowait) ticks of the whole machine. The idle counters are measured
/// exactly on tickless kernels, whereas user/system ticks are sampled at timer ticks and
/// miss the many short bursts of a lightly loaded server, so busy time is derived from
/// wall time minus idle time.
fn machine_idle_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some(values.get(3)? + values.get(4)?)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux almost everywhere).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// CPU use measured over a phase, in percent of one core (200 % = both cores of a 2-core box).
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuUse {
    /// Per labelled process: total and system (kernel) part.
    pub(crate) processes: Vec<(String, f64, f64)>,
    /// Parts of the bench process (in-process servers), counted in its line too.
    pub(crate) bench_parts: Vec<(String, f64, f64)>,
    /// The whole machine.
    pub(crate) machine: f64,
}

impl CpuUse {
    /// e.g. `ingress 95% (20% sys) · rabbitmq 80% (10% sys) · … · machine 190%`.
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .processes
            .iter()
            .map(|(label, pct, sys)| {
                let mut text = format!("{label} {pct:.0}% ({sys:.0}% sys)");
                if label == "bench" {
                    for (part, pct, sys) in &self.bench_parts {
                        text.push_str(&format!(", of which {part} {pct:.0}% ({sys:.0}% sys)"));
                    }
                }
                text
            })
            .collect();
        let listed: f64 = self.processes.iter().map(|(_, pct, _)| pct).sum();
        parts.push(format!(
            "other processes + kernel {:.0}%",
            (self.machine - listed).max(0.0)
        ));
        parts.push(format!("machine {:.0}%", self.machine));
        parts.join(" · ")
    }
}

/// Whose CPU time a meter line counts.
#[derive(Debug, Clone)]
enum Counted {
    /// A process.
    Process(u32),
    /// This process's threads whose name starts with this.
    OwnThreads(String),
}

impl Counted {
    fn ticks(&self) -> Option<Ticks> {
        match self {
            Counted::Process(pid) => process_ticks(*pid),
            Counted::OwnThreads(name) => own_threads_ticks(name),
        }
    }
}

/// Started at the beginning of a phase; [`CpuMeter::finish`] at its end.
pub(crate) struct CpuMeter {
    started: Instant,
    idle: Option<u64>,
    processes: Vec<(String, Counted, Option<Ticks>)>,
    ticks_per_second: f64,
}

impl CpuMeter {
    /// Samples the machine, this process, RabbitMQ and the given processes.
    pub(crate) fn start(processes: &[(&str, u32)]) -> CpuMeter {
        let mut all: Vec<(String, u32)> = processes
            .iter()
            .map(|(l, p)| ((*l).to_owned(), *p))
            .collect();
        if let Some(pid) = rabbitmq_pid() {
            all.push(("rabbitmq".into(), pid));
        }
        all.push(("bench".into(), std::process::id()));
        CpuMeter {
            started: Instant::now(),
            idle: machine_idle_ticks(),
            processes: all
                .into_iter()
                .map(|(label, pid)| (label, Counted::Process(pid), process_ticks(pid)))
                .collect(),
            ticks_per_second: ticks_per_second(),
        }
    }

    /// Also counts a process started after the meter: all of its CPU time since birth.
    pub(crate) fn add_started_since(&mut self, label: &str, pid: u32) {
        self.processes
            .insert(0, (label.to_owned(), Counted::Process(pid), Some((0, 0))));
    }

    /// Also counts this process's threads named `name…` (a part of the bench, such as an
    /// in-process server), listed before the bench as a whole.
    pub(crate) fn add_own_threads(&mut self, label: &str, name: &str) {
        let counted = Counted::OwnThreads(name.to_owned());
        let before = counted.ticks().or(Some((0, 0)));
        self.processes
            .insert(0, (label.to_owned(), counted, before));
    }

    /// CPU use since [`CpuMeter::start`].
    pub(crate) fn finish(&self) -> CpuUse {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut processes = Vec::new();
        let mut bench_parts = Vec::new();
        let lines = self
            .processes
            .iter()
            .filter_map(|(label, counted, before)| {
                let (user0, sys0) = (*before)?;
                let (user1, sys1) = counted.ticks()?;
                let pct = |ticks: u64| ticks as f64 / self.ticks_per_second / seconds * 100.0;
                let sys = sys1.saturating_sub(sys0);
                let line = (
                    label.clone(),
                    pct(user1.saturating_sub(user0) + sys),
                    pct(sys),
                );
                Some((matches!(counted, Counted::OwnThreads(_)), line))
            });
        for (part_of_bench, line) in lines {
            if part_of_bench {
                bench_parts.push(line);
            } else {
                processes.push(line);
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let machine = match (self.idle, machine_idle_ticks()) {
            (Some(idle0), Some(idle1)) => {
                let idle = idle1.saturating_sub(idle0) as f64 / self.ticks_per_second;
                ((cores * seconds - idle) / seconds * 100.0).clamp(0.0, cores * 100.0)
            }
            _ => 0.0,
        };
        CpuUse {
            processes,
            bench_parts,
            machine,
        }
    }
}
