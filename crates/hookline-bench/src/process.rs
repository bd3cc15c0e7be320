//! Process control: a temp config per start (random AMQP prefix, temp storage, free
//! 127.0.0.1 ports), `hookline ingress` / `worker` as child processes, readiness, peak RSS,
//! and a graceful SIGTERM stop that also happens on drop (error, panic, Ctrl-C).

use crate::load;
use crate::machine;
use anyhow::{Context as _, Result, bail};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a start may take until `/readyz` answers 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The contract allows 10 s for a graceful shutdown; a little slack for process teardown.
const STOP_TIMEOUT: Duration = Duration::from_secs(12);

/// One hookline role, run as its own process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `hookline ingress`.
    Ingress,
    /// `hookline worker`.
    Worker,
}

impl Role {
    /// The subcommand name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Ingress => "ingress",
            Role::Worker => "worker",
        }
    }
}

/// Settings shared by every hookline start in one bench run.
pub(crate) struct Bench {
    /// `amqp.prefix` of every start: `bench<random>`.
    pub(crate) prefix: String,
    /// Broker URL (loopback only).
    pub(crate) amqp_url: String,
    /// The aisle source's secret.
    pub(crate) secret: String,
    hookline: PathBuf,
    rust_log: String,
    /// `--set section.key=value` overrides, passed as `HOOKLINE__SECTION__KEY`.
    overrides: Vec<(String, String)>,
    dir: tempfile::TempDir,
    starts: AtomicUsize,
}

impl Bench {
    /// Checks the binary and creates the temp directory.
    pub(crate) fn new(
        hookline: Option<PathBuf>,
        amqp_url: String,
        rust_log: String,
        keep: bool,
        overrides: &[String],
    ) -> Result<Bench> {
        let overrides = overrides
            .iter()
            .map(|set| {
                let (key, value) = set
                    .split_once('=')
                    .with_context(|| format!("--set {set:?}: expected section.key=value"))?;
                let (section, name) = key
                    .split_once('.')
                    .with_context(|| format!("--set {set:?}: expected section.key=value"))?;
                Ok((
                    format!(
                        "HOOKLINE__{}__{}",
                        section.to_uppercase(),
                        name.to_uppercase()
                    ),
                    value.to_owned(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let hookline = match hookline {
            Some(path) => path,
            None => std::env::current_exe()
                .context("cannot find the bench executable's path")?
                .parent()
                .context("the bench executable has no parent directory")?
                .join("hookline"),
        };
        if !hookline.is_file() {
            bail!(
                "hookline binary not found at {} (build it with `cargo build --release -p hookline`, \
                 or pass --hookline PATH)",
                hookline.display()
            );
        }
        let random = Uuid::new_v4().simple().to_string();
        let dir = tempfile::Builder::new()
            .prefix("hookline-bench-")
            .disable_cleanup(keep)
            .tempdir()
            .context("cannot create a temp directory")?;
        Ok(Bench {
            prefix: format!("bench{}", &random[..10]),
            amqp_url,
            secret: format!("bench-secret-{}", &random[10..]),
            hookline,
            rust_log,
            overrides,
            dir,
            starts: AtomicUsize::new(0),
        })
    }

    /// The hookline binary and when it was built (its modification time, UTC).
    pub(crate) fn binary(&self) -> String {
        let built = std::fs::metadata(&self.hookline)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or("unknown".to_owned(), |d| utc_text(d.as_secs()));
        format!("{} (built {built})", self.hookline.display())
    }

    /// The temp directory holding configs, storage and logs.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the given roles with a fresh config and storage dir and waits until ready.
    pub(crate) async fn start(&self, roles: &[Role]) -> Result<Hookline> {
        self.start_with(roles, "").await
    }

    /// Like [`Bench::start`], with `extra` TOML (more sources, subscriptions) appended to
    /// the config.
    pub(crate) async fn start_with(&self, roles: &[Role], extra: &str) -> Result<Hookline> {
        let n = self.starts.fetch_add(1, Ordering::Relaxed) + 1;
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let run_dir = self.dir().join(format!("{n:02}-{}", names.join("+")));
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let ingress_addr = free_port()?;
        let worker_addr = free_port()?;
        let config = run_dir.join("hookline.toml");
        std::fs::write(
            &config,
            self.config_text(&run_dir, ingress_addr, worker_addr) + extra,
        )
        .with_context(|| format!("cannot write {}", config.display()))?;

        let mut hookline = Hookline {
            procs: Vec::new(),
            ingress_addr,
            worker_addr,
        };
        for &role in roles {
            hookline.procs.push(self.spawn(role, &config, &run_dir)?);
        }
        for &role in roles {
            match role {
                Role::Ingress => hookline.wait_ready(role, ingress_addr, "/readyz").await?,
                Role::Worker => hookline.wait_ready(role, worker_addr, "/healthz").await?,
            }
        }
        if roles.contains(&Role::Worker) {
            hookline.wait_log(Role::Worker, "Worker consuming").await?;
        }
        Ok(hookline)
    }

    /// `[[sources]]` for an inline and an asello source (besides the aisle one), each with
    /// a secret of its own that is long enough for its provider.
    pub(crate) fn more_sources_toml(&self) -> String {
        format!(
            "\n[[sources]]\nname = \"inline\"\nprovider = \"inline\"\nsecrets = [{inline:?}]\n\
             \n[[sources]]\nname = \"asello\"\nprovider = \"asello\"\nsecrets = [{asello:?}]\n",
            inline = format!("{}-inline", self.secret),
            asello = format!("{}-asello-at-least-32-characters", self.secret),
        )
    }

    fn config_text(&self, run_dir: &Path, ingress: SocketAddr, worker: SocketAddr) -> String {
        let mut text = String::new();
        let _ = write!(
            text,
            "# Written by hookline-bench.\n\
             [ingress]\nlisten = \"{ingress}\"\n\n\
             [amqp]\nurl = {url:?}\nprefix = {prefix:?}\n\n\
             [storage]\ndir = {dir:?}\n\n\
             [worker]\nmetrics_listen = \"{worker}\"\n\n\
             [[sources]]\nname = \"aisle\"\nprovider = \"aisle\"\nsecrets = [{secret:?}]\n",
            url = self.amqp_url,
            prefix = self.prefix,
            dir = run_dir.join("data").display().to_string(),
            secret = self.secret,
        );
        text
    }

    fn spawn(&self, role: Role, config: &Path, run_dir: &Path) -> Result<Proc> {
        let log = run_dir.join(format!("{}.log", role.as_str()));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new(&self.hookline);
        command
            .arg("--config")
            .arg(config)
            .arg(role.as_str())
            .current_dir(run_dir)
            .env("RUST_LOG", &self.rust_log)
            .env_remove("HOOKLINE_CONFIG")
            .env_remove("HOOKLINE_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOOKLINE__") {
                command.env_remove(key);
            }
        }
        command.envs(self.overrides.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.hookline.display()))?;
        Ok(Proc {
            role,
            child,
            log,
            stopped: false,
        })
    }
}

/// `YYYY-MM-DD hh:mm:ss UTC` for seconds since the Unix epoch (civil-from-days).
fn utc_text(secs: u64) -> String {
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?)
}

/// Running hookline processes of one start.
pub(crate) struct Hookline {
    procs: Vec<Proc>,
    /// The ingress listener.
    pub(crate) ingress_addr: SocketAddr,
    /// The worker's `/metrics` and `/healthz` listener.
    pub(crate) worker_addr: SocketAddr,
}

/// How a process ended when asked to stop.
#[derive(Debug, Clone)]
pub(crate) struct Stopped {
    /// Which role.
    pub(crate) role: Role,
    /// Its exit status (`None`: had to be killed).
    pub(crate) status: Option<ExitStatus>,
    /// Time from SIGTERM to exit.
    pub(crate) took: Duration,
}

impl Stopped {
    /// Exit 0 within the contract's 10 s.
    pub(crate) fn graceful(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && self.took <= Duration::from_secs(10)
    }
}

impl Hookline {
    /// The process of `role`.
    pub(crate) fn proc(&self, role: Role) -> Result<&Proc> {
        self.procs
            .iter()
            .find(|p| p.role == role)
            .with_context(|| format!("no {} process in this start", role.as_str()))
    }

    /// Fails (with the log's tail) when a process has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        for proc in &mut self.procs {
            if let Some(status) = proc.child.try_wait()? {
                bail!(
                    "hookline {} exited with {status}; last log lines:\n{}",
                    proc.role.as_str(),
                    proc.log_tail(30)
                );
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self, role: Role, addr: SocketAddr, path: &str) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.ensure_running()?;
            if let Ok((200, _)) = load::get(addr, path).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "hookline {} not ready ({path} on {addr}) after {READY_TIMEOUT:?}; last log lines:\n{}",
                    role.as_str(),
                    self.proc(role)?.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_log(&mut self, role: Role, needle: &str) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.ensure_running()?;
            // The whole log: a worker with a full queue writes hundreds of lines in the
            // first poll interval, pushing the needle out of any tail.
            if self.proc(role)?.logged(needle) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "hookline {} never logged {needle:?}; last log lines:\n{}",
            role.as_str(),
            self.proc(role)?.log_tail(30)
        )
    }

