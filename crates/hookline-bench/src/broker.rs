//! The bench's own side of RabbitMQ: connections, queue depth, purge and clean-up via
//! lapin, and `rabbitmqctl` (version, `stop_app` with a guard that always restores it).

use crate::names;
use anyhow::{Context as _, Result, bail};
use lapin::options::{
    ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

/// Longest wait for one `rabbitmqctl` command.
const CTL_TIMEOUT: Duration = Duration::from_secs(120);

/// Opens a connection named `hookline-bench`.
pub(crate) async fn connect(url: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name("hookline-bench".into());
    tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(url, properties),
    )
    .await
    .context("RabbitMQ did not answer within 10 s")?
    .context("cannot connect to RabbitMQ")
}

/// Connects, retrying for up to `patience` (the broker may be starting).
pub(crate) async fn connect_patiently(url: &str, patience: Duration) -> Result<Connection> {
    let deadline = Instant::now() + patience;
    loop {
        match connect(url).await {
            Ok(connection) => return Ok(connection),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Ready messages in `queue` (passive declare on `channel`; a missing queue closes it).
pub(crate) async fn queue_depth(channel: &Channel, queue: &str) -> Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("passive declare of {queue}"))?;
    Ok(declared.message_count())
}

/// Removes every ready message from `queue`; returns how many (0 when hookline has not
/// declared it yet).
pub(crate) async fn purge(connection: &Connection, queue: &str) -> Result<u32> {
    let channel = connection.create_channel().await?;
    let purged = match channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
    {
        Ok(purged) => purged,
        Err(error) if error.to_string().contains("NOT_FOUND") => return Ok(0),
        Err(error) => return Err(error).with_context(|| format!("purge of {queue}")),
    };
    let _ = channel.close(200, "purged".into()).await;
    Ok(purged)
}

/// Raw deliveries waiting in `queue`, counting each one inside batch messages: reads every
/// ready message without acking, then closes the channel, which puts them all back.
pub(crate) async fn count_deliveries(connection: &Connection, queue: &str) -> Result<u64> {
    let channel = connection.create_channel().await?;
    let messages = queue_depth(&channel, queue).await?;
    // No prefetch limit: every message stays unacked until the channel closes, so a limit
    // would stop the count at that many messages.
    channel
        .basic_qos(0, lapin::options::BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            lapin::options::BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consume {queue}"))?;
    let mut deliveries = 0u64;
    let mut seen = 0u32;
    while seen < messages {
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut consumer),
        )
        .await
        .context("messages stopped arriving while counting")?;
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        let message = hookline_amqp::message::received(&delivery.properties, &delivery.data);
        deliveries += hookline_core::wire::decode(&message).map_or(1, |e| e.len() as u64);
        seen += 1;
    }
    let _ = channel.close(200, "counted".into()).await;
    Ok(deliveries)
}

/// Declares `queue` durable without arguments, as hookline declares its queues.
pub(crate) async fn declare_durable(channel: &Channel, queue: &str) -> Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot declare {queue}"))?;
    Ok(())
}

/// Deletes `queue` (messages and all) on a channel of its own.
pub(crate) async fn delete_queue(connection: &Connection, queue: &str) -> Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .with_context(|| format!("cannot delete {queue}"))?;
    let _ = channel.close(200, "deleted".into()).await;
    Ok(())
}

/// Deletes the queues and exchanges of `prefix` (hookline's and the bench's own).
/// Each on its own channel, so one failure does not stop the rest.
pub(crate) async fn delete_topology(url: &str, prefix: &str) -> Result<()> {
    let connection = connect_patiently(url, Duration::from_secs(60)).await?;
    let mut failures = Vec::new();
    for suffix in names::QUEUES {
        let name = names::under(prefix, suffix);
        let channel = connection.create_channel().await?;
        match channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            Ok(_) => {
                let _ = channel.close(200, "deleted".into()).await;
            }
            Err(error) => failures.push(format!("queue {name}: {error}")),
        }
    }
    for suffix in names::EXCHANGES {
        let name = names::under(prefix, suffix);
        let channel = connection.create_channel().await?;
        match channel
            .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
            .await
        {
            Ok(()) => {
                let _ = channel.close(200, "deleted".into()).await;
            }
            Err(error) => failures.push(format!("exchange {name}: {error}")),
        }
    }
    let _ = connection.close(200, "bench done".into()).await;
    if !failures.is_empty() {
        bail!("clean-up incomplete: {}", failures.join("; "));
    }
    Ok(())
}

/// Runs `rabbitmqctl ARGS` and returns its standard output.
pub(crate) async fn rabbitmqctl(args: &[&str]) -> Result<String> {
    let output = tokio::time::timeout(
        CTL_TIMEOUT,
        tokio::process::Command::new("rabbitmqctl")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("rabbitmqctl {} took over {CTL_TIMEOUT:?}", args.join(" ")))?
    .context("cannot run rabbitmqctl")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The broker's application is stopped; dropping this starts it again (blocking), so an
/// error, a panic or Ctrl-C never leaves RabbitMQ down.
pub(crate) struct AppStopped {
    restored: bool,
}

impl AppStopped {
    /// `rabbitmqctl stop_app`.
    pub(crate) async fn stop() -> Result<AppStopped> {
        // The guard exists before the command runs: a half-done stop is restored too.
        let mut guard = AppStopped { restored: false };
        if let Err(error) = rabbitmqctl(&["stop_app"]).await {
            guard.restore_blocking();
            return Err(error);
        }
        Ok(guard)
    }

    /// `rabbitmqctl start_app`; returns how long it took.
    pub(crate) async fn start(mut self) -> Result<Duration> {
        let began = Instant::now();
        // Cancelled half-way (Ctrl-C), `restored` is still false and drop restores.
        match rabbitmqctl(&["start_app"]).await {
            Ok(_) => {
                self.restored = true;
                Ok(began.elapsed())
            }
            Err(error) => {
                // One more try, blocking, before giving up.
                self.restore_blocking();
                Err(error)
            }
        }
    }

    fn restore_blocking(&mut self) {
        if self.restored {
            return;
        }
        self.restored = true;
        eprintln!("Restoring RabbitMQ: rabbitmqctl start_app");
        match std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("rabbitmqctl start_app failed ({status}): run it by hand!"),
            Err(error) => eprintln!("cannot run rabbitmqctl start_app ({error}): run it by hand!"),
        }
    }
}

impl Drop for AppStopped {
    fn drop(&mut self) {
        self.restore_blocking();
    }
}
