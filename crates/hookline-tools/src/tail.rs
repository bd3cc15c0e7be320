//! `hookline tail [PATTERN...]`: prints each event as it is published. The tail's queue is
//! bound to `<prefix>.observe`, where the worker puts a copy of every event, never to
//! `<prefix>.events`: a tail must not make events "routed" there, or the alternate exchange
//! would stop keeping unbound events in `<prefix>.unrouted`. The queue is exclusive and
//! auto-deleted: it lives exactly as long as the tail.
//!
//! The worker copies events there only while an observer is bound, which it learns from a
//! probe it publishes once a second with [`PRESENCE_KEY`]; the tail binds that key too and
//! says it is watching once the first probe reached it, so what it prints from then on is
//! every event.

use crate::connect;
use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use hookline_amqp::{PRESENCE_KEY, Topology};
use hookline_core::Config;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

/// How long the tail waits for a worker's presence probe before it says it watches anyway.
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// Longest data summary on a readable line.
const SUMMARY_CHARS: usize = 100;

/// Tails events matching `patterns` (`#` when empty) until `stop` resolves; one readable
/// line per event, or with `json` the bare envelope.
pub async fn run(
    config: &Config,
    patterns: &[String],
    json: bool,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let patterns: Vec<String> = if patterns.is_empty() {
        vec!["#".to_owned()]
    } else {
        patterns.to_vec()
    };
    let topology = Topology::from_config(config);
    let connection = connect(config, "hookline-tail").await?;
    let channel = connection.create_channel().await?;
    // Declared here too, so a tail started before any worker still has somewhere to bind.
    topology
        .declare(&channel)
        .await
        .context("cannot declare the topology")?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let exchange = topology.observe_exchange();
    for pattern in patterns.iter().map(String::as_str).chain([PRESENCE_KEY]) {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("cannot bind the tail to {exchange} with {pattern:?}"))?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "hookline-tail".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let banner = format!(
        "hookline tail: events on {exchange} matching {} (Ctrl-C to stop)",
        patterns.join(" ")
    );
    let mut announced = false;
    let probe_wait = tokio::time::sleep(PROBE_WAIT);
    tokio::pin!(stop, probe_wait);
    loop {
        let next = tokio::select! {
            () = &mut stop => break,
            () = &mut probe_wait, if !announced => {
                announced = true;
                eprintln!("{banner}; no worker has seen this tail yet: events show once one does");
                continue;
            }
            next = consumer.next() => next,
        };
        let Some(delivery) = next else {
            anyhow::bail!("the broker ended the tail's consumer");
        };
        let delivery = delivery?;
        if delivery.routing_key.as_str() == PRESENCE_KEY {
            if !announced {
                announced = true;
                eprintln!("{banner}");
            }
            continue;
        }
        let line = if json {
            String::from_utf8_lossy(&delivery.data).into_owned()
        } else {
            readable(delivery.routing_key.as_str(), &delivery.data)
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let _ = connection.close(200, "tail stopped".into()).await;
    Ok(())
}

/// `received_at routing_key id data-summary`.
fn readable(routing_key: &str, body: &[u8]) -> String {
    let Ok(envelope) = serde_json::from_slice::<Value>(body) else {
        return format!("{routing_key} (not JSON: {} bytes)", body.len());
    };
    let field = |name: &str| envelope[name].as_str().unwrap_or("?").to_owned();
    let data = envelope["data"].to_string();
    let summary = match data.char_indices().nth(SUMMARY_CHARS) {
        Some((end, _)) => format!("{}…", &data[..end]),
        None => data,
    };
    format!(
        "{} {routing_key} {} {summary}",
        field("received_at"),
        field("id")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_lines() {
        let body =
            br#"{"id":"aisle:1","received_at":"2026-11-29T03:10:00.123Z","data":{"id":"t1"}}"#;
        assert_eq!(
            readable("aisle.ticket.created", body),
            r#"2026-11-29T03:10:00.123Z aisle.ticket.created aisle:1 {"id":"t1"}"#
        );
        let long = format!(
            r#"{{"id":"x","received_at":"t","data":{{"pad":"{}"}}}}"#,
            "p".repeat(500)
        );
        let line = readable("k", long.as_bytes());
        assert!(line.ends_with('…') && line.chars().count() < 130, "{line}");
        assert_eq!(readable("k", b"nope"), "k (not JSON: 4 bytes)");
    }
}
