//! The example subscribers (examples/python/subscriber.py, examples/rust) against the real
//! broker and `hookline run`: each declares and binds its durable queue, prints the event of
//! one signed delivery as `<id> <type> <data>`, acks it, and exits 0 on SIGINT.
//!
//! Needs `python3` with pika and builds the Rust example with cargo (`--locked`, target dir
//! `<target>/examples-rust`, which CI caches with the rest of `target/`).

use crate::support::{self, Broker};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Rust example's target directory: `examples-rust` beside this test's own profile
/// directories (`<target>/debug/deps/it-<hash>` → `<target>/examples-rust`).
fn examples_target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("the test runs from <target>/<profile>/deps")
        .join("examples-rust")
}

/// Builds examples/rust with its own lock file; returns the binary.
fn build_rust_example() -> PathBuf {
    let target = examples_target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let started = Instant::now();
    let output = Command::new(cargo)
        .args(["build", "--locked", "--manifest-path"])
        .arg(repo().join("examples/rust/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build of examples/rust failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("examples/rust built in {:?}", started.elapsed());
    target.join("debug/hookline-subscriber-example")
}

/// Fails loudly unless `python3` can import pika.
fn check_python() {
    match Command::new("python3").args(["-c", "import pika"]).output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "python3 cannot import pika (apt-get install python3-pika, or pip install pika; \
             .ci/run installs it): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => panic!("python3 is needed for examples/python: {e}"),
    }
}

/// A running example subscriber, its output collected line by line; killed on drop.
struct Subscriber {
    name: &'static str,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    fn start(name: &'static str, mut command: Command, prefix: &str) -> Self {
        let mut child = command
            .env("AMQP_URL", support::AMQP_URL)
            .env("HOOKLINE_PREFIX", prefix)
            .env_remove("HOOKLINE_QUEUE")
            .env_remove("HOOKLINE_PATTERNS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            name,
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until a line of stdout (or stderr) satisfies `wanted`; gives up soon after the
    /// subscriber exits.
    async fn wait_for(
        &mut self,
        stdout: bool,
        wanted: impl Fn(&str) -> bool,
        within: Duration,
    ) -> bool {
        let mut deadline = Instant::now() + within;
        let mut exited = false;
        loop {
            let lines = if stdout { &self.stdout } else { &self.stderr };
            if lines.lock().unwrap().iter().any(|l| wanted(l)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            // Once it has exited, its last lines still come through the pipe: wait a little.
            if !exited && self.child.try_wait().unwrap().is_some() {
                exited = true;
                deadline = deadline.min(Instant::now() + Duration::from_millis(500));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGINT, then the exit status (10 s at most).
    async fn interrupt(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs 10 s after SIGINT",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.stdout.lock().unwrap().join("\n"),
            self.name,
            self.stderr.lock().unwrap().join("\n")
        )
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

#[tokio::test]
async fn example_subscribers_print_and_ack_each_event_and_stop_on_sigint() {
    check_python();
    let rust_binary = build_rust_example();

    let (config, _hookline, base) = support::start("run").await;
    let prefix = config.prefix.clone();
    let broker = Broker::connect(&prefix).await;
    // Returns once hookline has declared <prefix>.events, which the examples bind to.
    let _all_events = broker.watch_events("#").await;

    let python_queue = format!("{prefix}.example-python");
    let rust_queue = format!("{prefix}.example-rust");
    let mut python = Command::new("python3");
    python
        .arg(repo().join("examples/python/subscriber.py"))
        .args([python_queue.as_str(), "aisle.ticket.*"]);
    let mut rust = Command::new(&rust_binary);
    rust.args([rust_queue.as_str(), "sixpark.#", "aisle.#"]);
    let mut subscribers = [
        Subscriber::start("examples/python", python, &prefix),
        Subscriber::start("examples/rust", rust, &prefix),
    ];
    for subscriber in &mut subscribers {
        let ready = subscriber
            .wait_for(
                false,
                |l| l.starts_with("Consuming "),
                Duration::from_secs(20),
            )
            .await;
        assert!(ready, "{} never said it consumes", subscriber.name);
    }

    let id = uuid::Uuid::new_v4();
    let body = format!(
        r#"{{"id":"{id}","event":"ticket_created","broadcasted_at":"2026-11-22T10:00:00Z","data":{{"id":"b1","party":"Ada"}}}}"#
    );
    let (status, answer) = support::post_signed(&base, "aisle", "aisle", &body).await;
    assert_eq!(status, 200, "{answer}");

    let expected = format!(r#"aisle:{id} ticket.created {{"id":"b1","party":"Ada"}}"#);
    for subscriber in &mut subscribers {
        let printed = subscriber
            .wait_for(true, |l| l == expected, Duration::from_secs(15))
            .await;
        assert!(printed, "{} did not print {expected:?}", subscriber.name);
    }
    for subscriber in &mut subscribers {
        let status = subscriber.interrupt().await;
        assert!(
            status.success(),
            "{} exited with {status} on SIGINT",
            subscriber.name
        );
        let stopped = subscriber
            .wait_for(false, |l| l == "Stopped.", Duration::from_secs(1))
            .await;
        assert!(stopped, "{} did not stop cleanly", subscriber.name);
    }
    // Each acked what it printed: nothing waits in their durable queues.
    for queue in [&python_queue, &rust_queue] {
        assert_eq!(broker.depth(queue).await, 0, "{queue} is not empty");
    }
    broker
        .cleanup(&[python_queue.as_str(), rust_queue.as_str()])
        .await;
}
