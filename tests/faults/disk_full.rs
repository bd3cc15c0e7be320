//! A full disk under the spool while the broker is away: the ingress answers 503 with
//! `Retry-After` (never a 200 it cannot keep), `/readyz` says 503, the process lives on,
//! and once space comes back it is ready and spooling again with no restart.
//! Needs root to mount a 2 MiB tmpfs, as CI and the development machines run.

use crate::harness::serial;
use crate::support::{NO_BROKER_URL, Process, TestConfig, post_signed, sign, wait_for_status};
use std::process::Command;

/// Unmounts the tmpfs when dropped, also when the test fails.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn full_spool_disk_answers_503_and_not_ready() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&data)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "this test mounts a 2 MiB tmpfs and needs root"
    );
    let _mount = Mount(data.clone());

    let mut config = TestConfig::new(dir.path());
    config.amqp_url = NO_BROKER_URL.into();
    let path = config.write();
    let ingress = Process::start(&path, "ingress");
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;

    let client = reqwest::Client::new();
    let pad = "x".repeat(3000);
    let mut accepted = 0;
    let mut refusal = None;
    for i in 0..5000 {
        let body =
            format!(r#"{{"id":"full-{i}","event":"ticket_created","data":{{"pad":"{pad}"}}}}"#);
        let (header, value) = sign("aisle", body.as_bytes());
        let resp = client
            .post(format!("{base}/webhooks/aisle"))
            .header(header, value)
            .body(body)
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => accepted += 1,
            503 => {
                refusal = Some(resp);
                break;
            }
            other => panic!("unexpected {other} after {accepted} accepted"),
        }
    }
    let resp = refusal.expect("the spool's disk filled up and the ingress answered 503");
    assert!(
        accepted > 10,
        "some deliveries fit before the disk filled: {accepted}"
    );
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status().as_u16(),
        503,
        "no broker and no writable spool: not ready"
    );
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "the process lives on");
    let failed = ingress
        .logged("message", "Spool write failed; answering 503.", 1)
        .await;
    assert!(!failed.is_empty(), "the failure is logged");
    assert!(failed.iter().all(|l| l["level"] == "ERROR"), "{failed:#?}");

    // Space comes back (an operator grows the volume): readiness returns without any
    // delivery having to be tried first, and deliveries are spooled again.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&data)
        .status()
        .expect("mount runs");
    assert!(grown.success(), "remount the tmpfs larger");
    wait_for_status(&format!("{base}/readyz"), 200).await;
    assert!(
        !ingress
            .logged("message", "Spool writes succeed again.", 1)
            .await
            .is_empty(),
        "recovery is logged"
    );
    let body = r#"{"id":"after-full","event":"ticket_created","data":{}}"#;
    let (status, _) = post_signed(&base, "aisle", "aisle", body).await;
    assert_eq!(status, 200, "spooling again after recovery");
    // Never a 200 it could not keep: every one answered before the disk filled, and the
    // one after, is in the spool.
    let metrics = crate::support::scrape(&format!("{base}/metrics")).await;
    assert_eq!(
        crate::support::metric(&metrics, "hookline_spool_depth", &[]),
        (accepted + 1) as f64,
        "{metrics}"
    );
    eprintln!("disk full after {accepted} spooled deliveries; recovered");
}