    /// SIGTERMs every process (all at once) and waits for each.
    pub(crate) async fn stop(mut self) -> Vec<Stopped> {
        for proc in &self.procs {
            proc.terminate();
        }
        let started = Instant::now();
        let mut report = Vec::new();
        for proc in &mut self.procs {
            report.push(proc.wait_stopped(started).await);
        }
        report
    }
}

/// One hookline child process.
pub(crate) struct Proc {
    role: Role,
    child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Proc {
    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size (`VmHWM`) in KiB.
    pub(crate) fn peak_rss_kib(&self) -> Result<u64> {
        machine::status_kib(self.pid(), "VmHWM").context("no VmHWM in /proc/<pid>/status")
    }

    /// The file its standard output and error go to.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether its log holds `needle` anywhere.
    fn logged(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|text| text.contains(needle))
    }

    /// The last `lines` lines of its log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn terminate(&self) {
        // `kill` keeps this crate free of unsafe code and of a signal-handling dependency.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    async fn wait_stopped(&mut self, since: Instant) -> Stopped {
        self.stopped = true;
        while since.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Stopped {
                    role: self.role,
                    status: Some(status),
                    took: since.elapsed(),
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Stopped {
            role: self.role,
            status: None,
            took: since.elapsed(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.stopped || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.terminate();
        let since = Instant::now();
        while since.elapsed() < STOP_TIMEOUT {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::utc_text;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_text(1_795_350_896), "2026-11-22 12:34:56 UTC");
    }
}
