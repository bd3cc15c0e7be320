//! CONTRACT section 1: subcommands, exit codes, config errors naming file and key,
//! environment overrides, JSON logs and graceful shutdown.

use crate::support::{TestConfig, run as hookline, start};
use std::time::Duration;

#[test]
fn check_config_exit_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let good = TestConfig::new(dir.path()).write();
    let good = good.to_str().unwrap();
    assert_eq!(hookline(&["--config", good, "check-config"], &[]).0, 0);
    assert_eq!(
        hookline(&["check-config"], &[("HOOKLINE_CONFIG", good)]).0,
        0,
        "HOOKLINE_CONFIG"
    );

    let cases = [
        (
            "[[sources]]\nname = \"a\"\nprovider = \"paypal\"\nsecrets = [\"x\"]",
            "sources[0].provider",
        ),
        (
            "[[sources]]\nname = \"a\"\nprovider = \"aisle\"\nsecrets = [\"x\"]\n[[sources]]\nname = \"a\"\nprovider = \"aisle\"\nsecrets = [\"y\"]",
            "sources[1].name",
        ),
        (
            "[[sources]]\nname = \"a\"\nprovider = \"aisle\"",
            "sources[0]: source \"a\" has no secret",
        ),
        (
            "[[sources]]\nname = \"s\"\nprovider = \"asello\"\nsecrets = [\"too-short\"]",
            "sources[0].secrets[0]",
        ),
        (
            "[[sources]]\nname = \"Bad Name\"\nprovider = \"aisle\"\nsecrets = [\"x\"]",
            "sources[0].name",
        ),
        ("[worker]\nprefetch = -1", "worker.prefetch"),
        ("[amqp]\nurl = \"http://nope\"", "amqp.url"),
    ];
    for (toml, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let (code, text) = hookline(&["--config", path.to_str().unwrap(), "check-config"], &[]);
        assert_eq!(code, 2, "{toml}: {text}");
        assert!(
            text.contains(path.to_str().unwrap()) && text.contains(key),
            "{key} in {text}"
        );
        let (code, _) = hookline(&["--config", path.to_str().unwrap(), "ingress"], &[]);
        assert_eq!(code, 2, "ingress refuses to start with {key}");
    }
    let (code, text) = hookline(&["--config", "/nonexistent.toml", "check-config"], &[]);
    assert_eq!(code, 2);
    assert!(text.contains("/nonexistent.toml"), "{text}");
    assert_eq!(hookline(&["frobnicate"], &[]).0, 2, "bad arguments");

    let (code, text) = hookline(
        &["--config", good, "check-config"],
        &[("HOOKLINE__WORKER__PREFETCH", "not-a-number")],
    );
    assert_eq!(code, 2);
    assert!(
        text.contains("worker.prefetch") && text.contains("HOOKLINE__"),
        "{text}"
    );
}

#[tokio::test]
async fn json_logs_and_graceful_shutdown() {
    let (config, mut hookline, base) = start("run").await;
    let broker = crate::support::Broker::connect(&config.prefix).await;
    let mut events = broker.watch_events("#").await;
    // Wait until the worker consumes, then stop right behind a delivery: the shutdown must
    // let it finish (or hand it back) and still exit in time.
    hookline.logged("message", "Worker consuming.", 1).await;
    let body = r#"{"id":"j-1","event":"ticket_created","data":{}}"#;
    assert_eq!(
        crate::support::post_signed(&base, "aisle", "aisle", body)
            .await
            .0,
        200
    );
    let (status, took) = hookline.terminate();
    assert!(status.success(), "{status:?}: {:#?}", hookline.all_lines());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let delivered = events.rest_within(Duration::from_secs(1)).await;
    let finished = delivered.iter().any(|e| e.body["id"] == "aisle:j-1");
    if !finished {
        // Handed back unfinished: a new worker picks it up from the queue.
        let _worker = crate::support::Process::start(&config.dir.join("hookline.toml"), "worker");
        let got = events.take(1, Duration::from_secs(15)).await;
        assert_eq!(got[0].body["id"], "aisle:j-1");
    }
    let lines = hookline.all_lines();
    assert!(lines.len() > 3);
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "message"] {
            assert!(value.get(field).is_some(), "no {field}: {line}");
        }
    }
    broker.cleanup(&[]).await;
}
