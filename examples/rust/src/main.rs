//! Example subscriber: declares a durable queue, binds it to `<prefix>.events` with topic
//! patterns, and prints one line per event (`<id> <type> <data>`), acking each after it is
//! handled. Exits cleanly on SIGINT (Ctrl-C) or SIGTERM.
//!
//! Usage: `hookline-subscriber-example [QUEUE [PATTERN...]]`; the queue and patterns can
//! also come from `HOOKLINE_QUEUE` and `HOOKLINE_PATTERNS` (comma-separated), the broker from
//! `AMQP_URL` and the exchange prefix from `HOOKLINE_PREFIX`.

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::process::ExitCode;

const DEFAULT_URL: &str = "amqp://guest:guest@localhost:5672/%2f";

/// Where to connect and what to subscribe to, from the arguments and the environment.
struct Settings {
    url: String,
    exchange: String,
    queue: String,
    patterns: Vec<String>,
}

impl Settings {
    fn from_env() -> Self {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut args = std::env::args().skip(1);
        let queue = args
            .next()
            .or_else(|| env("HOOKLINE_QUEUE"))
            .unwrap_or_else(|| "example-subscriber".to_owned());
        let mut patterns: Vec<String> = args.collect();
        if patterns.is_empty() {
            patterns = env("HOOKLINE_PATTERNS")
                .map(|p| p.split(',').map(|s| s.trim().to_owned()).collect())
                .unwrap_or_else(|| vec!["#".to_owned()]);
        }
        let prefix = env("HOOKLINE_PREFIX").unwrap_or_else(|| "hookline".to_owned());
        Self {
            url: env("AMQP_URL").unwrap_or_else(|| DEFAULT_URL.to_owned()),
            exchange: format!("{prefix}.events"),
            queue,
            patterns,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::from_env();
    match run(&settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("subscriber: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings) -> Result<(), lapin::Error> {
    let connection = Connection::connect(&settings.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    // Durable: events routed to it wait while this app is down.
    let declare = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(
            settings.queue.as_str().into(),
            declare,
            FieldTable::default(),
        )
        .await?;
    for pattern in &settings.patterns {
        channel
            .queue_bind(
                settings.queue.as_str().into(),
                settings.exchange.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel.basic_qos(16, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            settings.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(), // manual ack
            FieldTable::default(),
        )
        .await?;
    eprintln!(
        "Consuming {} (bound to {} with {}); Ctrl-C stops.",
        settings.queue,
        settings.exchange,
        settings.patterns.join(", ")
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    loop {
        let delivery = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            delivery = consumer.next() => delivery,
        };
        let Some(delivery) = delivery else {
            eprintln!("subscriber: the broker closed the consumer");
            break;
        };
        let delivery = delivery?;
        match serde_json::from_slice::<serde_json::Value>(&delivery.data) {
            Ok(event) => {
                // Handle the event here; use event["id"] as the idempotency key.
                println!(
                    "{} {} {}",
                    event["id"].as_str().unwrap_or("?"),
                    event["type"].as_str().unwrap_or("?"),
                    event["data"]
                );
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(error) => {
                // Not an event: drop it rather than redeliver it forever.
                eprintln!("subscriber: skipping a message that is not JSON: {error}");
                delivery.nack(BasicNackOptions::default()).await?;
            }
        }
    }
    // Unacked deliveries go back to the queue when the channel closes.
    channel.close(200, "bye".into()).await?;
    connection.close(200, "bye".into()).await?;
    eprintln!("Stopped.");
    Ok(())
}
