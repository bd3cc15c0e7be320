//! The operator tools against the real binary and real RabbitMQ: `send` (signed deliveries,
//! echo, load, the retry schedule), `tail` (sees every event while `<prefix>.unrouted` still
//! captures the unbound ones), `dlq` (list, show, replay after the fix, purge) and
//! `--help`.

use crate::support::{Broker, TestConfig, start};
use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `hookline --config <config> <args>` to completion.
fn hookline(config: &TestConfig, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("--config")
        .arg(config.dir.join("hookline.toml"))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("HOOKLINE_LOG_FORMAT")
        .output()
        .expect("hookline runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A long-running `hookline tail`, its stdout lines collected.
struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tail {
    fn start(config: &TestConfig, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
            .arg("--config")
            .arg(config.dir.join("hookline.toml"))
            .arg("tail")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookline tail starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        for (stream, prefix) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(err), "stderr: "),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(format!("{prefix}{line}"));
                }
            });
        }
        Self { child, lines }
    }

    /// Waits up to 10 s for a line containing `needle`.
    async fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "tail never printed {needle:?}: {:#?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn send_is_seen_by_tail_while_unrouted_still_captures_it() {
    let (config, _hookline, base) = start("run").await;
    let broker = Broker::connect(&config.prefix).await;
    let readable = Tail::start(&config, &[]);
    let json = Tail::start(&config, &["aisle.ticket.*", "--json"]);
    for tail in [&readable, &json] {
        // The banner comes once the worker's presence probe reached the tail.
        let banner = tail.wait_for("Ctrl-C to stop").await;
        assert!(!banner.contains("no worker"), "{banner}");
    }

    let sent = hookline(
        &config,
        &[
            "send",
            "aisle",
            "--url",
            &base,
            "--id",
            "tail-1",
            "--type",
            "ticket_called",
        ],
    );
    let text = stdout(&sent);
    assert!(
        sent.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(text.starts_with("200 delivery_id="), "{text}");

    let line = readable.wait_for("aisle:tail-1").await;
    assert!(
        line.contains(" aisle.ticket.called aisle:tail-1 {"),
        "{line}"
    );
    let envelope: serde_json::Value =
        serde_json::from_str(&json.wait_for("aisle:tail-1").await).unwrap();
    assert_eq!(envelope["type"], "ticket.called");
    assert_eq!(envelope["provider_type"], "ticket_called");

    // No app is bound: the event still waits in <prefix>.unrouted, tails or not.
    let unrouted = format!("{}.unrouted", config.prefix);
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.depth(&unrouted).await < 1 {
        assert!(
            Instant::now() < deadline,
            "the event never reached {unrouted}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(broker.depth(&unrouted).await, 1);

    // Every provider: a realistic example, signed as that provider signs, is accepted.
    for source in [
        "inline",
        "auraconnect",
        "sixpark",
        "asello",
        "standard-webhooks",
    ] {
        let sent = hookline(&config, &["send", source, "--url", &base]);
        assert!(sent.status.success(), "{source}: {}", stdout(&sent));
    }
    // The JSON tail was bound to aisle.ticket.* only: it saw none of those.
    readable.wait_for(" inline.").await;
    readable.wait_for(" standard-webhooks.").await;
    let json_lines = json.lines.lock().unwrap().clone();
    let events: Vec<&String> = json_lines.iter().filter(|l| l.starts_with('{')).collect();
    assert!(
        events.iter().all(|l| l.contains(r#""provider":"aisle""#)),
        "{events:#?}"
    );
    let echo = hookline(&config, &["send", "asello", "--url", &base, "--echo"]);
    assert!(echo.status.success(), "{}", stdout(&echo));
    assert!(stdout(&echo).starts_with("200 echo="), "{}", stdout(&echo));
    let load = hookline(
        &config,
        &[
            "send",
            "aisle",
            "--url",
            &base,
            "--count",
            "20",
            "--concurrency",
            "4",
            "--quiet",
        ],
    );
    assert!(load.status.success(), "{}", stdout(&load));
    assert!(
        stdout(&load).starts_with("sent 20 in "),
        "{}",
        stdout(&load)
    );
    assert!(stdout(&load).contains("200×20"), "{}", stdout(&load));
    let wrong = hookline(
        &config,
        &["send", "aisle", "--url", &base, "--secret", "not-it"],
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stdout(&wrong).starts_with("401 invalid_signature"),
        "{}",
        stdout(&wrong)
    );
    broker.cleanup(&[]).await;
}

#[tokio::test]
async fn send_retries_on_the_provider_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path());
    config.write();
    // Nothing listens on port 1: every attempt fails.
    let started = Instant::now();
    let sent = hookline(
        &config,
        &[
            "send",
            "auraconnect",
            "--url",
            "http://127.0.0.1:1",
            "--retry",
            "--time-scale",
            "2000",
        ],
    );
    let text = stdout(&sent);
    assert_eq!(sent.status.code(), Some(1), "{text}");
    // AuraConnect documents 5 retries: 10 s, 30 s, 1 m, 5 m, 30 m, in that order, each
    // after a failed attempt.
    let pauses: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("retries after ").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(pauses, ["10s", "30s", "1m", "5m", "30m"], "{text}");
    let attempts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("attempt ").nth(1)?.split(':').next())
        .collect();
    assert_eq!(attempts, ["1", "2", "3", "4", "5", "6"], "{text}");
    // 2,200 s of schedule at 1/2000.
    assert!(
        started.elapsed() >= Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_dead_letter_is_listed_shown_replayed_after_the_fix_and_purged() {
    // The test config's max_attempts is 3.
    let (config, _hookline, base) = start("run").await;
    let broker = Broker::connect(&config.prefix).await;
    // An app's queue that refuses everything: the worker's publishes are nacked until the
    // delivery is dead-lettered after max_attempts.
    let full = format!("{}.full-app", config.prefix);
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    // Retried until the worker has connected and declared <prefix>.events.
    let deadline = Instant::now() + Duration::from_secs(10);
    let channel = loop {
        let channel = broker.connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(
                full.as_str().into(),
                QueueDeclareOptions::default(),
                args.clone(),
            )
            .await;
        let bound = match declared {
            Ok(_) => {
                channel
                    .queue_bind(
                        full.as_str().into(),
                        format!("{}.events", config.prefix).into(),
                        "#".into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            }
            Err(error) => Err(error),
        };
        match bound {
            Ok(()) => break channel,
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let sent = hookline(
        &config,
        &["send", "aisle", "--url", &base, "--id", "dead-1"],
    );
    let delivery_id = stdout(&sent)
        .split("delivery_id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a delivery id")
        .to_owned();

    let dead = format!("{}.dead", config.prefix);
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.depth(&dead).await < 1 {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = hookline(&config, &["dlq", "list"]);
    let text = stdout(&listed);
    assert!(listed.status.success(), "{text}");
    assert!(text.contains(&delivery_id), "{text}");
    assert!(text.contains("aisle") && text.contains("nack"), "{text}");
    assert!(text.contains("1 dead letter(s)"), "{text}");
    let json = stdout(&hookline(&config, &["dlq", "list", "--json"]));
    let row: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(row["delivery_id"], delivery_id.as_str());
    assert_eq!(row["attempts"], 3);
    assert!(
        row["age_secs"]
            .as_i64()
            .is_some_and(|a| (0..60).contains(&a)),
        "{row}"
    );
    let shown = stdout(&hookline(&config, &["dlq", "show", &delivery_id]));
    assert!(
        shown.contains("x-hookline-error: ") && shown.contains(r#""id":"dead-1""#),
        "{shown}"
    );
    assert_eq!(
        broker.depth(&dead).await,
        1,
        "reading never removes a letter"
    );

    // The fix: the app's queue goes away. Then the replay becomes one event.
    channel
        .queue_delete(full.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let mut events = broker.watch_events("aisle.#").await;
    let replayed = hookline(&config, &["dlq", "replay", &delivery_id]);
    assert!(replayed.status.success(), "{}", stdout(&replayed));
    assert!(stdout(&replayed).contains(&format!("replayed {delivery_id}")));
    assert!(
        String::from_utf8_lossy(&replayed.stderr).contains("Dead letter replayed."),
        "each replay is logged"
    );
    let got = events.take(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].body["id"], "aisle:dead-1");
    assert_eq!(broker.depth(&dead).await, 0);
    // Replaying it again (it is no longer there) is an error naming the id.
    let again = hookline(&config, &["dlq", "replay", &delivery_id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(&delivery_id),
        "the error names the id"
    );

    // Purge: without --yes it lists and exits 2; with it, the letters go.
    broker.publish_dead_letter(&dead, "poison-1").await;
    let dry = hookline(&config, &["dlq", "purge", "--older-than", "0s"]);
    assert_eq!(dry.status.code(), Some(2), "{}", stdout(&dry));
    assert!(stdout(&dry).contains("would remove 1 dead letter(s)"));
    assert_eq!(broker.depth(&dead).await, 1);
    let young = hookline(&config, &["dlq", "purge", "--older-than", "7d", "--yes"]);
    assert!(
        stdout(&young).contains("removed 0 dead letter(s)"),
        "{}",
        stdout(&young)
    );
    let purged = hookline(&config, &["dlq", "purge", "--yes"]);
    assert!(
        stdout(&purged).contains("removed 1 dead letter(s)"),
        "{}",
        stdout(&purged)
    );
    assert_eq!(broker.depth(&dead).await, 0);
    broker.cleanup(&[]).await;
}

#[test]
fn help_lists_every_command_with_one_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let commands = [
        "ingress",
        "worker",
        "run",
        "check-config",
        "send",
        "tail",
        "dlq",
        "spool",
    ];
    // Every command is listed, and nothing else is (a new one must be added here).
    let listed = text
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("Options:").next())
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("  ") && !l.trim().is_empty() && !l.trim_start().starts_with("help ")
        })
        .count();
    assert_eq!(listed, commands.len(), "{text}");
    for command in commands {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{command} ")))
            .unwrap_or_else(|| panic!("{command} missing from --help:\n{text}"));
        assert!(
            line.split_whitespace().count() > 2,
            "{command} has no description: {line}"
        );
    }
}

/// Sends one Aisle delivery with event `id` through `hookline send`.
fn send_aisle(config: &TestConfig, base: &str, id: &str) {
    let sent = hookline(config, &["send", "aisle", "--url", base, "--id", id]);
    assert!(sent.status.success(), "{}", stdout(&sent));
}

/// Waits until `queue` holds `count` messages, then a moment more to see that no more come.
async fn settles_at(broker: &Broker, queue: &str, count: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.depth(queue).await < count {
        assert!(Instant::now() < deadline, "{queue} never reached {count}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(broker.depth(queue).await, count, "{queue}");
}

/// The worker copies events to `<prefix>.observe` only while a tail is bound there: a queue
/// bound without the presence key sees copies exactly while a tail runs.
#[tokio::test]
async fn events_are_copied_to_observers_only_while_a_tail_runs() {
    // `start` runs hookline with RUST_LOG=info, which shows lapin's lines.
    let (config, hookline, base) = start("run").await;
    let broker = Broker::connect(&config.prefix).await;
    let unrouted = format!("{}.unrouted", config.prefix);
    let spy = format!("{}.spy", config.prefix);
    let channel = broker.connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            spy.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let observe = format!("{}.observe", config.prefix);
    // A bind to an exchange that does not exist yet closes its channel: a fresh one each try.
    let bind = || async {
        let channel = broker.connection.create_channel().await.unwrap();
        channel
            .queue_bind(
                spy.as_str().into(),
                observe.as_str().into(),
                "aisle.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    };
    // The worker declares the exchange; it may not have yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while bind().await.is_err() {
        assert!(Instant::now() < deadline, "{observe} was never declared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    send_aisle(&config, &base, "unobserved-1");
    settles_at(&broker, &unrouted, 1).await;
    assert_eq!(broker.depth(&spy).await, 0, "copied with nobody observing");

    let tail = Tail::start(&config, &["sixpark.#"]);
    let banner = tail.wait_for("Ctrl-C to stop").await;
    assert!(!banner.contains("no worker"), "{banner}");
    send_aisle(&config, &base, "observed-1");
    settles_at(&broker, &unrouted, 2).await;
    settles_at(&broker, &spy, 1).await;

    drop(tail);
    // The next probe finds nobody: copies stop within a probe interval or two.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send_aisle(&config, &base, "unobserved-2");
    settles_at(&broker, &unrouted, 3).await;
    assert_eq!(broker.depth(&spy).await, 1, "copied after the tail left");
    // Every probe that found nobody came back as a return: none of them is a log line.
    let returns: Vec<String> = hookline
        .all_lines()
        .into_iter()
        .filter(|line| line.contains("returned us a message"))
        .collect();
    assert!(returns.is_empty(), "{returns:#?}");
    broker.cleanup(&[&spy]).await;
}
